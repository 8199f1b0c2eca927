import pytest
import torch
import torch.nn.functional as F

from aihf.data import pad_sequences
from aihf.llm import HFGenerator, sequence_logps, token_logps
from aihf.tasks.tiny import build_model

from .helpers import task_tokenizer


def test_token_logps_equals_log_softmax_gather():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g)
    labels = torch.randint(0, 11, (3, 5), generator=g)
    want = F.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    torch.testing.assert_close(token_logps(logits, labels), want)
    half = token_logps(logits.bfloat16(), labels)
    assert half.dtype == torch.float32
    torch.testing.assert_close(
        half, F.log_softmax(logits.bfloat16().float(), -1).gather(-1, labels[..., None]).squeeze(-1)
    )


def test_sequence_logps_scores_only_completion_tokens():
    tok = task_tokenizer()
    model = build_model(tok, "llama").eval()
    prompt, completion = tok("reverse : a b =")["input_ids"], tok("b a", add_special_tokens=False)["input_ids"]
    batch = pad_sequences([prompt, prompt[:2]], [completion, completion + completion], tok.pad_token_id)
    logps, counts = sequence_logps(model, **batch)
    assert counts.tolist() == [2, 4]
    with torch.no_grad():
        full = torch.tensor([prompt + completion])
        lp = F.log_softmax(model(full).logits[0, :-1], -1)
        manual = sum(lp[len(prompt) - 1 + i, t] for i, t in enumerate(completion))
    assert logps[0].item() == pytest.approx(manual.item(), abs=1e-5)
    # padding changes nothing
    alone = sequence_logps(model, **pad_sequences([prompt], [completion], tok.pad_token_id))[0]
    assert alone.item() == pytest.approx(logps[0].item(), abs=1e-5)


def test_hf_generator_is_seeded_trims_at_eos_and_respects_limits():
    tok = task_tokenizer()
    model = build_model(tok, "gpt2").eval()
    gen = HFGenerator(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, max_new_tokens=6, batch_size=2)
    prompts = [tok("reverse : a b c =")["input_ids"], tok("reverse : a =")["input_ids"], tok("a")["input_ids"]]
    state = torch.random.get_rng_state()
    first = gen(model, prompts, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)  # training randomness untouched
    assert gen(model, prompts, seed=7) == first
    assert len(first) == 3
    for sample in first:
        assert 1 <= len(sample) <= 6
        assert tok.eos_token_id not in sample[:-1]
    assert any(gen(model, prompts, seed=s) != first for s in range(8, 12))
    greedy = HFGenerator(tok.pad_token_id, tok.eos_token_id, max_new_tokens=6, do_sample=False)
    assert greedy(model, prompts, seed=1) == greedy(model, prompts, seed=2)
    assert greedy(model, [], seed=0) == []


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_static_cache_backend_draws_the_same_samples_as_generate(arch):
    """The static-cache loop makes the same random draws in the same order as ``model.generate``:
    for a seed it returns the same tokens (a float-rounding difference in the logits could flip a
    draw only if the uniform number fell within ~1e-6 of a boundary), with left padding, stop
    tokens, temperature/top-k/top-p and greedy decoding."""
    tok = task_tokenizer()
    model = build_model(tok, arch).eval()
    prompts = [tok(t)["input_ids"] for t in ("reverse : a b c =", "reverse : a =", "a", "reverse : c b a b c =")]
    for settings in ({}, {"temperature": 0.7, "top_k": 5, "top_p": 0.9}, {"do_sample": False}):
        plain, static = (
            HFGenerator(tok.pad_token_id, tok.eos_token_id, max_new_tokens=12, backend=b, **settings)
            for b in ("generate", "static")
        )
        want = [plain(model, prompts, seed=s) for s in range(3)]
        assert [static(model, prompts, seed=s) for s in range(3)] == want


@pytest.mark.slow  # torch.compile: ~10 s on a quiet CPU, a minute on a loaded one
def test_compiled_backend_draws_the_same_samples_as_generate():
    tok = task_tokenizer()
    model = build_model(tok, "llama").eval()
    prompts = [tok(t)["input_ids"] for t in ("reverse : a b c =", "reverse : a =", "a")]
    plain = HFGenerator(tok.pad_token_id, tok.eos_token_id, max_new_tokens=10)
    compiled = HFGenerator(tok.pad_token_id, tok.eos_token_id, max_new_tokens=10, backend="compiled")
    for seed in range(3):  # the first call compiles, the later ones reuse it (same batch and cache shape)
        assert compiled(model, prompts, seed=seed) == plain(model, prompts, seed=seed)
    with pytest.raises(ValueError, match="backend"):
        HFGenerator(tok.pad_token_id, tok.eos_token_id, backend="vllm")


def test_compiled_backend_falls_back_to_eager_when_the_compiler_fails(monkeypatch):
    # E.g. no C++ compiler for inductor on a CPU: the samples must not change.
    from torch._dynamo.exc import BackendCompilerFailed

    calls = []

    def broken_compile(fn, **kwargs):
        def compiled(**inputs):
            calls.append(1)
            raise BackendCompilerFailed(fn, RuntimeError("C++ compile error"), None)

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    tok = task_tokenizer()
    model = build_model(tok, "llama").eval()
    prompts = [tok(t)["input_ids"] for t in ("reverse : a b c =", "a")]
    plain = HFGenerator(tok.pad_token_id, tok.eos_token_id, max_new_tokens=8)
    compiled = HFGenerator(tok.pad_token_id, tok.eos_token_id, max_new_tokens=8, backend="compiled")
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*C\\+\\+ compile error.*without compilation"):
        assert compiled(model, prompts, seed=0) == plain(model, prompts, seed=0)
    assert compiled(model, prompts, seed=1) == plain(model, prompts, seed=1)
    assert len(calls) == 1  # one failed compile, then eager for good
