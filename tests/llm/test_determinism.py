"""The same seed gives the same metrics and weights twice in a row on CPU, for each trainer and mode.

Implicit trainer with LoRA: tests/llm/test_runs.py::test_lora_runs_are_reproducible_with_the_same_seed.
"""

import pytest
import torch
from peft import LoraConfig

from aihf.llm import AIHFRLTrainer
from tests.llm import rl_task
from tests.llm.helpers import trainer


def _same(a, b):
    strip = lambda history: [  # noqa: E731
        {k: v for k, v in h.items() if "runtime" not in k and "per_second" not in k and not k.startswith("time/")}
        for h in history
    ]
    assert strip(a) == strip(b)


@pytest.mark.parametrize("demo_loss", ["nll", "self_play"])
def test_implicit_trainer_is_deterministic(tmp_path, demo_loss):
    runs = []
    for name in ("a", "b"):
        torch.manual_seed(len(name))  # whatever the global RNG holds before, args.seed decides
        t = trainer(tmp_path / name, max_steps=3, demo_loss=demo_loss, self_play_round_steps=2)
        t.train()
        runs.append(t)
    _same(runs[0].state.log_history, runs[1].state.log_history)
    for (n, p), (_, q) in zip(runs[0].model.named_parameters(), runs[1].model.named_parameters()):
        assert torch.equal(p, q), n


def _rl(tmp_path, lora):
    tok = rl_task.tokenizer()
    demos, prefs, eval_prefs = rl_task.make_data(n_demos=8, n_prefs=8, n_eval=4)
    lora_config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear") if lora else None
    t = AIHFRLTrainer(
        rl_task.model(tok),
        args=rl_task.rl_args(tmp_path, num_rounds=3, per_device_train_batch_size=2, reward_batch_size=4),
        demonstrations=demos,
        preferences=prefs,
        eval_preferences=eval_prefs,
        processing_class=tok,
        peft_config=lora_config,
        reward_peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="SEQ_CLS")
        if lora
        else None,
    )
    t.train()
    return t


@pytest.mark.parametrize("lora", [False, True])
def test_aihf_rl_is_deterministic(tmp_path, lora):
    torch.manual_seed(1)
    a = _rl(tmp_path / "a", lora)
    torch.manual_seed(2)
    b = _rl(tmp_path / "b", lora)
    _same(a.log_history, b.log_history)
    assert len(a.log_history) == 3
    for model in ("policy", "reward_model"):
        pairs = zip(getattr(a, model).named_parameters(), getattr(b, model).named_parameters())
        for (n, p), (_, q) in pairs:
            assert torch.equal(p, q), (model, n)
