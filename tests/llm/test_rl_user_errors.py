"""AIHF-RL as a new user meets it: a LoRA SFT policy without a reward model, reward_weights without
reward functions, reward functions and score() called wrongly, a BERT-style classifier as the reward
model, an output_dir that is a file. Each either works as documented or fails with one clear error."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import BertConfig, BertForSequenceClassification

from aihf import ConfigError
from aihf.llm.reward_model import default_readout, load_reward_model
from aihf.llm.rl_trainer import AIHFRLTrainer
from aihf.llm.runs import check_output_dir

from . import rl_task
from .rl_task import rl_args


def _trainer(tmp_path, model=None, **kw):
    tok = rl_task.tokenizer()
    demos, prefs, _ = rl_task.make_data(n_demos=8, n_prefs=8)
    funcs, reward_model = kw.pop("reward_funcs", None), kw.pop("reward_model", None)
    return AIHFRLTrainer(
        model if model is not None else rl_task.model(tok),
        reward_model=reward_model,
        args=rl_args(tmp_path, num_rounds=1, **kw),
        demonstrations=demos,
        preferences=prefs,
        processing_class=tok,
        reward_funcs=funcs,
    )


def test_a_lora_policy_gives_the_new_reward_model_its_merged_weights(tmp_path):
    """docs/aihf_rl.md: a PeftModel policy with a trained adapter (a LoRA SFT model) and no reward_model.
    The reward model starts from the policy as it samples (base plus adapter), not a crash."""
    tok = rl_task.tokenizer()
    policy = get_peft_model(rl_task.model(tok), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.fill_(0.5)
    merged_q = policy.base_model.model.model.layers[0].self_attn.q_proj.get_delta_weight("default")
    merged_q = merged_q + policy.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    trainer = _trainer(tmp_path, model=policy)
    reward_q = trainer.reward_model.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(reward_q, merged_q)
    assert not torch.equal(reward_q, policy.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight)


def test_reward_weights_without_reward_funcs_scale_the_reward_model(tmp_path):
    one = _trainer(tmp_path / "a")
    two = _trainer(tmp_path / "b", reward_weights=[2.0])
    prompts = [one.tokenizer("say : t1")["input_ids"]] * 2
    completions = [one.tokenizer(" g1 b1")["input_ids"], one.tokenizer(" b2")["input_ids"]]
    base, _ = one._policy_scores(prompts, completions)
    doubled, _ = two._policy_scores(prompts, completions)
    assert torch.equal(doubled, 2.0 * base) and base.abs().min() > 0
    for weights in ([0.0], [0, 0]):
        funcs = [rl_task.gold_reward] if len(weights) == 2 else None
        with pytest.raises(ConfigError, match="every weight is 0, so the policy would have no reward"):
            _trainer(tmp_path / "c", reward_weights=weights, reward_funcs=funcs)
    with pytest.raises(ConfigError, match="reward_weights must be finite numbers"):
        rl_args(tmp_path, reward_weights=["a", 1.0])


def test_one_reward_function_is_taken_and_a_bad_return_is_named(tmp_path):
    trainer = _trainer(tmp_path, reward_funcs=rl_task.gold_reward)  # one callable, as TRL takes it
    assert trainer.reward_funcs == [rl_task.gold_reward]
    prompts = [trainer.tokenizer("say : t1")["input_ids"]]
    completions = [trainer.tokenizer(" g1")["input_ids"]]

    def returns_none(prompts, completions):
        return None

    trainer.reward_funcs = [returns_none]
    with pytest.raises(ValueError, match="reward function 'returns_none' returned a NoneType, not one score per"):
        trainer._policy_scores(prompts, completions)


def test_score_refuses_strings_and_unequal_lengths(tmp_path):
    trainer = _trainer(tmp_path)
    assert len(trainer.score(["say : t1"], [" g1"])) == 1
    with pytest.raises(TypeError, match="two lists of texts"):
        trainer.score("say : t1", " g1")
    with pytest.raises(ValueError, match="score: 2 prompts but 1 completions"):
        trainer.score(["say : t1", "say : t2"], [" g1"])


def test_a_classifier_without_a_score_head_is_read_at_the_last_token(tmp_path):
    """docs/aihf_rl.md: 'any other given classifier with last', whether given as a folder or an object."""
    tok = rl_task.tokenizer()
    config = BertConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, num_labels=1
    )
    bert = BertForSequenceClassification(config)
    bert.save_pretrained(tmp_path / "bert")
    assert default_readout(bert) == "last" and default_readout(str(tmp_path / "bert")) == "last"
    assert load_reward_model(bert, tok.pad_token_id) is bert  # used as given, not rebuilt
    assert _trainer(tmp_path, reward_model=bert).readout == "last"
    with pytest.raises(ConfigError, match="'mean' needs per-token scores, but BertForSequenceClassification has no"):
        _trainer(tmp_path, reward_model=bert, reward_readout="mean")


def test_an_output_dir_that_is_a_file_is_refused(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(ConfigError, match="afile is a file, not a folder"):
        check_output_dir(str(afile), overwrite=True)
    with pytest.raises(ConfigError, match=r"afile/sub lies under a file, .*afile, not a folder"):
        check_output_dir(str(afile / "sub"), overwrite=False)
    assert afile.read_text() == "mine"
    assert check_output_dir(str(tmp_path / "new" / "run"), overwrite=False) == []


def test_a_missing_local_reward_model_path_is_one_clear_error(tmp_path):
    """Not Hugging Face's 'Repo id must be in the form ...': a path that can only be local must exist."""
    from aihf import ConfigError
    from aihf.llm.reward_model import load_reward_model

    with pytest.raises(ConfigError, match=r"reward_model '.*nope': no such folder"):
        load_reward_model(str(tmp_path / "nope"), 0)
    (tmp_path / "file.bin").write_text("x")
    with pytest.raises(ConfigError, match="a file, not a model folder"):
        load_reward_model(str(tmp_path / "file.bin"), 0)


def test_the_callers_tokenizer_is_not_modified(tmp_path):
    """As AIHFTrainer (tests/llm/test_runs.py): a tokenizer without a pad token is copied, not changed."""
    from aihf.llm.rl_trainer import AIHFRLTrainer

    from . import rl_task
    from .rl_task import rl_args

    tok = rl_task.tokenizer()
    tok.pad_token = None
    demos, prefs, _ = rl_task.make_data(n_demos=4, n_prefs=4, n_eval=2)
    t = AIHFRLTrainer(
        rl_task.model(tok), args=rl_args(tmp_path), demonstrations=demos, preferences=prefs, processing_class=tok
    )
    assert tok.pad_token is None
    assert t.tokenizer.pad_token == tok.eos_token and t.pad == tok.eos_token_id


def test_a_bad_row_of_an_in_memory_dataset_names_which_source(tmp_path):
    """Lists and Datasets have no file name: the line names the argument they came in by."""
    from aihf import DataError

    tok = rl_task.tokenizer()
    demos, prefs, _ = rl_task.make_data(n_demos=4, n_prefs=6)
    bad = [*prefs[:3], {**prefs[3], "chosen": ""}]
    no_prefs = dict(pref_weight=0.0, reward_pretrain_steps=0)  # train_dataset of prompts stands for the pairs
    for kw, settings, line in (
        (dict(preferences=bad), {}, "preferences, row 3, field 'chosen': empty"),
        (dict(preferences=prefs, eval_preferences=bad), {}, "eval_preferences, row 3, field 'chosen': empty"),
        (dict(preferences=prefs, demonstrations=[{"prompt": "say : t1"}]), {},
         "demonstrations, row 0, field 'completion'"),
        (dict(train_dataset=[{"prompt": "say : t1"}, {"prompt": 3}]), no_prefs,
         "prompt-only train_dataset, row 1, field 'prompt'"),
    ):
        kw = {"demonstrations": demos, **kw}
        with pytest.raises(DataError) as e:
            args = rl_args(tmp_path, num_rounds=1, **settings)
            AIHFRLTrainer(rl_task.model(tok), args=args, processing_class=tok, **kw)
        assert str(e.value).startswith(line), str(e.value)


def test_a_reward_model_in_reward_funcs_says_where_it_goes(tmp_path):
    """TRL's reward_funcs takes a model id or object; aihf's takes functions on texts only."""
    tok = rl_task.tokenizer()
    for i, model in enumerate(("runs/x/reward_model", rl_task.model(tok))):
        with pytest.raises(ConfigError) as e:
            _trainer(tmp_path / str(i), reward_funcs=[rl_task.gold_reward, model])
        assert str(e.value) == (
            f"reward_funcs[1] is a {type(model).__name__}, not a callable fn(prompts, completions) (a reward model "
            "goes in reward_model=, as TRL's reward_funcs=<model> does)"
        )
