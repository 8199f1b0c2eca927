"""Fuzzing the control data files and commands: malformed ``.npz`` files (missing keys, wrong
dtypes and shapes, NaN/inf, object arrays, truncated, zero-byte or damaged files, episode lengths
that do not add up) either load or fail with :class:`aihf.DataError`, and random flags to
``aihf control train`` / ``collect`` either pass the start-up checks or fail with one status-2
line -- never another exception, and nothing is written. The number of cases run is printed at
the end of the module (``pytest -s``); AIHF_FUZZ_EXAMPLES=N searches longer (and afresh)."""

import dataclasses
import io
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")

import stable_baselines3  # noqa: E402

from aihf import DataError  # noqa: E402
from aihf.control import cli  # noqa: E402
from aihf.control.config import CollectConfig, ControlConfig  # noqa: E402
from aihf.control.data import load_preferences, load_trajectories  # noqa: E402
from aihf.control.envs import make_env  # noqa: E402
from aihf.control.trainer import ControlTrainer  # noqa: E402

from .helpers import ENV  # noqa: E402

CASES: Counter = Counter()
# Derandomized in the suite, so that every machine runs the same cases (see tests/data/test_fuzz.py).
FUZZ = settings(
    max_examples=int(os.environ.get("AIHF_FUZZ_EXAMPLES", 150)),
    derandomize="AIHF_FUZZ_EXAMPLES" not in os.environ,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
SPACES = make_env(ENV).observation_space, make_env(ENV).action_space
KEYS = ["observations", "actions", "episode_lengths", "rewards", "chosen_observations", "rejected_observations",
        "chosen_actions", "rejected_actions", "chosen_lengths", "rejected_lengths", "x"]  # fmt: skip
DTYPES = ["float32", "float64", "int64", "int8", "uint8", "bool", "complex64", "<U3", "S2", "object"]
SPECIAL = [0.0, -1.0, 1e30, -1e30, np.nan, np.inf, -np.inf, 2.0, -2.5]


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\nfuzzed control cases: {dict(CASES)} (total {sum(CASES.values())})")


@pytest.fixture(scope="module")
def data(pendulum_data):
    return pendulum_data(20)


@st.composite
def arrays(draw):
    """One array of a random dtype and shape (0-3 dims, small), sometimes with NaN/inf/huge values."""
    dtype = draw(st.sampled_from(DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.normal(size=shape) * draw(st.sampled_from([0.5, 3.0, 100.0]))
    if values.size and draw(st.booleans()):
        values.flat[draw(st.integers(0, values.size - 1))] = draw(st.sampled_from(SPECIAL))
    if dtype == "object":
        return np.array([{"a": 1}] * max(1, values.size), dtype=object)
    with np.errstate(all="ignore"):
        return values.astype(dtype) if dtype[0] not in "<S" else values.astype(str).astype(dtype)


@st.composite
def npz_files(draw, folder):
    """Bytes of an .npz: random keys and arrays, a valid file with one array changed, or damaged bytes."""
    kind = draw(st.sampled_from(["random", "mutated", "truncated", "flipped", "empty", "junk"]))
    CASES[f"npz/{kind}"] += 1
    base = draw(st.sampled_from(["demos.npz", "preferences.npz"]))
    with np.load(folder / base, allow_pickle=False) as f:
        valid = {k: f[k] for k in f.files}
    if kind == "random":
        content = {k: draw(arrays()) for k in draw(st.lists(st.sampled_from(KEYS), max_size=6, unique=True))}
    elif kind == "mutated":
        content = dict(valid)
        key = draw(st.sampled_from(sorted(valid)))
        action = draw(st.sampled_from(["drop", "replace", "nan", "shorten", "lengths"]))
        if action == "drop":
            del content[key]
        elif action == "replace":
            content[key] = draw(arrays())
        elif action == "nan":
            value = content[key].astype(np.float64)
            value.flat[draw(st.integers(0, max(0, value.size - 1)))] = draw(st.sampled_from([np.nan, np.inf]))
            content[key] = value
        elif action == "shorten":
            content[key] = content[key][: draw(st.integers(0, max(0, len(content[key]) - 1)))]
        else:  # episode lengths that do not add up to the rows, or are zero/negative
            name = "episode_lengths" if "episode_lengths" in content else "chosen_lengths"
            content[name] = content[name] + draw(st.sampled_from([-100, -1, 1, 7]))
    else:
        content = valid
    buffer = io.BytesIO()
    np.savez(buffer, **content)  # object arrays are pickled in here: the loaders must refuse them
    raw = buffer.getvalue()
    if kind == "truncated":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif kind == "flipped":
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :]
    elif kind == "empty":
        raw = b""
    elif kind == "junk":
        raw = draw(st.binary(max_size=300))
    return base, raw


@FUZZ
@given(draw=st.data())
def test_npz_fuzz(data, draw):
    name, raw = draw.draw(npz_files(data))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(raw)
        for load in (load_trajectories, load_preferences):
            for spaces in ((), SPACES):
                try:
                    load(str(path), *spaces)
                except DataError as e:
                    assert str(e).startswith(str(path)) and "\n" not in str(e), str(e)
        assert os.listdir(folder) == [name]


class _WouldRun(Exception):
    """Raised where a fuzzed command passed every start-up check and would start working."""


NAMES = {"train": {f.name: str(f.type) for f in dataclasses.fields(ControlConfig)},
         "collect": {f.name: str(f.type) for f in dataclasses.fields(CollectConfig)}}  # fmt: skip
UNSAFE = {"output_dir", "result_file", "torch_threads"}  # never written to a random path; threads are global
VALUES = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.sampled_from(
        [
            "0",
            "1",
            "2",
            "5",
            "100",
            "0.5",
            "-1",
            "nan",
            "inf",
            "-inf",
            "1e309",
            "",
            " ",
            "true",
            "no",
            "64,64",
            "0,8",
            "a,b",
            "[64]",
            "aihf",
            "bc",
            "pref_rl",
            "two_stage",
            "ml_irl",
            "state_action",
            "CartPole-v1",
            "NoSuchEnv-v0",
            "x:Y-v0",
            "ci",
            "paper",
            "DATA/demos.npz",
            "DATA/preferences.npz",
            "DATA/meta.json",
            "DATA/missing.npz",
            "\x00",
            "é",
        ]
    ),  # fmt: skip
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=8),
)


# Values of the field's own type, near the edges (most bugs hide there), and anything at all.
TYPED = {
    "int": st.integers(-3, 12) | st.integers(-(2**64), 2**64),
    "float": st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e-300, 1.0, 2.0]),
    "bool": st.sampled_from([True, False]),
}


@st.composite
def flags(draw, command):
    """1-4 flags: mostly real settings with values of their type, sometimes junk or a missing value."""
    fields = {n: t for n, t in NAMES[command].items() if n not in UNSAFE}
    out = []
    for _ in range(draw(st.integers(1, 4))):
        odds = draw(st.integers(0, 19))  # 0: junk name, 1: --preset, 2: no value, 3-6: junk value
        name = (
            draw(st.text(max_size=6)) if odds == 0 else "preset" if odds == 1 else draw(st.sampled_from(sorted(fields)))
        )
        out.append(f"--{name}")
        kind = fields.get(name, "str").split()[0].split("|")[0]
        if odds != 2:
            out.append(draw(TYPED[kind].map(str) if kind in TYPED and odds > 6 else VALUES))
    return out


def _run_fuzzed(tmp_path, monkeypatch, capsys, data, argv, kind):
    CASES[kind] += 1
    out = tmp_path / "out"
    argv = [a.replace("DATA", str(data)) for a in argv] + ["--output_dir", str(out), "--progress", "false"]
    capsys.readouterr()
    try:
        status = cli.main(argv)
    except _WouldRun:
        CASES[f"{kind}/passed start-up checks"] += 1
        return
    except SystemExit as e:  # --help in the fuzzed flags
        assert e.code == 0
        return
    err = capsys.readouterr().err.strip()
    assert status == 2, (argv, status, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)
    assert not out.exists(), argv


@FUZZ
@given(extra=flags("train"))
def test_train_flag_fuzz(data, tmp_path_factory, monkeypatch, capsys, extra):
    monkeypatch.setattr(ControlTrainer, "train", lambda self: (_ for _ in ()).throw(_WouldRun()))
    base = ["train", "--env_id", ENV, "--demonstrations", "DATA/demos.npz", "--preferences", "DATA/preferences.npz"]
    _run_fuzzed(tmp_path_factory.mktemp("t"), monkeypatch, capsys, data, [*base, *extra], "train")


@FUZZ
@given(extra=flags("collect"))
def test_collect_flag_fuzz(data, tmp_path_factory, monkeypatch, capsys, extra):
    def would_run(*args, **kwargs):
        raise _WouldRun()

    monkeypatch.setattr(stable_baselines3, "SAC", would_run)  # collect's first work: the demonstrator
    _run_fuzzed(
        tmp_path_factory.mktemp("c"), monkeypatch, capsys, data, ["collect", "--env_id", ENV, *extra], "collect"
    )
