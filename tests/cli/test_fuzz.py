"""Fuzzing `aihf train` and `aihf quickstart`: random YAML configs and command lines either pass every
start-up check (the test stops the run where the model would load) or fail as a user error -- status
2, one line, no traceback -- and nothing is written. The number of cases run is printed at the end
of the module (``pytest -s``)."""

import io
import os
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aihf.cli import main, train

from .conftest import workdir  # noqa: F401  (a fixture)

CASES: Counter = Counter()
# The suite's search is derandomized, so that CI and every machine run the same cases (a new
# random failure must not turn an unrelated submission red); AIHF_FUZZ_EXAMPLES=N searches afresh.
FUZZ = settings(
    max_examples=int(os.environ.get("AIHF_FUZZ_EXAMPLES", 60)),
    derandomize="AIHF_FUZZ_EXAMPLES" not in os.environ,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
KEYS = [
    "method", "beta", "demo_weight", "pref_weight", "demo_loss", "loss_type", "label_smoothing", "max_steps",
    "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "max_prompt_length",
    "seed", "save_strategy", "save_steps", "save_total_limit", "temperature", "top_p", "top_k", "max_new_tokens",
    "use_peft", "lora_r", "lora_target_modules", "report_to", "lr_scheduler_type", "num_train_epochs", "eos_token",
    "self_play_round_steps", "self_play_regen_prob", "demonstrations", "preferences", "eval_preferences",
    "resume_from_checkpoint", "gguf_file", "dtype", "skip_nonfinite_steps", "implicit_prompt_marker", "logging_steps",
    "bf16", "use_cpu", "warmup_ratio", "weight_decay", "optim", "tokenizer_name_or_path", "ref_model_name_or_path",
    "num_rounds", "num_generations", "reward_learning_rate", "reward_pretrain_steps", "reward_model_name_or_path",
    "freeze_reward_model", "num_ppo_epochs", "num_mini_batches", "cliprange", "rl_prompts", "reward_batch_size",
]  # fmt: skip
VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "true", "no", "1e-3", "nll", "self_play", "dpo", "spin", "sigmoid", "steps", "../x", "~"]),
    st.sampled_from(["aihf_rl", "rlhf", "rft", "sft_then_rlhf", "logistic", "linear", "all", "2", "0.5"]),
    st.text(max_size=12),
    st.lists(st.integers() | st.text(max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
KEY = st.sampled_from(KEYS) | st.text(min_size=1, max_size=10)


class _Loaded(Exception):
    """Raised where the model would load: every start-up check passed."""


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    total = sum(n for kind, n in CASES.items() if kind != "of which valid")
    print(f"\nfuzzed command-line cases: {dict(CASES)} (total {total})")


def _run(argv, out):
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except _Loaded:
            status = None
    text = err.getvalue()
    assert "Traceback" not in text, text[-3000:]
    if status is None:  # a valid configuration: it got as far as loading the model
        CASES["of which valid"] += 1
        return
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert status == 2, (status, text[-3000:])
    assert len(lines) == 1 and lines[0].startswith(f"aihf {argv[0]}: "), text[-3000:]
    assert not os.path.exists(out), f"{out} was written"


@pytest.fixture
def no_model(monkeypatch):
    def stop(*args, **kwargs):
        raise _Loaded

    monkeypatch.setattr(train, "load_models", stop)


@FUZZ
@given(overrides=st.dictionaries(KEY, VALUE, max_size=4), raw=st.none() | st.text(max_size=40), data=st.data())
def test_yaml_config_fuzz(workdir, no_model, overrides, raw, data):  # noqa: F811
    CASES["yaml"] += 1
    config = yaml.safe_load((workdir / "run.yaml").read_text())
    config.update(overrides)
    text = yaml.safe_dump(config) if raw is None else raw
    name = f"fuzz{CASES['yaml']}"
    (workdir / f"{name}.yaml").write_text(text)
    out = workdir / name
    _run(["train", "--config", str(workdir / f"{name}.yaml"), "--output_dir", str(out)], out)


TOKEN = st.one_of(
    st.sampled_from(KEYS).map(lambda k: f"--{k}"),
    st.sampled_from(["--", "-", "--config", "--output_dir", "-x", "--=1", "--beta=0", "--max_steps=2"]),
    VALUE.map(lambda v: v if isinstance(v, str) else yaml.safe_dump(v).splitlines()[0]),
)


@FUZZ
@given(tokens=st.lists(TOKEN, max_size=6))
def test_train_flag_fuzz(workdir, no_model, tokens):  # noqa: F811
    CASES["train flags"] += 1
    if any(t in ("-h", "--help") or t.startswith("--output_dir") for t in tokens):
        return
    out = workdir / f"flags{CASES['train flags']}"
    _run(["train", "--config", str(workdir / "run.yaml"), *tokens, "--output_dir", str(out)], out)


QUICK_KEYS = ["method", "demo_loss", "num_demonstrations", "num_preferences", "num_eval", "max_steps", "learning_rate",
              "batch_size", "seed"]  # fmt: skip


@FUZZ
@given(
    flags=st.dictionaries(st.sampled_from(QUICK_KEYS) | st.text(min_size=1, max_size=6), VALUE, min_size=1, max_size=3)
)
def test_quickstart_flag_fuzz(tmp_path, monkeypatch, flags):
    CASES["quickstart flags"] += 1

    def stop(*args, **kwargs):  # the task's files are about to be written: every check passed
        raise _Loaded

    import aihf.tasks.quickstart as quickstart

    monkeypatch.setattr(quickstart, "make_task", stop)
    argv = ["quickstart"]
    for key, value in flags.items():
        argv += [f"--{key}", value if isinstance(value, str) else yaml.safe_dump(value).splitlines()[0]]
    out = tmp_path / f"qs{CASES['quickstart flags']}"
    _run([*argv, "--output_dir", str(out)], out)
