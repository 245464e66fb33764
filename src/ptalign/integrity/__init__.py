"""Integrity (safety) part of ptalign: safety data loaders and offline harm judges."""

from ptalign.integrity.datasets import (
    SAFETY_DATASETS,
    DataError,
    LabeledText,
    PromptRecord,
    QARecord,
    ResponseRecord,
    XSTestCompletion,
)
from ptalign.integrity.judges import (
    JUDGES,
    HFJudge,
    KeywordJudge,
    MiniLMJudge,
    Verdict,
    agreement,
    cohen_kappa,
    harmful_score,
    refusal_rate,
)

__all__ = [
    "SAFETY_DATASETS", "DataError", "LabeledText", "PromptRecord", "QARecord", "ResponseRecord",
    "XSTestCompletion", "JUDGES", "HFJudge", "KeywordJudge", "MiniLMJudge", "Verdict", "agreement",
    "cohen_kappa", "harmful_score", "refusal_rate",
]
