"""TRL DPOTrainer arguments and DPOConfig options a ported script sets (issue 21, items 3-4):
taken with TRL's meaning, or refused in one line saying what aihf does instead."""

import pytest
import torch
from transformers import TrainerCallback

from aihf import ConfigError
from aihf.llm import AIHFTrainer
from aihf.llm import trainer as trainer_module
from aihf.tasks.tiny import build_model

from .helpers import config, reverse_task, task_tokenizer


def _dpo(tmp_path, prefs=None, **overrides):
    tok = task_tokenizer()
    _, default_prefs = reverse_task(n_prefs=16, seed=2)
    kwargs = {k: overrides.pop(k) for k in list(overrides) if k in ("eval_dataset", "ref_model", "data_collator",
                                                                      "compute_metrics", "quantization_config")}
    return AIHFTrainer(
        build_model(tok, "llama", hidden_size=32, seed=0),
        args=config(tmp_path, demo_weight=0.0, **overrides),
        train_dataset=default_prefs if prefs is None else prefs,
        processing_class=tok,
        **kwargs,
    )


@pytest.mark.parametrize(
    "argument, match",
    [
        ("data_collator", "data_collator: AIHFTrainer batches pairs and demonstrations itself"),
        ("compute_metrics", "compute_metrics: AIHFTrainer's evaluation returns no predictions"),
        ("quantization_config", "quantization_config is only used when model is a path"),
    ],
)
def test_trainer_arguments_aihf_cannot_honour_are_refused_in_one_line(tmp_path, argument, match):
    with pytest.raises(ConfigError, match=match) as error:
        _dpo(tmp_path, **{argument: object()})
    assert "\n" not in str(error.value)


def test_model_init_kwargs_in_the_config_and_quantization_config_reach_the_loader(tmp_path, monkeypatch):
    tok = task_tokenizer()
    build_model(tok, "llama", hidden_size=32, seed=0).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    seen = []
    real = trainer_module.load_policy

    def spy(model, kwargs, **options):
        seen.append(dict(kwargs or {}))
        return real(model, {k: v for k, v in (kwargs or {}).items() if k != "quantization_config"}, **options)

    monkeypatch.setattr(trainer_module, "load_policy", spy)
    quantization = {"load_in_4bit": True}  # stands in for a BitsAndBytesConfig: only its passing is checked
    _, prefs = reverse_task(n_prefs=8)
    AIHFTrainer(
        str(tmp_path / "model"),
        args=config(tmp_path, demo_weight=0.0, model_init_kwargs={"dtype": "float32", "revision": None}),
        train_dataset=prefs,
        model_init_kwargs={"revision": "main"},  # the trainer's keys win over the config's
        quantization_config=quantization,
    )
    assert seen[0] == {"dtype": "float32", "revision": "main", "quantization_config": quantization}


def test_a_dict_of_eval_datasets_is_evaluated_set_by_set_with_its_prefix(tmp_path):
    _, prefs = reverse_task(n_prefs=12, seed=4)
    tok = task_tokenizer()

    def reference():  # unlike the policy, so that the losses of the two sets differ
        return build_model(tok, "llama", hidden_size=32, seed=1)

    named = _dpo(tmp_path / "named", eval_dataset={"first": prefs[:5], "second": prefs[5:]}, ref_model=reference())
    metrics = named.evaluate()
    for name, rows in (("first", prefs[:5]), ("second", prefs[5:])):
        alone = _dpo(tmp_path / name, eval_dataset=rows, ref_model=reference()).evaluate()
        for key in ("loss", "rewards/accuracies", "entropy", "logps/chosen"):
            assert metrics[f"eval_{name}_{key}"] == pytest.approx(alone[f"eval_{key}"], rel=1e-6), (name, key)
    assert metrics["eval_first_loss"] != metrics["eval_second_loss"]


def test_named_eval_sets_pair_preferences_and_demonstrations_by_name(tmp_path):
    demos, prefs = reverse_task(n_demos=8, n_prefs=8, seed=4)
    tok = task_tokenizer()
    t = AIHFTrainer(
        build_model(tok, "llama", hidden_size=32, seed=0),
        args=config(tmp_path),
        demonstrations=demos,
        preferences=prefs,
        eval_preferences={"a": prefs[:3], "b": prefs[3:6]},
        eval_demonstrations={"a": demos[:3], "b": demos[3:6]},
        processing_class=tok,
    )
    metrics = t.evaluate()
    for name in ("a", "b"):
        # eval_<name>_loss is the training objective, both weights being 1
        total = metrics[f"eval_{name}_loss/pref"] + metrics[f"eval_{name}_demo/nll"]
        assert metrics[f"eval_{name}_loss"] == pytest.approx(total, rel=1e-6)
    with pytest.raises(ConfigError, match="give both as dicts"):
        AIHFTrainer(
            build_model(tok, "llama", hidden_size=32, seed=0),
            args=config(tmp_path / "mixed"),
            demonstrations=demos,
            preferences=prefs,
            eval_preferences={"a": prefs[:3]},
            eval_demonstrations=demos[:3],
            processing_class=tok,
        )


def test_selecting_checkpoints_on_an_eval_loss_with_fewer_terms_is_refused(tmp_path):
    """Issue 21 item 3: eval_loss is the objective over the terms the eval set has; selecting the best
    checkpoint on an eval_loss that lacks a training term is refused, naming the split to select on."""
    demos, prefs = reverse_task(n_demos=8, n_prefs=8, seed=4)
    tok = task_tokenizer()

    def build(**settings):
        return AIHFTrainer(
            build_model(tok, "llama", hidden_size=32, seed=0),
            args=config(tmp_path, eval_strategy="steps", save_strategy="steps", save_steps=2, eval_steps=2, **settings),
            demonstrations=demos,
            preferences=prefs,
            eval_preferences=prefs[:4],
            processing_class=tok,
        )

    with pytest.raises(ConfigError, match=r"metric_for_best_model='loss': eval_loss is the preference \(DPO\) term "
                       r"alone .* select on 'eval_loss/pref'"):
        build(load_best_model_at_end=True)
    t = build(load_best_model_at_end=True, metric_for_best_model="eval_loss/pref", greater_is_better=False)
    t.train()
    assert t.state.best_metric is not None and t.state.best_model_checkpoint is not None


@pytest.mark.parametrize("alpha", [1.0, 0.25])
def test_sync_ref_model_mixes_the_policy_into_the_reference(tmp_path, alpha):
    """TR-DPO: after ref_model_sync_steps steps, ref = alpha * policy + (1 - alpha) * ref."""
    tok = task_tokenizer()
    reference = build_model(tok, "llama", hidden_size=32, seed=0)
    start = {n: p.detach().clone() for n, p in reference.named_parameters()}
    t = _dpo(
        tmp_path, ref_model=reference, sync_ref_model=True, ref_model_mixup_alpha=alpha, ref_model_sync_steps=2,
        max_steps=3, learning_rate=1e-2, lr_scheduler_type="constant",
    )
    policies = {}

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            policies[state.global_step] = {n: p.detach().clone() for n, p in t.model.named_parameters()}

    t.add_callback(Snapshot())
    t.train()
    moved = 0.0
    for name, ref in t.ref_model.named_parameters():
        expected = alpha * policies[2][name] + (1 - alpha) * start[name]  # one sync, at step 2; none at step 3
        torch.testing.assert_close(ref.detach(), expected, rtol=1e-6, atol=1e-7, msg=name)
        moved = max(moved, (ref.detach() - start[name]).abs().max().item())
    assert moved > 1e-3
    if alpha == 1.0:  # step 3 scores the policy of step 2 against a reference equal to it: rewards 0
        step3 = next(h for h in t.state.log_history if h.get("step") == 3 and "loss" in h)
        assert step3["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)


def test_sync_ref_model_reference_is_checkpointed_and_a_peft_reference_refused(tmp_path):
    tok = task_tokenizer()
    t = _dpo(
        tmp_path, ref_model=build_model(tok, "llama", hidden_size=32, seed=0), sync_ref_model=True,
        ref_model_sync_steps=1, max_steps=2, save_strategy="steps", save_steps=2,
    )
    t.train()
    assert (tmp_path / "out" / "checkpoint-2" / trainer_module.SYNCED_REFERENCE).is_file()
    from peft import LoraConfig

    _, prefs = reverse_task(n_prefs=8)
    with pytest.raises(ConfigError, match="sync_ref_model=True needs a reference model of its own"):
        AIHFTrainer(
            build_model(tok, "llama", hidden_size=32, seed=0),
            args=config(tmp_path / "peft", demo_weight=0.0, sync_ref_model=True),
            train_dataset=prefs,
            processing_class=tok,
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
        )


def test_sft_then_dpo_takes_trl_options_for_its_dpo_stage(tmp_path):
    """model_init_kwargs load the SFT stage (the DPO stage starts from its model object); sync_ref_model
    acts on the DPO stage only (SFT has no reference)."""
    from aihf.llm.pipelines import sft_then_dpo
    from aihf.llm.trl_compat import SyncRefModelCallback

    tok = task_tokenizer()
    build_model(tok, "llama", hidden_size=32, seed=0).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    demos, prefs = reverse_task(n_demos=8, n_prefs=8)
    args = config(
        tmp_path, max_steps=2, model_init_kwargs={"dtype": "float32"}, sync_ref_model=True, ref_model_sync_steps=1
    )
    result = sft_then_dpo(str(tmp_path / "model"), args, demos, prefs)
    assert result.sft_trainer.ref_model is None and result.dpo_trainer.args.sync_ref_model
    def syncs(t):
        return [c for c in t.callback_handler.callbacks if isinstance(c, SyncRefModelCallback)]

    assert not syncs(result.sft_trainer) and len(syncs(result.dpo_trainer)) == 1
    policy = dict(result.model.named_parameters())
    # alpha 0.6 per step: the reference follows the policy without reaching it
    gaps = [(ref - policy[n]).abs().max().item() for n, ref in result.dpo_trainer.ref_model.named_parameters()]
    assert max(gaps) > 1e-5
    with pytest.raises(ConfigError, match="no preference term"):
        AIHFTrainer(
            build_model(tok, "llama", hidden_size=32, seed=0),
            args=config(tmp_path / "sft", pref_weight=0.0, sync_ref_model=True),
            demonstrations=demos,
            processing_class=tok,
        )


def test_a_bad_row_of_an_in_memory_dataset_names_which_dataset(tmp_path):
    """TRL's train_dataset= and a dict of eval datasets: the line says which source and set, not 'list'."""
    from aihf import DataError

    demos, prefs = reverse_task(n_demos=4, n_prefs=6, seed=4)
    tok = task_tokenizer()
    bad = [*prefs[:3], {**prefs[3], "chosen": ""}]
    cases = (
        (dict(train_dataset=bad, demonstrations=demos), "training preferences, row 3, field 'chosen': empty"),
        (dict(train_dataset=prefs, demonstrations=demos, eval_dataset={"a": prefs[:2], "b": bad}),
         "evaluation set 'b' preferences, row 3, field 'chosen': empty"),
        (dict(train_dataset=prefs, demonstrations=[{"prompt": "reverse : a b c ="}]),
         "training demonstrations, row 0, field 'completion'"),
    )
    for kw, line in cases:
        with pytest.raises(DataError) as e:
            model = build_model(tok, "llama", hidden_size=32, seed=0)
            AIHFTrainer(model, args=config(tmp_path), processing_class=tok, **kw)
        assert str(e.value).startswith(line), str(e.value)
