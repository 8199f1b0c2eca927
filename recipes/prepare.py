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

    def __init__(self, name: str, limit: int | None):
        self.name, self.limit = name, limit
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


def _select(dataset, source: str, kept: list[_Kept], convert, seed: int, progress: str) -> None:
    """Walk ``dataset`` in a seeded random order; each row converted by ``convert(record, label)``
    into one row per ``kept`` target (``None`` for none), until every target is full."""
    from tqdm.auto import tqdm

    from aihf.errors import DataError

    for index in tqdm(_shuffled(dataset, seed), desc=progress, mininterval=5):
        if all(k.full for k in kept):
            break
        label = f"row {index}"
        record = dataset[index]
        for k in kept:
            k.seen += 1
        try:
            rows = convert(record, label)
        except DataError as e:
            for k in kept:
                k.drop(label, e)
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
    train = _load(args.dataset, args.train_split)
    prefs = _Kept("preferences", args.num_preferences)
    # --disjoint: demonstrations come from pairs not used as preferences (no shared prompts).
    demos = _Kept("demonstrations", args.num_demonstrations)

    def convert(record, label):
        row = _validate_preference(
            {"chosen": record["chosen"], "rejected": record["rejected"]}, label, args.dataset, tokenizer
        )
        demo = {"prompt": row["prompt"], "completion": row["chosen"]}
        if args.disjoint and not prefs.full:
            return [row, None]
        return [row, demo]

    _select(train, f"{args.dataset}[{args.train_split}]", [prefs, demos], convert, args.seed, "HH train")
    test = _load(args.dataset, args.eval_split)
    evals = _Kept("eval_preferences", args.num_eval_preferences)
    _select(
        test,
        f"{args.dataset}[{args.eval_split}]",
        [evals],
        lambda r, lab: [
            _validate_preference({"chosen": r["chosen"], "rejected": r["rejected"]}, lab, args.dataset, tokenizer)
        ],
        args.seed,
        "HH test",
    )
    return _finish(args, {"preferences.jsonl": prefs, "demonstrations.jsonl": demos, "eval_preferences.jsonl": evals})


def _split_ultrafeedback(record: dict) -> dict:
    """An ultrafeedback_binarized row (``chosen``/``rejected``: the user turn(s) then the answer) as
    explicit ``prompt`` messages and one-message answers; the string ``prompt`` column is dropped."""
    chosen, rejected = record["chosen"], record["rejected"]
    return {"prompt": list(chosen[:-1]), "chosen": list(chosen[-1:]), "rejected": list(rejected[-1:])}, (
        list(chosen[:-1]) == list(rejected[:-1])
    )


def prepare_ultra(args) -> dict[str, Any]:
    """UltraChat-200k demonstrations and UltraFeedback-binarized pairs, train and held-out."""
    from aihf.errors import DataError

    tokenizer = _tokenizer(args.tokenizer)
    targets: dict[str, _Kept] = {}
    for name, split, limit in (
        ("demonstrations.jsonl", args.demonstrations_split, args.num_demonstrations),
        ("eval_demonstrations.jsonl", args.eval_demonstrations_split, args.num_eval_demonstrations),
    ):
        data = _load(args.demonstrations_dataset, split)
        kept = targets[name] = _Kept(name, limit)
        source = f"{args.demonstrations_dataset}[{split}]"
        _select(
            data,
            source,
            [kept],
            lambda r, lab, s=source: [_validate_demonstration({"messages": r["messages"]}, lab, s, tokenizer)],
            args.seed,
            f"UltraChat {split}",
        )

    for name, split, limit in (
        ("preferences.jsonl", args.preferences_split, args.num_preferences),
        ("eval_preferences.jsonl", args.eval_preferences_split, args.num_eval_preferences),
    ):
        data = _load(args.preferences_dataset, split)
        kept = targets[name] = _Kept(name, limit)
        source = f"{args.preferences_dataset}[{split}]"

        def convert(record, label, source=source):
            row, same_prompt = _split_ultrafeedback(record)
            if not same_prompt:
                raise DataError(source, label, "rejected", "its prompt messages differ from those of 'chosen'")
            return [_validate_preference(row, label, source, tokenizer)]

        _select(data, source, [kept], convert, args.seed, f"UltraFeedback {split}")
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
