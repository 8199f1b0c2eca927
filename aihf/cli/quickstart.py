"""``aihf quickstart``: the built-in offline task (:mod:`aihf.tasks.quickstart`), end to end."""

from __future__ import annotations


def run(argv: list[str]) -> int:
    from ..tasks.quickstart import main

    return main(argv)
