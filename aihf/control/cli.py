"""``aihf control collect|train|eval|bench``.

Every field of :class:`~aihf.control.config.ControlConfig` (``train``) and
:class:`~aihf.control.config.CollectConfig` (``collect``) is a flag whose help is the field's;
``--preset ci|cpu|long|paper`` replaces the defaults first. Bad data or settings print one line and
exit with status 2 before anything is written; a run stopped by a NaN/inf (:class:`aihf.TrainingError`)
prints one line and exits with status 3, its last checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shlex
import sys

from ..commandline import RESUME_SWEEP, one_line
from ..errors import ConfigError, DataError, TrainingError
from .config import CollectConfig, ControlConfig, OneLineParser, config_from_dict, unused_settings
from .flags import parse_config, parse_flags

COMMANDS = {
    "collect": "train a SAC demonstrator and write demonstrations, a pool and labelled pairs",
    "train": "one run: aihf, pref_rl, ml_irl, two_stage, bc, null_constant, null_untrained or true_reward",
    "eval": "ground-truth and normalised return of a finished run's policy",
    "bench": "the benchmark table (one result file per run; see 'aihf control bench --help')",
}


def train(argv: list[str]) -> dict:
    from .trainer import ControlTrainer

    config, given = parse_flags(ControlConfig, argv, "aihf control train", "One AIHF (or baseline) control run.")
    trainer = ControlTrainer(config)
    # After the settings and data are validated (a failed command prints one line), as `aihf train` words it.
    for name in unused_settings(config, given):
        value = getattr(config, name)
        value = str(value).lower() if isinstance(value, bool) else value  # as typed: --survival_bonus false
        print(
            f"aihf control train: warning: --{name} {value} is not used by --method {config.method}",
            file=sys.stderr,
            flush=True,
        )
    # Once every start-up check has passed (a refused command prints its one line only): on envs that end
    # episodes early the survival bonus can decide the score.
    trainer.announce = lambda line: print(line, file=sys.stderr, flush=True)
    result = trainer.train()
    _note_missing_references("train", trainer.random_return)  # after the run: a failed command prints one line
    keys = ("env_id", "method", "seed", "num_demonstrations", "num_preferences", "survival_bonus", "final")
    out = {k: result[k] for k in keys}
    return {**out, "output_dir": config.output_dir}


def _note_missing_references(command: str, random_return: float | None) -> None:
    """One stderr line when normalised returns will be NaN (user-written data has no meta.json)."""
    if random_return is None:
        sources = (
            "a meta.json beside the demonstrations, or --reference_returns FILE with random_return and expert_return"
        )
        # eval has no --reference_returns: it reads what the run recorded, so the remedy is in train.
        why = f"the run recorded no reference returns (train it with {sources})" if command == "eval" else (
            f"no reference returns ({sources})"
        )
        print(f"aihf control {command}: normalized_return will be null (NaN): {why}", file=sys.stderr)


def collect(argv: list[str]) -> dict:
    from .collect import collect as run

    config = parse_config(CollectConfig, argv, "aihf control collect", "Demonstrations and preferences for one env.")
    meta = run(config, command="aihf control collect " + shlex.join(argv))
    check = meta.get("demonstrator_check") or {}
    if check.get("message"):  # weak, or refused and kept with --accept_weak_demonstrator
        kept = " (kept: --accept_weak_demonstrator)" if check["verdict"] == "refused" else ""
        print(f"aihf control collect: warning: {check['message']}{kept}", file=sys.stderr)
    return {k: v for k, v in meta.items() if k != "config"}


def evaluate(argv: list[str]) -> dict:
    from safetensors import SafetensorError

    from .envs import episode_summary, evaluate_episodes, normalized_score
    from .trainer import load_policy

    parser = OneLineParser(prog="aihf control eval", description=COMMANDS["eval"])
    parser.add_argument("--run_dir", required=True, help="output_dir of a finished 'aihf control train' run.")
    parser.add_argument("--episodes", type=int, default=10, help="Deterministic episodes (default: 10).")
    parser.add_argument("--seed", type=int, default=12345, help="Seed of the first episode (default: 12345).")
    parser.add_argument(
        "--video",
        default=None,
        help="Also render the first episode's seed to this .mp4 (off-screen: set MUJOCO_GL=egl for MuJoCo envs "
        "on a machine without a display; needs imageio and imageio-ffmpeg, the 'video' extra).",
    )
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"argument --episodes: must be >= 1, got {args.episodes}")
    if not 0 <= args.seed <= 2**32 - 1:
        parser.error(f"argument --seed: must be in [0, 2**32 - 1], got {args.seed}")
    path = os.path.join(args.run_dir, "result.json")
    try:
        with open(path) as f:
            result = json.load(f)
        saved = result["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"run_dir={args.run_dir!r}: no finished run there ({e})") from None
    config = config_from_dict(ControlConfig, saved, path).validate(path)
    # The references come from the result, not the data files: a run folder evaluates anywhere.
    references = [result.get(k) for k in ("random_return", "expert_return")]
    if not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in references):
        references = [None, None]
    policy = os.path.join(args.run_dir, "policy.safetensors")
    if not os.path.isfile(policy):
        raise ConfigError(f"run_dir={args.run_dir!r}: no policy.safetensors beside result.json")
    try:
        act = load_policy(config, policy)
    except (OSError, RuntimeError, SafetensorError) as e:  # a truncated file, or weights of other shapes
        why = " ".join(str(e).split())[:300] or type(e).__name__
        raise ConfigError(f"{policy}: not the policy of this run's settings ({why})") from None
    _note_missing_references("eval", references[0])  # after the last error: a failed command prints one line
    played = evaluate_episodes(act, config.env_id, args.episodes, args.seed)
    video = {}
    if args.video:
        frames = record_video(act, config.env_id, args.video, args.seed)
        video = {"video": args.video, "video_frames": frames}
    return {
        **video,
        "env_id": config.env_id,
        "method": config.method,
        "episodes": args.episodes,
        **episode_summary(played),
        "normalized_return": normalized_score(played["returns"], *references),
    }



def record_video(act, env_id: str, path: str, seed: int) -> int:
    """Render one episode of ``act(obs) -> action`` (reset with ``seed``) to the video file ``path``
    at the env's ``render_fps``, atomically; returns the number of frames. Raises
    :class:`aihf.ConfigError` (one line) when the writer is not installed or the env cannot render."""
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (imageio's mp4 writer)
    except ImportError as e:
        raise ConfigError(f"video={path!r} needs imageio and imageio-ffmpeg: pip install 'aihf[video]' ({e})") from None
    import gymnasium as gym

    try:
        env = gym.make(env_id, render_mode="rgb_array")
        # The default MuJoCo camera stands still and a running robot leaves the frame; follow it with
        # the model's "track" camera when it has one (HalfCheetah, Hopper, Walker2d, ...).
        model = getattr(env.unwrapped, "model", None)
        if model is not None and any(model.camera(i).name == "track" for i in range(model.ncam)):
            env.close()
            env = gym.make(env_id, render_mode="rgb_array", camera_name="track")
        obs, _ = env.reset(seed=seed)
        frames = [env.render()]
    except Exception as e:  # the GL back end's errors have no common type
        raise ConfigError(
            f"video={path!r}: {env_id} cannot render off-screen here ({type(e).__name__}: {e}); "
            "set MUJOCO_GL=egl (or osmesa) for MuJoCo envs on a machine without a display"
        ) from None
    done = False
    while not done:
        obs, _, terminated, truncated, _ = env.step(act(obs))
        frames.append(env.render())
        done = terminated or truncated
    fps = env.metadata.get("render_fps") or 30
    env.close()
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{ext or '.mp4'}"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    imageio.mimwrite(tmp, frames, fps=fps, macro_block_size=1)
    os.replace(tmp, path)
    return len(frames)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``aihf control ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: aihf control <command> [options]\n\ncommands:")
        for name, text in COMMANDS.items():
            print(f"  {name:<8} {text}")
        return 0
    if argv[0] not in COMMANDS:
        from ..commandline import unknown_command

        print(unknown_command("aihf control", argv[0], list(COMMANDS)), file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "bench":
            from .bench import main as bench_main

            return bench_main(rest)
        out = {"collect": collect, "train": train, "eval": evaluate}[command](rest)
    except (ConfigError, DataError) as e:
        print(f"aihf control {command}: {one_line(str(e))}", file=sys.stderr)
        return 2
    except TrainingError as e:  # a non-finite value; the run's last checkpoint is intact
        print(f"aihf control {command}: {one_line(str(e))}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:  # Ctrl-C: one line, not torch's traceback; checkpoints are written atomically
        resume = {
            "train": ": rerun the same command to continue from the last finished round",
            "bench": f": {RESUME_SWEEP}, stopped ones resume from their last finished round",
        }.get(command, "")
        print(f"aihf control {command}: interrupted{resume}", file=sys.stderr)
        return 130
    from .envs import json_safe

    print(json.dumps(json_safe(out), indent=1, default=float))
    return 0


if __name__ == "__main__":
    from ..commandline import stdout_closed

    try:
        status = main()
    except BrokenPipeError:  # `python -m aihf.control.cli bench --list | head`
        status = stdout_closed()
    raise SystemExit(status)
