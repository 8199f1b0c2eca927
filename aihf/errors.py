"""Errors raised on bad user input."""

from __future__ import annotations


class DataError(ValueError):
    """Bad training data, raised before any training starts or any file is written.

    The message names the ``source`` (a file path or dataset name), the ``row`` (``"line 7"``
    for JSONL/CSV files, ``"row 3"`` -- a 0-based index -- for datasets, JSON arrays and
    Parquet files) and the ``field`` at fault, so the user can go straight to it.
    """

    def __init__(self, source: str, row: str | None, field: str | None, problem: str):
        self.source = source
        self.row = row
        self.field = field
        self.problem = problem
        where = ", ".join(part for part in (source, row, f"field '{field}'" if field else None) if part)
        super().__init__(f"{where}: {problem}")


class ConfigError(ValueError):
    """A bad setting or combination of settings, found before any model is loaded or file written.

    The message is one line that names the setting (and the YAML file or flag it came from,
    where known) and says what is accepted. ``aihf`` commands print it and exit with status 2.
    """


class TrainingError(RuntimeError):
    """A run that cannot go on: a non-finite value, or not enough disk for its checkpoints.

    Raised before the step at fault changes any weight or file, so the last checkpoint written
    is intact and resumable. ``aihf`` commands print the one-line message and exit with status 3.
    """


class NonFiniteError(TrainingError):
    """A NaN or infinity in a loss term, a gradient or a reward. The message names the step and the term."""
