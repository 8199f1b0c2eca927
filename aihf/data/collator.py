"""Batching demonstrations and preference pairs for one concatenated forward pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset as TorchDataset


class PairedDataset(TorchDataset):
    """Training items that each hold one preference pair and one demonstration.

    Item ``i`` holds pair ``i mod P`` and demonstration ``i mod D``; the length is ``max(P, D)``,
    so one epoch visits every example of the larger source once and cycles the smaller one.
    Either source may be ``None`` when its loss weight is 0. Pairing is arbitrary on purpose:
    the AIHF loss averages the two sources separately, so which pair meets which demonstration
    does not matter.
    """

    def __init__(self, preferences: Any | None, demonstrations: Any | None):
        if preferences is None and demonstrations is None:
            raise ValueError("need preferences, demonstrations, or both")
        if (preferences is not None and len(preferences) == 0) or (
            demonstrations is not None and len(demonstrations) == 0
        ):
            raise ValueError("an empty source must be passed as None")
        self.preferences = preferences
        self.demonstrations = demonstrations
        self._len = max(len(preferences or ()), len(demonstrations or ()))

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> dict:
        item: dict[str, Any] = {"pref": None, "demo": None, "demo_index": -1}
        if self.preferences is not None:
            row = self.preferences[i % len(self.preferences)]
            item["pref"] = {k: row[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
        if self.demonstrations is not None:
            j = i % len(self.demonstrations)
            row = self.demonstrations[j]
            item["demo"] = {k: row[k] for k in ("prompt_ids", "completion_ids")}
            item["demo_index"] = j
        return item


def pad_sequences(
    prompts: list[list[int]],
    completions: list[list[int]],
    pad_token_id: int,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad ``prompt + completion`` rows.

    Returns ``input_ids``, ``attention_mask`` and ``completion_mask`` (1 on completion tokens,
    the only positions any loss reads).
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions)]
    width = max(lengths, default=0)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    n = len(prompts)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    completion_mask = torch.zeros((n, width), dtype=torch.long)
    for r, (p, c) in enumerate(zip(prompts, completions)):
        input_ids[r, : len(p) + len(c)] = torch.tensor(p + c, dtype=torch.long)
        attention_mask[r, : len(p) + len(c)] = 1
        completion_mask[r, len(p) : len(p) + len(c)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}


def concat_padded(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Stack two right-padded batches (as returned by :func:`pad_sequences`) row-wise."""
    width = max(a["input_ids"].shape[1], b["input_ids"].shape[1])
    out = {}
    for key in ("input_ids", "attention_mask", "completion_mask"):
        fill = pad_token_id if key == "input_ids" else 0
        parts = [torch.nn.functional.pad(t[key], (0, width - t[key].shape[1]), value=fill) for t in (a, b)]
        out[key] = torch.cat(parts, dim=0)
    return out


def match_end_tokens(
    first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], end_token_ids: list[int]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Rows ``i`` of two right-padded batches (:func:`pad_sequences`) form the contrasted pairs of
    a demonstration term (a demonstration and a sample); where exactly one of the two completions
    ends with an end token (any of ``end_token_ids``), that token leaves its ``completion_mask``.

    A sample cut by ``max_new_tokens`` (or a demonstration cut by ``max_length``) has no end token:
    compared as they are, the pair differs by that token's log-ratio alone. The end token counts
    only when both sides have one. Returns copies of ``first`` and ``second``; ``input_ids`` and
    ``attention_mask`` are shared, not copied. Raises ``ValueError`` if the row counts differ.
    """
    if first["input_ids"].shape[0] != second["input_ids"].shape[0]:
        raise ValueError(f"{first['input_ids'].shape[0]} rows against {second['input_ids'].shape[0]}")
    stops = torch.tensor(list(end_token_ids), dtype=torch.long)

    def last_token(rows):  # position of each row's last completion token (-1: none), and whether it ends it
        mask = rows["completion_mask"]
        pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = torch.where(mask.bool(), pos, -1).amax(1)
        token = rows["input_ids"].gather(1, last.clamp(min=0).unsqueeze(1)).squeeze(1)
        return last.cpu(), ((last >= 0) & torch.isin(token, stops.to(token.device))).cpu()

    (last_a, end_a), (last_b, end_b) = last_token(first), last_token(second)
    out = []
    for rows, last, drop in ((first, last_a, end_a & ~end_b), (second, last_b, end_b & ~end_a)):
        mask = rows["completion_mask"].clone()
        where = drop.nonzero().squeeze(1)
        mask[where.to(mask.device), last[where].to(mask.device)] = 0
        out.append({**rows, "completion_mask": mask})
    return out[0], out[1]


@dataclass(frozen=True)
class BatchLayout:
    """The row order of a batch that one forward pass scores:
    ``[chosen (P rows) | rejected (P rows) | demonstrations (D rows) | samples (S rows)]``.

    Row ``i`` of ``chosen`` and of ``rejected`` hold the same pair; sample ``k`` (self-play, AIHF-RL)
    answers the prompt of demonstration ``k`` when ``S == D``. ``real(r_p, r_d)`` lists the rows of
    the first ``r_p`` pairs and ``r_d`` demonstrations (and their samples): the items that are data,
    not copies that complete a last batch under data parallelism.
    """

    num_pairs: int
    num_demos: int
    num_samples: int = 0

    @classmethod
    def of(cls, batch: dict[str, Any], num_samples: int = 0) -> BatchLayout:
        """The layout of an :class:`AIHFCollator` batch (``num_pairs``/``num_demos`` keys)."""
        return cls(batch["num_pairs"], batch["num_demos"], num_samples)

    @property
    def chosen(self) -> slice:
        return slice(0, self.num_pairs)

    @property
    def rejected(self) -> slice:
        return slice(self.num_pairs, 2 * self.num_pairs)

    @property
    def pairs(self) -> slice:
        """Chosen then rejected rows."""
        return slice(0, 2 * self.num_pairs)

    @property
    def demos(self) -> slice:
        return slice(2 * self.num_pairs, 2 * self.num_pairs + self.num_demos)

    @property
    def samples(self) -> slice:
        start = 2 * self.num_pairs + self.num_demos
        return slice(start, start + self.num_samples)

    @property
    def num_rows(self) -> int:
        return 2 * self.num_pairs + self.num_demos + self.num_samples

    def real(self, r_p: int, r_d: int) -> list[int]:
        rows = [*range(r_p), *range(self.num_pairs, self.num_pairs + r_p)]
        rows += range(self.demos.start, self.demos.start + r_d)
        return rows + list(range(self.samples.start, self.samples.start + min(r_d, self.num_samples)))


@dataclass
class AIHFCollator:
    """Collates :class:`PairedDataset` items.

    Rows of the padded batch are ``[chosen (P rows); rejected (P rows); demonstrations (D rows)]``
    (:class:`BatchLayout`) so that one forward pass scores all of them. Also returns ``num_pairs``, ``num_demos``, and
    the demonstrations' ``demo_prompt_ids`` and ``demo_index`` (for self-play generation).
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, items: list[dict]) -> dict[str, Any]:
        pairs = [it["pref"] for it in items if it["pref"] is not None]
        demos = [it["demo"] for it in items if it["demo"] is not None]
        prompts = [p["prompt_ids"] for p in pairs] * 2 + [d["prompt_ids"] for d in demos]
        completions = (
            [p["chosen_ids"] for p in pairs] + [p["rejected_ids"] for p in pairs] + [d["completion_ids"] for d in demos]
        )
        batch: dict[str, Any] = pad_sequences(prompts, completions, self.pad_token_id, self.pad_to_multiple_of)
        batch["num_pairs"] = len(pairs)
        batch["num_demos"] = len(demos)
        batch["demo_prompt_ids"] = [d["prompt_ids"] for d in demos]
        batch["demo_index"] = [it["demo_index"] for it in items if it["demo"] is not None]
        return batch
