"""``python -m aihf.tasks.sentiment build-base|build-data ...``: rebuild the shipped base model, or
write the task's data (prompts, demonstrations, preferences, data card) as JSONL."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("build-base", "build-data"):
        print("usage: python -m aihf.tasks.sentiment {build-base,build-data} [--help]", file=sys.stderr)
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
