"""AIHF-RL end to end on tiny models: the policy step learns, the joint loop learns a reward that
ranks held-out pairs and a policy whose gold reward rises, and a resumed run is exact."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from aihf import ConfigError, DataError
from aihf.data import pad_sequences
from aihf.llm.rl_trainer import AIHFRLTrainer

from . import rl_task
from .rl_task import rl_args
from .test_speed_options import _SeesEverything


class FirstWordReward(nn.Module):
    """A fixed reward model: 1 if the first answer token (after a fixed-length prompt) is ``word_id``."""

    def __init__(self, prompt_len: int, word_id: int):
        super().__init__()
        self.prompt_len, self.word_id = prompt_len, word_id
        self.unused = nn.Parameter(torch.zeros(1))  # the trainer builds an optimizer for it
        self.config = type("Config", (), {"num_labels": 1, "pad_token_id": None})()
        self.score = None

    def forward(self, input_ids, attention_mask=None, use_cache=None):
        hit = (input_ids[:, self.prompt_len] == self.word_id).float()
        return type("Out", (), {"logits": hit.unsqueeze(1) + 0 * self.unused})()


def _first_token_prob(trainer, prompt_ids, word_id):
    with torch.no_grad():
        logits = trainer.policy(input_ids=torch.tensor([prompt_ids])).logits[0, -1]
    return torch.softmax(logits, -1)[word_id].item()


@pytest.mark.learning
def test_policy_learns_to_prefer_the_rewarded_answer(tmp_path):
    tok = rl_task.tokenizer()
    demos = [{"prompt": f"say : {t}", "completion": " g1 g2"} for t in rl_task.TOPICS]
    target = tok.convert_tokens_to_ids("b3")  # a word the demonstrations never use
    prompt = tok("say : t1")["input_ids"]
    t = AIHFRLTrainer(
        rl_task.model(tok),
        reward_model=FirstWordReward(len(prompt), target),
        args=rl_args(tmp_path, num_rounds=25, reward_steps_per_round=0, pref_weight=0.0),
        demonstrations=demos,
        processing_class=tok,
    )
    before = _first_token_prob(t, prompt, target)
    t.train()
    after = _first_token_prob(t, prompt, target)
    # Over model seeds 0-3: from about 0.04 to above 0.99.
    assert before < 0.2
    assert after > 0.5
    rewards = [e["reward"] for e in t.log_history]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.5


def _mean(history, key, rounds):
    values = [e[key] for e in history if key in e]
    return sum(values[rounds]) / len(values[rounds])


@pytest.mark.learning
def test_aihf_rl_learns_reward_and_policy_on_gold_task(tmp_path):
    tok = rl_task.tokenizer()
    demos, prefs, eval_prefs = rl_task.make_data()
    t = AIHFRLTrainer(
        rl_task.model(tok),
        args=rl_args(tmp_path, num_ppo_epochs=2, num_mini_batches=2, center_rewards_coefficient=0.01),
        demonstrations=demos,
        preferences=prefs,
        eval_preferences=eval_prefs,
        processing_class=tok,
        gold_reward=rl_task.gold_reward,
    )
    metrics = t.train()
    h = t.log_history
    # Over seeds 0-2: accuracy 0.94-1.0, gold reward from about 0 to 1.4-1.8 (at most 2).
    # Held-out pair accuracy of the learned reward: chance is 0.5.
    assert _mean(h, "reward/eval_accuracy", slice(-3, None)) > 0.7
    # The policy's gold reward (from about 0 for a random policy) rises.
    assert _mean(h, "gold_reward", slice(-3, None)) > _mean(h, "gold_reward", slice(0, 3)) + 0.5
    for name in (
        "reward",
        "reward_std",
        "kl",
        "entropy",
        "completions/mean_length",
        "completions/clipped_ratio",
        "policy/clip_fraction",
        "reward_model/loss",
        "reward_model/loss_pref",
        "reward_model/loss_demo",
        "reward_model/pref_accuracy",
        "reward_model/demo_accuracy",
        "reward_model/demo_margin",
        "reward/eval_margin",
        "time/generation",
        "time/policy_step",
        "time/reward_step",
    ):
        assert name in metrics and math.isfinite(metrics[name]), name


def _run(tmp_path, name, stop_after=None, **overrides):
    tok = rl_task.tokenizer()
    demos, prefs, eval_prefs = rl_task.make_data(n_demos=8, n_prefs=8, n_eval=8)
    args = rl_args(
        tmp_path / name,
        num_rounds=4,
        per_device_train_batch_size=4,
        num_ppo_epochs=2,
        num_mini_batches=2,
        reward_steps_per_round=2,
        lr_scheduler_type="linear",
        save_strategy="steps",
        save_steps=1,
        **overrides,
    )
    t = AIHFRLTrainer(
        rl_task.model(tok),
        args=args,
        demonstrations=demos,
        preferences=prefs,
        eval_preferences=eval_prefs,
        processing_class=tok,
    )
    if stop_after is not None:
        run_round = t.run_round

        def interrupted():  # the process dies as round stop_after + 1 starts
            if t.round == stop_after:
                raise KeyboardInterrupt
            return run_round()

        t.run_round = interrupted
        with pytest.raises(KeyboardInterrupt):
            t.train()
        return t, None
    calls = []
    run_round = t.run_round
    t.run_round = lambda: calls.append(t.round) or run_round()
    metrics = t.train(resume_from_checkpoint=overrides.get("resume_from_checkpoint"))
    t.rounds_run = calls
    return t, metrics


def _comparable(history):
    return [{k: v for k, v in e.items() if not k.startswith("time/")} for e in history]


def test_resume_after_round_2_matches_uninterrupted_run(tmp_path):
    full, full_metrics = _run(tmp_path, "full", reward_pretrain_steps=3)
    _run(tmp_path, "split", stop_after=2, reward_pretrain_steps=3)  # a run that stopped after round 2
    resumed_dir = tmp_path / "split"
    resumed, resumed_metrics = _run(tmp_path, "split", resume_from_checkpoint=True, reward_pretrain_steps=3)
    assert resumed_dir.joinpath("out", "checkpoint-4").is_dir()
    assert [e["step"] for e in resumed.log_history] == [0, 1, 2, 3, 4]
    assert resumed.rounds_run == [2, 3] and full.rounds_run == [0, 1, 2, 3]
    assert _comparable(resumed.log_history) == _comparable(full.log_history)
    for key, value in full_metrics.items():
        if not key.startswith("time/") and key != "train_runtime":
            assert resumed_metrics[key] == value, key
    for (n, p), (_, q) in zip(full.policy.named_parameters(), resumed.policy.named_parameters()):
        assert torch.equal(p, q), n
    for (n, p), (_, q) in zip(full.reward_model.named_parameters(), resumed.reward_model.named_parameters()):
        assert torch.equal(p, q), n


def test_bad_settings_and_data_are_refused(tmp_path):
    tok = rl_task.tokenizer()
    demos, prefs, _ = rl_task.make_data(n_demos=4, n_prefs=4, n_eval=2)
    with pytest.raises(ConfigError, match="num_generations"):
        rl_args(tmp_path, num_generations=1)
    with pytest.raises(ConfigError, match="freeze_reward_model"):  # without a trained reward_model= (the trainer knows)
        AIHFRLTrainer(
            rl_task.model(tok), args=rl_args(tmp_path, freeze_reward_model=True), preferences=prefs,
            demonstrations=demos, processing_class=tok,
        )
    with pytest.raises(ConfigError, match="no preferences"):
        AIHFRLTrainer(rl_task.model(tok), args=rl_args(tmp_path), demonstrations=demos, processing_class=tok)
    # Reward pretraining is Bradley-Terry on the preferences, which pref_weight=0 (rft) ignores.
    with pytest.raises(ConfigError, match="reward_pretrain_steps=3 .* but pref_weight=0 ignores them"):
        AIHFRLTrainer(
            "/nonexistent/model/never/loaded",
            args=rl_args(tmp_path, pref_weight=0.0, reward_pretrain_steps=3),
            demonstrations=demos,
            preferences=prefs,
            processing_class=tok,
        )
    bad = prefs[:2] + [{"prompt": "say : t1", "chosen": "g1 g2"}]
    with pytest.raises(DataError, match="row 2.*rejected"):
        AIHFRLTrainer(
            "/nonexistent/model/never/loaded",
            args=rl_args(tmp_path),
            demonstrations=demos,
            preferences=bad,
            processing_class=tok,
        )


def test_a_used_output_dir_is_refused_unless_overwritten(tmp_path):
    tok = rl_task.tokenizer()
    demos, prefs, _ = rl_task.make_data(n_demos=4, n_prefs=4, n_eval=2)
    (tmp_path / "out" / "checkpoint-7").mkdir(parents=True)

    def make(**kw):
        args = rl_args(tmp_path, num_rounds=1, per_device_train_batch_size=2, max_new_tokens=2, **kw)
        return AIHFRLTrainer(
            rl_task.model(tok), args=args, demonstrations=demos, preferences=prefs, processing_class=tok
        )

    with pytest.raises(ConfigError, match=r"already holds another run \(checkpoint-7\).*overwrite_output_dir"):
        make().train()
    assert (tmp_path / "out" / "checkpoint-7").is_dir()
    assert make(overwrite_output_dir=True).train()["round"] == 1
    assert not (tmp_path / "out" / "checkpoint-7").exists()  # the old run's checkpoints are gone


def test_lora_policy_and_reward_model_train_save_and_resume(tmp_path):
    from peft import LoraConfig

    from aihf.llm.reward_model import load_reward_model

    tok = rl_task.tokenizer()
    demos, prefs, eval_prefs = rl_task.make_data(n_demos=8, n_prefs=8, n_eval=8)

    def make(num_rounds, **kw):
        return AIHFRLTrainer(
            rl_task.model(tok),
            args=rl_args(tmp_path, num_rounds=num_rounds, save_strategy="steps", save_steps=1, **kw),
            demonstrations=demos,
            preferences=prefs,
            eval_preferences=eval_prefs,
            processing_class=tok,
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
            reward_peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="SEQ_CLS"),
        )

    t = make(2)
    assert t.ref_model is None  # the reference is the policy with its adapters disabled
    base = {n: p.detach().clone() for n, p in t.policy.named_parameters() if "lora" not in n}
    lora = {n: p.detach().clone() for n, p in t.policy.named_parameters() if "lora_B" in n}
    metrics = t.train()
    assert metrics["kl"] != 0.0  # the adapters moved the policy away from the reference
    for n, p in t.policy.named_parameters():
        if n in base:
            assert torch.equal(p, base[n]), n
    assert any(not torch.equal(p, lora[n]) for n, p in t.policy.named_parameters() if n in lora)
    t.save_model()
    assert (tmp_path / "out" / "adapter_config.json").is_file()
    loaded = load_reward_model(str(tmp_path / "out" / "reward_model"), tok.pad_token_id)
    assert not any("lora" in n for n, _ in loaded.named_parameters())  # merged: loadable on its own
    # Resume from round 2 into a 3-round run: the adapters' state comes back.
    resumed = make(3, resume_from_checkpoint=True)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.round == 3 and [e["step"] for e in resumed.log_history] == [1, 2, 3]


@pytest.mark.slow
@pytest.mark.learning
def test_two_process_torchrun_stays_in_sync_and_learns(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root), HF_HUB_OFFLINE="1")
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    script = str(root / "tests" / "llm" / "rl_ddp_script.py")
    run = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", script, str(tmp_path), "0"],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "ddp.json").read_text())
    assert result["world"] == 2
    assert result["checksums"][0] == result["checksums"][1]  # same weights on both processes
    h = result["history"]
    assert _mean(h, "reward/eval_accuracy", slice(-3, None)) > 0.7
    assert _mean(h, "gold_reward", slice(-3, None)) > _mean(h, "gold_reward", slice(0, 3)) + 0.5
    # Process 0 wrote each checkpoint once, atomically (no staging folder left).
    assert sorted(os.listdir(tmp_path / "out")) == ["checkpoint-10", "checkpoint-20"]


@pytest.mark.parametrize("backend", ["generate", "static"])
def test_single_pass_policy_step_equals_the_two_pass_step(tmp_path, backend):
    """With one update per step the update's policy pass doubles as the no-grad "old" pass: the
    metrics and the updated weights equal those of the separate-pass step; the samples drawn with
    the static-cache backend equal model.generate's."""
    tok = rl_task.tokenizer()
    demos, prefs, _ = rl_task.make_data(n_demos=8, n_prefs=8)
    trainers = []
    for reuse in (True, False):
        t = AIHFRLTrainer(
            rl_task.model(tok),
            args=rl_args(tmp_path / str(reuse), num_rounds=1, max_new_tokens=4, generation_backend=backend),
            demonstrations=demos,
            preferences=prefs,
            processing_class=tok,
        )
        t.reuse_policy_pass = reuse
        trainers.append(t)
    prompts = [tok(f"say : {w}")["input_ids"] for w in rl_task.TOPICS[:4] for _ in range(4)]
    samples = [t._generate(prompts, seed=3) for t in trainers]
    assert samples[0] == samples[1]
    if backend == "static":
        plain = dataclasses.replace(trainers[0].generator, backend="generate")
        assert plain(trainers[0].policy, prompts, 3) == trainers[0].generator(trainers[0].policy, prompts, 3)
    calls = [0, 0]
    for i, t in enumerate(trainers):
        t.policy.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    one, two = (t.policy_step(prompts, samples[0], step=0) for t in trainers)
    assert calls == [1, 2]  # one policy forward instead of two
    assert one.keys() == two.keys()
    for key in one:
        assert one[key] == pytest.approx(two[key], rel=1e-5, abs=1e-6), key
    moved = 0.0
    for (name, a), b in zip(trainers[0].policy.named_parameters(), trainers[1].policy.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    for a, b in zip(trainers[0].policy.parameters(), rl_task.model(tok).parameters()):
        moved = max(moved, (a - b).abs().max().item())
    assert moved > 1e-4  # the step did update the policy


def test_padding_free_policy_step_equals_the_padded_step(tmp_path):
    """Packed scoring (``padding_free``) of the policy's and the reference's token log-probs gives
    the padded step's metrics and updated weights up to float rounding, on rows of unequal length;
    a model that mixes packed sequences is refused."""
    tok = rl_task.tokenizer()
    demos, prefs, _ = rl_task.make_data(n_demos=8, n_prefs=8)
    trainers = [
        AIHFRLTrainer(
            rl_task.model(tok),
            args=rl_args(tmp_path / str(packed), num_rounds=1, max_new_tokens=6, padding_free=packed),
            demonstrations=demos,
            preferences=prefs,
            processing_class=tok,
        )
        for packed in (True, False)
    ]
    texts = ["say : t1", "say : t2 t3 t4 t5 t6", "say : t3 t3", "say :"]
    prompts = [tok(t)["input_ids"] for t in texts for _ in range(4)]
    samples = trainers[1]._generate(prompts, seed=5)
    assert len({len(p) + len(c) for p, c in zip(prompts, samples)}) > 3  # real padding to remove
    rows = pad_sequences(prompts, samples, tok.pad_token_id)
    (tok_a, mask_a, ent_a), (tok_b, mask_b, ent_b) = (t._token_logps(t.policy, rows, entropy=True) for t in trainers)
    assert torch.equal(mask_a, mask_b) and mask_a.sum() > 0
    torch.testing.assert_close(tok_a * mask_a, tok_b * mask_b)
    torch.testing.assert_close(ent_a, ent_b)
    one, two = (t.policy_step(prompts, samples, step=0) for t in trainers)
    for key in one:
        assert one[key] == pytest.approx(two[key], rel=1e-4, abs=1e-5), key
    # One Adam step at lr 1e-2 moves an element by up to ~1e-2 whatever its gradient's size, so rounding
    # of a near-zero gradient (summed in another order by other kernel sets, e.g. avx2) shows at ~1e-5
    # to 1e-4: atol is 1 % of a step.
    for a, b in zip(trainers[0].policy.parameters(), trainers[1].policy.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="padding_free=True: this llama model cannot run packed sequences"):
        AIHFRLTrainer(
            _SeesEverything(rl_task.model(tok)),
            reward_model=FirstWordReward(3, 0),
            args=rl_args(tmp_path / "refused", num_rounds=1, padding_free=True),
            demonstrations=demos,
            preferences=prefs,
            processing_class=tok,
        )
