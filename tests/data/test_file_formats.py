"""Files as Windows tools and real datasets write them: byte-order marks and megabyte fields."""

from __future__ import annotations

import csv
import io
import json
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aihf.data import prepare_demonstrations, prepare_preferences, read_rows

ROWS = [
    {"prompt": "hello", "chosen": " good", "rejected": " bad"},
    {"prompt": "how are you", "chosen": " fine", "rejected": " no"},
]


def write(path, rows, *, encoding="utf-8"):
    """Write ``rows`` to ``path`` in the format its suffix names."""
    suffix = path.suffix
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path
    if suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    elif suffix == ".json":
        text = json.dumps(rows, ensure_ascii=False, indent=1)
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\r\n")  # as Excel does
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_utf8_byte_order_mark_is_skipped(tmp_path, tokenizer, suffix):
    plain = write(tmp_path / f"plain{suffix}", ROWS)
    marked = write(tmp_path / f"marked{suffix}", ROWS, encoding="utf-8-sig")
    assert marked.read_bytes().startswith(b"\xef\xbb\xbf")
    assert list(read_rows(marked).records) == list(read_rows(plain).records)
    assert set(read_rows(marked).records[0]) == {"prompt", "chosen", "rejected"}  # not "\ufeffprompt"
    ours, reference = prepare_preferences(marked, tokenizer), prepare_preferences(plain, tokenizer)
    for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
        assert ours[column] == reference[column]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_megabyte_fields_are_accepted_and_truncation_warns_once(tmp_path, tokenizer, suffix):
    long_prompt = "the cat sat on the mat " * 46_000  # 1.06 MB, 276k tokens
    assert len(long_prompt) > 2**20
    rows = [
        {"prompt": long_prompt, "completion": " yes"},
        {"prompt": "hello", "completion": " good"},
        {"prompt": "how are you", "completion": " fine " + "no " * 100_000},  # a 300 kB completion
    ]
    path = write(tmp_path / f"long{suffix}", rows)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = prepare_demonstrations(path, tokenizer, max_length=16, max_prompt_length=8)
    truncation = [str(w.message) for w in caught if "truncated" in str(w.message)]
    assert len(truncation) == 1 and "2 of 3 rows truncated" in truncation[0], truncation
    assert [len(p) for p in ds["prompt_ids"]] == [8, 1, 3]
    assert [len(p) + len(c) for p, c in zip(ds["prompt_ids"], ds["completion_ids"])] == [10, 3, 16]
    assert tokenizer.decode(ds["prompt_ids"][0]) == "the mat the cat sat on the mat"  # the prompt's end
