"""``python -m aihf.tasks.sentiment build-base|build-data|profile-gold ...``: rebuild the shipped
base model, write the task's data (prompts, demonstrations, preferences, data card) as JSONL, or
measure how informative the gold reward is per continuation length."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("build-base", "build-data", "profile-gold"):
        print("usage: python -m aihf.tasks.sentiment {build-base,build-data,profile-gold} [--help]", file=sys.stderr)
        return 2
    from transformers import HfArgumentParser

    from ...errors import ConfigError

    command, rest = argv[0], argv[1:]
    try:
        if command == "build-base":
            from dataclasses import dataclass, field

            from .base import SHIPPED_BASE, BaseModelConfig, build_base

            @dataclass
            class Output:
                output_dir: str = field(default=SHIPPED_BASE, metadata={"help": "Where the base model goes."})

            config, out = HfArgumentParser(
                (BaseModelConfig, Output), prog="python -m aihf.tasks.sentiment build-base"
            ).parse_args_into_dataclasses(rest)
            build_base(config, out.output_dir)
        elif command == "profile-gold":
            from dataclasses import dataclass, field

            from .data import gold_profile
            from .gold import DEFAULT_GOLD

            @dataclass
            class Profile:
                lengths: str = field(default="16,24,32,48", metadata={"help": "Comma-separated lengths (tokens)."})
                base_model: str | None = field(default=None, metadata={"help": "Default: the shipped base."})
                gold: str = field(default=DEFAULT_GOLD, metadata={"help": "Gold reward 'module:function'."})
                num_prompts: int = field(default=200, metadata={"help": "Prompts (never test prompts)."})
                samples: int = field(default=2, metadata={"help": "Samples per prompt."})

            (p,) = HfArgumentParser(
                Profile, prog="python -m aihf.tasks.sentiment profile-gold"
            ).parse_args_into_dataclasses(rest)
            lengths = [int(x) for x in p.lengths.split(",")]
            gold_profile(lengths, base_model=p.base_model, gold=p.gold, num_prompts=p.num_prompts, samples=p.samples)
        else:
            from .data import TaskConfig, build_task_data

            (config,) = HfArgumentParser(
                TaskConfig, prog="python -m aihf.tasks.sentiment build-data"
            ).parse_args_into_dataclasses(rest)
            build_task_data(config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
