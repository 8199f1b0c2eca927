"""``aihf bench llm --regime``, and a sweep that says nothing through Python warnings."""

import json
import os
import warnings

from aihf.bench.llm import main, parse, run_args, task_config
from aihf.tasks.sentiment.base import SHIPPED_BASE
from aihf.tasks.sentiment.data import boundary_merges, build_task_data, data_key, read_jsonl
from tests.bench.test_llm import micro_argv
from tests.tasks.helpers import micro_base


def test_each_regime_has_its_own_results_folder_and_passes_on_to_its_runs():
    strong, weak = parse([]), parse(["--regime", "weak_demos"])
    assert strong.regime == "strong_demos"
    assert strong.output_dir == os.path.join("benchmarks", "results", "llm", "quick")
    assert weak.output_dir == os.path.join("benchmarks", "results", "llm", "quick-weak_demos")
    assert task_config(weak).regime == "weak_demos" and task_config(strong).regime == "strong_demos"
    assert "--regime" not in run_args(strong, "dpo", 50, 0)
    assert run_args(weak, "dpo", 50, 0)[-4:] == ["--regime", "weak_demos", "--run", "dpo:50:0"]
    assert parse(["--regime", "weak_demos", "--output_dir", "x"]).output_dir == "x"


def test_the_strong_demos_regime_is_the_committed_quick_data():
    """The default regime's data key is the one the committed quick results were built with."""
    with open(os.path.join("benchmarks", "results", "llm", "quick", "data", "card.json")) as f:
        committed = json.load(f)["config"]
    assert data_key(task_config(parse([])), SHIPPED_BASE) == committed
    weak = data_key(task_config(parse(["--regime", "weak_demos"])), SHIPPED_BASE)
    assert weak == {**committed, "bt_temperature": 0.05, "demo_best_of": 2}


def test_a_small_sweep_emits_no_python_warnings(tmp_path):
    """Neither the pipelines' stages nor the task data's prompt/completion boundary warn per run:
    the SFT stage is not handed pairs it ignores, and the boundary is noted once with the data."""
    base = micro_base(str(tmp_path / "base"))
    argv = micro_argv(
        base,
        tmp_path / "bench",
        "--gold",
        "tests.tasks.helpers:count_e",
        "--methods",
        "sft,dpo,sft_then_dpo,rlhf,aihf_rl,rft",
        "--budgets",
        "all",
        "--learning_rates",
        "1e-3",
    )
    folder = build_task_data(task_config(parse(argv)), log=lambda *_: None)
    # Rows like a sampled continuation of the prompt's last word (" b" + "e" is the token " be").
    demos, prefs = (read_jsonl(os.path.join(folder, f"{n}.jsonl")) for n in ("demonstrations", "preferences"))
    demos[0] |= {"prompt": "HAMLET.\nTo b", "completion": "e or not to be"}
    prefs[0] |= {"prompt": "HAMLET.\nTo b", "chosen": "e or not", "rejected": " or not"}
    for name, rows in (("demonstrations", demos), ("preferences", prefs)):
        with open(os.path.join(folder, f"{name}.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    from transformers import AutoTokenizer

    assert len(boundary_merges(AutoTokenizer.from_pretrained(base), [("HAMLET.\nTo b", ["e or not"])])) == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 0
    assert [f"{w.filename}:{w.lineno}: {w.message}" for w in caught] == []
    # What a user's own data gets is unchanged: the trainer still warns about such a row.
    from aihf.llm import AIHFConfig, AIHFTrainer

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        AIHFTrainer(
            base,
            args=AIHFConfig(output_dir=str(tmp_path / "own"), report_to="none", use_cpu=True, pref_weight=0.0),
            demonstrations=demos[:2],
        )
    assert any("straddles the prompt/completion boundary" in str(w.message) for w in caught)
