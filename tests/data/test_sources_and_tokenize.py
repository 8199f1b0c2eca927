"""Exact-value tests for reading rows, tokenising them and batching them.

Token ids below are those of the ``tokenizer`` / ``bos_tokenizer`` fixtures (pinned in
``test_vocabulary_ids``): specials first, then the sorted words of ``conftest.WORDS``; words
outside the vocabulary (such as ``Human:``) map to ``<unk>``.
"""

from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aihf.data import (
    AIHFCollator,
    BatchLayout,
    PairedDataset,
    Rows,
    check_lengths,
    concat_padded,
    match_end_tokens,
    pad_sequences,
    preference_texts,
    prepare_demonstrations,
    prepare_preferences,
    read_rows,
    references_as_demonstrations,
)
from aihf.tasks.tiny import build_word_tokenizer

from ..conftest import WORDS

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SYSTEM, USER, ASSISTANT, EOT = 4, 5, 6, 9
A, ARE, BAD, CAT, DOG, FINE, GOOD, HELLO, HOW, MAT, MAYBE, NO, ON, SAT, THE, WORLD, YES, YOU = range(10, 28)

HH = "\n\nHuman: hello\n\nAssistant:"
# The property test below cannot take function-scoped fixtures; this is the `bos_tokenizer` one.
_BOS_TOKENIZER = build_word_tokenizer(WORDS, add_bos=True)


def user(content: str) -> dict:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict:
    return {"role": "assistant", "content": content}


def system(content: str) -> dict:
    return {"role": "system", "content": content}


def test_vocabulary_ids(tokenizer, bos_tokenizer):
    for tok in (tokenizer, bos_tokenizer):
        assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (PAD, BOS, EOS, UNK)
        assert tok.convert_tokens_to_ids(["<system>", "<user>", "<assistant>", "<eot>"]) == [
            SYSTEM,
            USER,
            ASSISTANT,
            EOT,
        ]
        assert tok(
            "a are bad cat dog fine good hello how mat maybe no on sat the world yes you", add_special_tokens=False
        )["input_ids"] == list(range(10, 28))
        assert tok("Human: hello", add_special_tokens=False)["input_ids"] == [UNK, HELLO]
    assert tokenizer("hello")["input_ids"] == [HELLO]
    assert bos_tokenizer("hello")["input_ids"] == [BOS, HELLO]


# =============================================================================================
# read_rows
# =============================================================================================


def test_read_jsonl_skips_blank_lines_and_counts_them(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n   \n\n{"a": 3, "b": "x"}\n\n')
    rows = read_rows(path)
    assert rows.source == str(path)
    assert list(rows.records) == [{"a": 1}, {"a": 2}, {"a": 3, "b": "x"}]
    assert list(rows.labels) == ["line 1", "line 3", "line 6"]
    assert len(rows) == 3
    assert list(rows) == [("line 1", {"a": 1}), ("line 3", {"a": 2}), ("line 6", {"a": 3, "b": "x"})]
    assert rows.label(2) == "line 6"


def test_read_jsonl_crlf_and_string_path(tmp_path):
    path = tmp_path / "d.JSONL"
    path.write_bytes(b'{"a": 1}\r\n\r\n{"a": 2}\r\n')
    rows = read_rows(str(path))
    assert rows.source == str(path)
    assert list(rows) == [("line 1", {"a": 1}), ("line 3", {"a": 2})]


def test_read_jsonl_with_unicode_line_separator_inside_a_string(tmp_path):
    path = tmp_path / "d.jsonl"
    records = [{"prompt": "hello\u2028world", "completion": "good"}, {"prompt": "how\x85are", "completion": "fine"}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    rows = read_rows(path)
    assert list(rows) == [("line 1", records[0]), ("line 2", records[1])]


def test_read_json_array_of_records(tmp_path):
    path = tmp_path / "d.json"
    records = [{"prompt": "hello", "completion": "good"}, {"prompt": "how", "completion": "fine"}]
    path.write_text(json.dumps(records, indent=2))
    rows = read_rows(path)
    assert rows.source == str(path)
    assert rows.labels is None
    assert list(rows) == [("row 0", records[0]), ("row 1", records[1])]


def test_read_json_dict_of_columns(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"prompt": ["hello", "how"], "chosen": ["good", "fine"], "rejected": ["bad", "no"]}))
    rows = read_rows(path)
    assert list(rows.records) == [
        {"prompt": "hello", "chosen": "good", "rejected": "bad"},
        {"prompt": "how", "chosen": "fine", "rejected": "no"},
    ]
    assert [label for label, _ in rows] == ["row 0", "row 1"]


def test_read_csv(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('prompt,completion\nhello,good\n\n"how, are you","fine ""really"""\n')
    rows = read_rows(path)
    assert rows.source == str(path)
    assert list(rows) == [
        ("line 2", {"prompt": "hello", "completion": "good"}),
        ("line 4", {"prompt": "how, are you", "completion": 'fine "really"'}),
    ]


def test_read_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["hello", "how"], "completion": ["good", "fine"]}), path)
    rows = read_rows(path)
    assert rows.source == str(path)
    assert list(rows) == [
        ("row 0", {"prompt": "hello", "completion": "good"}),
        ("row 1", {"prompt": "how", "completion": "fine"}),
    ]


def test_read_dataset_and_list():
    ds = datasets.Dataset.from_dict({"prompt": ["hello", "how"], "completion": ["good", "fine"]})
    rows = read_rows(ds)
    assert rows.source == "dataset"
    assert rows.records is ds
    assert list(rows) == [
        ("row 0", {"prompt": "hello", "completion": "good"}),
        ("row 1", {"prompt": "how", "completion": "fine"}),
    ]
    assert read_rows(ds, name="mine").source == "mine"

    records = [{"prompt": "hello", "completion": "good"}]
    assert read_rows(records).source == "list"
    assert read_rows(records, name="inline").source == "inline"
    assert list(read_rows(records)) == [("row 0", records[0])]


def test_read_rows_passes_rows_through():
    rows = Rows("src", [{"a": 1}], ["item 1"])
    assert read_rows(rows) is rows
    assert Rows("src", [{"a": 1}, {"a": 2}]).label(1) == "row 1"


def test_read_dataset_dict_selects_the_split():
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"x": ["t0", "t1"]}),
            "test": datasets.Dataset.from_dict({"x": ["s0"]}),
        }
    )
    train = read_rows(dd)
    assert train.source == "dataset[train]"
    assert [r["x"] for _, r in train] == ["t0", "t1"]
    test = read_rows(dd, split="test", name="hh")
    assert test.source == "hh[test]"
    assert list(test) == [("row 0", {"x": "s0"})]


def test_read_save_to_disk_folders(tmp_path):
    one = tmp_path / "one"
    datasets.Dataset.from_dict({"x": ["a", "b"]}).save_to_disk(str(one))
    rows = read_rows(one)
    assert rows.source == str(one)
    assert list(rows) == [("row 0", {"x": "a"}), ("row 1", {"x": "b"})]

    many = tmp_path / "many"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"x": ["a"]}), "validation": datasets.Dataset.from_dict({"x": ["v"]})}
    ).save_to_disk(str(many))
    rows = read_rows(str(many), split="validation")
    assert rows.source == f"{many}[validation]"
    assert list(rows) == [("row 0", {"x": "v"})]


def _fake_hub(monkeypatch):
    """Stand-in for ``datasets.load_dataset`` (the tests are offline): records what was asked."""
    calls = []

    def load_dataset(dataset_id, split=None, **kwargs):
        calls.append((dataset_id, split))
        return datasets.Dataset.from_dict({"prompt": ["hello"], "completion": ["good"]})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_read_hub_dataset_id(monkeypatch, tokenizer):
    calls = _fake_hub(monkeypatch)
    rows = read_rows("imdb", split="test")
    assert calls == [("imdb", "test")]
    assert rows.source == "imdb[test]"
    assert list(rows) == [("row 0", {"prompt": "hello", "completion": "good"})]
    assert prepare_demonstrations("imdb", tokenizer)["row"] == ["imdb[train], row 0"]


def test_read_hub_dataset_id_with_owner(monkeypatch):
    calls = _fake_hub(monkeypatch)
    rows = read_rows("Anthropic/hh-rlhf")
    assert calls == [("Anthropic/hh-rlhf", "train")]
    assert rows.source == "Anthropic/hh-rlhf[train]"


def test_prepare_reads_every_file_type_identically(tmp_path, tokenizer):
    records = [{"prompt": "hello", "completion": " good"}, {"prompt": "how are you", "completion": " fine"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    (tmp_path / "d.json").write_text(json.dumps(records))
    (tmp_path / "d.csv").write_text("prompt,completion\nhello, good\nhow are you, fine\n")
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "d.parquet")
    sources = [tmp_path / f"d.{s}" for s in ("jsonl", "json", "csv", "parquet")] + [
        records,
        datasets.Dataset.from_list(records),
    ]
    for source in sources:
        ds = prepare_demonstrations(source, tokenizer)
        assert ds["prompt_ids"] == [[HELLO], [HOW, ARE, YOU]]
        assert ds["completion_ids"] == [[GOOD, EOS], [FINE, EOS]]
    assert prepare_demonstrations(tmp_path / "d.jsonl", tokenizer)["row"] == [
        f"{tmp_path / 'd.jsonl'}, line 1",
        f"{tmp_path / 'd.jsonl'}, line 2",
    ]
    assert prepare_demonstrations(tmp_path / "d.csv", tokenizer)["row"] == [
        f"{tmp_path / 'd.csv'}, line 2",
        f"{tmp_path / 'd.csv'}, line 3",
    ]
    assert prepare_demonstrations(tmp_path / "d.parquet", tokenizer)["row"] == [
        f"{tmp_path / 'd.parquet'}, row 0",
        f"{tmp_path / 'd.parquet'}, row 1",
    ]


# =============================================================================================
# prepare_demonstrations
# =============================================================================================


def test_standard_demonstration_ids(tokenizer):
    ds = prepare_demonstrations(
        [{"prompt": "hello world", "completion": " good"}, {"prompt": "how", "completion": " yes no"}], tokenizer
    )
    assert ds.column_names == ["prompt_ids", "completion_ids", "row"]
    assert ds["prompt_ids"] == [[HELLO, WORLD], [HOW]]
    assert ds["completion_ids"] == [[GOOD, EOS], [YES, NO, EOS]]
    assert ds["row"] == ["list, row 0", "list, row 1"]


def test_standard_demonstration_with_bos_tokenizer(bos_tokenizer):
    ds = prepare_demonstrations([{"prompt": "hello world", "completion": " good"}], bos_tokenizer)
    assert ds["prompt_ids"] == [[BOS, HELLO, WORLD]]
    assert ds["completion_ids"] == [[GOOD, EOS]]  # no BOS in front of the completion


def test_eos_is_not_doubled(tokenizer):
    ds = prepare_demonstrations([{"prompt": "hello", "completion": "good <eos>"}], tokenizer)
    assert ds["completion_ids"] == [[GOOD, EOS]]


def test_unknown_words_map_to_unk(tokenizer):
    ds = prepare_demonstrations([{"prompt": "hello stranger", "completion": " bye"}], tokenizer)
    assert ds["prompt_ids"] == [[HELLO, UNK]]
    assert ds["completion_ids"] == [[UNK, EOS]]


def test_empty_prompt_with_bos_tokenizer(bos_tokenizer):
    ds = prepare_demonstrations([{"prompt": "", "completion": "good"}], bos_tokenizer)
    assert ds["prompt_ids"] == [[BOS]]
    assert ds["completion_ids"] == [[GOOD, EOS]]


@pytest.mark.parametrize("fixture", ["tokenizer", "bos_tokenizer"])
def test_conversational_demonstration_through_chat_template(request, fixture):
    tok = request.getfixturevalue(fixture)
    prompt, completion = [system("be nice"), user("hello")], [assistant("good")]
    ds = prepare_demonstrations([{"prompt": prompt, "completion": completion}], tok)
    prompt_text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full_text = tok.apply_chat_template(prompt + completion, tokenize=False)
    assert prompt_text == "<system> be nice <eot> <user> hello <eot> <assistant> "
    assert full_text == prompt_text + "good <eot> <eos> "
    # The template writes the turn's EOS: no other is added. The BOS the tokenizer adds leads the
    # prompt (this template writes none), as it does for plain text.
    lead = [BOS] if fixture == "bos_tokenizer" else []
    assert ds["prompt_ids"] == [lead + [SYSTEM, UNK, UNK, EOT, USER, HELLO, EOT, ASSISTANT]]
    assert ds["completion_ids"] == [[GOOD, EOT, EOS]]
    assert ds["prompt_ids"][0] + ds["completion_ids"][0] == tok(full_text)["input_ids"]


def test_conversational_completion_closed_by_the_templates_end_of_turn_token(tokenizer):
    # A template that closes the turn without EOS. Its <eot> is a plain vocabulary word here, so
    # nothing marks it as the end of a turn: EOS is appended, as to any unclosed completion.
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} <eot> {% endfor %}"
        "{% if add_generation_prompt %}<assistant> {% endif %}"
    )
    row = {"prompt": [user("hello")], "completion": [assistant("good")]}
    assert prepare_demonstrations([row], tokenizer)["completion_ids"] == [[GOOD, EOT, EOS]]
    # Registered as a special token (as real end-of-turn tokens are), <eot> is the end token.
    tokenizer.add_special_tokens({"additional_special_tokens": ["<eot>"]})
    assert tokenizer.convert_tokens_to_ids("<eot>") == EOT
    assert prepare_demonstrations([row], tokenizer)["completion_ids"] == [[GOOD, EOT]]


def test_messages_format_equals_prompt_completion_format(tokenizer):
    messages = [system("be nice"), user("hello"), assistant("good"), user("how are you"), assistant("fine")]
    a = prepare_demonstrations([{"messages": messages}], tokenizer)
    b = prepare_demonstrations([{"prompt": messages[:-1], "completion": messages[-1:]}], tokenizer)
    assert (
        a["prompt_ids"]
        == b["prompt_ids"]
        == [[SYSTEM, UNK, UNK, EOT, USER, HELLO, EOT, ASSISTANT, GOOD, EOT, EOS, USER, HOW, ARE, YOU, EOT, ASSISTANT]]
    )
    assert a["completion_ids"] == b["completion_ids"] == [[FINE, EOT, EOS]]


def test_mixed_standard_and_conversational_rows(tokenizer):
    rows = [
        {"prompt": "hello", "completion": "good"},
        {"messages": [user("hello"), assistant("good")]},
        {"prompt": "how", "completion": "fine"},
    ]
    ds = prepare_demonstrations(rows, tokenizer)
    assert ds["prompt_ids"] == [[HELLO], [USER, HELLO, EOT, ASSISTANT], [HOW]]
    assert ds["completion_ids"] == [[GOOD, EOS], [GOOD, EOT, EOS], [FINE, EOS]]


# =============================================================================================
# prepare_preferences
# =============================================================================================


def test_standard_preference_ids(tokenizer):
    ds = prepare_preferences([{"prompt": "how are you", "chosen": " fine", "rejected": " bad"}], tokenizer)
    assert ds.column_names == ["prompt_ids", "chosen_ids", "rejected_ids", "reference_ids", "row"]
    assert ds[0] == {
        "prompt_ids": [HOW, ARE, YOU],
        "chosen_ids": [FINE, EOS],
        "rejected_ids": [BAD, EOS],
        "reference_ids": [],
        "row": "list, row 0",
    }


def test_standard_preference_with_bos_tokenizer(bos_tokenizer):
    ds = prepare_preferences(
        [{"prompt": "how are you", "chosen": " fine", "rejected": " bad", "reference": " yes"}], bos_tokenizer
    )
    assert ds["prompt_ids"] == [[BOS, HOW, ARE, YOU]]
    assert ds["chosen_ids"] == [[FINE, EOS]]
    assert ds["rejected_ids"] == [[BAD, EOS]]
    assert ds["reference_ids"] == [[YES, EOS]]


def test_hh_implicit_prompt_ends_at_the_assistant_marker(tokenizer):
    row = {"chosen": HH + " good", "rejected": HH + " bad"}
    (text,) = preference_texts(Rows("hh", [row]), tokenizer)
    assert (text.prompt, text.chosen, text.rejected, text.reference, text.conversational) == (
        HH,
        " good",
        " bad",
        None,
        False,
    )
    ds = prepare_preferences([row], tokenizer)
    assert ds["prompt_ids"] == [[UNK, HELLO, UNK]]  # Human: hello Assistant:
    assert ds["chosen_ids"] == [[GOOD, EOS]]
    assert ds["rejected_ids"] == [[BAD, EOS]]
    assert ds["reference_ids"] == [[]]


def test_hh_marker_wins_over_shared_answer_words(tokenizer):
    multi = "\n\nHuman: hello\n\nAssistant: good\n\nHuman: how are you\n\nAssistant:"
    row = {"chosen": multi + " the cat sat", "rejected": multi + " the dog sat"}
    (text,) = preference_texts(Rows("hh", [row]))
    assert (text.prompt, text.chosen, text.rejected) == (multi, " the cat sat", " the dog sat")
    # Without the marker the split is at the last shared word boundary instead.
    (text,) = preference_texts(Rows("hh", [row]), implicit_prompt_marker=None)
    assert (text.prompt, text.chosen, text.rejected) == (multi + " the", " cat sat", " dog sat")
    ds = prepare_preferences([row], tokenizer, implicit_prompt_marker=None)
    assert ds["prompt_ids"] == [[UNK, HELLO, UNK, GOOD, UNK, HOW, ARE, YOU, UNK, THE]]
    assert ds["chosen_ids"] == [[CAT, SAT, EOS]]
    assert ds["rejected_ids"] == [[DOG, SAT, EOS]]


def test_no_marker_pair_splits_at_last_word_boundary(tokenizer):
    rows = [
        {"chosen": "the cat sat on the mat", "rejected": "the cat sat on a mat"},
        # The shared prefix "the ca" ends inside a word: back up to the space.
        {"chosen": "the cat", "rejected": "the car"},
    ]
    texts = preference_texts(Rows("r", rows))
    assert [(t.prompt, t.chosen, t.rejected) for t in texts] == [
        ("the cat sat on", " the mat", " a mat"),
        ("the", " cat", " car"),
    ]
    ds = prepare_preferences(rows, tokenizer)
    assert ds["prompt_ids"] == [[THE, CAT, SAT, ON], [THE]]
    assert ds["chosen_ids"] == [[THE, MAT, EOS], [CAT, EOS]]
    assert ds["rejected_ids"] == [[A, MAT, EOS], [UNK, EOS]]


def test_conversational_preference_through_chat_template(tokenizer):
    row = {"prompt": [user("how are you")], "chosen": [assistant("fine")], "rejected": [assistant("bad")]}
    ds = prepare_preferences([row], tokenizer)
    assert ds["prompt_ids"] == [[USER, HOW, ARE, YOU, EOT, ASSISTANT]]
    assert ds["chosen_ids"] == [[FINE, EOT, EOS]]
    assert ds["rejected_ids"] == [[BAD, EOT, EOS]]
    full = tokenizer.apply_chat_template(row["prompt"] + row["chosen"], tokenize=False)
    assert ds["prompt_ids"][0] + ds["chosen_ids"][0] == tokenizer(full, add_special_tokens=False)["input_ids"]


def test_conversational_implicit_prompt_is_the_shared_leading_messages(tokenizer):
    shared = [user("hello"), assistant("good"), user("how are you")]
    row = {
        "chosen": shared + [assistant("fine")],
        "rejected": shared + [assistant("bad")],
        "reference": shared + [assistant("yes")],
    }
    (text,) = preference_texts(Rows("c", [row]), tokenizer)
    assert text.conversational
    assert text.prompt == tokenizer.apply_chat_template(shared, tokenize=False, add_generation_prompt=True)
    assert (text.chosen, text.rejected, text.reference) == ("fine <eot> <eos> ", "bad <eot> <eos> ", "yes <eot> <eos> ")
    ds = prepare_preferences([row], tokenizer)
    assert ds["prompt_ids"] == [[USER, HELLO, EOT, ASSISTANT, GOOD, EOT, EOS, USER, HOW, ARE, YOU, EOT, ASSISTANT]]
    assert ds["chosen_ids"] == [[FINE, EOT, EOS]]
    assert ds["rejected_ids"] == [[BAD, EOT, EOS]]
    assert ds["reference_ids"] == [[YES, EOT, EOS]]


def test_conversational_implicit_prompt_with_multi_message_answers(tokenizer):
    row = {
        "chosen": [user("hello"), assistant("good"), user("how"), assistant("fine")],
        "rejected": [user("hello"), assistant("bad")],
    }
    ds = prepare_preferences([row], tokenizer)
    assert ds["prompt_ids"] == [[USER, HELLO, EOT, ASSISTANT]]
    assert ds["chosen_ids"] == [[GOOD, EOT, EOS, USER, HOW, EOT, ASSISTANT, FINE, EOT, EOS]]
    assert ds["rejected_ids"] == [[BAD, EOT, EOS]]


def test_reference_column(tokenizer):
    rows = [
        {"prompt": "hello", "chosen": "good", "rejected": "bad", "reference": "fine"},
        {"prompt": "how", "chosen": "yes", "rejected": "no"},
        {"prompt": "how", "chosen": "yes", "rejected": "no", "reference": None},
        {"chosen": HH + " good", "rejected": HH + " bad", "reference": HH + " maybe yes"},
    ]
    ds = prepare_preferences(rows, tokenizer)
    assert ds["reference_ids"] == [[FINE, EOS], [], [], [MAYBE, YES, EOS]]
    assert ds["prompt_ids"][3] == [UNK, HELLO, UNK]


def test_reference_column_in_a_dataset_with_nulls(tokenizer):
    ds_in = datasets.Dataset.from_list(
        [
            {"prompt": "hello", "chosen": "good", "rejected": "bad", "reference": "fine"},
            {"prompt": "how", "chosen": "yes", "rejected": "no", "reference": None},
        ]
    )
    assert prepare_preferences(ds_in, tokenizer)["reference_ids"] == [[FINE, EOS], []]


def test_reference_column_in_a_csv_with_empty_cells(tmp_path, tokenizer):
    path = tmp_path / "p.csv"
    path.write_text("prompt,chosen,rejected,reference\nhello,good,bad,fine\nhow,yes,no,\n")
    assert prepare_preferences(path, tokenizer)["reference_ids"] == [[FINE, EOS], []]


def test_references_as_demonstrations(tokenizer):
    rows = [
        {"prompt": "hello", "chosen": "good", "rejected": "bad", "reference": "fine"},
        {"prompt": "how", "chosen": "yes", "rejected": "no"},
        {
            "prompt": [user("how")],
            "chosen": [assistant("yes")],
            "rejected": [assistant("no")],
            "reference": [assistant("maybe")],
        },
    ]
    prefs = prepare_preferences(rows, tokenizer, name="p")
    demos = references_as_demonstrations(prefs)
    assert demos.column_names == ["prompt_ids", "completion_ids", "row"]
    assert demos["prompt_ids"] == [[HELLO], [USER, HOW, EOT, ASSISTANT]]
    assert demos["completion_ids"] == [[FINE, EOS], [MAYBE, EOT, EOS]]
    assert demos["row"] == ["p, row 0", "p, row 2"]


def test_references_as_demonstrations_without_references(tokenizer):
    prefs = prepare_preferences([{"prompt": "hello", "chosen": "good", "rejected": "bad"}], tokenizer)
    assert references_as_demonstrations(prefs) is None


# =============================================================================================
# Truncation
# =============================================================================================


def test_prompt_truncated_from_the_left(tokenizer):
    ds = prepare_demonstrations(
        [{"prompt": "the cat sat on the mat", "completion": " yes"}], tokenizer, max_prompt_length=3
    )
    assert ds["prompt_ids"] == [[ON, THE, MAT]]
    assert ds["completion_ids"] == [[YES, EOS]]


def test_prompt_truncation_keeps_bos(bos_tokenizer):
    ds = prepare_demonstrations(
        [{"prompt": "the cat sat on the mat", "completion": " yes"}], bos_tokenizer, max_prompt_length=3
    )
    assert ds["prompt_ids"] == [[BOS, THE, MAT]]
    # A prompt that already fits is untouched.
    ds = prepare_demonstrations([{"prompt": "the cat", "completion": " yes"}], bos_tokenizer, max_prompt_length=3)
    assert ds["prompt_ids"] == [[BOS, THE, CAT]]


def test_prompt_truncated_to_one_token_with_bos(bos_tokenizer):
    # With room for a single token, the last prompt token is kept rather than BOS.
    ds = prepare_demonstrations(
        [{"prompt": "the cat", "completion": " yes"}], bos_tokenizer, max_length=4, max_prompt_length=1
    )
    assert ds["prompt_ids"] == [[CAT]]


def test_completion_truncated_from_the_right(tokenizer, bos_tokenizer):
    row = {"prompt": "how are you", "completion": " yes no maybe"}
    ds = prepare_demonstrations([row], tokenizer, max_length=5, max_prompt_length=4)
    assert ds["prompt_ids"] == [[HOW, ARE, YOU]]
    assert ds["completion_ids"] == [[YES, NO]]  # 5 - 3 tokens; EOS is cut off with the tail
    ds = prepare_demonstrations([row], bos_tokenizer, max_length=5, max_prompt_length=4)
    assert ds["prompt_ids"] == [[BOS, HOW, ARE, YOU]]
    assert ds["completion_ids"] == [[YES]]
    ds = prepare_demonstrations([row], tokenizer, max_length=7, max_prompt_length=4)
    assert ds["completion_ids"] == [[YES, NO, MAYBE, EOS]]  # exactly fits


def test_a_cut_completion_has_no_end_token_and_the_warning_counts_it(tokenizer):
    """As in TRL, max_length cuts the end token with the tail; a completion that fits except for
    its end token loses just that, and the truncation warning counts both kinds."""
    rows = [
        {"prompt": "how are you", "completion": " yes no maybe"},  # 3 + 4 tokens: fits exactly
        {"prompt": "how are you", "completion": " yes no maybe fine"},  # fits but for its end token
        {"prompt": "how are you", "completion": " yes no maybe fine good"},  # loses "good" and its end
    ]
    with pytest.warns(UserWarning) as caught:
        ds = prepare_demonstrations(rows, tokenizer, max_length=7, max_prompt_length=4)
    assert ds["completion_ids"] == [[YES, NO, MAYBE, EOS], [YES, NO, MAYBE, FINE], [YES, NO, MAYBE, FINE]]
    (message,) = [str(w.message) for w in caught if "truncated" in str(w.message)]
    assert "2 of 3 rows truncated to max_length=7" in message
    assert "2 completions lost their end token (1 of them only that token)" in message

    pair = {"prompt": "how are you", "chosen": " yes no maybe", "rejected": " no maybe fine good"}
    prompt_only = {"prompt": "the cat sat on the mat", "chosen": " yes", "rejected": " no"}
    with pytest.warns(UserWarning) as caught:
        ds = prepare_preferences([pair, prompt_only], tokenizer, max_length=7, max_prompt_length=4)
    assert ds["chosen_ids"] == [[YES, NO, MAYBE, EOS], [YES, EOS]]
    assert ds["rejected_ids"] == [[NO, MAYBE, FINE, GOOD], [NO, EOS]]  # 5 tokens: only its end token is cut
    (message,) = [str(w.message) for w in caught if "truncated" in str(w.message)]
    assert "2 of 2 rows truncated" in message  # a cut prompt counts as a truncated row, not as a lost end
    assert "1 completion lost its end token (1 of them only that token)" in message


def test_match_end_tokens_masks_an_end_token_its_pair_lacks():
    """Rows: both end; only the first ends; only the second ends (EOT, another stop token);
    neither ends; an empty second completion. Only unmatched end tokens leave the mask."""
    first = pad_sequences(
        [[HOW], [HOW], [HOW, ARE], [HOW], [HOW]], [[YES, EOS], [NO, EOS], [YES], [NO], [YES, EOS]], PAD
    )
    second = pad_sequences([[HOW], [HOW], [HOW], [HOW], [HOW]], [[NO, EOS], [NO], [MAYBE, YES, EOT], [YES], []], PAD)
    a, b = match_end_tokens(first, second, [EOS, EOT])
    assert a["completion_mask"].tolist() == [
        [0, 1, 1],
        [0, 1, 0],
        [0, 0, 1],
        [0, 1, 0],
        [0, 1, 0],
    ]
    assert b["completion_mask"].tolist() == [
        [0, 1, 1, 0],
        [0, 1, 0, 0],
        [0, 1, 1, 0],
        [0, 1, 0, 0],
        [0, 0, 0, 0],
    ]
    assert a["input_ids"] is first["input_ids"] and torch.equal(first["completion_mask"][0], torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="rows"):
        match_end_tokens(first, pad_sequences([[HOW]], [[YES]], PAD), [EOS])


def test_truncation_uses_the_truncated_prompt_length(bos_tokenizer):
    row = {"prompt": "the cat sat on the mat", "completion": " yes no maybe"}
    ds = prepare_demonstrations([row], bos_tokenizer, max_length=5, max_prompt_length=2)
    assert ds["prompt_ids"] == [[BOS, MAT]]
    assert ds["completion_ids"] == [[YES, NO, MAYBE]]


def test_no_truncation_without_limits(tokenizer):
    row = {"prompt": "the cat sat on the mat " * 5, "completion": "yes no " * 10}
    ds = prepare_demonstrations([row], tokenizer, max_length=None, max_prompt_length=None)
    assert len(ds["prompt_ids"][0]) == 30
    assert len(ds["completion_ids"][0]) == 21


def test_preference_truncation(bos_tokenizer):
    row = {"prompt": "the cat sat on the mat", "chosen": " yes no maybe", "rejected": " no"}
    row["reference"] = " maybe yes no"
    ds = prepare_preferences([row], bos_tokenizer, max_length=5, max_prompt_length=3)
    assert ds["prompt_ids"] == [[BOS, THE, MAT]]
    assert ds["chosen_ids"] == [[YES, NO]]
    assert ds["rejected_ids"] == [[NO, EOS]]
    assert ds["reference_ids"] == [[MAYBE, YES]]


def test_conversational_truncation(tokenizer):
    row = {"prompt": [user("how are you")], "completion": [assistant("yes no maybe")]}
    ds = prepare_demonstrations([row], tokenizer, max_length=6, max_prompt_length=3)
    assert ds["prompt_ids"] == [[YOU, EOT, ASSISTANT]]
    assert ds["completion_ids"] == [[YES, NO, MAYBE]]


@given(
    prompt=st.lists(st.sampled_from("hello world how are you the cat".split()), max_size=12),
    completion=st.lists(st.sampled_from("yes no maybe fine good".split()), min_size=1, max_size=12),
    max_prompt_length=st.integers(1, 8),
    extra=st.integers(1, 8),
)
@settings(max_examples=60, deadline=None)
def test_truncation_property(prompt, completion, max_prompt_length, extra):
    """Left-truncated prompt (BOS kept when there is room), right-truncated completion."""
    tok = _BOS_TOKENIZER
    max_length = max_prompt_length + extra
    ds = prepare_demonstrations(
        [{"prompt": " ".join(prompt), "completion": " " + " ".join(completion)}],
        tok,
        max_length=max_length,
        max_prompt_length=max_prompt_length,
    )
    full_prompt = [BOS] + tok(" ".join(prompt), add_special_tokens=False)["input_ids"]
    full_completion = tok(" ".join(completion), add_special_tokens=False)["input_ids"] + [EOS]
    p, c = ds["prompt_ids"][0], ds["completion_ids"][0]
    assert len(p) <= max_prompt_length and len(p) + len(c) <= max_length
    assert c == full_completion[: max_length - len(p)]
    if len(full_prompt) <= max_prompt_length:
        assert p == full_prompt
    elif max_prompt_length > 1:
        assert p == [BOS] + full_prompt[len(full_prompt) - max_prompt_length + 1 :]
    else:
        assert p == full_prompt[-1:]


@pytest.mark.parametrize(
    "max_length, max_prompt_length",
    [(10, 10), (10, 11), (1, 1), (0, None), (None, 0), (-5, None), (5, -1)],
)
def test_check_lengths_rejects(max_length, max_prompt_length):
    with pytest.raises(ValueError):
        check_lengths(max_length, max_prompt_length)


@pytest.mark.parametrize("max_length, max_prompt_length", [(10, 9), (2, 1), (None, 5), (5, None), (None, None)])
def test_check_lengths_accepts(max_length, max_prompt_length):
    assert check_lengths(max_length, max_prompt_length) is None


def test_prepare_checks_lengths_before_reading(tmp_path, tokenizer):
    missing = tmp_path / "missing.jsonl"
    for prepare in (prepare_demonstrations, prepare_preferences):
        with pytest.raises(ValueError, match="max_prompt_length") as e:
            prepare(missing, tokenizer, max_length=8, max_prompt_length=8)
        assert type(e.value) is ValueError  # a settings error, not a DataError about the file


# =============================================================================================
# Collation
# =============================================================================================


def test_pad_sequences_exact():
    out = pad_sequences([[5, 6], [7]], [[8], [9, 10, 11]], pad_token_id=99)
    assert set(out) == {"input_ids", "attention_mask", "completion_mask"}
    assert all(t.dtype == torch.long for t in out.values())
    assert out["input_ids"].tolist() == [[5, 6, 8, 99], [7, 9, 10, 11]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert out["completion_mask"].tolist() == [[0, 0, 1, 0], [0, 1, 1, 1]]


def test_pad_sequences_pad_to_multiple_of():
    out = pad_sequences([[5, 6], [7]], [[8], [9, 10, 11]], pad_token_id=0, pad_to_multiple_of=3)
    assert out["input_ids"].tolist() == [[5, 6, 8, 0, 0, 0], [7, 9, 10, 11, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]]
    assert out["completion_mask"].tolist() == [[0, 0, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0]]
    # Already a multiple: unchanged width.
    assert pad_sequences([[1, 2]], [[3, 4]], 0, pad_to_multiple_of=4)["input_ids"].shape == (1, 4)


def test_pad_sequences_errors_and_empty():
    with pytest.raises(ValueError):
        pad_sequences([[1]], [[2], [3]], 0)
    out = pad_sequences([], [], 0)
    assert out["input_ids"].shape == (0, 0)


def test_concat_padded():
    a = pad_sequences([[1]], [[2]], pad_token_id=7)
    b = pad_sequences([[3, 4]], [[5, 6]], pad_token_id=7)
    out = concat_padded(a, b, pad_token_id=7)
    assert out["input_ids"].tolist() == [[1, 2, 7, 7], [3, 4, 5, 6]]
    assert out["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert out["completion_mask"].tolist() == [[0, 1, 0, 0], [0, 0, 1, 1]]
    out = concat_padded(b, a, pad_token_id=7)
    assert out["input_ids"].tolist() == [[3, 4, 5, 6], [1, 2, 7, 7]]


def _pref(prompt, chosen, rejected):
    return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}


def _demo(prompt, completion):
    return {"prompt_ids": prompt, "completion_ids": completion}


def test_collator_exact_batch():
    items = [
        {"pref": _pref([10], [11, 12], [13]), "demo": _demo([20, 21], [22]), "demo_index": 4},
        {"pref": _pref([30, 31], [32], [33, 34, 35]), "demo": None, "demo_index": -1},
        {"pref": None, "demo": _demo([40], [41, 42, 43, 44]), "demo_index": 0},
    ]
    batch = AIHFCollator(pad_token_id=0)(items)
    assert batch["num_pairs"] == 2
    assert batch["num_demos"] == 2
    assert batch["demo_index"] == [4, 0]
    assert batch["demo_prompt_ids"] == [[20, 21], [40]]
    # Rows: chosen 0, chosen 1, rejected 0, rejected 1, demo 0, demo 1.
    assert batch["input_ids"].tolist() == [
        [10, 11, 12, 0, 0],
        [30, 31, 32, 0, 0],
        [10, 13, 0, 0, 0],
        [30, 31, 33, 34, 35],
        [20, 21, 22, 0, 0],
        [40, 41, 42, 43, 44],
    ]
    assert batch["attention_mask"].tolist() == [
        [1, 1, 1, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1],
    ]
    assert batch["completion_mask"].tolist() == [
        [0, 1, 1, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 1, 0, 0, 0],
        [0, 0, 1, 1, 1],
        [0, 0, 1, 0, 0],
        [0, 1, 1, 1, 1],
    ]


def test_batch_layout_names_the_collator_rows():
    items = [
        {"pref": _pref([10], [11, 12], [13]), "demo": _demo([20, 21], [22]), "demo_index": 4},
        {"pref": _pref([30, 31], [32], [33, 34, 35]), "demo": None, "demo_index": -1},
        {"pref": None, "demo": _demo([40], [41, 42, 43, 44]), "demo_index": 0},
    ]
    batch = AIHFCollator(pad_token_id=0)(items)
    layout = BatchLayout.of(batch)
    ids = batch["input_ids"].tolist()
    assert ids[layout.chosen] == [[10, 11, 12, 0, 0], [30, 31, 32, 0, 0]]
    assert ids[layout.rejected] == [[10, 13, 0, 0, 0], [30, 31, 33, 34, 35]]
    assert ids[layout.demos] == [[20, 21, 22, 0, 0], [40, 41, 42, 43, 44]]
    assert (layout.pairs, layout.samples, layout.num_rows) == (slice(0, 4), slice(6, 6), 6)
    # with one sample per demonstration appended after the demonstrations (self-play, AIHF-RL)
    with_samples = BatchLayout(num_pairs=2, num_demos=2, num_samples=2)
    assert (with_samples.samples, with_samples.num_rows) == (slice(6, 8), 8)
    # the first pair and first demonstration are data, the rest copies: their rows only
    assert with_samples.real(1, 1) == [0, 2, 4, 6]
    assert layout.real(2, 2) == [0, 1, 2, 3, 4, 5]


def test_collator_pad_to_multiple_of_and_pad_id():
    items = [{"pref": _pref([1], [2], [3, 4]), "demo": None, "demo_index": -1}]
    batch = AIHFCollator(pad_token_id=9, pad_to_multiple_of=4)(items)
    assert batch["input_ids"].tolist() == [[1, 2, 9, 9], [1, 3, 4, 9]]
    assert batch["completion_mask"].tolist() == [[0, 1, 0, 0], [0, 1, 1, 0]]
    assert (batch["num_pairs"], batch["num_demos"], batch["demo_index"], batch["demo_prompt_ids"]) == (1, 0, [], [])


def test_paired_dataset_cycles_the_smaller_source(tokenizer):
    prefs = prepare_preferences(
        [{"prompt": w, "chosen": "yes", "rejected": "no"} for w in ("hello", "how", "the")], tokenizer
    )
    demos = prepare_demonstrations(
        [{"prompt": w, "completion": "good"} for w in ("a", "cat", "dog", "mat", "on")], tokenizer
    )
    paired = PairedDataset(prefs, demos)
    assert len(paired) == 5
    items = [paired[i] for i in range(5)]
    assert [it["pref"]["prompt_ids"] for it in items] == [[HELLO], [HOW], [THE], [HELLO], [HOW]]
    assert [it["demo"]["prompt_ids"] for it in items] == [[A], [CAT], [DOG], [MAT], [ON]]
    assert [it["demo_index"] for it in items] == [0, 1, 2, 3, 4]
    assert items[0]["pref"] == {"prompt_ids": [HELLO], "chosen_ids": [YES, EOS], "rejected_ids": [NO, EOS]}
    assert items[0]["demo"] == {"prompt_ids": [A], "completion_ids": [GOOD, EOS]}

    flipped = PairedDataset(prefs, demos.select(range(2)))
    assert len(flipped) == 3
    assert [flipped[i]["demo_index"] for i in range(3)] == [0, 1, 0]
    assert [flipped[i]["demo"]["prompt_ids"] for i in range(3)] == [[A], [CAT], [A]]

    batch = AIHFCollator(pad_token_id=tokenizer.pad_token_id)([paired[3], paired[4]])
    assert batch["input_ids"].tolist() == [
        [HELLO, YES, EOS],
        [HOW, YES, EOS],
        [HELLO, NO, EOS],
        [HOW, NO, EOS],
        [MAT, GOOD, EOS],
        [ON, GOOD, EOS],
    ]
    assert batch["demo_index"] == [3, 4]


def test_paired_dataset_with_one_source():
    prefs = [_pref([1], [2], [3]), _pref([4], [5], [6])]
    only_prefs = PairedDataset(prefs, None)
    assert len(only_prefs) == 2
    assert only_prefs[1] == {"pref": _pref([4], [5], [6]), "demo": None, "demo_index": -1}

    demos = [_demo([1], [2]), _demo([3], [4]), _demo([5], [6])]
    only_demos = PairedDataset(None, demos)
    assert len(only_demos) == 3
    assert only_demos[2] == {"pref": None, "demo": _demo([5], [6]), "demo_index": 2}
    batch = AIHFCollator(pad_token_id=0)([only_demos[0], only_demos[2]])
    assert (batch["num_pairs"], batch["num_demos"]) == (0, 2)
    assert batch["input_ids"].tolist() == [[1, 2], [5, 6]]
    assert batch["completion_mask"].tolist() == [[0, 1], [0, 1]]

    with pytest.raises(ValueError):
        PairedDataset(None, None)


def test_paired_dataset_rejects_empty_sources():
    from datasets import Dataset

    empty = Dataset.from_dict({"prompt_ids": [], "completion_ids": []})
    with pytest.raises(ValueError, match="empty source"):
        PairedDataset(None, empty)
    with pytest.raises(ValueError, match="need preferences"):
        PairedDataset(None, None)


def test_conversational_completion_stops_at_its_eos(tokenizer):
    """What a chat template writes after the answer's EOS is dropped: a sampled answer stops at
    EOS, and self-play must not be able to tell demonstrations from samples by that tail."""
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} "
        "{% if m['role'] == 'assistant' %}<eos> the {% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<assistant> {% endif %}"
    )
    rows = [{"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "good"}]}]
    ds = prepare_demonstrations(rows, tokenizer)
    assert ds[0]["completion_ids"] == tokenizer("good <eos>", add_special_tokens=False)["input_ids"]
