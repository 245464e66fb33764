"""Feedback data: JSONL records, TRL-identical tokenization, length-bucketed batches."""

from ptalign.data.batching import collate, make_batches, padding_fraction, rotate_completions
from ptalign.data.feedback import (
    DataError,
    FeedbackExample,
    PreferencePair,
    demo_feedback_path,
    load_feedback,
    save_feedback,
    unpair,
)
from ptalign.data.tokenize import (
    TRUNCATION_POLICIES,
    TokenizedExample,
    TokenizedPair,
    tokenize_feedback,
    tokenize_pairs,
)

__all__ = [
    "DataError",
    "FeedbackExample",
    "PreferencePair",
    "TRUNCATION_POLICIES",
    "TokenizedExample",
    "TokenizedPair",
    "collate",
    "demo_feedback_path",
    "load_feedback",
    "make_batches",
    "padding_fraction",
    "rotate_completions",
    "save_feedback",
    "tokenize_feedback",
    "tokenize_pairs",
    "unpair",
]
