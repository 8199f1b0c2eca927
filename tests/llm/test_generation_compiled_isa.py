"""``generation_backend="compiled"`` under another CPU kernel set (``ATEN_CPU_CAPABILITY``).

Inductor's on-disk graph cache is shared by every process of a user; torch 2.13 does not key it on
the vector width inductor picks from ``ATEN_CPU_CAPABILITY``, so a decode step compiled under
AVX-512 came back under ``avx2`` with 16-lane loops built for 8 lanes: NaN logits, and
``torch.multinomial`` failed ("probability tensor contains inf/nan"). aihf passes the width as an
option (``inductor_options``), which puts it in the cache key.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from aihf.llm import HFGenerator
from aihf.llm.generation import inductor_options
from aihf.tasks.tiny import build_model

from .helpers import task_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# One process: compiled samples vs the static (eager) loop's for the same seed, on a fixed batch.
CHILD = """
import json, warnings
from aihf.llm import HFGenerator
from aihf.llm.generation import inductor_options
from aihf.tasks.tiny import build_model
from tests.llm.helpers import task_tokenizer
import torch

tok = task_tokenizer()
model = build_model(tok, "llama", num_layers=1).eval()  # one layer: fewer kernels to compile
prompts = [tok(t)["input_ids"] for t in ("reverse : a b c =", "reverse : a =", "a")]
kw = dict(pad_token_id=tok.pad_token_id, eos_token_id=None, max_new_tokens=4)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    compiled = HFGenerator(**kw, backend="compiled")(model, prompts, seed=0)
fell_back = any("torch.compile failed" in str(w.message) for w in caught)
print(json.dumps({
    "same": compiled == HFGenerator(**kw, backend="static")(model, prompts, seed=0),
    "fell_back": fell_back,
    "simdlen": inductor_options(torch.device("cpu")).get("cpp.simdlen"),
}))
"""


def _vector_width(capability: str | None) -> int:
    from torch._inductor.cpu_vec_isa import get_isa_from_cpu_capability, invalid_vec_isa, valid_vec_isa_list

    isas = valid_vec_isa_list()
    return get_isa_from_cpu_capability(capability, isas, invalid_vec_isa).bit_width() if isas else 0


def test_the_compiled_step_is_built_for_the_vector_width_of_aten_cpu_capability(monkeypatch):
    seen = []

    def recording_compile(fn, **kwargs):
        seen.append(kwargs)
        return fn

    monkeypatch.setattr(torch, "compile", recording_compile)
    tok = task_tokenizer()
    model = build_model(tok, "llama").eval()
    for capability in ("default", "avx2"):
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", capability)
        generator = HFGenerator(tok.pad_token_id, tok.eos_token_id, max_new_tokens=2, backend="compiled")
        generator(model, [tok("reverse : a =")["input_ids"]], seed=0)
        # The width is a compile option, so it is part of inductor's cache key.
        assert seen[-1]["options"] == {"cpp.simdlen": _vector_width(capability)}
    assert seen[0]["options"] == {"cpp.simdlen": 0}  # default: scalar C++
    assert inductor_options(torch.device("cuda")) == {}


def _run_child(cache_dir, capability: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")}
    env.update(TORCHINDUCTOR_CACHE_DIR=str(cache_dir), PYTHONPATH=os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]))
    if capability is not None:
        env["ATEN_CPU_CAPABILITY"] = capability
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"ATEN_CPU_CAPABILITY={capability}: {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_step_compiled_for_wider_vectors_is_not_reused_under_narrower_ones(tmp_path):
    native = _vector_width(None)
    # avx2 under an AVX-512 build gave NaN; scalar code ("default") under a vector build did not compile.
    narrower = next((c for c in ("avx2", "default") if _vector_width(c) < native), None)
    if narrower is None:
        pytest.skip("this CPU has no vector kernel set narrower than its own")
    # The first process fills a fresh inductor cache with the native build; the second shares it.
    first = _run_child(tmp_path / "inductor", None)
    assert first == {"same": True, "fell_back": False, "simdlen": native}
    second = _run_child(tmp_path / "inductor", narrower)
    assert second == {"same": True, "fell_back": False, "simdlen": _vector_width(narrower)}, narrower
