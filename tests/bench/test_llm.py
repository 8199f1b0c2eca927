import json
import math
import os
import shlex
import sys
import time

import pytest

from aihf.bench import llm, report
from aihf.bench.evaluation import FrontierRecorder
from aihf.bench.frontier import gold_at_kl, matched_rows, paired_at_kl
from aihf.bench.methods import policy_steps_per_round
from aihf.bench.llm import distinct_n, main, mean_ci, parse, repetition_rate, select
from tests.tasks.helpers import micro_base


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return micro_base(str(tmp_path_factory.mktemp("base")))


def micro_argv(base, out, *extra):
    """A sweep small enough for seconds: a random micro model, a handful of prompts and steps."""
    return [
        "--base_model",
        base,
        "--output_dir",
        str(out),
        "--num_demonstrations",
        "6",
        "--num_preferences",
        "6",
        "--num_validation",
        "3",
        "--num_test",
        "4",
        "--best_of",
        "2",
        "--eval_samples",
        "2",
        "--continuation_tokens",
        "6",
        "--max_steps",
        "2",
        "--batch_size",
        "2",
        "--learning_rates",
        "1e-3,1e-2",
        "--budgets",
        "3,all",
        *extra,
    ]


# ----------------------------------------------------------------------------- metrics
def test_distinct_n_and_repetition_rate_exact_values():
    assert distinct_n(["a b a b", "a b c"], 2) == pytest.approx(3 / 5)  # ab ba ab | ab bc
    assert distinct_n(["a"], 2) == 0.0
    assert repetition_rate("a b a b") == pytest.approx(1 - 2 / 3)  # ab ba ab: one repeat of three
    assert repetition_rate("to be or not") == 0.0


def test_mean_ci_is_the_normal_interval():
    m, h = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and h == pytest.approx(1.96 * math.sqrt(5 / 3) / 2)
    assert mean_ci([0.3]) == (0.3, 0.0)


def test_selection_takes_the_best_gold_under_the_kl_cap():
    points = [
        {"hp": "a", "validation": {"gold": 0.9, "kl": 12.0}},
        {"hp": "b", "validation": {"gold": 0.5, "kl": 3.0}},
        {"hp": "c", "validation": {"gold": 0.4, "kl": 1.0}},
    ]
    assert select(points, 8.0)["hp"] == "b"
    assert select(points, 20.0)["hp"] == "a"
    assert select(points, 0.5)["hp"] == "c"  # none within the cap: the closest to the base


# ----------------------------------------------------------------------------- the sweep
def test_list_prints_each_run_as_one_command_that_parses_back(capsys, tmp_path):
    assert main(["--output_dir", str(tmp_path), "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    args = parse(["--output_dir", str(tmp_path)])
    runs = llm.all_runs(args)
    # quick: 6 preference methods x 2 budgets + SFT, SPIN and RFT once, one seed
    assert len(runs) == len(lines) == 15
    for line, (method, budget, seed) in zip(lines, runs):
        words = shlex.split(line)
        assert words[:3] == ["aihf", "bench", "llm"] and words[-2:] == ["--run", f"{method}:{budget}:{seed}"]
        again = parse(words[3:])
        assert again.run == f"{method}:{budget}:{seed}"
        assert llm.run_args(again, method, budget, seed) == words[3:]  # the same settings round-trip
    assert not os.listdir(tmp_path)  # --list writes nothing


def test_the_ablation_runs_the_aihf_variants_with_other_weights_at_the_smallest_budget(tmp_path):
    full = parse(["--preset", "full", "--output_dir", str(tmp_path)])
    ablation = [r for r in llm.all_runs(full) if r[0] not in llm.METHODS]
    weights = ("_wd0.3_wp1", "_wd1_wp0.3", "_wd3_wp1")
    names = [m + w for m in ("aihf_dpo", "self_play_aihf", "aihf_rl") for w in weights]
    assert ablation == [(n, 50, seed) for seed in range(3) for n in names]
    assert llm.method_spec("self_play_aihf_wd0.3_wp1") == ("self_play_aihf", 0.3, 1.0)
    with pytest.raises(KeyError):
        llm.method_spec("dpo_wd0.3_wp1")  # DPO has no demonstration term
    words = shlex.split(llm.run_command(full, "aihf_rl_wd3_wp1", 50, 2))
    assert parse(words[3:]).run == "aihf_rl_wd3_wp1:50:2"
    quick = parse(["--output_dir", str(tmp_path), "--ablation", "true"])  # off in quick unless asked
    assert len(llm.all_runs(quick)) == 15 + 9 and not any(r[0] not in llm.METHODS for r in llm.all_runs(parse([])))


def test_bad_settings_exit_2_with_one_line_and_write_nothing(capsys, tmp_path):
    for argv, needle in (
        (["--methods", "sft,ppo"], "--methods"),
        (["--budgets", "50,many"], "--budgets"),
        (["--budgets", "5000"], "--budgets"),
        (["--learning_rates", "0"], "--learning_rates"),
        (["--run", "sft:3"], "--run"),
        (["--run", "dpo:7:0"], "--run"),
        (["--gold", "nope"], "--gold"),
    ):
        assert main(["--output_dir", str(tmp_path / "out"), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.slow
def test_end_to_end_every_method_on_a_micro_model(micro, tmp_path, capsys):
    out = tmp_path / "bench"
    # A plug-in gold that is rarely 0, so that the held-out pairs of the reward models exist.
    argv = micro_argv(micro, out, "--gold", "tests.tasks.helpers:count_e", "--kl_levels", "0.01,1")
    assert main([*argv, "--max_steps", "2", "--frontier_points", "2"]) == 0
    report = json.loads((out / "results.json").read_text())
    preference_methods = ("dpo", "sft_then_dpo", "aihf_dpo", "self_play_aihf", "rlhf", "aihf_rl")
    assert report["runs_finished"] == report["runs_total"] == 3 + 2 * len(preference_methods)
    assert {(r["method"], r["budget"]) for r in report["rows"]} == {
        ("sft", 0),
        ("spin", 0),
        ("rft", 0),
        *((m, b) for m in preference_methods for b in (3, 6)),
    }
    for r in report["rows"]:
        assert 0 <= r["gold"][0] <= 1 and math.isfinite(r["kl"][0]) and 0 <= r["win_vs_base"][0] <= 1
        assert r["win_vs_sft_then_dpo"] is not None and 0 <= r["distinct_2"][0] <= 1
        explicit_reward = r["method"] in ("rlhf", "aihf_rl", "rft")
        assert (r["reward_pair_accuracy"] is not None) == explicit_reward
        if explicit_reward:
            assert 0 <= r["reward_pair_accuracy"][0] <= 1
            assert len(r["reward_spearman"]) == 1 and -1 <= r["reward_spearman"][0] <= 1
        else:
            assert r["reward_spearman"] is None
    assert next(r for r in report["rows"] if r["method"] == "sft_then_dpo")["win_vs_sft_then_dpo"][0] == 0.5
    run = json.loads((out / "run_results" / "dpo__3__0.json").read_text())
    assert len(run["grid"]) == 2 and run["selected"] in [p["hp"] for p in run["grid"]]  # lr grid x one beta
    assert len(run["test"]["per_prompt"]) == 4 and all(len(p["gold"]) == 2 for p in run["test"]["per_prompt"])
    assert run["command"].endswith("--run dpo:3:0")
    assert (out / "gold_vs_preferences.png").stat().st_size > 0 and (out / "gold_vs_kl.png").stat().st_size > 0
    # The frontier: the start and every max_steps / frontier_points steps of each stage (2 x 1 step here).
    assert [p["steps"] for p in run["frontier"]] == [0, 1, 2] and run["frontier"][0]["kl"] == 0.0
    assert all(len(p["per_prompt_gold"]) == 4 for p in run["frontier"])
    two_stage = json.loads((out / "run_results" / "rlhf__3__0.json").read_text())["frontier"]
    # SFT's points, then the RL stage's at the ends of its rounds (the library's policy steps per round).
    per_round = min(policy_steps_per_round(), 2)
    assert [p["steps"] for p in two_stage] == [0, 1, 2, *range(2 + per_round, 5, per_round)]
    assert [(r["method"], r["budget"]) for r in report["matched"]] == [
        (r["method"], r["budget"]) for r in report["rows"]
    ]
    assert all([lv["kl"] for lv in r["levels"]] == [0.01, 1.0] for r in report["matched"])
    assert {(r["method"], r["baseline"]) for r in report["matched_paired"]} == {
        (m, b) for m in ("aihf_dpo", "self_play_aihf", "aihf_rl") for b in ("dpo", "sft_then_dpo", "rlhf", "sft")
    }
    assert (out / "frontier_3.png").stat().st_size > 0 and (out / "frontier_6.png").stat().st_size > 0
    assert 0 < run["cpu_seconds"] and math.isfinite(run["cpu_seconds"])
    table = (out / "results.md").read_text()
    printed = capsys.readouterr().out
    assert "| aihf_dpo | 3 | 1 |" in table and table in printed
    assert (
        table.index("Gold at matched KL") < table.index("minus baselines at matched KL") < table.index("final points")
    )
    assert f"Plot: {out / 'gold_vs_preferences.png'}" in printed and f"Plot: {out / 'gold_vs_kl.png'}" in printed


def test_an_interrupted_sweep_resumes_without_running_anything_twice(micro, tmp_path, monkeypatch, capsys):
    out = tmp_path / "bench"
    argv = micro_argv(micro, out, "--methods", "sft,dpo")
    calls = []
    real = llm.do_run
    monkeypatch.setattr(llm, "do_run", lambda args, *run, **kw: calls.append(run[:3]) or real(args, *run, **kw))
    cpu = time.process_time()
    assert main(argv) == 0
    cpu = time.process_time() - cpu
    assert sorted(c for c in calls) == [("dpo", 3, 0), ("dpo", 6, 0), ("sft", 0, 0)]
    # Each run's CPU seconds are its own, not its process's so far (--jobs 1 runs them in one process).
    spent = [json.loads(p.read_text())["cpu_seconds"] for p in (out / "run_results").glob("*.json")]
    assert len(spent) == 3 and all(s > 0 for s in spent) and sum(spent) <= cpu + 0.3
    # Interrupt: one result lost (and a half-written file, which never counts as finished).
    os.remove(out / "run_results" / "dpo__6__0.json")
    (out / "run_results" / "dpo__6__0.json.tmp").write_text("{")
    calls.clear()
    assert main(argv) == 0
    assert calls == [("dpo", 6, 0)]
    assert "2 of 3 runs already finished; 1 to do" in capsys.readouterr().out
    calls.clear()
    assert main(argv) == 0 and calls == []
    assert main([*argv, "--run", "sft:0:0"]) == 0 and calls == []  # a finished run is not redone
    capsys.readouterr()
    assert main([*argv, "--list"]) == 0 and capsys.readouterr().out == ""
    report = json.loads((out / "results.json").read_text())
    assert report["runs_finished"] == 3 and all(r["seeds"] == 1 for r in report["rows"])


def test_other_task_settings_refuse_the_data_folder_and_the_report_ignores_other_data(micro, tmp_path, capsys):
    """Task flags that change the data may not rebuild ``output_dir/data`` under finished runs;
    a result file on other data (its ``data_key``) is left out of the report, and counted."""
    out = tmp_path / "bench"
    argv = micro_argv(micro, out, "--methods", "sft,dpo", "--budgets", "3", "--learning_rates", "1e-3")
    assert main([*argv, "--run", "sft:0:0"]) == 0
    card = json.loads((out / "data" / "card.json").read_text())
    finished = (out / "run_results" / "sft__0__0.json").read_text()
    assert json.loads(finished)["data_key"] == card["config"]
    capsys.readouterr()
    for extra in ([], ["--run", "dpo:3:0"]):
        assert main([*argv, "--num_test", "3", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "num_test: 4 there, 3 now" in err and "another --output_dir" in err
        assert "num_validation" not in err  # only the settings that differ
    assert json.loads((out / "data" / "card.json").read_text()) == card
    assert (out / "run_results" / "sft__0__0.json").read_text() == finished
    assert not (out / "run_results" / "dpo__3__0.json").exists()
    # A result file from other data (as an older version could mix in) is not aggregated.
    other = dict(json.loads(finished), method="dpo", budget=3, data_key={**card["config"], "num_test": 3})
    (out / "run_results" / "dpo__3__0.json").write_text(json.dumps(other))
    assert main([*argv, "--report_only"]) == 0
    assert "Ignored 1 result file(s)" in capsys.readouterr().out
    report = json.loads((out / "results.json").read_text())
    assert report["runs_finished"] == 1 and report["runs_ignored"] == 1
    assert [r["method"] for r in report["rows"]] == ["sft"]


def test_a_run_whose_lock_is_held_is_skipped_not_started_twice(micro, tmp_path, monkeypatch, capsys):
    """A run still alive from an earlier sweep (killed alone, not with its process group) holds
    ``<output_dir>/locks/<run>.lock``; a new sweep skips it, and runs it once the lock is free."""
    import subprocess

    out = tmp_path / "bench"
    argv = micro_argv(micro, out, "--methods", "sft,dpo", "--budgets", "3")
    holder = subprocess.Popen(  # stands in for the orphaned run: it holds the lock until killed
        [
            sys.executable,
            "-c",
            "import sys, time; from aihf.bench.runlock import try_lock_run; "
            "fd = try_lock_run(sys.argv[1]); print(fd is not None, flush=True); time.sleep(600)",
            str(out / "locks" / "dpo__3__0.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "True"
        calls = []
        real = llm.do_run
        monkeypatch.setattr(llm, "do_run", lambda args, *run, **kw: calls.append(run[:3]) or real(args, *run, **kw))
        main(argv)
        assert calls == [("sft", 0, 0)]
        assert "skipped dpo__3__0: already running elsewhere (its lock is held)" in capsys.readouterr().out
    finally:
        holder.kill()
        holder.wait()
    calls.clear()
    assert main(argv) == 0 and calls == [("dpo", 3, 0)]


@pytest.mark.slow
def test_parallel_jobs_run_each_run_as_its_own_command(micro, tmp_path):
    out = tmp_path / "bench"
    argv = micro_argv(micro, out, "--methods", "sft,dpo", "--budgets", "3", "--jobs", "2")
    assert main(argv, prog_argv=[sys.executable, "-m", "aihf.bench.llm"]) == 0
    assert sorted(os.listdir(out / "run_results")) == ["dpo__3__0.json", "sft__0__0.json"]
    assert sorted(os.listdir(out / "logs")) == ["dpo__3__0.log", "sft__0__0.log"]


def test_aggregate_win_rates_against_sft_then_dpo_from_result_files(tmp_path):
    args = parse(
        [
            "--output_dir",
            str(tmp_path),
            "--methods",
            "dpo,sft_then_dpo,sft",
            "--budgets",
            "5",
            "--seeds",
            "1",
            "--num_preferences",
            "5",
        ]
    )
    data = tmp_path / "data"
    data.mkdir()
    (data / "card.json").write_text(json.dumps({"R_base_test": 0.0, "R_demo_test": 0.5}))

    def write(method, budget, golds):
        per_prompt = [{"gold": g, "kl": [1.0, 3.0], "win_vs_base": 1.0} for g in golds]
        run = {
            "method": method,
            "budget": budget,
            "seed": 0,
            "selected": {"learning_rate": 1e-3},
            "wall_seconds": 2.0,
            "selected_within_kl_cap": method != "dpo",
            "test": {"per_prompt": per_prompt, "distinct_2": 0.9, "repetition_2": 0.1},
        }
        os.makedirs(tmp_path / "run_results", exist_ok=True)
        (tmp_path / "run_results" / f"{method}__{budget}__0.json").write_text(json.dumps(run))

    write("dpo", 5, [[0.5, 0.0], [0.2, 0.2]])
    write("sft_then_dpo", 5, [[0.1, 0.3], [0.2, 0.2]])
    write("sft", 0, [[0.2, 0.0], [0.2, 0.3]])
    report = llm.aggregate(args, str(data))
    rows = {r["method"]: r for r in report["rows"]}
    # prompt 1: 0.5 > 0.1 wins, 0.0 < 0.3 loses -> 0.5; prompt 2: two ties -> 0.5
    assert rows["dpo"]["win_vs_sft_then_dpo"] == (0.5, 0.0)
    # prompt 1: 0.2 > 0.1 wins, 0.0 < 0.3 loses -> 0.5; prompt 2: a tie and a win -> 0.75
    assert rows["sft"]["win_vs_sft_then_dpo"][0] == pytest.approx((0.5 + 0.75) / 2)
    assert rows["dpo"]["gold"][0] == pytest.approx(0.225)
    assert rows["dpo"]["gold_normalised"][0] == pytest.approx(0.45)
    assert rows["dpo"]["kl"] == (2.0, 0.0)
    table = llm.markdown(report)
    assert "learning_rate=0.001 (no grid point under the KL cap)" in table.split("| dpo |")[1].splitlines()[0]
    assert "KL cap" not in table.split("| sft |")[1]


def test_reward_pair_accuracy_interval_is_over_held_out_pairs(tmp_path):
    """One seed's reward accuracy on 3 held-out pairs is 1/3 +/- 0.65, not 1/3 +/- 0 (no seed variance)."""
    refs = [
        {"prompt": "a", "base_completions": ["x", "y"], "base_gold": [0.1, 0.5]},
        {"prompt": "b", "base_completions": ["u", "v"], "base_gold": [0.2, 0.2]},  # a tie: no pair
        {"prompt": "c", "base_completions": ["s", "t"], "base_gold": [0.9, -0.3]},
        {"prompt": "d", "base_completions": ["p", "q"], "base_gold": [0.0, 0.4]},
    ]
    assert llm.held_out_pairs(refs) == [
        {"prompt": "a", "chosen": "y", "rejected": "x"},
        {"prompt": "c", "chosen": "s", "rejected": "t"},
        {"prompt": "d", "chosen": "q", "rejected": "p"},
    ]
    args = parse(["--output_dir", str(tmp_path), "--methods", "rft,sft", "--seeds", "1"])
    data = tmp_path / "data"
    data.mkdir()
    (data / "card.json").write_text(json.dumps({"R_base_test": 0.0, "R_demo_test": 0.5}))
    (data / "references_validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))
    (tmp_path / "run_results").mkdir()
    for method, accuracy in (("rft", 0.3333333432674408), ("sft", None)):  # float32 1/3, as the trainer logs it
        run = {
            "method": method,
            "budget": 0,
            "seed": 0,
            "selected": {"learning_rate": 1e-3},
            "wall_seconds": 2.0,
            "selected_within_kl_cap": True,
            "reward_pair_accuracy": accuracy,
            "test": {
                "per_prompt": [{"gold": [0.1], "kl": [1.0], "win_vs_base": 1.0}],
                "distinct_2": 1,
                "repetition_2": 0,
            },
        }
        (tmp_path / "run_results" / f"{method}__0__0.json").write_text(json.dumps(run))
    report = llm.aggregate(args, str(data))
    rows = {r["method"]: r for r in report["rows"]}
    mean, half = rows["rft"]["reward_pair_accuracy"]
    # units 1, 0, 0: sd sqrt(1/3), half-width 1.96 * sqrt(1/3) / sqrt(3) = 1.96 / 3
    assert mean == pytest.approx(1 / 3) and half == pytest.approx(1.96 / 3)
    assert rows["sft"]["reward_pair_accuracy"] is None
    assert report["held_out_pairs"] == 3 and "3 pairs per seed" in llm.markdown(report)


def test_paired_differences_match_seeds_and_prompts():
    def run(golds, kl):
        return {"test": {"per_prompt": [{"gold": g, "kl": [kl]} for g in golds]}}

    results = {
        ("aihf_dpo", 50, 0): run([[0.4, 0.2], [0.0, 0.0]], 2.0),
        ("aihf_dpo", 50, 1): run([[0.3, 0.3], [0.1, 0.1]], 4.0),
        ("dpo", 50, 0): run([[0.1, 0.1], [0.0, 0.2]], 6.0),
        ("dpo", 50, 1): run([[0.3, 0.3], [0.0, 0.0]], 8.0),
        ("rlhf", 50, 1): run([[0.0, 0.0], [0.0, 0.0]], 1.0),  # seed 1 only
        ("dpo", 200, 0): run([[0.9, 0.9], [0.9, 0.9]], 1.0),  # no AIHF run at 200: no row
    }
    rows = {(r["method"], r["baseline"], r["budget"]): r for r in llm.paired_differences(results, [50, 200])}
    assert set(rows) == {("aihf_dpo", "dpo", 50), ("aihf_dpo", "rlhf", 50)}
    # units (seed, prompt): 0.3-0.1, 0.0-0.1, 0.3-0.3, 0.1-0.0 -> 0.2, -0.1, 0.0, 0.1
    mean, half = rows[("aihf_dpo", "dpo", 50)]["gold_difference"]
    assert mean == pytest.approx(0.05)
    assert half == pytest.approx(1.96 * (sum((d - 0.05) ** 2 for d in (0.2, -0.1, 0.0, 0.1)) / 3) ** 0.5 / 2)
    assert rows[("aihf_dpo", "dpo", 50)]["kl"] == 3.0 and rows[("aihf_dpo", "dpo", 50)]["baseline_kl"] == 7.0
    against_rlhf = rows[("aihf_dpo", "rlhf", 50)]
    assert against_rlhf["seeds"] == 1 and against_rlhf["gold_difference"][0] == pytest.approx(0.2)


# ----------------------------------------------------------------------------- matched KL
def _point(steps, kl, per_prompt):
    return {"steps": steps, "kl": kl, "gold": sum(per_prompt) / len(per_prompt), "per_prompt_gold": per_prompt}


def test_gold_at_kl_interpolates_at_the_first_crossing_and_says_not_reached():
    frontier = [
        _point(0, 0.0, [0.0, 0.2]),
        _point(2, 2.0, [0.2, 0.4]),
        _point(4, 6.0, [0.6, 0.0]),
        _point(6, 3.0, [1.0, 1.0]),  # back below 4 nats: the first crossing (2 -> 6) counts
        _point(8, 7.0, [0.9, 0.9]),
    ]
    at4 = gold_at_kl(frontier, 4.0)  # w = (4 - 2) / (6 - 2) = 0.5 between points 1 and 2
    assert at4["per_prompt_gold"] == pytest.approx([0.4, 0.2])
    assert at4["gold"] == pytest.approx(0.3) and at4["steps"] == pytest.approx(3.0)
    at1 = gold_at_kl(frontier, 1.0)  # w = 0.5 between the start and point 1
    assert at1["per_prompt_gold"] == pytest.approx([0.1, 0.3]) and at1["gold"] == pytest.approx(0.2)
    assert gold_at_kl(frontier, 6.0)["per_prompt_gold"] == pytest.approx([0.6, 0.0])  # exactly on a point
    # 6.5: point 2 (6.0) falls short; the first point past it is the last, reached from point 3 (3.0)
    assert gold_at_kl(frontier, 6.5)["per_prompt_gold"] == pytest.approx([0.125 * 1.0 + 0.875 * 0.9] * 2)
    assert gold_at_kl(frontier, 7.5) is None  # never reached
    assert gold_at_kl([_point(0, 5.0, [0.3, 0.1])], 4.0)["gold"] == pytest.approx(0.2)  # already past it


def test_matched_rows_and_paired_differences_at_kl_count_the_seeds_that_do_not_reach_a_level():
    def run(frontier):
        return {"frontier": frontier}

    ours = [run([_point(0, 0.0, [0.0, 0.0]), _point(4, 4.0, [0.4, 0.8])]), run([_point(0, 0.0, [0.0, 0.0])])]
    theirs = [run([_point(0, 0.0, [0.0, 0.0]), _point(4, 8.0, [0.4, 0.4])]) for _ in range(2)]
    rows = matched_rows({("aihf_dpo", 50): ours}, [2.0, 6.0], r_base=0.0, r_demo=0.5)
    (row,) = rows
    at2, at6 = row["levels"]
    # seed 0 at 2 nats: half way to point 1 -> prompts 0.2, 0.4; seed 1 never leaves KL 0
    assert at2["reached"] == 1 and at2["not_reached"] == 1
    assert at2["gold"][0] == pytest.approx(0.3) and at2["gold_normalised"][0] == pytest.approx(0.6)
    assert at6["gold"] is None and at6["not_reached"] == 2
    paired = paired_at_kl([("aihf_dpo", "dpo", 50, list(zip(ours, theirs)))], [2.0, 6.0], r_base=0.0, r_demo=0.5)
    by_level = {r["kl"]: r for r in paired}
    # at 2 nats, seed 0 only: ours 0.2, 0.4; theirs a quarter of the way: 0.1, 0.1 -> differences 0.1, 0.3
    two = by_level[2.0]
    assert two["seeds"] == 1 and (two["method_not_reached"], two["baseline_not_reached"]) == (1, 0)
    assert two["gold_difference"][0] == pytest.approx(0.2) and two["normalised_difference"][0] == pytest.approx(0.4)
    assert two["gold_difference"][1] == pytest.approx(1.96 * (0.02**0.5) / 2**0.5)
    assert by_level[6.0]["seeds"] == 0 and by_level[6.0]["gold_difference"] is None
    assert "not reached (2)" in report.matched_table(rows, [2.0, 6.0])[-1]


def test_frontier_recorder_records_every_n_steps_and_each_stage_end_counting_rl_rounds_as_policy_steps():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    rec = FrontierRecorder(every=4, record=lambda model: model)
    control = TrainerControl()

    def stage(args, max_steps):
        state = TrainerState(max_steps=max_steps)
        rec.on_train_begin(args, state, control)
        for step in range(1, max_steps + 1):
            state.global_step = step
            rec.on_step_end(args, state, control, model=f"m{step}")
        rec.on_train_end(args, state, control)

    stage(TrainingArguments("unused", use_cpu=True), 10)  # a Trainer: optimizer steps 4, 8 and the end, 10
    rl = type("RLArgs", (), {"policy_steps_per_round": 3})()  # rounds of 3 policy steps: 3, 6, 9, 12
    stage(rl, 4)
    assert [(p["stage"], p["step"], p["steps"], p["value"]) for p in rec.points] == [
        (1, 4, 4, "m4"),
        (1, 8, 8, "m8"),
        (1, 10, 10, "m10"),
        (2, 6, 16, "m2"),  # 6 crosses 4
        (2, 9, 19, "m3"),  # 9 crosses 8
        (2, 12, 22, "m4"),  # 12 crosses 12, and the end
    ]


def test_rl_methods_start_from_the_sft_model_with_the_same_policy_step_budget(micro, tmp_path):
    """rlhf, aihf_rl and rft run the sft method's SFT stage first (so their frontiers' first stage is
    sft's, point for point), then max_steps policy steps; sft_then_dpo too."""
    out = tmp_path / "bench"
    argv = micro_argv(micro, out, "--methods", "sft,sft_then_dpo,rlhf,aihf_rl,rft", "--budgets", "3")
    argv += ["--learning_rates", "1e-2", "--max_steps", "4", "--frontier_points", "2", "--kl_levels", "0.01"]
    assert main([*argv, "--gold", "tests.tasks.helpers:count_e"]) == 0
    runs = {p.stem: json.loads(p.read_text()) for p in (out / "run_results").glob("*.json")}
    sft = runs["sft__0__0"]["frontier"]
    assert [p["steps"] for p in sft] == [0, 2, 4] and runs["sft__0__0"]["frontier"][-1]["kl"] > 0
    # The RL stages record at the ends of their rounds (the library's policy steps per round), DPO every 2 steps.
    # A round's end is a point when it crosses a recording step (2, 4) or ends the stage.
    per_round = min(policy_steps_per_round(), 4)
    ends = [per_round * i for i in range(1, 4 // per_round + 1)]
    rl_points = [
        (2, 4 + e) for i, e in enumerate(ends) if e == ends[-1] or any((ends[i - 1] if i else 0) < t <= e for t in (2, 4))
    ]
    for name in ("sft_then_dpo__3__0", "rlhf__3__0", "aihf_rl__3__0", "rft__0__0"):
        frontier = runs[name]["frontier"]
        second = [(2, 6), (2, 8)] if name.startswith("sft_then_dpo") else rl_points
        assert [(p["stage"], p["steps"]) for p in frontier] == [(0, 0), (1, 2), (1, 4), *second], name
        assert frontier[:3] == sft, name
        assert frontier[-1]["kl"] == runs[name]["test"]["kl"]  # the last point is the final model
    report = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["budget"]) for r in report["matched"]] == [
        (r["method"], r["budget"]) for r in report["rows"]
    ]


def test_spearman_is_pearson_of_average_tie_ranks():
    from aihf.bench.evaluation import ranks, spearman

    assert ranks([3.0, 1.0, 2.0, 1.0]) == [4.0, 1.5, 3.0, 1.5]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x = (1, 2, 3, 4), y = (1.5, 1.5, 3, 4): cov 4.5 / sqrt(5 * 4.5)
    assert spearman([1, 2, 3, 4], [0, 0, 5, 9]) == pytest.approx(4.5 / (5 * 4.5) ** 0.5)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([1], [2]))
