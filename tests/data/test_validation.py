"""Bad training data is rejected up front with an error naming the source, the row and the field.

Every test goes through the public API (``prepare_demonstrations``, ``prepare_preferences`` or
``read_rows``) and checks the ``source``/``row``/``field`` attributes of :class:`aihf.DataError`
exactly, plus that the message shows all three. Positive controls at the end prove that the
same rows pass once fixed, so these tests can fail.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aihf
from aihf.data import Rows, prepare_demonstrations, prepare_preferences, read_rows

GOOD_DEMO = {"prompt": "hello", "completion": " good"}
GOOD_PREF = {"prompt": "how are you", "chosen": " fine", "rejected": " bad"}


def user(content: str) -> dict:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict:
    return {"role": "assistant", "content": content}


def write_lines(path: Path, lines: list) -> Path:
    """Write a JSONL file; dicts are dumped, strings are written verbatim (blank lines included)."""
    text = "\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


def bad_third_line(tmp_path: Path, good: dict, bad, name: str = "data.jsonl") -> Path:
    """A JSONL file whose line 1 is good, line 2 is blank and line 3 is ``bad``."""
    return write_lines(tmp_path / name, [good, "", bad])


def check(err: BaseException, source: str, row: str | None, field: str | None) -> None:
    assert type(err) is aihf.DataError
    assert isinstance(err, ValueError)
    assert err.source == source
    assert err.row == row
    assert err.field == field
    msg = str(err)
    assert msg.startswith(source)
    if row is not None:
        assert f", {row}" in msg
    if field is not None:
        assert f"field '{field}'" in msg
    else:
        assert "field '" not in msg
    assert err.problem and msg.endswith(err.problem)


# ---------------------------------------------------------------------------------------------
# Demonstration rows (JSONL, bad row on line 3 after a blank line 2)
# ---------------------------------------------------------------------------------------------

BAD_DEMOS = {
    "missing-completion": ({"prompt": "hello"}, "completion"),
    "missing-prompt": ({"completion": "good"}, "prompt"),
    "misspelt-column": ({"prompt": "hello", "response": "good"}, "completion"),
    "completion-number": ({"prompt": "hello", "completion": 5}, "completion"),
    "completion-null": ({"prompt": "hello", "completion": None}, "completion"),
    "completion-dict": ({"prompt": "hello", "completion": {"text": "good"}}, "completion"),
    "completion-bool": ({"prompt": "hello", "completion": True}, "completion"),
    "prompt-number": ({"prompt": 3.5, "completion": "good"}, "prompt"),
    "prompt-null": ({"prompt": None, "completion": "good"}, "prompt"),
    "empty-completion": ({"prompt": "hello", "completion": ""}, "completion"),
    "whitespace-completion": ({"prompt": "hello", "completion": "  \n\t "}, "completion"),
    "unknown-role": (
        {"prompt": [user("hello"), {"role": "narrator", "content": "hi"}], "completion": [assistant("good")]},
        "prompt[1].role",
    ),
    "role-not-string": (
        {"prompt": [{"role": 1, "content": "hello"}], "completion": [assistant("good")]},
        "prompt[0].role",
    ),
    "message-missing-content": (
        {"prompt": [{"role": "system", "content": "be nice"}, {"role": "user"}], "completion": [assistant("good")]},
        "prompt[1].content",
    ),
    "message-missing-role": (
        {"prompt": [user("hello")], "completion": [{"content": "good"}]},
        "completion[0].role",
    ),
    "message-content-null": (
        {"prompt": [user("hello")], "completion": [{"role": "assistant", "content": None}]},
        "completion[0].content",
    ),
    "message-not-a-dict": ({"prompt": ["hello"], "completion": [assistant("good")]}, "prompt[0]"),
    "completion-messages-all-empty": ({"prompt": [user("hello")], "completion": [assistant("  ")]}, "completion"),
    "completion-empty-message-list": ({"prompt": [user("hello")], "completion": []}, "completion"),
    "mixed-string-prompt-message-completion": ({"prompt": "hello", "completion": [assistant("good")]}, "completion"),
    "mixed-message-prompt-string-completion": ({"prompt": [user("hello")], "completion": "good"}, "completion"),
    "messages-last-not-assistant": ({"messages": [user("hello"), assistant("good"), user("how")]}, "messages[2].role"),
    "messages-last-assistant-empty": ({"messages": [user("hello"), assistant(" ")]}, "messages[1].content"),
    "messages-a-string": ({"messages": "hello good"}, "messages"),
    "messages-empty-list": ({"messages": []}, "messages"),
    "messages-unknown-role": (
        {"messages": [{"role": "human", "content": "hi"}, assistant("good")]},
        "messages[0].role",
    ),
    "messages-null": ({"messages": None}, "messages"),
    # Found by the Parquet fuzz test: chat templates refuse an empty conversation.
    "messages-only-the-answer": ({"messages": [assistant("good")]}, "messages"),
    "conv-empty-prompt-list": ({"prompt": [], "completion": [assistant("good")]}, "prompt"),
}


@pytest.mark.parametrize("bad, field", list(BAD_DEMOS.values()), ids=list(BAD_DEMOS))
def test_bad_demonstration_row_names_source_line_and_field(tmp_path, tokenizer, bad, field):
    path = bad_third_line(tmp_path, GOOD_DEMO, bad)
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(path, tokenizer)
    check(e.value, str(path), "line 3", field)


# ---------------------------------------------------------------------------------------------
# Preference rows
# ---------------------------------------------------------------------------------------------

HH = "\n\nHuman: hello\n\nAssistant:"

BAD_PREFS = {
    "missing-chosen": ({"prompt": "hello", "rejected": "bad"}, "chosen"),
    "missing-rejected": ({"prompt": "hello", "chosen": "good"}, "rejected"),
    "chosen-number": ({"prompt": "hello", "chosen": 1, "rejected": "bad"}, "chosen"),
    "rejected-null": ({"prompt": "hello", "chosen": "good", "rejected": None}, "rejected"),
    "chosen-dict": ({"prompt": "hello", "chosen": {"text": "good"}, "rejected": "bad"}, "chosen"),
    "prompt-number": ({"prompt": 7, "chosen": "good", "rejected": "bad"}, "prompt"),
    "empty-chosen": ({"prompt": "hello", "chosen": "", "rejected": "bad"}, "chosen"),
    "empty-rejected": ({"prompt": "hello", "chosen": "good", "rejected": ""}, "rejected"),
    "whitespace-rejected": ({"prompt": "hello", "chosen": "good", "rejected": " \n "}, "rejected"),
    "chosen-equals-rejected": ({"prompt": "hello", "chosen": "good", "rejected": "good"}, "rejected"),
    "implicit-no-shared-prefix": ({"chosen": "good answer", "rejected": "bad answer"}, "chosen"),
    "implicit-only-whitespace-shared": ({"chosen": " good", "rejected": " bad"}, "chosen"),
    "implicit-identical": ({"chosen": HH + " good", "rejected": HH + " good"}, "rejected"),
    "implicit-chosen-empty-after-prefix": ({"chosen": HH, "rejected": HH + " bad"}, "chosen"),
    "implicit-rejected-empty-after-prefix": ({"chosen": HH + " good", "rejected": HH + "  "}, "rejected"),
    "implicit-reference-other-prompt": (
        {"chosen": HH + " good", "rejected": HH + " bad", "reference": "\n\nHuman: hi\n\nAssistant: fine"},
        "reference",
    ),
    "implicit-reference-is-only-prompt": (
        {"chosen": HH + " good", "rejected": HH + " bad", "reference": HH + " "},
        "reference",
    ),
    "empty-reference": ({"prompt": "hello", "chosen": "good", "rejected": "bad", "reference": ""}, "reference"),
    "reference-number": ({"prompt": "hello", "chosen": "good", "rejected": "bad", "reference": 0}, "reference"),
    "reference-kind-differs": (
        {"prompt": "hello", "chosen": "good", "rejected": "bad", "reference": [assistant("fine")]},
        "reference",
    ),
    "mixed-chosen-string-rejected-messages": (
        {"prompt": "hello", "chosen": "good", "rejected": [assistant("bad")]},
        "rejected",
    ),
    "mixed-prompt-string-answers-messages": (
        {"prompt": "hello", "chosen": [assistant("good")], "rejected": [assistant("bad")]},
        "chosen",
    ),
    "conv-unknown-role-in-chosen": (
        {"prompt": [user("hello")], "chosen": [{"role": "robot", "content": "good"}], "rejected": [assistant("bad")]},
        "chosen[0].role",
    ),
    "conv-prompt-message-missing-content": (
        {"prompt": [user("hello"), {"role": "user"}], "chosen": [assistant("good")], "rejected": [assistant("bad")]},
        "prompt[1].content",
    ),
    "conv-identical": (
        {"prompt": [user("hello")], "chosen": [assistant("good")], "rejected": [assistant("good")]},
        "rejected",
    ),
    "conv-implicit-no-shared-messages": (
        {"chosen": [user("hello"), assistant("good")], "rejected": [user("how"), assistant("bad")]},
        "chosen",
    ),
    "conv-implicit-chosen-is-prefix": (
        {
            "chosen": [user("hello"), assistant("good")],
            "rejected": [user("hello"), assistant("good"), user("how"), assistant("fine")],
        },
        "chosen",
    ),
    "conv-implicit-reference-other-prompt": (
        {
            "chosen": [user("hello"), assistant("good")],
            "rejected": [user("hello"), assistant("bad")],
            "reference": [user("how"), assistant("fine")],
        },
        "reference",
    ),
    "conv-empty-prompt-list": (
        {"prompt": [], "chosen": [assistant("good")], "rejected": [assistant("bad")]},
        "prompt",
    ),
    "conv-implicit-reference-is-only-prompt": (
        {
            "chosen": [user("hello"), assistant("good")],
            "rejected": [user("hello"), assistant("bad")],
            "reference": [user("hello")],
        },
        "reference",
    ),
}


@pytest.mark.parametrize("bad, field", list(BAD_PREFS.values()), ids=list(BAD_PREFS))
def test_bad_preference_row_names_source_line_and_field(tmp_path, tokenizer, bad, field):
    path = bad_third_line(tmp_path, GOOD_PREF, bad)
    with pytest.raises(aihf.DataError) as e:
        prepare_preferences(path, tokenizer)
    check(e.value, str(path), "line 3", field)


def test_implicit_pair_without_marker_or_word_boundary_is_rejected(tokenizer):
    # With the HH marker disabled and no shared word, no prompt can be inferred.
    rows = [{"chosen": "yes", "rejected": "no"}]
    with pytest.raises(aihf.DataError) as e:
        prepare_preferences(rows, tokenizer, implicit_prompt_marker=None)
    check(e.value, "list", "row 0", "chosen")


# ---------------------------------------------------------------------------------------------
# Length problems found while tokenising
# ---------------------------------------------------------------------------------------------


def test_prompt_leaving_no_room_for_the_completion(tmp_path, tokenizer):
    path = bad_third_line(tmp_path, GOOD_DEMO, {"prompt": "the cat sat on the mat", "completion": "yes"})
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(path, tokenizer, max_length=4, max_prompt_length=None)
    check(e.value, str(path), "line 3", "prompt")
    assert "max_length=4" in str(e.value)


def test_preference_prompt_leaving_no_room_for_the_answers(tokenizer):
    rows = [GOOD_PREF, {"prompt": "how are you", "chosen": " fine", "rejected": " bad"}]
    with pytest.raises(aihf.DataError) as e:
        prepare_preferences(rows, tokenizer, max_length=3, max_prompt_length=None, name="prefs")
    # Row 0 is first and equally long: the first bad row is reported.
    check(e.value, "prefs", "row 0", "prompt")


def test_prompt_exactly_filling_max_length_is_rejected(tokenizer):
    # 3 prompt tokens with max_length=3: not a single completion token would fit.
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(
            [{"prompt": "how are you", "completion": " fine"}], tokenizer, max_length=3, max_prompt_length=None
        )
    check(e.value, "list", "row 0", "prompt")


def test_empty_prompt_without_bos_token(tmp_path, tokenizer):
    # The fixture tokenizer does not *prepend* BOS but still defines one, which an empty prompt
    # falls back to (see the control below); without any BOS token the row cannot be used.
    tokenizer.bos_token = None
    assert tokenizer.bos_token_id is None
    path = bad_third_line(tmp_path, GOOD_DEMO, {"prompt": "", "completion": "good"})
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(path, tokenizer)
    check(e.value, str(path), "line 3", "prompt")


def test_empty_prompt_falls_back_to_bos(tokenizer):
    ds = prepare_demonstrations([{"prompt": "", "completion": "good"}], tokenizer)
    assert ds["prompt_ids"] == [[tokenizer.bos_token_id]]


# ---------------------------------------------------------------------------------------------
# Chat templates
# ---------------------------------------------------------------------------------------------


def test_conversational_demo_without_chat_template(tmp_path, tokenizer):
    tokenizer.chat_template = None
    path = bad_third_line(tmp_path, GOOD_DEMO, {"prompt": [user("hello")], "completion": [assistant("good")]})
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(path, tokenizer)
    check(e.value, str(path), "line 3", "completion")
    assert "chat template" in str(e.value)


def test_conversational_messages_demo_without_chat_template(tokenizer):
    tokenizer.chat_template = None
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations([GOOD_DEMO, {"messages": [user("hello"), assistant("good")]}], tokenizer)
    check(e.value, "list", "row 1", "messages")  # the row's own field: it has no 'completion'
    assert "chat template" in str(e.value)


def test_conversational_preference_without_chat_template(tokenizer):
    tokenizer.chat_template = None
    rows = [{"chosen": [user("hello"), assistant("good")], "rejected": [user("hello"), assistant("bad")]}]
    with pytest.raises(aihf.DataError) as e:
        prepare_preferences(rows, tokenizer)
    check(e.value, "list", "row 0", "chosen")


def test_chat_template_rendering_the_prompt_differently_cannot_be_split(tokenizer):
    # This template only adds the turn header for the last message, so the prompt rendered on
    # its own is not a prefix of prompt + answer.
    tokenizer.chat_template = (
        "{% for m in messages %}{% if loop.last %}<{{ m['role'] }}> {% endif %}{{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<assistant> {% endif %}"
    )
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations([{"prompt": [user("hello")], "completion": [assistant("good")]}], tokenizer)
    check(e.value, "list", "row 0", "completion")


# ---------------------------------------------------------------------------------------------
# Files that cannot be read
# ---------------------------------------------------------------------------------------------


def test_malformed_json_line(tmp_path, tokenizer):
    path = bad_third_line(tmp_path, GOOD_DEMO, '{"prompt": "hello", "completion": ')
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(path, tokenizer)
    check(e.value, str(path), "line 3", None)
    assert "malformed JSON" in str(e.value)


@pytest.mark.parametrize(
    "line", ['["hello", "good"]', '"hello good"', "42", "null"], ids=["array", "string", "number", "null"]
)
def test_jsonl_line_that_is_not_an_object(tmp_path, tokenizer, line):
    path = bad_third_line(tmp_path, GOOD_PREF, line)
    with pytest.raises(aihf.DataError) as e:
        prepare_preferences(path, tokenizer)
    check(e.value, str(path), "line 3", None)
    assert "expected a JSON object" in str(e.value)


def test_jsonl_invalid_utf8_names_the_line(tmp_path, tokenizer):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"prompt": "hello", "completion": "good"}\n\n{"prompt": "h\xffi", "completion": "good"}\n')
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(path, tokenizer)
    check(e.value, str(path), "line 3", None)


def test_malformed_json_file_reports_decoder_line(tmp_path, tokenizer):
    path = tmp_path / "data.json"
    path.write_text('[\n  {"prompt": "hello", "completion": "good"},\n  {"prompt": "hello" "completion": "good"}\n]\n')
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(path, tokenizer)
    check(e.value, str(path), "line 3", None)


def test_json_array_element_that_is_not_an_object(tmp_path, tokenizer):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([GOOD_DEMO, ["hello", "good"]]))
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(path, tokenizer)
    check(e.value, str(path), "row 1", None)


def test_json_array_bad_record_is_reported_by_row_index(tmp_path, tokenizer):
    path = tmp_path / "data.json"
    path.write_text(
        json.dumps([GOOD_PREF, GOOD_PREF, {"prompt": "hello", "chosen": "good", "rejected": "good"}], indent=2)
    )
    with pytest.raises(aihf.DataError) as e:
        prepare_preferences(path, tokenizer)
    check(e.value, str(path), "row 2", "rejected")


def test_json_columns_of_different_lengths(tmp_path, tokenizer):
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"prompt": ["hello", "how"], "completion": ["good"]}))
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(path, tokenizer)
    check(e.value, str(path), None, None)


@pytest.mark.parametrize("content", ['"just a string"', "{}", '{"prompt": "hello", "completion": "good"}'])
def test_json_file_that_is_no_table(tmp_path, tokenizer, content):
    path = tmp_path / "data.json"
    path.write_text(content)
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(path, tokenizer)
    check(e.value, str(path), None, None)


@pytest.mark.parametrize(
    "name, content",
    [
        ("empty.jsonl", ""),
        ("blank.jsonl", "\n  \n\n"),
        ("empty.json", "[]"),
        ("header-only.csv", "prompt,completion\n"),
    ],
)
def test_empty_file(tmp_path, tokenizer, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(path, tokenizer)
    check(e.value, str(path), None, None)
    assert "no rows" in str(e.value)


def test_empty_list(tokenizer):
    with pytest.raises(aihf.DataError) as e:
        prepare_preferences([], tokenizer)
    check(e.value, "list", None, None)


def test_empty_dataset(tokenizer):
    ds = datasets.Dataset.from_dict({"prompt": [], "completion": []})
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(ds, tokenizer, name="my-demos")
    check(e.value, "my-demos", None, None)


def test_missing_file(tmp_path, tokenizer):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(path, tokenizer)
    check(e.value, str(path), None, None)
    assert "not found" in str(e.value)


def test_missing_file_given_as_string_with_unknown_suffix(tmp_path, tokenizer):
    path = str(tmp_path / "nope.txt")  # has a path separator: a file, not a Hub id
    with pytest.raises(aihf.DataError) as e:
        read_rows(path)
    check(e.value, path, None, None)


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") != "1", reason="would try the network")
def test_unknown_hub_dataset_offline():
    with pytest.raises(aihf.DataError) as e:
        read_rows("surely-not-a-local-dataset")
    check(e.value, "surely-not-a-local-dataset", None, None)


@pytest.mark.parametrize("suffix", [".txt", ".tsv", ".jsonl.gz"])
def test_unsupported_suffix(tmp_path, tokenizer, suffix):
    path = tmp_path / f"data{suffix}"
    path.write_text(json.dumps(GOOD_DEMO) + "\n")
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(path, tokenizer)
    check(e.value, str(path), None, None)
    assert "unsupported file type" in str(e.value)


def test_folder_that_is_not_a_saved_dataset(tmp_path, tokenizer):
    folder = tmp_path / "not-a-dataset"
    folder.mkdir()
    (folder / "x.txt").write_text("hello")
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(folder, tokenizer)
    check(e.value, str(folder), None, None)


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------


def test_csv_missing_value_cell(tmp_path, tokenizer):
    path = tmp_path / "data.csv"
    path.write_text("prompt,completion\nhello,good\nhow are you\n")
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(path, tokenizer)
    check(e.value, str(path), "line 3", "completion")


def test_csv_missing_column(tmp_path, tokenizer):
    path = tmp_path / "data.csv"
    path.write_text("prompt,chosen\nhello,good\n")
    with pytest.raises(aihf.DataError) as e:
        prepare_preferences(path, tokenizer)
    check(e.value, str(path), "line 2", "rejected")


def test_csv_empty_cell(tmp_path, tokenizer):
    path = tmp_path / "data.csv"
    path.write_text("prompt,chosen,rejected\nhow are you,fine,bad\n\nhow are you,fine,\n")
    with pytest.raises(aihf.DataError) as e:
        prepare_preferences(path, tokenizer)
    # The blank line 3 is skipped but still counted.
    check(e.value, str(path), "line 4", "rejected")


def test_csv_extra_cells(tmp_path, tokenizer):
    path = tmp_path / "data.csv"
    path.write_text("prompt,completion\nhello,good\nhello,good,bad\n")
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(path, tokenizer)
    check(e.value, str(path), "line 3", None)
    assert "more cells" in str(e.value)


@pytest.mark.parametrize(
    "content, line",
    [
        ('prompt,completion\nhello,good\nhow,"fine"x\n', 3),
        ('prompt,completion\nhello,good\n"how\nare you","fine"x\n', 4),  # a cell spanning lines 3-4
    ],
)
def test_malformed_csv_names_the_line_of_the_error(tmp_path, tokenizer, content, line):
    path = tmp_path / "data.csv"
    path.write_text(content)
    with pytest.raises(aihf.DataError, match="malformed CSV") as e:
        prepare_demonstrations(path, tokenizer)
    check(e.value, str(path), f"line {line}", None)


def test_csv_invalid_utf8_names_the_line(tmp_path, tokenizer):
    path = tmp_path / "data.csv"
    path.write_bytes(b"prompt,completion\nhello,good\nhel\xfflo,good\n")
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(path, tokenizer)
    check(e.value, str(path), "line 3", None)


# ---------------------------------------------------------------------------------------------
# Parquet, datasets, lists
# ---------------------------------------------------------------------------------------------


def test_parquet_bad_row(tmp_path, tokenizer):
    path = tmp_path / "data.parquet"
    table = pa.table(
        {
            "prompt": ["how are you", "how are you", "hello"],
            "chosen": ["fine", "fine", None],
            "rejected": ["bad", "bad", "bad"],
        }
    )
    pq.write_table(table, path)
    with pytest.raises(aihf.DataError) as e:
        prepare_preferences(path, tokenizer)
    check(e.value, str(path), "row 2", "chosen")


def test_parquet_missing_column(tmp_path, tokenizer):
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"prompt": ["hello"], "answer": ["good"]}), path)
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(path, tokenizer)
    check(e.value, str(path), "row 0", "completion")


def test_unreadable_parquet(tmp_path, tokenizer):
    path = tmp_path / "data.parquet"
    path.write_text("this is not parquet")
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(path, tokenizer)
    check(e.value, str(path), None, None)


def test_dataset_bad_row(tokenizer):
    ds = datasets.Dataset.from_list([GOOD_DEMO, GOOD_DEMO, {"prompt": "hello", "completion": " "}])
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(ds, tokenizer)
    check(e.value, "dataset", "row 2", "completion")


def test_named_dataset_bad_conversational_row(tokenizer):
    ds = datasets.Dataset.from_list(
        [
            {"prompt": [user("hello")], "completion": [assistant("good")]},
            {"prompt": [user("hello"), {"role": "wizard", "content": "hi"}], "completion": [assistant("good")]},
        ]
    )
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(ds, tokenizer, name="chats")
    check(e.value, "chats", "row 1", "prompt[1].role")


def test_dataset_dict_bad_row_in_selected_split(tokenizer):
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([GOOD_PREF]),
            "test": datasets.Dataset.from_list([GOOD_PREF, {"prompt": "hello", "chosen": "good", "rejected": "good"}]),
        }
    )
    prepare_preferences(dd, tokenizer)  # the train split is fine
    with pytest.raises(aihf.DataError) as e:
        prepare_preferences(dd, tokenizer, split="test")
    check(e.value, "dataset[test]", "row 1", "rejected")


def test_dataset_dict_without_the_split(tokenizer):
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list([GOOD_DEMO])})
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(dd, tokenizer, split="validation", name="hh")
    check(e.value, "hh", None, None)
    assert "validation" in str(e.value)


def test_saved_dataset_folder_bad_row(tmp_path, tokenizer):
    folder = tmp_path / "saved"
    datasets.Dataset.from_list([GOOD_DEMO, {"prompt": "hello", "completion": ""}]).save_to_disk(str(folder))
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(folder, tokenizer)
    check(e.value, str(folder), "row 1", "completion")


def test_list_bad_row(tokenizer):
    rows = [GOOD_PREF, {"prompt": "hello", "chosen": "good", "rejected": {"text": "bad"}}]
    with pytest.raises(aihf.DataError) as e:
        prepare_preferences(rows, tokenizer)
    check(e.value, "list", "row 1", "rejected")


def test_rows_with_a_record_that_is_not_a_mapping(tokenizer):
    rows = Rows("custom", [GOOD_DEMO, "hello good"], ["item A", "item B"])
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(rows, tokenizer)
    check(e.value, "custom", "item B", None)


def test_list_with_a_non_mapping_row(tokenizer):
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations([GOOD_DEMO, "hello good"], tokenizer)
    check(e.value, "list", "row 1", None)


def test_unsupported_source_object_is_a_type_error(tokenizer):
    with pytest.raises(TypeError):
        prepare_demonstrations(42, tokenizer)


# ---------------------------------------------------------------------------------------------
# Property: any non-text completion is rejected, naming the field
# ---------------------------------------------------------------------------------------------

NON_TEXT = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
    st.text(alphabet=" \t\n\r", max_size=5),  # empty or whitespace only
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=NON_TEXT, position=st.integers(0, 3))
def test_any_non_text_completion_is_rejected(tokenizer, value, position):
    rows = [dict(GOOD_DEMO) for _ in range(4)]
    rows[position]["completion"] = value
    with pytest.raises(aihf.DataError) as e:
        prepare_demonstrations(rows, tokenizer)
    check(e.value, "list", f"row {position}", "completion")


# ---------------------------------------------------------------------------------------------
# Nothing is written
# ---------------------------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))}


def test_rejected_data_writes_nothing(tmp_path, tokenizer):
    out = tmp_path / "out"
    out.mkdir()
    path = bad_third_line(tmp_path, GOOD_PREF, {"prompt": "hello", "chosen": "good", "rejected": ""})
    before = _snapshot(tmp_path)
    with pytest.raises(aihf.DataError):
        prepare_preferences(path, tokenizer)
    with pytest.raises(aihf.DataError):
        prepare_demonstrations(path, tokenizer)
    assert _snapshot(tmp_path) == before
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Positive controls: the same rows, fixed, pass
# ---------------------------------------------------------------------------------------------

FIXED_DEMOS = {
    "completion-present": {"prompt": "hello", "completion": "good"},
    "empty-prompt-allowed-with-text": {"prompt": " ", "completion": "good"},
    "known-roles": {
        "prompt": [{"role": "system", "content": "x"}, user("hello"), {"role": "tool", "content": "y"}],
        "completion": [assistant("good")],
    },
    "messages-end-with-assistant": {"messages": [user("hello"), assistant("good")]},
    "messages-with-developer": {"messages": [{"role": "developer", "content": "x"}, user("hello"), assistant("good")]},
}


@pytest.mark.parametrize("good", list(FIXED_DEMOS.values()), ids=list(FIXED_DEMOS))
def test_fixed_demonstration_rows_pass(tmp_path, bos_tokenizer, good):
    # bos_tokenizer so that a whitespace-only prompt still has BOS to condition on.
    path = bad_third_line(tmp_path, GOOD_DEMO, good)
    ds = prepare_demonstrations(path, bos_tokenizer)
    assert len(ds) == 2
    assert ds["row"] == [f"{path}, line 1", f"{path}, line 3"]
    assert all(ds["completion_ids"])


FIXED_PREFS = {
    "explicit": {"prompt": "hello", "chosen": "good", "rejected": "bad"},
    "empty-prompt-allowed": {"prompt": "", "chosen": "good", "rejected": "bad"},
    "implicit-shared-prefix": {"chosen": "hello good", "rejected": "hello bad"},
    "implicit-hh": {"chosen": HH + " good", "rejected": HH + " bad", "reference": HH + " fine"},
    "reference-null": {"prompt": "hello", "chosen": "good", "rejected": "bad", "reference": None},
    "conv": {"prompt": [user("hello")], "chosen": [assistant("good")], "rejected": [assistant("bad")]},
    "conv-implicit": {
        "chosen": [user("hello"), assistant("good")],
        "rejected": [user("hello"), assistant("bad")],
        "reference": [user("hello"), assistant("fine")],
    },
}


@pytest.mark.parametrize("good", list(FIXED_PREFS.values()), ids=list(FIXED_PREFS))
def test_fixed_preference_rows_pass(tmp_path, bos_tokenizer, good):
    path = bad_third_line(tmp_path, GOOD_PREF, good)
    ds = prepare_preferences(path, bos_tokenizer)
    assert len(ds) == 2
    assert ds["row"][1] == f"{path}, line 3"


def test_long_prompt_passes_once_truncated_or_given_room(tokenizer):
    rows = [{"prompt": "the cat sat on the mat", "completion": "yes"}]
    assert len(prepare_demonstrations(rows, tokenizer, max_length=8, max_prompt_length=None)) == 1
    assert len(prepare_demonstrations(rows, tokenizer, max_length=4, max_prompt_length=3)) == 1


def test_conversational_row_passes_with_a_chat_template(tokenizer):
    rows = [{"chosen": [user("hello"), assistant("good")], "rejected": [user("hello"), assistant("bad")]}]
    assert len(prepare_preferences(rows, tokenizer)) == 1


def test_fixed_files_pass(tmp_path, tokenizer):
    csv_path = tmp_path / "data.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerows([["prompt", "completion"], ["hello", "good"], ["how are you", "fine"]])
    assert len(prepare_demonstrations(csv_path, tokenizer)) == 2

    json_path = tmp_path / "data.json"
    json_path.write_text(json.dumps([GOOD_PREF, {"prompt": "hello", "chosen": "good", "rejected": "bad"}]))
    assert len(prepare_preferences(json_path, tokenizer)) == 2

    pq_path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"prompt": ["hello"], "chosen": ["good"], "rejected": ["bad"]}), pq_path)
    assert len(prepare_preferences(pq_path, tokenizer)) == 1

    ds = datasets.Dataset.from_list([GOOD_DEMO, {"prompt": "hello", "completion": "fine"}])
    assert len(prepare_demonstrations(ds, tokenizer)) == 2


def test_a_demonstration_given_as_preferences_and_a_pair_given_as_demonstrations_say_where_they_go():
    """A TRL SFT script ported by the import alone passes its `messages` dataset as train_dataset=
    (aihf's preferences): the error says where demonstrations go, and the other way round."""
    from aihf import DataError
    from aihf.data.formats import demonstration_texts, preference_texts
    from aihf.data.sources import read_rows

    messages = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    with pytest.raises(DataError) as e:
        preference_texts(read_rows(messages))
    assert "field 'chosen'" in str(e.value) and "go in demonstrations=" in str(e.value)
    assert "pref_weight=0 or --method sft" in str(e.value)
    pairs = [{"prompt": "p", "chosen": " a", "rejected": " b"}]
    with pytest.raises(DataError) as e:
        demonstration_texts(read_rows(pairs))
    assert "field 'completion'" in str(e.value) and "preference pairs go in preferences=" in str(e.value)
