"""A PEFT policy whose adapter is already trained keeps the model it started as for reference
(issue 19, item 2): step-0 implicit rewards are exactly 0 and the step-0 KL is 0, in both trainers."""

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model

from aihf.llm import AIHFRLTrainer, AIHFTrainer
from aihf.llm.reference import REF_ADAPTER
from aihf.llm.reward_model import load_reward_model
from aihf.tasks.tiny import build_model

from . import rl_task
from .helpers import config, reverse_task, task_tokenizer

LORA = dict(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")


def _trained_lora(model, seed=7):
    """``model`` with a LoRA adapter whose B matrices are not zero: what a LoRA SFT run leaves."""
    model = get_peft_model(model, LoraConfig(**LORA))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=generator))
    return model


def _adapter(model, adapter="default"):
    return {n: p.detach().clone() for n, p in model.named_parameters() if f".{adapter}." in n}


def _implicit(tmp_path, model, tok, **overrides):
    _, prefs = reverse_task(n_prefs=16, seed=2)
    args = config(tmp_path, demo_weight=0.0, max_steps=2, learning_rate=1e-2, **overrides)
    return AIHFTrainer(model, args=args, preferences=prefs, processing_class=tok)


def test_trained_adapter_is_the_implicit_trainers_reference(tmp_path):
    tok = task_tokenizer()
    t = _implicit(tmp_path, _trained_lora(build_model(tok, "llama", hidden_size=32)), tok)
    start = _adapter(t.model)
    t.train()
    first = t.state.log_history[0]
    assert first["rewards/chosen"] == 0.0 and first["rewards/rejected"] == 0.0 and first["rewards/margins"] == 0.0
    assert first["loss/pref"] == pytest.approx(math.log(2), abs=1e-6)
    assert t.state.log_history[1]["rewards/margins"] != 0.0  # the policy moves; its reference does not
    reference = _adapter(t.model, REF_ADAPTER)
    assert reference and all(
        torch.equal(reference[n.replace(".default.", f".{REF_ADAPTER}.")], v) for n, v in start.items()
    )
    assert any(not torch.equal(p, start[n]) for n, p in _adapter(t.model).items())
    t.save_model()
    saved = {p.name for p in (tmp_path / "out").iterdir()}
    assert "adapter_model.safetensors" in saved and REF_ADAPTER not in saved  # the policy's adapter only


def test_trained_adapter_notice_and_fresh_adapter_reference(tmp_path, capsys):
    tok = task_tokenizer()
    _implicit(tmp_path / "trained", _trained_lora(build_model(tok, "llama", hidden_size=32)), tok)
    lines = [line for line in capsys.readouterr().err.splitlines() if "reference" in line]
    assert len(lines) == 1 and "frozen copy" in lines[0] and "'default'" in lines[0]
    # A fresh adapter (B = 0) changes nothing: the cheap reference, adapters disabled, stays.
    fresh_lora = get_peft_model(build_model(tok, "llama", hidden_size=32), LoraConfig(**LORA))
    fresh = _implicit(tmp_path / "fresh", fresh_lora, tok)
    assert REF_ADAPTER not in fresh.model.peft_config and fresh._ref_adapter is None
    assert not [line for line in capsys.readouterr().err.splitlines() if "reference" in line]


def test_precomputed_reference_of_a_trained_adapter_is_the_starting_model(tmp_path):
    tok = task_tokenizer()
    policy = _trained_lora(build_model(tok, "llama", hidden_size=32))
    t = _implicit(tmp_path, policy, tok, precompute_ref_log_probs=True)
    t.train()
    first = t.state.log_history[0]
    # Scored in other batches than the training step's: equal up to float rounding.
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert first["loss/pref"] == pytest.approx(math.log(2), abs=1e-6)


def test_trained_adapter_is_the_rl_trainers_reference(tmp_path):
    tok = rl_task.tokenizer()
    demos, prefs, _ = rl_task.make_data(n_demos=8, n_prefs=8, n_eval=4)
    t = AIHFRLTrainer(
        _trained_lora(rl_task.model(tok)),
        reward_model=load_reward_model(rl_task.model(tok, seed=1), tok.pad_token_id),
        args=rl_task.rl_args(tmp_path, num_rounds=1),
        demonstrations=demos,
        preferences=prefs,
        processing_class=tok,
    )
    metrics = t.train()
    assert metrics["kl"] == 0.0 and metrics["kl_sequence"] == 0.0  # the step-0 policy is its reference
    assert metrics["rlhf_reward"] == pytest.approx(metrics["reward"], abs=1e-6)
    t.save_model()
    assert REF_ADAPTER not in {p.name for p in (tmp_path / "out").iterdir()}
