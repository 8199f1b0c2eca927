"""Special tokens, the prompt/completion boundary, chat templates, end-of-turn tokens and implicit
prompts, with tokenizers of the kinds real models ship (:mod:`tests.data.real_tokenizers`)."""

from __future__ import annotations

import logging
import warnings

import pytest
import regex
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import aihf
from aihf.data import Rows, end_token, preference_texts, prepare_demonstrations, prepare_preferences, special_tokens
from aihf.data.formats import implicit_prompt_cut
from tests.device import USE_CPU

from .real_tokenizers import byte_level_bpe, legacy_sentencepiece, metaspace_llama, r1_tokenizer

CHATML_PROMPT = "<|im_start|>user\nWhat is two plus two?<|im_end|>\n<|im_start|>assistant\n"
CHATML_COMPLETION = "The answer is four.<|im_end|>\n"
ADDS = ["nothing", "bos", "bos+eos"]


def user(content: str) -> dict:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict:
    return {"role": "assistant", "content": content}


QUESTION = [user("What is two plus two?")]
ANSWER = [assistant("The answer is four.")]


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


# =============================================================================================
# Item 2: special tokens already in the text or added by the tokenizer
# =============================================================================================


@pytest.mark.parametrize("adds", ADDS)
def test_prerendered_chatml_row_has_one_bos_and_one_end_token(adds):
    tok = byte_level_bpe(adds)
    bos, end = tok.bos_token_id, tok.convert_tokens_to_ids("<|im_end|>")
    lead = [bos] if adds != "nothing" else []
    rows = [
        {"prompt": CHATML_PROMPT, "completion": CHATML_COMPLETION},  # rendered by a chat template
        {"prompt": "<s>" + CHATML_PROMPT, "completion": CHATML_COMPLETION},  # ... that writes BOS too
        {"prompt": "What is two plus two?", "completion": " The answer is four."},  # no specials at all
        {"prompt": "What is two plus two?", "completion": " The answer is four.<|im_end|>"},
        {"messages": QUESTION + ANSWER},
    ]
    ds = prepare_demonstrations(rows, tok)
    for i, (prompt, completion) in enumerate(zip(ds["prompt_ids"], ds["completion_ids"])):
        sequence = prompt + completion
        assert sequence.count(bos) == (1 if lead or i == 1 else 0), i
        assert sequence[0] == bos or not lead
        assert completion.count(end) == 1 and completion[-1] == end, i
    answer = ids(tok, "The answer is four.<|im_end|>")
    # The pre-rendered strings and the same conversation as messages train on the same ids.
    assert ds["prompt_ids"][0] == ds["prompt_ids"][4] == lead + ids(tok, CHATML_PROMPT)
    assert ds["prompt_ids"][1] == [bos] + ids(tok, CHATML_PROMPT)  # the text's BOS, not doubled
    assert ds["completion_ids"][0] == ds["completion_ids"][1] == ds["completion_ids"][4] == answer
    # No EOS at the end of any prompt (the bos+eos post-processor's is not kept).
    assert ds["prompt_ids"][2] == lead + ids(tok, "What is two plus two?")
    assert ds["completion_ids"][2] == ds["completion_ids"][3] == ids(tok, " The answer is four.") + [end]


@pytest.mark.parametrize("adds", ADDS)
def test_preference_rows_have_one_bos_and_one_end_token(adds):
    tok = byte_level_bpe(adds)
    bos, end = tok.bos_token_id, tok.convert_tokens_to_ids("<|im_end|>")
    row = {
        "prompt": CHATML_PROMPT,
        "chosen": "The answer is four.<|im_end|>\n",
        "rejected": "Five.<|im_end|>",
        "reference": "Four.",
    }
    ds = prepare_preferences([row], tok)
    prompt = ds["prompt_ids"][0]
    assert prompt == ([bos] if adds != "nothing" else []) + ids(tok, CHATML_PROMPT)
    for field, text in (("chosen", "The answer is four."), ("rejected", "Five."), ("reference", "Four.")):
        assert ds[f"{field}_ids"][0] == ids(tok, text) + [end], field


# =============================================================================================
# Item 3: the prompt/completion boundary
# =============================================================================================

TOKENIZERS = {
    "byte-level-bpe": lambda: byte_level_bpe("bos"),
    "metaspace-llama": lambda: metaspace_llama(legacy=False),
    "metaspace-llama-legacy": lambda: metaspace_llama(legacy=True),
    "legacy-sentencepiece": legacy_sentencepiece,
}


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
@pytest.mark.parametrize("completion", [" hi, how can I help you today?", "\n\nhi, how can I help you today?"])
def test_prompt_plus_completion_ids_equal_the_whole_text_ids(kind, completion):
    tok = TOKENIZERS[kind]()
    prompt = "Human: hello there Assistant:"
    ds = prepare_demonstrations([{"prompt": prompt, "completion": completion}], tok)
    p, c = ds["prompt_ids"][0], ds["completion_ids"][0]
    assert p == tok(prompt)["input_ids"]  # the prompt as at inference
    assert c[-1] == tok.eos_token_id
    assert p + c[:-1] == tok(prompt + completion)["input_ids"]  # the whole text, as at inference
    assert tok.decode(p + c[:-1], skip_special_tokens=True) == prompt + completion

    pairs = prepare_preferences([{"prompt": prompt, "chosen": completion, "rejected": " no."}], tok)
    assert pairs["prompt_ids"][0] == p and pairs["chosen_ids"][0] == c
    assert p + pairs["rejected_ids"][0][:-1] == tok(prompt + " no.")["input_ids"]


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_token_straddling_the_boundary_moves_to_the_completion(kind):
    """A prompt ending in a space before a word: the documented minimal deviation. The sequence
    is still the whole text's ids; the prompt loses only the tokens that differ."""
    tok = TOKENIZERS[kind]()
    rows = [{"prompt": f"Human: {w} Assistant: ", "completion": "hi there"} for w in ("hello", "hi", "the cat")]
    with pytest.warns(UserWarning, match="in 3 of 3 rows a token straddles") as caught:
        ds = prepare_demonstrations(rows, tok)
    assert sum("straddles" in str(w.message) for w in caught) == 1
    for row, p, c in zip(rows, ds["prompt_ids"], ds["completion_ids"]):
        alone, whole = tok(row["prompt"])["input_ids"], tok(row["prompt"] + row["completion"])["input_ids"]
        assert p + c[:-1] == whole
        assert p == alone[: len(p)] and 1 <= len(alone) - len(p) <= 2


# The property test below cannot take function-scoped fixtures: build the tokenizers once.
_PROPERTY_TOKENIZERS = [byte_level_bpe("bos"), metaspace_llama(legacy=True), legacy_sentencepiece()]
_PIECES = ["the", "cat", "hi", "Assistant:", " ", "  ", "\n", "\n\n", ",", "?", "🇫🇷", "नमस्ते", "我", "é"]
_TEXTS = st.lists(st.sampled_from(_PIECES), min_size=1, max_size=8).map("".join)


@given(
    which=st.integers(0, len(_PROPERTY_TOKENIZERS) - 1),
    prompt=st.tuples(st.sampled_from(["", "<s>"]), _TEXTS).map("".join),  # with or without BOS in the text
    answers=st.lists(_TEXTS, min_size=2, max_size=2),
)
@settings(max_examples=100, deadline=None)
def test_sequences_are_the_whole_texts_ids_for_any_boundary(which, prompt, answers):
    """Whatever the boundary looks like, each sequence is the whole text's ids (one BOS, then the
    text), the prompt is the start of the prompt's own ids, and the answer ends with one EOS."""
    tok = _PROPERTY_TOKENIZERS[which]
    assume(prompt.strip() and all(a.strip() for a in answers) and answers[0] != answers[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = prepare_preferences([{"prompt": prompt, "chosen": answers[0], "rejected": answers[1]}], tok)
    bos, p = tok.bos_token_id, ds["prompt_ids"][0]

    def with_one_bos(text: str) -> list[int]:
        text_ids = ids(tok, text)
        return text_ids if text_ids[:1] == [bos] else [bos] + text_ids

    assert p == with_one_bos(prompt)[: len(p)] and p[0] == bos
    for answer, c in zip(answers, (ds["chosen_ids"][0], ds["rejected_ids"][0])):
        assert p + c[:-1] == with_one_bos(prompt + answer)
        assert c[-1] == tok.eos_token_id and tok.eos_token_id not in c[:-1]


# =============================================================================================
# Item 4: a generation prompt that an answered turn does not repeat
# =============================================================================================


def test_template_whose_generation_prompt_is_not_a_prefix_is_split_at_the_common_prefix():
    tok = r1_tokenizer()
    questions_answers = [
        ("What is two plus two?", "four"),
        ("hello there", "hi, how can I help you today?"),
        ("the cat", "sat on the mat"),
    ]
    rows = [{"messages": [user(q), assistant(a)]} for q, a in questions_answers]
    with pytest.warns(UserWarning, match=r"ends with '<think>\\n'.*3 of 3 rows") as caught:
        ds = prepare_demonstrations(rows, tok)
    assert sum("<think>" in str(w.message) for w in caught) == 1
    eos = tok.eos_token_id
    for row, p, c in zip(rows, ds["prompt_ids"], ds["completion_ids"]):
        rendered = tok.apply_chat_template(row["messages"], tokenize=False)
        assert p + c == ids(tok, rendered)
        assert tok.decode(c) == row["messages"][1]["content"] + "<｜end▁of▁sentence｜>"
        assert c.count(eos) == 1 and c[-1] == eos
        assert tok.decode(p).endswith("<｜Assistant｜>")

    pref = {"prompt": rows[0]["messages"][:1], "chosen": [assistant("four")], "rejected": [assistant("five")]}
    with pytest.warns(UserWarning, match="<think>"):
        pairs = prepare_preferences([pref], tok)
    assert tok.decode(pairs["chosen_ids"][0]) == "four<｜end▁of▁sentence｜>"
    assert tok.decode(pairs["rejected_ids"][0]) == "five<｜end▁of▁sentence｜>"


# =============================================================================================
# Item 5: an end-of-turn token that is not the tokenizer's EOS
# =============================================================================================


def test_end_of_turn_token_of_the_template_closes_completions(caplog, monkeypatch):
    monkeypatch.setattr(special_tokens, "_announced", set())  # the line is logged once per process
    tok = byte_level_bpe(eos="<|endoftext|>")
    im_end, eos = tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id
    assert im_end != eos
    with caplog.at_level(logging.INFO, logger="aihf"):
        end = end_token(tok)
        end_token(tok)
    assert (end.token, end.id, end.text_id) == ("<|im_end|>", im_end, eos)
    assert end.origin == "the chat template's end of turn"
    messages = [r.getMessage() for r in caplog.records]
    assert sum("end token '<|im_end|>'" in m and "EOS '<|endoftext|>'" in m for m in messages) == 1

    rows = [{"messages": QUESTION + ANSWER}, {"prompt": CHATML_PROMPT, "completion": CHATML_COMPLETION}]
    ds = prepare_demonstrations(rows, tok)
    # Ends at <|im_end|>: no newline after it, no <|endoftext|>.
    assert ds["completion_ids"] == [ids(tok, "The answer is four.<|im_end|>")] * 2
    assert all(eos not in c for c in ds["completion_ids"])
    # A plain-text completion without either gets the tokenizer's EOS, as in TRL.
    plain = prepare_demonstrations([{"prompt": "What is two plus two?", "completion": " four"}], tok)
    assert plain["completion_ids"] == [ids(tok, " four") + [eos]]


def test_eos_token_setting_overrides_the_detected_end_token():
    tok = byte_level_bpe(eos="<|endoftext|>")
    end = end_token(tok, "<|endoftext|>")
    assert (end.token, end.id, end.origin) == ("<|endoftext|>", tok.eos_token_id, "set by eos_token")
    rows = [{"prompt": "What is two plus two?", "completion": " four"}, {"messages": QUESTION + ANSWER}]
    ds = prepare_demonstrations(rows, tok, eos_token="<s>")  # for every row
    s = tok.convert_tokens_to_ids("<s>")
    assert ds["completion_ids"] == [ids(tok, " four") + [s], ids(tok, "The answer is four.<|im_end|>\n") + [s]]
    with pytest.raises(aihf.ConfigError, match="eos_token: '<nope>'"):
        prepare_demonstrations([{"prompt": "a", "completion": " b"}], tok, eos_token="<nope>")


TURN = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}"


@pytest.mark.parametrize(
    "eos, turn_end, template",
    [
        ("<|end_of_text|>", "<|eot_id|>", TURN + "<|eot_id|>{% endfor %}"),  # Llama 3
        ("<eos>", "<end_of_turn>", TURN + "<end_of_turn>\n{% endfor %}"),  # Gemma
        ("</s>", "</s>", TURN + "{% if m['role'] == 'assistant' %}</s>{% endif %}\n{% endfor %}"),  # Zephyr
        ("</s>", "</s>", TURN + "\n{% endfor %}"),  # nothing marks the end of a turn: EOS
    ],
)
def test_end_of_turn_detection_for_common_template_styles(eos, turn_end, template):
    tok = byte_level_bpe()
    tok.add_special_tokens({"eos_token": eos, "additional_special_tokens": ["<|eot_id|>", "<end_of_turn>"]})
    tok.chat_template = template
    end = end_token(tok)
    assert end.token == turn_end and end.id == tok.convert_tokens_to_ids(turn_end)
    assert end.text_id == tok.eos_token_id


def test_templates_that_end_turns_with_eos_keep_eos_as_the_end_token(tokenizer):
    # conftest's template writes "<eot> <eos>" after an answer: EOS is in the turn's end.
    assert end_token(tokenizer).id == tokenizer.eos_token_id
    assert end_token(byte_level_bpe()).token == "<|im_end|>"  # EOS <|im_end|> is the end of turn
    assert end_token(legacy_sentencepiece()).token == "</s>"  # no chat template


def test_trainer_stops_self_play_at_the_end_token(tmp_path):
    from aihf.llm import AIHFConfig, AIHFTrainer
    from aihf.tasks.tiny import build_model

    tok = byte_level_bpe(eos="<|endoftext|>")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    demos = [{"messages": QUESTION + ANSWER}] * 2
    args = dict(output_dir=str(tmp_path), demo_loss="self_play", pref_weight=0.0, report_to="none", use_cpu=USE_CPU)
    model = build_model(tok, hidden_size=16, num_layers=1)
    trainer = AIHFTrainer(model, args=AIHFConfig(**args), demonstrations=demos, processing_class=tok)
    assert im_end in trainer.generator.eos_token_id
    assert trainer.train_dataset.demonstrations["completion_ids"][0][-1] == im_end
    args["eos_token"] = "<|endoftext|>"
    trainer = AIHFTrainer(model, args=AIHFConfig(**args), demonstrations=demos, processing_class=tok)
    assert trainer.generator.eos_token_id[0] == tok.eos_token_id
    assert trainer.train_dataset.demonstrations["completion_ids"][0][-1] == tok.eos_token_id


# =============================================================================================
# Item 6: implicit prompts
# =============================================================================================

IMPLICIT_PAIRS = [
    ("Vote:🇫🇷", "Vote:🇩🇪"),
    ("Vote:🇫🇷", "Vote:🇫🇮"),  # the flags share their first regional indicator
    ("Family: 👨‍👩‍👧", "Family: 👨‍👩‍👦"),  # ZWJ sequences sharing three code points
    ("Thumbs 👍🏽", "Thumbs 👍🏿"),  # skin-tone modifiers
    ("नमस्ते दुनिया", "नमस्ते दोस्त"),  # Devanagari conjuncts
    ("สวัสดีครับ", "สวัสดีค่ะ"),  # Thai combining vowels and tone marks
    ("我喜欢猫。", "我喜欢狗。"),  # no spaces at all
    ("un cafe\u0301", "un cafe\u0300"),  # combining accents
    ("안녕하세요", "안녕히 가세요"),  # Hangul
    ("the cat sat on the mat", "the cat sat on a mat"),
]


@pytest.mark.parametrize("chosen, rejected", IMPLICIT_PAIRS)
@pytest.mark.parametrize("kind", ["byte-level-bpe", "legacy-sentencepiece", "none"])
def test_implicit_prompt_is_cut_on_a_shared_token_boundary_never_inside_a_grapheme(kind, chosen, rejected):
    tok = TOKENIZERS[kind]() if kind != "none" else None
    (text,) = preference_texts(Rows("r", [{"chosen": chosen, "rejected": rejected}]), tok, None)
    assert text.prompt + text.chosen == chosen and text.prompt + text.rejected == rejected
    cut = len(text.prompt)
    assert text.prompt.strip()
    for full in (chosen, rejected):
        assert cut in {m.end() for m in regex.finditer(r"\X", full)}, "cut inside a grapheme"
    if tok is not None:
        for full in (chosen, rejected):
            prompt_ids = ids(tok, text.prompt)
            assert ids(tok, full)[: len(prompt_ids)] == prompt_ids, "not a token boundary of both texts"
        ds = prepare_preferences([{"chosen": chosen, "rejected": rejected}], tok, implicit_prompt_marker=None)
        assert ds["prompt_ids"][0] + ds["chosen_ids"][0][:-1] == tok(chosen)["input_ids"]
        assert ds["prompt_ids"][0] + ds["rejected_ids"][0][:-1] == tok(rejected)["input_ids"]


@pytest.mark.parametrize("make", [lambda: byte_level_bpe("bos"), legacy_sentencepiece])
def test_implicit_prompt_without_a_shared_token_boundary_is_still_cut_between_graphemes(make):
    # Both vocabularies have a token "नमस" ending inside the conjunct "स्ते" / "स्का": no grapheme
    # boundary of these texts is a token boundary, so the cut falls back to the last shared
    # grapheme boundary, and the tokens straddling it go to the answers.
    tok = make()
    chosen, rejected = "नमस्ते दुनिया", "नमस्कार दोस्त"
    for full in (chosen, rejected):  # the premise: "न" and "नम" are no token boundaries
        assert all(ids(tok, full)[: len(ids(tok, p))] != ids(tok, p) for p in ("न", "नम"))
    (text,) = preference_texts(Rows("r", [{"chosen": chosen, "rejected": rejected}]), tok, None)
    assert text.prompt == "नम"  # न, म: never inside स्ते
    with pytest.warns(UserWarning, match="straddles"):
        ds = prepare_preferences([{"chosen": chosen, "rejected": rejected}], tok, implicit_prompt_marker=None)
    assert ds["prompt_ids"][0] == [tok.bos_token_id]
    assert ds["prompt_ids"][0] + ds["chosen_ids"][0][:-1] == tok(chosen)["input_ids"]
    assert ds["prompt_ids"][0] + ds["rejected_ids"][0][:-1] == tok(rejected)["input_ids"]


def test_implicit_prompt_cut_backs_up_from_a_token_that_spans_the_difference(tokenizer):
    # Word-level: "ca" is no token boundary of "cat"/"car", so the cut backs up to "the".
    assert implicit_prompt_cut("the cat", "the car", tokenizer) == 3
    assert implicit_prompt_cut("the cat", "the car") == 3  # no tokenizer: the last shared space
    assert implicit_prompt_cut("Vote:🇫🇷", "Vote:🇫🇮") == 5
    assert implicit_prompt_cut("yes", "no") == 0


def test_hh_marker_behaviour_is_unchanged_with_real_tokenizers():
    hh = "\n\nHuman: What is two plus two?\n\nAssistant:"
    for make in TOKENIZERS.values():
        (text,) = preference_texts(Rows("hh", [{"chosen": hh + " four", "rejected": hh + " five"}]), make())
        assert (text.prompt, text.chosen, text.rejected) == (hh, " four", " five")


def test_no_warning_for_well_formed_rows():
    tok = byte_level_bpe("bos")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_demonstrations([{"prompt": "What is two plus two?", "completion": " four"}], tok)
        prepare_demonstrations([{"messages": QUESTION + ANSWER}], tok)
