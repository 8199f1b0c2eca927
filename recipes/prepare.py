"""Write the paper-scale recipes' data as JSONL files that ``aihf train`` reads (docs/recipes.md).

    python recipes/prepare.py hh --output_dir data/hh              # Anthropic-HH for the Pythia recipes
    python recipes/prepare.py ultra --output_dir data/ultra        # UltraChat + UltraFeedback for the 7B recipes

Each source is read with ``datasets.load_dataset(<id>, split=...)``: a Hub id (the defaults) or a
local folder laid out as the Hub repository (the tests use small ones). Every row is checked with
the same validation ``aihf train`` runs (:mod:`aihf.data.formats`, with the run's tokenizer for chat
templates); a row it would refuse is dropped and counted, so that training does not stop at the
first odd row of a 200k-row dataset. ``<output_dir>/prepare.json`` records the sources, the counts
and the first reason of each kind of drop.

What is written:

* ``hh``: Anthropic/hh-rlhf ``train`` -> ``preferences.jsonl`` (``prompt``/``chosen``/``rejected``
  strings, the prompt being the dialogue up to the last shared ``"\\n\\nAssistant:"``, as ``aihf``
  cuts HH's full texts) and ``demonstrations.jsonl`` (``prompt``/``completion``: the same prompt and
  the chosen answer, method.md "demos = HH chosen answers"); ``test`` -> ``eval_preferences.jsonl``.
* ``ultra``: HuggingFaceH4/ultrachat_200k ``train_sft`` / ``test_sft`` -> ``demonstrations.jsonl`` /
  ``eval_demonstrations.jsonl`` (its ``messages`` column; the last message is the answer, the turns
  before it the prompt); HuggingFaceH4/ultrafeedback_binarized ``train_prefs`` / ``test_prefs`` ->
  ``preferences.jsonl`` / ``eval_preferences.jsonl`` (its ``chosen``/``rejected`` message lists, split
  into the shared prompt messages and the two final assistant answers).

Rows are shuffled with ``--seed`` before ``--num_*`` caps are applied, so a capped file is a
uniform sample.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
from collections import Counter
from typing import Any

HH_DATASET = "Anthropic/hh-rlhf"
ULTRACHAT_DATASET = "HuggingFaceH4/ultrachat_200k"
ULTRAFEEDBACK_DATASET = "HuggingFaceH4/ultrafeedback_binarized"
PYTHIA_TOKENIZER = "EleutherAI/pythia-1.4b"
ZEPHYR_TOKENIZER = "alignment-handbook/zephyr-7b-sft-full"


def _shuffled(dataset, seed: int) -> list[int]:
    order = list(range(len(dataset)))
    random.Random(seed).shuffle(order)
    return order


class _Kept:
    """Rows that pass aihf's validation, up to ``limit``; drops counted by reason."""

    def __init__(self, limit: int | None):
        self.limit = limit
        self.rows: list[dict] = []
        self.seen = 0
        self.dropped: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.rows) >= self.limit

    def drop(self, where: str, error: Exception) -> None:
        problem = getattr(error, "problem", None) or str(error)
        field = re.sub(r"\[\d+\]", "[i]", str(getattr(error, "field", None)))  # messages[3].role -> messages[i].role
        key = f"{field}: {problem}"
        if len(key) > 120:  # problems that quote the row differ per row; group by their start
            key = key[:120]
        self.dropped[key] += 1
        self.examples.setdefault(key, where)

    def summary(self) -> dict[str, Any]:
        return {
            "rows_read": self.seen,
            "rows_written": len(self.rows),
            "rows_dropped": sum(self.dropped.values()),
            "dropped_by_reason": {k: {"count": n, "first": self.examples[k]} for k, n in self.dropped.most_common()},
        }


def _validate_preference(record: dict, label: str, source: str, tokenizer) -> dict:
    """``{"prompt", "chosen", "rejected"}`` of one row as ``aihf train`` reads it, or DataError."""
    from aihf.data import Rows, preference_texts

    (text,) = preference_texts(Rows(source, [record], [label]), tokenizer)
    if text.conversational:
        return record  # message lists stay message lists: the chat template is applied at training time
    return {"prompt": text.prompt, "chosen": text.chosen, "rejected": text.rejected}


def _validate_demonstration(record: dict, label: str, source: str, tokenizer) -> dict:
    from aihf.data import Rows, demonstration_texts

    demonstration_texts(Rows(source, [record], [label]), tokenizer)
    return record


def _select(dataset_id: str, split: str, kept: list[_Kept], convert, seed: int) -> None:
    """Walk the split in a seeded random order; each row becomes one row per ``kept`` target
    (``None`` for none) through ``convert(record, source, label)``, until every target is full."""
    from tqdm.auto import tqdm

    from aihf.errors import DataError

    dataset = _load(dataset_id, split)
    source = f"{dataset_id}[{split}]"
    for index in tqdm(_shuffled(dataset, seed), desc=source, mininterval=5):
        if all(k.full for k in kept):
            break
        label = f"row {index}"
        record = dataset[index]
        for k in kept:
            k.seen += 1
        try:
            rows = convert(record, source, label)
        except DataError as e:
            for k in kept:
                k.drop(f"{source}, {label}", e)
            continue
        for k, row in zip(kept, rows):
            if row is not None and not k.full:
                k.rows.append(row)


def _load(dataset_id: str, split: str):
    import datasets

    try:
        return datasets.load_dataset(dataset_id, split=split)
    except Exception as e:  # offline, unknown id, missing split: one line, as aihf's CLI does
        raise SystemExit(f"prepare: cannot load {dataset_id!r} split {split!r}: {' '.join(str(e).split())}") from e


def _write(output_dir: str, name: str, kept: _Kept) -> str:
    path = os.path.join(output_dir, name)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in kept.rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)  # never a half-written file under the final name
    return path


def prepare_hh(args) -> dict[str, Any]:
    """Anthropic-HH: preference pairs, their chosen answers as demonstrations, held-out pairs."""
    tokenizer = _tokenizer(args.tokenizer)
    prefs = _Kept(args.num_preferences)
    demos = _Kept(args.num_demonstrations)
    evals = _Kept(args.num_eval_preferences)

    def pair(record, source, label):
        return _validate_preference(
            {"chosen": record["chosen"], "rejected": record["rejected"]}, label, source, tokenizer
        )

    def pair_and_demo(record, source, label):
        row = pair(record, source, label)
        if args.disjoint and not prefs.full:  # demonstrations only from pairs not kept as preferences
            return [row, None]
        return [row, {"prompt": row["prompt"], "completion": row["chosen"]}]

    _select(args.dataset, args.train_split, [prefs, demos], pair_and_demo, args.seed)
    _select(args.dataset, args.eval_split, [evals], lambda *row: [pair(*row)], args.seed)
    return _finish(args, {"preferences.jsonl": prefs, "demonstrations.jsonl": demos, "eval_preferences.jsonl": evals})


def _ultrafeedback_pair(record: dict, source: str, label: str) -> dict:
    """An ultrafeedback_binarized row (``chosen``/``rejected``: the user turn(s), then the answer) as
    explicit ``prompt`` messages and one-message answers; its string ``prompt`` column is not used."""
    from aihf.errors import DataError

    chosen, rejected = list(record["chosen"]), list(record["rejected"])
    if chosen[:-1] != rejected[:-1]:
        raise DataError(source, label, "rejected", "its prompt messages differ from those of 'chosen'")
    return {"prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected[-1:]}


def prepare_ultra(args) -> dict[str, Any]:
    """UltraChat-200k demonstrations and UltraFeedback-binarized pairs, train and held-out."""
    tokenizer = _tokenizer(args.tokenizer)

    def demonstration(record, source, label):
        return [_validate_demonstration({"messages": record["messages"]}, label, source, tokenizer)]

    def preference(record, source, label):
        return [_validate_preference(_ultrafeedback_pair(record, source, label), label, source, tokenizer)]

    demos, prefs = args.demonstrations_dataset, args.preferences_dataset
    jobs = {
        "demonstrations.jsonl": (demos, args.demonstrations_split, args.num_demonstrations, demonstration),
        "eval_demonstrations.jsonl": (
            demos,
            args.eval_demonstrations_split,
            args.num_eval_demonstrations,
            demonstration,
        ),
        "preferences.jsonl": (prefs, args.preferences_split, args.num_preferences, preference),
        "eval_preferences.jsonl": (prefs, args.eval_preferences_split, args.num_eval_preferences, preference),
    }
    targets = {}
    for name, (dataset_id, split, limit, convert) in jobs.items():
        targets[name] = _Kept(limit)
        _select(dataset_id, split, [targets[name]], convert, args.seed)
    return _finish(args, targets)


def _tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise SystemExit(f"prepare: cannot load the tokenizer {name!r}: {' '.join(str(e).split())}") from e


def _finish(args, targets: dict[str, _Kept]) -> dict[str, Any]:
    os.makedirs(args.output_dir, exist_ok=True)
    for name, kept in targets.items():
        if not kept.rows:
            raise SystemExit(f"prepare: no valid rows for {name} ({kept.summary()['dropped_by_reason']})")
    summary = {
        "command": " ".join(sys.argv) if args.command_line is None else args.command_line,
        "settings": {k: v for k, v in vars(args).items() if k not in ("func", "command_line")},
        "files": {},
    }
    for name, kept in targets.items():
        _write(args.output_dir, name, kept)
        summary["files"][name] = kept.summary()
    with open(os.path.join(args.output_dir, "prepare.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    for name, info in summary["files"].items():
        path = os.path.join(args.output_dir, name)
        print(f"prepare: {path}: {info['rows_written']} rows ({info['rows_dropped']} dropped)")
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python recipes/prepare.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="dataset_kind", required=True)

    def common(p, tokenizer):
        p.add_argument("--output_dir", required=True, help="Folder for the JSONL files and prepare.json.")
        p.add_argument("--tokenizer", default=tokenizer, help="Tokenizer the rows are validated with (the policy's).")
        p.add_argument("--seed", type=int, default=0, help="Seed of the row order before the --num_* caps.")
        p.add_argument("--num_preferences", type=int, default=None, help="Keep at most this many pairs (default all).")
        p.add_argument("--num_demonstrations", type=int, default=None, help="At most this many demonstrations.")

    hh = commands.add_parser("hh", help="Anthropic-HH pairs and chosen answers (the Pythia recipes).")
    common(hh, PYTHIA_TOKENIZER)
    hh.add_argument("--dataset", default=HH_DATASET, help="Hub id or local folder laid out as Anthropic/hh-rlhf.")
    hh.add_argument("--train_split", default="train")
    hh.add_argument("--eval_split", default="test")
    hh.add_argument(
        "--num_eval_preferences", type=int, default=500, help="Held-out pairs (AIHF-RL scores all each round)."
    )
    hh.add_argument(
        "--disjoint",
        action="store_true",
        help="Take demonstrations only from pairs not kept as preferences (needs --num_preferences).",
    )
    hh.set_defaults(func=prepare_hh)

    ultra = commands.add_parser("ultra", help="UltraChat-200k demonstrations + UltraFeedback pairs (the 7B recipes).")
    common(ultra, ZEPHYR_TOKENIZER)
    ultra.add_argument("--demonstrations_dataset", default=ULTRACHAT_DATASET)
    ultra.add_argument("--preferences_dataset", default=ULTRAFEEDBACK_DATASET)
    ultra.add_argument("--demonstrations_split", default="train_sft")
    ultra.add_argument("--eval_demonstrations_split", default="test_sft")
    ultra.add_argument("--preferences_split", default="train_prefs")
    ultra.add_argument("--eval_preferences_split", default="test_prefs")
    ultra.add_argument("--num_eval_demonstrations", type=int, default=1000)
    ultra.add_argument("--num_eval_preferences", type=int, default=None, help="Held-out pairs (default all 2,000).")
    ultra.set_defaults(func=prepare_ultra)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    args.command_line = None if argv is None else "python recipes/prepare.py " + " ".join(argv)
    if getattr(args, "disjoint", False) and args.num_preferences is None:
        raise SystemExit("prepare: --disjoint needs --num_preferences (otherwise every pair is a preference)")
    return args.func(args)


if __name__ == "__main__":
    main()
