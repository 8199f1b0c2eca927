"""docs/migration.md's scripts (examples/migration/), run as written: each TRL script beside its aihf
port on the same tiny model and data, compared where the reduction says they must agree.

DPO (``config_for("dpo")``, demo_weight=0) and SFT (``config_for("sft")``) equal TRL's DPOTrainer and
SFTTrainer step by step; SFT -> DPO equals TRL's two trainers in a row. RewardTrainer + RLOO against
``rlhf``: the reward model's Bradley-Terry loss on the same initial model and pairs is equal (same
read-out, "last", and the same end token appended); the RL phases draw different samples and are not
compared. The reward model aihf saves is then scored by TRL's RLOOTrainer as a ``reward_funcs`` entry.
"""

import math
import runpy
import sys
from pathlib import Path

import pytest
import torch

trl = pytest.importorskip("trl")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "migration"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def run_script(name, out, *extra):
    """``python examples/migration/<name>.py --output_dir <out> ...`` in this process: its globals."""
    argv, path = sys.argv, list(sys.path)
    sys.argv = [str(EXAMPLES / f"{name}.py"), "--output_dir", str(out), *extra]
    sys.path.insert(0, str(EXAMPLES))
    try:
        return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = argv, path


def logged(trainer, key="loss"):
    """``key`` at every logging step of a trainer (Trainer's state, or AIHF-RL's own log)."""
    state = getattr(trainer, "state", None)
    history = getattr(state, "log_history", None) or getattr(trainer, "log_history", [])
    return [entry[key] for entry in history if key in entry]


def assert_close(ours, theirs, tol=1e-4):
    assert len(ours) == len(theirs) and ours, (ours, theirs)
    for a, b in zip(ours, theirs):
        assert abs(a - b) <= tol, (ours, theirs)


@pytest.fixture(scope="module")
def rlhf_run(tmp_path_factory):
    """aihf_rlhf.py as written: the reward model AIHF-RL learned, in <output_dir>/reward_model."""
    out = tmp_path_factory.mktemp("aihf_rlhf")
    return run_script("aihf_rlhf", out), out


@pytest.mark.learning
def test_dpo_port_equals_trl_dpo(tmp_path):
    trl_run = run_script("trl_dpo", tmp_path / "trl")["trainer"]
    ours = run_script("aihf_dpo", tmp_path / "aihf")["trainer"]
    assert_close(logged(ours), logged(trl_run))
    assert_close(logged(ours, "rewards/margins"), logged(trl_run, "rewards/margins"), 1e-5)
    assert logged(ours)[-1] < math.log(2) - 0.01  # it trained: a loss away from DPO's start
    assert (tmp_path / "aihf" / "model.safetensors").is_file()


@pytest.mark.learning
def test_sft_port_equals_trl_sft(tmp_path):
    trl_run = run_script("trl_sft", tmp_path / "trl")["trainer"]
    ours = run_script("aihf_sft", tmp_path / "aihf")["trainer"]
    assert_close(logged(ours), logged(trl_run))
    assert logged(ours)[-1] < logged(ours)[0] - 0.05


@pytest.mark.learning
def test_sft_then_dpo_port_equals_trl_sft_then_dpo(tmp_path):
    trl_run = run_script("trl_sft_then_dpo", tmp_path / "trl")
    ours = run_script("aihf_sft_then_dpo", tmp_path / "aihf")["result"]
    assert_close(logged(ours.sft_trainer), logged(trl_run["sft"]))
    assert_close(logged(ours.dpo_trainer), logged(trl_run["dpo"]))
    assert (tmp_path / "aihf" / "dpo" / "model.safetensors").is_file()


@pytest.mark.learning
def test_reward_then_rloo_port_fits_the_same_reward_objective(tmp_path, rlhf_run):
    """The first reward-model loss (same initial classifier, all 16 pairs in one batch) is the same
    Bradley-Terry value; the RL phases sample differently and are only checked to run."""
    trl_run = run_script("trl_reward_then_rloo", tmp_path / "trl")
    ours, out = rlhf_run
    theirs = logged(trl_run["reward"])
    assert_close(logged(ours["trainer"], "reward_pretrain/loss"), theirs[:1])
    assert abs(theirs[0] - math.log(2)) > 1e-4  # not the trivial value of equal scores
    assert logged(trl_run["rloo"]) and (tmp_path / "trl" / "rloo" / "model.safetensors").is_file()
    assert (out / "model.safetensors").is_file() and (out / "reward_model" / "config.json").is_file()


# ------------------------------------------------------------------ the learned reward model in TRL
TEXTS = [("reverse : a b c =", " c b a"), ("reverse : d e f =", " d e f"), ("reverse : a c e =", " e c")]


def _trl_scores(tmp_path, reward_funcs, kind="RLOO"):
    """TRL's RLOOTrainer's (or GRPOTrainer's) rewards for TEXTS, one column per reward_funcs entry: the
    function its training step calls (``_calculate_rewards``, TRL 1.x)."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import tiny
    finally:
        sys.path.remove(str(EXAMPLES))
    tok = tiny.tokenizer()
    policy_dir = tmp_path / "policy"
    tiny.model(tok).save_pretrained(policy_dir)
    tok.save_pretrained(policy_dir)
    config_class, trainer_class = getattr(trl, f"{kind}Config"), getattr(trl, f"{kind}Trainer")
    args = config_class(
        output_dir=str(tmp_path / "rloo"),
        per_device_train_batch_size=2,
        num_generations=2,
        report_to="none",
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
    )
    trainer = trainer_class(
        model=str(policy_dir), reward_funcs=reward_funcs, args=args, train_dataset=tiny.prompts(), processing_class=tok
    )
    prompts, completions = [p for p, _ in TEXTS], [c for _, c in TEXTS]
    ids = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in completions]
    rewards = trainer._calculate_rewards([{"prompt": p} for p in prompts], prompts, completions, ids)
    return rewards.cpu(), tok


def _aihf_scores(folder, tok, *, readout=None, framed=True):
    from aihf.llm.reward_model import load_reward_model, reward_scores

    model = load_reward_model(str(folder), tok.pad_token_id).eval()
    prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p, _ in TEXTS]
    completion_ids = [tok(c, add_special_tokens=False)["input_ids"] for _, c in TEXTS]
    end = tok.eos_token_id if framed else None
    with torch.no_grad():
        return reward_scores(model, prompt_ids, completion_ids, tok.pad_token_id, end_token_id=end, readout=readout)


@pytest.mark.parametrize("kind", ["RLOO", "GRPO"])
def test_learned_reward_model_scores_in_trl_as_in_aihf(tmp_path, rlhf_run, kind):
    """rlhf's reward model (read-out "last"): as a folder or a loaded classifier in reward_funcs, TRL's
    RLOOTrainer and GRPOTrainer
    scores prompt + completion as aihf does without the end token; through the example's aihf_reward,
    exactly as aihf scores inside training (one end token appended)."""
    from transformers import AutoModelForSequenceClassification

    folder = rlhf_run[1] / "reward_model"
    helper = _example_reward_func()
    loaded = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    trl_scores, tok = _trl_scores(tmp_path, [str(folder), loaded, helper(str(folder))], kind)
    unframed = _aihf_scores(folder, tok, framed=False)
    framed = _aihf_scores(folder, tok)
    torch.testing.assert_close(trl_scores[:, 0], unframed, rtol=0, atol=1e-5)
    torch.testing.assert_close(trl_scores[:, 1], unframed, rtol=0, atol=1e-5)
    torch.testing.assert_close(trl_scores[:, 2], framed, rtol=0, atol=1e-5)
    assert (framed - unframed).abs().max() > 1e-6  # the end token matters: the framing is not a no-op here


def test_mean_readout_model_is_read_at_the_last_token_by_trl(tmp_path):
    """A reward model saved with aihf's default read-out for new models, "mean": TRL's folder entry reads
    "last" (a different score); the example's aihf_reward reads the saved "mean"."""
    from aihf.llm.reward_model import save_reward_model

    sys.path.insert(0, str(EXAMPLES))
    try:
        import tiny
    finally:
        sys.path.remove(str(EXAMPLES))
    tok = tiny.tokenizer()
    model = tiny.reward_model(tok, seed=5)
    torch.nn.init.normal_(model.score.weight, std=1.0)  # scores far enough apart to tell the read-outs apart
    folder = tmp_path / "mean_rm"
    save_reward_model(model, str(folder), tok, readout="mean")
    trl_scores, tok = _trl_scores(tmp_path, [str(folder), _example_reward_func()(str(folder))])
    last = _aihf_scores(folder, tok, readout="last", framed=False)
    torch.testing.assert_close(trl_scores[:, 0], last, atol=1e-5, rtol=0)
    mean = _aihf_scores(folder, tok)
    torch.testing.assert_close(trl_scores[:, 1], mean, atol=1e-5, rtol=0)
    assert (trl_scores[:, 0] - mean).abs().max() > 1e-3


def test_trl_rloo_with_the_aihf_reward_runs_as_written(tmp_path, rlhf_run):
    g = run_script("trl_rloo_with_aihf_reward", tmp_path / "trl", "--reward_model", str(rlhf_run[1] / "reward_model"))
    rewards = logged(g["trainer"], "rewards/aihf_reward/mean")
    assert len(rewards) == 2 and all(math.isfinite(r) for r in rewards)


def _example_reward_func():
    """``aihf_reward`` of examples/migration/trl_rloo_with_aihf_reward.py (its main part not run)."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        return runpy.run_path(str(EXAMPLES / "trl_rloo_with_aihf_reward.py"), run_name="example")["aihf_reward"]
    finally:
        sys.path.remove(str(EXAMPLES))
