"""Reading raw rows from a ``datasets.Dataset`` or a local file, keeping where each row came from.

Files are parsed here rather than through ``datasets.load_dataset`` so that a bad line can be
reported by its line number (and so that nothing touches the network). Text files are UTF-8,
with or without the byte-order mark Windows tools write; fields of any length are accepted in
every format (long rows are truncated when tokenised, with a warning).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
# The largest value csv.field_size_limit accepts everywhere (it is a C long: 32 bits on Windows).
_CSV_FIELD_SIZE_LIMIT = min(sys.maxsize, 2**31 - 1)


@dataclass(frozen=True)
class Rows:
    """Raw rows of one source. ``labels[i]`` says where row ``i`` is ("line 7", "row 3")."""

    source: str
    records: Sequence[Any]
    labels: Sequence[str] | None = None
    # CSV has no null: an empty cell of an optional column (such as 'reference') means "no value".
    empty_cells_are_missing: bool = False

    def __len__(self) -> int:
        return len(self.records)

    def label(self, i: int) -> str:
        return self.labels[i] if self.labels is not None else f"row {i}"

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        for i, record in enumerate(self.records):
            yield self.label(i), record


def read_rows(source: Any, *, split: str = "train", name: str | None = None) -> Rows:
    """Read rows from ``source``.

    ``source`` is a ``datasets.Dataset`` (or ``DatasetDict``, from which ``split`` is taken), a
    ``Rows`` object, a path to a ``.jsonl``/``.json``/``.csv``/``.parquet`` file or to a folder
    written by ``Dataset.save_to_disk``, or a Hugging Face Hub dataset id.
    Raises :class:`DataError` for a missing or unreadable file, a malformed line, or no rows.
    """
    if isinstance(source, Rows):
        rows = source
    elif isinstance(source, (str, os.PathLike)):
        rows = _read_path(str(source), split=split)
    else:
        rows = _read_dataset(source, split=split, name=name)
    if len(rows) == 0:
        raise DataError(rows.source, None, None, "the dataset has no rows")
    return rows


def _read_dataset(source: Any, *, split: str, name: str | None) -> Rows:
    import datasets

    label = name or "dataset"
    if isinstance(source, (datasets.DatasetDict, dict)):
        if split not in source:
            raise DataError(label, None, None, f"has no split '{split}' (splits: {sorted(source)})")
        source = source[split]
        label = f"{label}[{split}]"
    if isinstance(source, datasets.Dataset):
        return Rows(label, source)
    if isinstance(source, list):
        return Rows(name or "list", source)  # a non-mapping row is reported by row when validated
    raise TypeError(
        f"expected a datasets.Dataset, a list of dicts or a path to a {'/'.join(FILE_SUFFIXES)} file, "
        f"got {type(source).__name__}"
    )


def _read_path(path: str, *, split: str) -> Rows:
    p = Path(path)
    suffix = p.suffix.lower()
    if p.is_dir():
        import datasets

        try:
            loaded = datasets.load_from_disk(path)
        except Exception as e:  # datasets raises several types for a folder that is no dataset
            raise DataError(path, None, None, f"not a folder written by Dataset.save_to_disk ({e})") from e
        return _read_dataset(loaded, split=split, name=path)
    if not p.exists():
        if suffix in FILE_SUFFIXES or p.is_absolute() or path.startswith((".", "~")):
            raise DataError(path, None, None, "file not found")
        return _read_hub(path, split=split)  # "owner/name" or "name"
    if suffix == ".jsonl":
        return _read_jsonl(p)
    if suffix == ".json":
        return _read_json(p)
    if suffix == ".csv":
        return _read_csv(p)
    if suffix == ".parquet":
        return _read_parquet(p)
    raise DataError(path, None, None, f"unsupported file type '{suffix}', expected one of {', '.join(FILE_SUFFIXES)}")


def _read_hub(dataset_id: str, *, split: str) -> Rows:
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, split=split)
    except Exception as e:  # offline, unknown id, missing split...
        raise DataError(
            dataset_id,
            None,
            None,
            f"no such local file or folder, and loading it from the Hugging Face Hub failed: {e}",
        ) from e
    return Rows(f"{dataset_id}[{split}]", ds)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # drops a leading byte-order mark
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError(str(path), f"line {line}", None, f"not valid UTF-8 ({e.reason})") from e


def _read_jsonl(path: Path) -> Rows:
    records, labels = [], []
    # Split on "\n" only: str.splitlines() would also split at U+2028/U+0085, which JSON allows
    # unescaped inside strings.
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(str(path), f"line {number}", None, f"malformed JSON: {e.msg} (column {e.colno})") from e
        if not isinstance(record, dict):
            raise DataError(str(path), f"line {number}", None, f"expected a JSON object, got {_json_type(record)}")
        records.append(record)
        labels.append(f"line {number}")
    return Rows(str(path), records, labels)


def _read_json(path: Path) -> Rows:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(str(path), f"line {e.lineno}", None, f"malformed JSON: {e.msg} (column {e.colno})") from e
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            raise DataError(str(path), None, None, "columns have different lengths")
        keys = list(data)
        data = [dict(zip(keys, values)) for values in zip(*data.values())]
    if not isinstance(data, list):
        raise DataError(
            str(path), None, None, "expected a JSON array of objects (or an object of equal-length columns)"
        )
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise DataError(str(path), f"row {i}", None, f"expected a JSON object, got {_json_type(record)}")
    return Rows(str(path), data)


def _read_csv(path: Path) -> Rows:
    records, labels = [], []
    lines_read = 0

    def lines() -> Iterator[str]:
        # reader.line_num lags by one line when the csv module raises; count the lines ourselves.
        nonlocal lines_read
        for line in io.StringIO(_read_text(path), newline=""):
            lines_read += 1
            yield line

    reader = csv.DictReader(lines(), strict=True)
    # The csv module refuses cells over 128 KiB by default; JSON has no such limit, so neither do
    # we. The limit is process-wide state: restore it afterwards.
    limit = csv.field_size_limit(_CSV_FIELD_SIZE_LIMIT)
    try:
        for record in reader:
            # line_num is the record's last line; a quoted cell may span several lines.
            first = reader.line_num - sum(v.count("\n") for v in record.values() if isinstance(v, str))
            if None in record:  # more cells than header names
                raise DataError(str(path), f"line {first}", None, "more cells than header columns")
            records.append(record)
            labels.append(f"line {first}")
    except csv.Error as e:
        raise DataError(str(path), f"line {lines_read}", None, f"malformed CSV: {e}") from e
    finally:
        csv.field_size_limit(limit)
    return Rows(str(path), records, labels, empty_cells_are_missing=True)


def _read_parquet(path: Path) -> Rows:
    import datasets
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        # A damaged file can still parse: full validation finds invalid UTF-8 in string columns
        # now, rather than as a UnicodeDecodeError when a row is read.
        table.validate(full=True)
        dataset = datasets.Dataset(table)  # decodes the schema's metadata
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError...; metadata UnicodeDecodeError
        raise DataError(str(path), None, None, f"unreadable Parquet file: {e}") from e
    return Rows(str(path), dataset)


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
