"""AIHFTrainer end to end on tiny models: learning, resuming, architectures, LoRA, checkpoints."""

import json
import os

import pytest
import torch
from peft import LoraConfig
from transformers.trainer_utils import get_last_checkpoint

from aihf import DataError
from aihf.llm import AIHFConfig, AIHFTrainer
from aihf.llm.self_play import SelfPlayState
from aihf.tasks.tiny import build_model

from .helpers import config, losses_by_step, reverse_task, task_tokenizer, trainer


def _series(log_history, key):
    return [h[key] for h in log_history if key in h]


@pytest.mark.learning
@pytest.mark.parametrize("demo_loss", ["nll", "self_play"])
def test_tiny_model_learns_when_demos_and_preferences_agree(tmp_path, demo_loss):
    demos, prefs = reverse_task(n_demos=128, n_prefs=128)
    t = trainer(
        tmp_path,
        demos=demos,
        prefs=prefs,
        demo_loss=demo_loss,
        max_steps=150,
        learning_rate=3e-3,
        logging_steps=25,
        beta=0.5,
        per_device_train_batch_size=16,
    )
    t.train()
    acc = _series(t.state.log_history, "rewards/accuracies")
    demo_logps = _series(t.state.log_history, "demo/logps")
    # Measured on three CPU kernel sets (AVX-512, AVX2, default): accuracy 0.56 -> 1.0 and the
    # demonstration log-prob up 5.8 (self_play) to 7 (nll) nats; the bounds leave wide room.
    assert len(acc) == 6
    assert acc[-1] > 0.9 and acc[-1] > acc[0] + 0.2
    assert demo_logps[-1] > demo_logps[0] + 2.0  # nats per 4-token completion
    if demo_loss == "self_play":
        # Each round starts with the policy equal to its opponent (margin 0), and SPIN's fixed point
        # is margin 0 again, so the last value sits on a knife edge (0.50 +- 0.01 across kernels).
        # What the method must do is move the demonstrations above the opponent's samples within
        # every round: the run's mean margin is clearly positive (measured 0.21 nats).
        margins = _series(t.state.log_history, "demo/margins")
        assert len(margins) == 6 and sum(margins) / len(margins) > 0.05
        assert "demo/sample_logps" in t.state.log_history[0]


@pytest.mark.parametrize("demo_loss, n_demos", [("nll", 64), ("self_play", 64), ("self_play", 8)])
def test_resume_matches_uninterrupted_run(tmp_path, demo_loss, n_demos):
    # With 8 demos (one batch) the round that spans the checkpoint (steps 3-5) reuses samples
    # drawn before it: the cache and opponent must come back from the checkpoint.
    demos, prefs = reverse_task(n_demos=n_demos)
    common = dict(
        max_steps=8,
        save_strategy="steps",
        save_steps=4,
        demo_loss=demo_loss,
        self_play_round_steps=3,
        demos=demos,
        prefs=prefs,
    )
    full = trainer(tmp_path / "full", **common)
    full.train()
    expected = losses_by_step(full.state.log_history)
    assert sorted(os.listdir(tmp_path / "full" / "out")) == ["checkpoint-4", "checkpoint-8"]

    resumed = trainer(tmp_path / "full", **common)  # same output_dir: a restart after a crash
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "out" / "checkpoint-4"))
    got = losses_by_step(resumed.state.log_history)
    assert sorted(k for k in got if k > 4) == [5, 6, 7, 8]
    for step in (5, 6, 7, 8):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step


def test_self_play_opponent_is_the_policy_frozen_at_each_round_start(tmp_path):
    t = trainer(tmp_path, demo_loss="self_play", self_play_round_steps=2, max_steps=5, learning_rate=1e-2)
    real = t.generator
    same_as_policy = {}

    def spy(model, prompts, seed):
        policy = t.model.state_dict()
        same_as_policy[t.state.global_step] = all(torch.equal(v, policy[k]) for k, v in model.state_dict().items())
        return real(model, prompts, seed)

    t.generator = spy
    t.train()
    assert _series(t.state.log_history, "self_play/round") == [0, 0, 1, 1, 2]
    # 64 demos / batch 8: every step brings new demos and samples them. The opponent equals the
    # policy exactly when a round starts (steps 0, 2, 4) and lags behind it within a round.
    assert same_as_policy == {0: True, 1: False, 2: True, 3: False, 4: True}


def test_self_play_samples_are_cached_per_round(tmp_path):
    demos, prefs = reverse_task(n_demos=8, n_prefs=8)
    t = trainer(tmp_path, demos=demos, prefs=prefs, demo_loss="self_play", self_play_round_steps=2, max_steps=5)
    steps = []
    real = t.generator
    t.generator = lambda m, p, s: steps.append((t.state.global_step, len(p))) or real(m, p, s)
    t.train()
    # one batch holds all 8 demos: sampled once per round, reused by the round's other step
    assert steps == [(0, 8), (2, 8), (4, 8)]


def test_self_play_regeneration_probability(tmp_path):
    demos, prefs = reverse_task(n_demos=8, n_prefs=8)
    t = trainer(tmp_path, demos=demos, prefs=prefs, demo_loss="self_play", self_play_round_steps=100, max_steps=4)
    t.args.self_play_regen_prob = 1.0
    steps = []
    real = t.generator
    t.generator = lambda m, p, s: steps.append(t.state.global_step) or real(m, p, s)
    t.train()
    assert steps == [0, 1, 2, 3]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_architectures(tmp_path, arch):
    t = trainer(tmp_path, arch=arch, max_steps=3, demo_loss="self_play")
    out = t.train()
    assert torch.isfinite(torch.tensor(out.training_loss))
    assert len(losses_by_step(t.state.log_history)) == 3


@pytest.mark.parametrize("demo_loss", ["nll", "self_play"])
def test_lora_reference_is_the_base_model(tmp_path, demo_loss):
    tok = task_tokenizer()
    model = build_model(tok, "llama", hidden_size=32)
    demos, prefs = reverse_task()
    t = AIHFTrainer(
        model,
        args=config(tmp_path, max_steps=3, learning_rate=1e-2, demo_loss=demo_loss),
        demonstrations=demos,
        preferences=prefs,
        processing_class=tok,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    assert t.ref_model is None  # adapters disabled = reference
    trainable = [n for n, p in t.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    t.train()
    first = t.state.log_history[0]
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)  # LoRA B starts at 0: policy == base
    assert abs(t.state.log_history[2]["rewards/margins"]) > 0  # and then moves away from it


def test_evaluation_reports_eval_metrics(tmp_path):
    demos, prefs = reverse_task(seed=5)
    tok = task_tokenizer()
    t = AIHFTrainer(
        build_model(tok, "llama", hidden_size=32),
        args=config(tmp_path, eval_strategy="steps", eval_steps=2, max_steps=2, per_device_eval_batch_size=16),
        demonstrations=demos[:32],
        preferences=prefs[:32],
        eval_demonstrations=demos[32:],
        eval_preferences=prefs[32:],
        processing_class=tok,
    )
    t.train()
    metrics = t.evaluate()
    for key in ("eval_loss", "eval_rewards/accuracies", "eval_demo/logps", "eval_demo/nll"):
        assert key in metrics, key


def test_checkpoints_are_atomic(tmp_path, monkeypatch):
    t = trainer(tmp_path, demo_loss="self_play", max_steps=4, save_strategy="steps", save_steps=2)
    original = SelfPlayState.save

    def crash_on_second_save(self, folder, *args):
        if t.state.global_step == 4:
            raise KeyboardInterrupt("simulated crash mid-save")
        original(self, folder, *args)

    monkeypatch.setattr(SelfPlayState, "save", crash_on_second_save)
    with pytest.raises(KeyboardInterrupt):
        t.train()
    out = tmp_path / "out"
    # the half-written checkpoint-4 never got its final name; checkpoint-2 is the one to resume
    assert get_last_checkpoint(str(out)) == str(out / "checkpoint-2")
    assert {"aihf_opponent.safetensors", "model.safetensors", "optimizer.pt"} <= set(os.listdir(out / "checkpoint-2"))
    assert not (out / "checkpoint-4").exists()
    state = json.loads((out / "checkpoint-2" / "aihf_self_play.json").read_text())
    samples = json.loads((out / "checkpoint-2" / "aihf_self_play_samples_rank0.json").read_text())
    assert state["round"] == 0 and len(samples) == 16  # two batches of 8 demos sampled so far


def test_bad_data_fails_before_any_file_is_written(tmp_path):
    demos, prefs = reverse_task()
    prefs[5]["rejected"] = prefs[5]["chosen"]
    with pytest.raises(DataError, match="row 5"):
        trainer(tmp_path, demos=demos, prefs=prefs)
    assert not (tmp_path / "out").exists()


def test_missing_source_for_a_weighted_term_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no training preferences"):
        trainer(tmp_path, prefs=[])
    with pytest.raises(ValueError, match="no training demonstrations"):
        trainer(tmp_path, demos=[], prefs=[dict(p, reference=None) for p in reverse_task()[1]])


def test_preference_references_become_demonstrations(tmp_path):
    _, prefs = reverse_task(n_prefs=16)
    for p in prefs[:10]:
        p["reference"] = p["chosen"]
    t = trainer(tmp_path, demos=[], prefs=prefs)
    assert len(t.train_dataset.demonstrations) == 10
    assert len(t.train_dataset) == 16


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(beta=0.0), "beta"),
        (dict(demo_weight=0.0, pref_weight=0.0), "both 0"),
        (dict(demo_loss="spin"), "demo_loss"),
        (dict(max_length=16, max_prompt_length=16), "max_prompt_length"),
        (dict(self_play_regen_prob=1.5), "self_play_regen_prob"),
    ],
)
def test_config_validation(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        AIHFConfig(output_dir=str(tmp_path), **bad)


def test_tensorboard_reporting_and_progress_bar(tmp_path, capsys):
    t = trainer(tmp_path, report_to="tensorboard", max_steps=2)
    t.train()
    runs = [root for root, _, files in os.walk(tmp_path / "out") if any(f.startswith("events.out") for f in files)]
    assert len(runs) == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(runs[0])
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/rewards/accuracies", "train/demo/logps"} <= tags, sorted(tags)
    assert "2/2" in capsys.readouterr().err  # tqdm progress bar


def test_prompt_length_defaults_to_half_of_max_length(tmp_path):
    assert AIHFConfig(output_dir=str(tmp_path), max_length=128).max_prompt_length == 64
    assert AIHFConfig(output_dir=str(tmp_path), max_length=None).max_prompt_length is None
    assert AIHFConfig(output_dir=str(tmp_path), max_length=128, max_prompt_length=100).max_prompt_length == 100


@pytest.mark.parametrize("which", ["preferences", "demonstrations"])
def test_evaluation_with_a_single_source(tmp_path, which):
    demos, prefs = reverse_task(seed=6)
    tok = task_tokenizer()
    t = AIHFTrainer(
        build_model(tok, "llama", hidden_size=32),
        args=config(tmp_path, max_steps=1, per_device_eval_batch_size=16),
        demonstrations=demos,
        preferences=prefs,
        processing_class=tok,
        **{f"eval_{which}": (prefs if which == "preferences" else demos)[:16]},
    )
    metrics = t.evaluate()
    assert ("eval_rewards/accuracies" in metrics) == (which == "preferences")
    assert ("eval_demo/nll" in metrics) == (which == "demonstrations")
    pair_loss = metrics.get("eval_loss/pref", metrics.get("eval_demo/nll"))
    assert metrics["eval_loss"] == pytest.approx(pair_loss, rel=1e-5)  # only the present term counts


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    demos, prefs = reverse_task()
    for i in range(0, 64, 3):
        demos[i]["completion"] += " a b c" * (i % 4)  # unequal lengths across micro-batches
    common = dict(demos=demos, prefs=prefs, max_steps=3, learning_rate=1e-2)
    one = trainer(tmp_path / "one", per_device_train_batch_size=8, **common)
    one.train()
    acc = trainer(tmp_path / "acc", per_device_train_batch_size=4, gradient_accumulation_steps=2, **common)
    acc.train()
    for key in ("loss", "loss/demo", "loss/pref", "demo/nll"):
        assert _series(acc.state.log_history, key) == pytest.approx(_series(one.state.log_history, key), rel=1e-5), key


def test_model_path_loads_float32_and_half_precision_warns(tmp_path):
    tok = task_tokenizer()
    model = build_model(tok, "llama", hidden_size=32).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    tok.save_pretrained(tmp_path / "bf16")
    demos, prefs = reverse_task()
    t = AIHFTrainer(str(tmp_path / "bf16"), args=config(tmp_path), demonstrations=demos, preferences=prefs)
    assert {p.dtype for p in t.model.parameters()} == {torch.float32}
    with pytest.warns(UserWarning, match="bfloat16"):
        AIHFTrainer(model, args=config(tmp_path), demonstrations=demos, preferences=prefs, processing_class=tok)
