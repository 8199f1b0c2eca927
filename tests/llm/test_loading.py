"""Policies named by a path (a folder or a GGUF file), and outputs that load with the standard
transformers/peft calls, with a model card."""

import json

import pytest
import torch
from peft import AutoPeftModelForCausalLM, LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from aihf import ConfigError
from aihf.llm import AIHFTrainer
from aihf.llm.loading import load_policy
from tests.device import USE_CPU

from .helpers import config, reverse_task
from .tiny_gguf import write_tiny_llama_gguf

IDS = torch.tensor([[256, 85, 68, 81, 82, 68, 220, 25, 220, 66]])


@pytest.fixture
def gguf_dir(tmp_path):
    folder = tmp_path / "gguf"
    folder.mkdir()
    written = write_tiny_llama_gguf(str(folder / "tiny.gguf"))
    return folder, written


def _logits(model, ids=IDS):
    model.eval()
    with torch.no_grad():
        return model(ids).logits


def test_load_policy_dequantises_a_gguf_file(gguf_dir):
    folder, written = gguf_dir
    model, tok = load_policy(str(folder), {"gguf_file": "tiny.gguf"})
    assert model.dtype == torch.float32
    torch.testing.assert_close(_logits(model), _logits(written), rtol=0, atol=1e-6)
    assert tok.decode(tok("reverse : c a").input_ids) == "reverse : c a"
    same, _ = load_policy(str(folder / "tiny.gguf"), {"dtype": "bfloat16"}, load_tokenizer=False)
    assert same.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="gguf_file"):
        load_policy(str(folder), {"gguf_file": "missing.gguf"})
    with pytest.raises(ConfigError, match="dtype"):
        load_policy(str(folder), {"gguf_file": "tiny.gguf", "dtype": "float33"})


def _train(gguf_dir, tmp_path, **kw):
    folder, _ = gguf_dir
    demos, prefs = reverse_task(n_demos=16, n_prefs=16)
    t = AIHFTrainer(
        str(folder),
        args=config(tmp_path, max_steps=2, learning_rate=1e-2),
        demonstrations=demos,
        preferences=prefs,
        model_init_kwargs={"gguf_file": "tiny.gguf"},
        **kw,
    )
    t.train()
    t.save_model()
    return t, tmp_path / "out"


def test_full_fine_tune_of_a_gguf_policy_loads_with_transformers(gguf_dir, tmp_path):
    t, out = _train(gguf_dir, tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    trained = _logits(t.model)
    assert not torch.allclose(trained, _logits(gguf_dir[1]), atol=1e-3)  # training changed it
    torch.testing.assert_close(_logits(reloaded), trained, rtol=0, atol=1e-5)
    tok = AutoTokenizer.from_pretrained(out)
    prompt = tok("reverse : c a f =", return_tensors="pt")
    sample = reloaded.generate(**prompt, min_new_tokens=3, max_new_tokens=3, do_sample=False)
    assert sample.shape == (1, prompt.input_ids.shape[1] + 3)
    card = (out / "README.md").read_text()
    for line in ("| method | AIHF-DPO", "| beta | 0.1 |", "| preference pairs (train) | 16 |", "| train_loss |"):
        assert line in card, line
    assert "AutoModelForCausalLM.from_pretrained" in card and "tiny.gguf" in card


def test_aihf_rl_trainer_loads_a_gguf_policy_through_load_policy(gguf_dir, tmp_path):
    from aihf.llm import AIHFRLConfig, AIHFRLTrainer

    folder, written = gguf_dir
    demos, prefs = reverse_task(n_demos=4, n_prefs=4)
    args = AIHFRLConfig(
        output_dir=str(tmp_path / "rl"), num_rounds=1, per_device_train_batch_size=2, num_generations=2,
        max_new_tokens=2, reward_batch_size=2, use_cpu=USE_CPU, report_to="none", save_strategy="no",
        disable_tqdm=True,
    )  # fmt: skip
    t = AIHFRLTrainer(
        str(folder), args=args, demonstrations=demos, preferences=prefs, model_init_kwargs={"gguf_file": "tiny.gguf"}
    )
    assert t.policy.dtype == torch.float32
    torch.testing.assert_close(_logits(t.policy), _logits(written), rtol=0, atol=1e-6)  # dequantised, as written
    assert t.tokenizer.decode(t.tokenizer("reverse : c a").input_ids) == "reverse : c a"  # from the GGUF metadata
    assert t.train()["round"] == 1
    with pytest.raises(ConfigError, match="model_init_kwargs"):
        AIHFRLTrainer(written, args=args, processing_class=t.tokenizer, model_init_kwargs={"dtype": "bfloat16"})


def test_lora_on_a_gguf_base_loads_with_auto_peft(gguf_dir, tmp_path):
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    t, out = _train(gguf_dir, tmp_path, peft_config=lora)
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str((out / "base_model").resolve())
    reloaded = AutoPeftModelForCausalLM.from_pretrained(out)
    torch.testing.assert_close(_logits(reloaded), _logits(t.model), rtol=0, atol=1e-5)
    base = AutoModelForCausalLM.from_pretrained(out / "base_model")
    torch.testing.assert_close(_logits(base), _logits(gguf_dir[1]), rtol=0, atol=1e-6)  # the untouched base
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and "| adapter | LORA (r=4, alpha=8) |" in card
    assert "More Information Needed" not in card  # not peft's empty template


def test_lora_on_an_in_memory_model_loads_with_auto_peft(tmp_path):
    from aihf.tasks.tiny import build_model

    from .helpers import task_tokenizer

    tok = task_tokenizer()
    model = build_model(tok, "llama", hidden_size=32)  # no folder to name as the base
    demos, prefs = reverse_task(n_demos=16, n_prefs=16)
    t = AIHFTrainer(
        model,
        args=config(tmp_path, max_steps=2, learning_rate=1e-2),
        demonstrations=demos,
        preferences=prefs,
        processing_class=tok,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    t.train()
    t.save_model()
    ids = torch.tensor([[5, 6, 7, 8]])
    reloaded = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "out")
    torch.testing.assert_close(_logits(reloaded, ids), _logits(t.model, ids), rtol=0, atol=1e-5)


def test_model_card_names_the_method_and_the_command(tmp_path):
    from aihf.llm import card

    assert card.method_name(0.0, 1.0, "nll", "sigmoid") == "DPO"
    assert card.method_name(1.0, 0.0, "nll", "sigmoid").startswith("SFT")
    assert card.method_name(1.0, 0.0, "self_play", "sigmoid").startswith("SPIN")
    assert card.method_name(1.0, 1.0, "self_play", "ipo").startswith("Self-play AIHF")
    assert card.command_line(["/venv/bin/aihf", "train", "--config", "run yaml"]) == "aihf train --config 'run yaml'"
    assert card.command_line(["/x/aihf/cli.py", "train", "--beta", "0.2"]) == "aihf train --beta 0.2"
    assert card.command_line(["train.py", "--lr", "1"]) == "python train.py --lr 1"
