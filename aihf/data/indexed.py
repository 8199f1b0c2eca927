"""Datasets and collators that remember which preference row each batch item came from, so that
reference log-probs computed once before training (``precompute_ref_log_probs``) can be looked up."""

from __future__ import annotations

import itertools
from typing import Any

from .collator import AIHFCollator, PairedDataset


class IndexedPairs(PairedDataset):
    """:class:`PairedDataset` whose items also say which preference row of which dataset they
    hold: ``pref_index`` (the row, -1 without preferences) and ``pref_source`` (this dataset's
    ``token``, which survives pickling into dataloader workers, unlike ``id()``)."""

    _tokens = itertools.count()

    def __init__(self, preferences: Any | None, demonstrations: Any | None):
        super().__init__(preferences, demonstrations)
        self.token = next(self._tokens)

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        item["pref_index"] = i % len(self.preferences) if self.preferences is not None else -1
        item["pref_source"] = self.token
        return item


class IndexedCollator(AIHFCollator):
    """:class:`AIHFCollator` for :class:`IndexedPairs` items: the batch also holds ``pref_index``
    (one row index per pair, in batch order) and ``pref_source`` (the dataset's token)."""

    def __call__(self, items: list[dict]) -> dict[str, Any]:
        batch = super().__call__(items)
        batch["pref_index"] = [it["pref_index"] for it in items if it["pref"] is not None]
        batch["pref_source"] = items[0]["pref_source"]
        return batch
