"""The reductions: demo_weight=0 is TRL's DPO, pref_weight=0 with nll is plain causal-LM NLL."""

import copy

import pytest
import torch
from datasets import Dataset

from aihf.tasks.tiny import build_model

from .helpers import reverse_task, task_tokenizer, trainer

trl = pytest.importorskip("trl")


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_dpo_reduction_equals_trl_dpo_trainer(tmp_path, arch):
    tok = task_tokenizer()
    _, prefs = reverse_task(n_prefs=8, seed=1)
    base = build_model(tok, arch, hidden_size=32, seed=3)
    # Move away from initialisation so that policy and reference differ (non-zero rewards).
    policy = copy.deepcopy(base)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours_model, trl_model = copy.deepcopy(policy), copy.deepcopy(policy)

    ours = trainer(tmp_path / "ours", model=ours_model, tokenizer=tok, prefs=prefs, demos=[], demo_weight=0.0, beta=0.2)
    ours.ref_model.load_state_dict(base.state_dict())
    trl_args = trl.DPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=0.2,
        bf16=False,
        gradient_checkpointing=False,
        max_length=None,
        per_device_train_batch_size=8,
        report_to="none",
        use_cpu=True,
    )
    theirs = trl.DPOTrainer(
        model=trl_model,
        ref_model=copy.deepcopy(base),  # a model object: ref_model=None would make TRL look on the Hub
        args=trl_args,
        train_dataset=Dataset.from_list(prefs),
        processing_class=tok,
    )

    trl_batch = theirs.data_collator([theirs.train_dataset[i] for i in range(8)])
    our_batch = ours.data_collator([ours.train_dataset[i] for i in range(8)])
    # Same sequences in the same order: TRL tokenises prompt+answer jointly, we separately.
    assert torch.equal(trl_batch["input_ids"], our_batch["input_ids"])
    assert torch.equal(trl_batch["completion_mask"], our_batch["completion_mask"])

    ours_model.train(), trl_model.train()
    our_loss = ours.compute_loss(ours_model, our_batch)
    trl_loss = theirs.compute_loss(trl_model, trl_batch)
    our_loss.backward(), trl_loss.backward()

    assert our_loss.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    assert abs(our_loss.item() - 0.6931) > 1e-3  # a non-trivial value
    for name in (
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
    ):
        assert ours._metrics["train"][name][0] == pytest.approx(theirs._metrics["train"][name][0], abs=1e-5), name
    g_ours, g_trl = _grads(ours_model), _grads(trl_model)
    assert g_ours.keys() == g_trl.keys() and g_ours
    for name in g_ours:
        torch.testing.assert_close(g_ours[name], g_trl[name], rtol=1e-4, atol=1e-7, msg=name)


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
