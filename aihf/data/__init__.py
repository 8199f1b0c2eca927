"""Demonstrations and preferences: reading, validation, tokenisation and batching."""

from .collator import AIHFCollator, BatchLayout, PairedDataset, concat_padded, match_end_tokens, pad_sequences
from .formats import ROLES, DemonstrationText, PreferenceText, demonstration_texts, preference_texts
from .indexed import IndexedCollator, IndexedPairs
from .sources import Rows, read_rows
from .special_tokens import EndToken, end_token
from .tokenize import (
    check_lengths,
    prepare_demonstrations,
    prepare_preferences,
    references_as_demonstrations,
)
from .weighted_sources import prepare_weighted_sources

__all__ = [
    "AIHFCollator",
    "BatchLayout",
    "PairedDataset",
    "Rows",
    "ROLES",
    "DemonstrationText",
    "EndToken",
    "IndexedCollator",
    "IndexedPairs",
    "PreferenceText",
    "check_lengths",
    "concat_padded",
    "demonstration_texts",
    "end_token",
    "match_end_tokens",
    "pad_sequences",
    "preference_texts",
    "prepare_demonstrations",
    "prepare_preferences",
    "prepare_weighted_sources",
    "read_rows",
    "references_as_demonstrations",
]
