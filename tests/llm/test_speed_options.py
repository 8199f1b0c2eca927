"""Speed options give the same losses and gradients as the plain path (issue 11)."""

import copy

import pytest
import torch
from torch import nn

from aihf import ConfigError
from aihf.data import pad_sequences
from aihf.llm.logprobs import pack_rows, sequence_logps
from aihf.tasks.tiny import build_model

from .helpers import reverse_task, task_tokenizer, trainer
from .test_reductions import _assert_same, _grads, _ours_and_trl


def _ragged_batch(tok, seed=0):
    """Rows of very unequal lengths; rows 2 and 3 repeat the prompts of rows 0 and 1 (two pairs)."""
    g = torch.Generator().manual_seed(seed)
    lo = len(tok) - 6  # the task's letters

    def draw(k):
        return (lo + torch.randint(0, 6, (k,), generator=g)).tolist()

    prompts = [draw(k) for k in (6, 1, 2, 4, 2, 3, 5)]
    prompts[2:4] = prompts[0:2]
    completions = [draw(k) for k in (10, 3, 3, 6, 1, 4, 1)]
    return pad_sequences(prompts, completions, tok.pad_token_id)


def test_pack_rows_layout():
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0], [11, 0, 0, 0], [12, 13, 0, 0]])
    mask = (ids != 0).long()
    packed = pack_rows(ids, mask)
    # First fit, longest first: [row 0], [row 1 + row 3], [row 2 + filler].
    assert packed.source_row.tolist() == [[0, 0, 0, 0], [1, 1, 3, 3], [2, -1, -1, -1]]
    assert packed.source_pos.tolist() == [[0, 1, 2, 3], [0, 1, 0, 1], [0, 0, 0, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 0, 1], [0, 0, 1, 2]]
    assert packed.input_ids[:, :].tolist()[:2] == [[5, 6, 7, 8], [9, 10, 12, 13]]
    assert packed.input_ids[2, 0].item() == 11


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
@pytest.mark.parametrize("fast", [{"padding_free": True}, {"shared_prompt_pairs": 2}], ids=["packed", "shared"])
def test_fast_logps_and_grads_equal_padded(arch, fast):
    """Packed rows, or the first two pairs' prompts run once: same log-probs and gradients."""
    tok = task_tokenizer()
    batch = _ragged_batch(tok)
    model = build_model(tok, arch, hidden_size=32, seed=1)
    padded = sequence_logps(model, **batch, return_logits_sums=True)
    padded[0].square().sum().backward()
    grads = _grads(model)
    model.zero_grad()
    packed = sequence_logps(model, **batch, return_logits_sums=True, **fast)
    packed[0].square().sum().backward()
    torch.testing.assert_close(packed[0], padded[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(packed[1], padded[1])
    torch.testing.assert_close(packed[2], padded[2], rtol=1e-5, atol=1e-5)
    for name, g in _grads(model).items():
        # Float rounding relative to the gradient's scale (the squared loss makes it large).
        scale = grads[name].abs().max().item()
        torch.testing.assert_close(g, grads[name], rtol=1e-4, atol=1e-5 * scale + 1e-7, msg=name)


@pytest.mark.parametrize("option", ["padding_free", "prefix_sharing"])
def test_fast_dpo_still_equals_trl(tmp_path, option):
    _assert_same(*_ours_and_trl(tmp_path, ours={option: True}))


def test_prefix_sharing_with_precomputed_reference_equals_trl(tmp_path):
    settings = dict(precompute_ref_log_probs=True)
    _assert_same(*_ours_and_trl(tmp_path, ours=dict(settings, prefix_sharing=True), theirs=settings))


@pytest.mark.parametrize("option", ["padding_free", "prefix_sharing"])
def test_fast_aihf_dpo_step_equals_padded(tmp_path, option):
    """Demonstrations and pairs of very unequal lengths: one AIHF-DPO step, loss and gradients."""
    tok = task_tokenizer()
    demos, prefs = reverse_task(n_demos=8, n_prefs=8, seed=3)
    for i, (d, p) in enumerate(zip(demos, prefs)):
        d["completion"] += " a" * (i * 3 % 11)
        p["chosen"] += " b" * (i * 5 % 9)
        p["rejected"] += " c" * (i % 4)
    results = []
    for fast in (False, True):
        t = trainer(tmp_path / str(fast), tokenizer=tok, demos=demos, prefs=prefs, **{option: fast})
        batch = t.data_collator([t.train_dataset[i] for i in range(8)])
        if fast:  # the packed pass really runs on fewer rows
            assert len(pack_rows(batch["input_ids"], batch["attention_mask"]).input_ids) < len(batch["input_ids"])
        t.model.train()
        loss = t.compute_loss(t.model, batch)
        loss.backward()
        results.append((loss.detach(), _grads(t.model), dict(t._metrics["train"])))
    (loss_a, grads_a, metrics_a), (loss_b, grads_b, metrics_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    for name in grads_a:
        scale = grads_a[name].abs().max().item()
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-5 * scale + 1e-7, msg=name)
    for name in ("rewards/margins", "demo/nll", "num_tokens"):
        assert metrics_b[name] == pytest.approx(metrics_a[name], rel=1e-5, abs=1e-6), name


class _SeesEverything(nn.Module):
    """A causal LM that ignores position ids and attends across the whole row: packing breaks it."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kw):
        return self.inner(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kw)


@pytest.mark.parametrize("option", ["padding_free", "prefix_sharing"])
def test_fast_options_are_refused_for_a_model_that_mixes_packed_sequences(tmp_path, option):
    tok = task_tokenizer()
    model = _SeesEverything(build_model(tok, "llama", hidden_size=32, seed=0))
    with pytest.raises(ConfigError, match=f"{option}=True: this llama model cannot run packed sequences"):
        trainer(tmp_path, tokenizer=tok, model=copy.deepcopy(model), demo_weight=0.0, **{option: True})


def test_bf16_reference_runs_under_the_policy_autocast(tmp_path):
    """With bf16 autocast and a policy still equal to its reference, the rewards are exactly 0
    (a float32 reference pass would differ from the bf16 policy pass by rounding)."""
    t = trainer(tmp_path, demo_weight=0.0, bf16=True, learning_rate=0.0, max_steps=1)
    t.train()
    logged = next(h for h in t.state.log_history if "rewards/chosen" in h)
    assert logged["rewards/chosen"] == 0.0 and logged["rewards/rejected"] == 0.0
    assert logged["logps/chosen"] != 0.0


def test_bf16_loss_within_tolerance_of_float32(tmp_path):
    """bf16 autocast keeps an AIHF-DPO step's loss and gradient direction close to float32's."""
    tok = task_tokenizer()
    results = []
    for bf16 in (False, True):
        t = trainer(tmp_path / str(bf16), tokenizer=tok, bf16=bf16, beta=0.5)
        batch = t.data_collator([t.train_dataset[i] for i in range(8)])
        t.model.train()
        with t.accelerator.autocast():
            loss = t.compute_loss(t.model, batch)
        loss.backward()
        flat = torch.cat([g.flatten() for g in _grads(t.model).values()])
        results.append((loss.item(), flat))
    (loss32, g32), (loss16, g16) = results
    assert loss16 == pytest.approx(loss32, rel=0.05)
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.95
