"""``aihf bench llm ...``: the LLM alignment benchmark (``aihf.bench.llm``) from the ``aihf`` command."""

from __future__ import annotations

import sys

from ..errors import ConfigError

BENCHMARKS = {
    "llm": "every LLM method on the built-in sentiment task (see 'aihf bench llm --help')",
    "speed": "training and generation throughput against TRL (see 'aihf bench speed --help')",
}


def run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: aihf bench <benchmark> [options]\n\nbenchmarks:")
        for name, text in BENCHMARKS.items():
            print(f"  {name:<6} {text}")
        return 0
    if argv[0] not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark '{argv[0]}': choose one of {', '.join(BENCHMARKS)}")
    if argv[0] == "speed":
        from ..bench.speed import main as speed_main

        return speed_main(argv[1:])
    from ..bench.llm import main

    # Runs launched as subprocesses (--jobs) and the commands --list prints go through `aihf` too.
    return main(argv[1:], prog_argv=[sys.executable, "-m", "aihf", "bench", "llm"])
