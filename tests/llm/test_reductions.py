"""The reductions: demo_weight=0 is TRL's DPO, pref_weight=0 with nll is plain causal-LM NLL."""

import copy

import pytest
import torch
from datasets import Dataset

from aihf.llm import AIHFTrainer
from aihf.tasks.tiny import build_model
from tests.device import USE_CPU

from .helpers import config, reverse_task, task_tokenizer, trainer

trl = pytest.importorskip("trl")


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


METRICS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "logits/chosen",
    "logits/rejected",
    "num_tokens",
    "entropy",
    "mean_token_accuracy",
)


def _ours_and_trl(tmp_path, arch="llama", n_pairs=8, ours=None, theirs=None):
    """One DPO-family step of AIHFTrainer (demo_weight=0) and of TRL's DPOTrainer on the same
    pairs, policy and reference: ``(our loss, TRL's loss, our trainer, TRL's trainer, our model, TRL's model)``."""
    tok = task_tokenizer()
    _, prefs = reverse_task(n_prefs=n_pairs, seed=1)
    base = build_model(tok, arch, hidden_size=32, seed=3)
    # Move away from initialisation so that policy and reference differ (non-zero rewards).
    policy = copy.deepcopy(base)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours_model, trl_model = copy.deepcopy(policy), copy.deepcopy(policy)

    our_trainer = AIHFTrainer(
        ours_model,
        ref_model=copy.deepcopy(base),
        args=config(tmp_path / "ours", demo_weight=0.0, beta=0.2, per_device_train_batch_size=n_pairs, **(ours or {})),
        preferences=prefs,
        processing_class=tok,
    )
    trl_args = trl.DPOConfig(
        **{
            "output_dir": str(tmp_path / "trl"),
            "beta": 0.2,
            "bf16": False,
            "gradient_checkpointing": False,
            "max_length": None,
            "per_device_train_batch_size": n_pairs,
            "report_to": "none",
            "use_cpu": USE_CPU,
            **(theirs or {}),
        }
    )
    trl_trainer = trl.DPOTrainer(
        model=trl_model,
        ref_model=copy.deepcopy(base),  # a model object: ref_model=None would make TRL look on the Hub
        args=trl_args,
        train_dataset=Dataset.from_list(prefs),
        processing_class=tok,
    )

    trl_batch = trl_trainer.data_collator([trl_trainer.train_dataset[i] for i in range(n_pairs)])
    our_batch = our_trainer.data_collator([our_trainer.train_dataset[i] for i in range(n_pairs)])
    # Same sequences in the same order: TRL tokenises prompt+answer jointly, we separately.
    assert torch.equal(trl_batch["input_ids"], our_batch["input_ids"])
    assert torch.equal(trl_batch["completion_mask"], our_batch["completion_mask"])

    ours_model.train(), trl_model.train()
    our_loss = our_trainer.compute_loss(ours_model, our_batch)
    trl_loss = trl_trainer.compute_loss(trl_model, trl_batch)
    our_loss.backward(), trl_loss.backward()
    return our_loss, trl_loss, our_trainer, trl_trainer, ours_model, trl_model


def _assert_same(our_loss, trl_loss, ours, theirs, ours_model, trl_model):
    assert our_loss.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    for name in METRICS:
        assert ours._metrics["train"][name][0] == pytest.approx(theirs._metrics["train"][name][0], abs=1e-5), name
    g_ours, g_trl = _grads(ours_model), _grads(trl_model)
    assert g_ours.keys() == g_trl.keys() and g_ours
    for name in g_ours:
        # atol: float32 rounding of gradients of size ~0.1-1, which other kernel sets (avx2) sum in another order
        torch.testing.assert_close(g_ours[name], g_trl[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_dpo_reduction_equals_trl_dpo_trainer(tmp_path, arch):
    our_loss, trl_loss, *rest = _ours_and_trl(tmp_path, arch)
    assert abs(our_loss.item() - 0.6931) > 1e-3  # a non-trivial value
    _assert_same(our_loss, trl_loss, *rest)


@pytest.mark.parametrize(
    "loss_type, label_smoothing", [("ipo", 0.0), ("hinge", 0.0), ("robust", 0.1), ("sigmoid", 0.0)]
)
def test_loss_types_equal_trl_dpo_trainer(tmp_path, loss_type, label_smoothing):
    settings = dict(loss_type=loss_type, label_smoothing=label_smoothing)
    our_loss, trl_loss, *rest = _ours_and_trl(tmp_path, ours=settings, theirs=dict(settings, loss_type=[loss_type]))
    _assert_same(our_loss, trl_loss, *rest)


@pytest.mark.parametrize(
    "loss_type, loss_weights, use_weighting",
    [(["sigmoid", "hinge"], [0.8, 0.2], False), (["sigmoid"], None, True), (["ipo", "sigmoid"], None, True)],
)
def test_loss_mix_and_wpo_weighting_equal_trl_dpo_trainer(tmp_path, loss_type, loss_weights, use_weighting):
    """TRL's loss_weights (a weighted mix of loss types) and use_weighting (WPO), issue 21 item 4."""
    settings = dict(loss_type=loss_type, loss_weights=loss_weights, use_weighting=use_weighting)
    our_loss, trl_loss, *rest = _ours_and_trl(tmp_path, ours=settings, theirs=settings)
    plain, *_ = _ours_and_trl(tmp_path / "plain", ours=dict(loss_type=loss_type[0]), theirs={})
    assert abs(our_loss.item() - plain.item()) > 1e-3  # the option changed the loss
    _assert_same(our_loss, trl_loss, *rest)


@pytest.mark.parametrize("truncation_mode", ["keep_start", "keep_end"])
def test_truncation_mode_equals_trl_dpo_trainer(tmp_path, truncation_mode):
    """TRL's truncation_mode on sequences longer than max_length (issue 21 item 4): the same rows,
    loss and gradients (the batch check is in _ours_and_trl). Prompts are 6 tokens, answers 4."""
    settings = dict(max_length=8, truncation_mode=truncation_mode)
    our_loss, trl_loss, ours, *rest = _ours_and_trl(tmp_path, ours=settings, theirs=settings)
    row = ours.train_dataset.preferences[0]
    kept = (len(row["prompt_ids"]), len(row["chosen_ids"]))
    assert kept == ((6, 2) if truncation_mode == "keep_start" else (4, 4))
    _assert_same(our_loss, trl_loss, ours, *rest)


def test_conservative_dpo_equals_trl_on_one_pair(tmp_path):
    """TRL 1.x's 'sigmoid' ignores label_smoothing; its 'aot' loss sorts the batch's log-ratios
    and then applies the conservative-DPO formula, so on one pair (nothing to sort) it is cDPO."""
    our_loss, trl_loss, *rest = _ours_and_trl(
        tmp_path,
        n_pairs=1,
        ours=dict(loss_type="sigmoid", label_smoothing=0.2),
        theirs=dict(loss_type=["aot"], label_smoothing=0.2),
    )
    plain = torch.nn.functional.softplus(-torch.tensor(rest[0]._metrics["train"]["rewards/margins"][0]))
    assert abs(our_loss.item() - plain.item()) > 1e-3  # the smoothing changed the loss
    _assert_same(our_loss, trl_loss, *rest)


def test_precomputed_reference_equals_trl(tmp_path):
    settings = dict(precompute_ref_log_probs=True)
    our_loss, trl_loss, ours, *rest = _ours_and_trl(tmp_path, ours=settings, theirs=settings)
    assert ours.ref_model is None  # freed after scoring every pair once
    _assert_same(our_loss, trl_loss, ours, *rest)


def test_sft_reduction_equals_causal_lm_nll(tmp_path):
    tok = task_tokenizer(add_bos=True)
    demos, _ = reverse_task(n_demos=8, seed=2)
    demos[0]["completion"] += " a b c d"  # unequal lengths: token mean != mean of sequence means
    model = build_model(tok, "llama", hidden_size=32, seed=4)
    t = trainer(tmp_path, model=model, tokenizer=tok, demos=demos, prefs=[], pref_weight=0.0)
    batch = t.data_collator([t.train_dataset[i] for i in range(8)])
    assert batch["num_pairs"] == 0 and batch["num_demos"] == 8
    loss = t.compute_loss(model, batch)
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)


def test_self_play_with_zero_pref_weight_is_spin(tmp_path):
    """SPIN: -log sigmoid(beta [log pi(yE)/pi_t(yE)] - beta [log pi(y')/pi_t(y')]) with pi_t = the
    policy at round start; at the first step pi = pi_t, so every implicit reward is 0 and the
    loss is log 2 exactly."""
    t = trainer(tmp_path, pref_weight=0.0, demo_loss="self_play", prefs=[])
    batch = t.data_collator([t.train_dataset[i] for i in range(8)])
    t.model.train()
    loss = t.compute_loss(t.model, batch)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-6)
    assert t._metrics["train"]["demo/margins"][0] == pytest.approx(0.0, abs=1e-6)
