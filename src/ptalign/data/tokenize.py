"""Token ids for feedback, built exactly as TRL 1.16's ``KTOTrainer`` / ``DPOTrainer`` build them.

Chat messages: ``prompt_ids`` is the chat template of the prompt with the generation prompt
(``<|im_start|>assistant\\n``), ``full`` the template of prompt + completion. Plain text: the
EOS token is appended to the completion when missing, then both strings are tokenized with
``tokenizer(text=...)``. Either way the completion is what follows the longest common prefix
of ``prompt_ids`` and ``full`` -- usually all of ``prompt_ids``, but some templates render the
prompt alone differently, and BPE can merge tokens across the boundary (TRL's
``common_prefix_length`` rule).

Truncation to ``max_length`` (prompt + completion tokens) happens here, once, so that the
collator never cuts. Policies (:data:`TRUNCATION_POLICIES`):

* ``"keep_start"`` -- TRL's: an example whose prompt alone has ``>= max_length`` tokens is
  dropped (no completion token would survive); otherwise the sequence is cut at
  ``max_length``, i.e. the completion loses its end.
* ``"keep_end"`` -- keep the completion whole and drop prompt tokens from the *left* until the
  sequence fits. A completion longer than ``max_length - 1`` keeps its first
  ``max_length - 1`` tokens (the opening of a reply is where a refusal or a compliance shows)
  plus the last prompt token, which is the position that predicts the first completion
  token -- without it that token is never scored. Nothing is dropped.
* ``"drop"`` -- drop every example longer than ``max_length``; nothing is cut.

Dropped examples are left out of the returned list (so the number dropped is
``len(examples) - len(result)``) and a warning logged by ``ptalign.data.tokenize`` says how many.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ptalign.data.feedback import FeedbackExample, PreferencePair, Text

logger = logging.getLogger(__name__)

TRUNCATION_POLICIES = ("keep_start", "keep_end", "drop")


@dataclass
class TokenizedExample:
    """An unpaired example as token ids; the model sees ``prompt_ids + completion_ids``."""

    prompt_ids: list[int]
    completion_ids: list[int]
    label: bool
    weight: float = 1.0


@dataclass
class TokenizedPair:
    """A preference pair as token ids; the two sequences are ``prompt_ids + chosen_ids`` and
    ``prompt_ids + rejected_ids``."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    weight: float = 1.0


def common_prefix_length(ids: list[int], other_ids: list[int]) -> int:
    """Number of leading tokens the two sequences share."""
    length = 0
    for token, other in zip(ids, other_ids):
        if token != other:
            break
        length += 1
    return length


def _encode(tokenizer, prompt: Text, completion: Text) -> tuple[list[int], list[int]]:
    """``(prompt_ids, full_ids)`` for one prompt/completion, as TRL's ``tokenize_fn`` does.

    A chat prompt ending with an assistant turn (a prefilled start of the reply, which TRL does not
    take) is rendered open-ended (``continue_final_message``) and the completion's text appended to
    that turn, so the prompt ids stop where the completion's first token starts."""
    if isinstance(prompt, list) and prompt[-1]["role"] == "assistant":
        # a prefilled start of the reply: the completion continues that assistant turn
        prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, continue_final_message=True, return_dict=True)
        joined = {"role": "assistant", "content": prompt[-1]["content"] + completion[0]["content"]}
        full_ids = tokenizer.apply_chat_template(prompt[:-1] + [joined], tokenize=True, return_dict=True)
        return list(prompt_ids["input_ids"]), list(full_ids["input_ids"])
    if isinstance(prompt, list):
        prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)
        full_ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)
        return list(prompt_ids["input_ids"]), list(full_ids["input_ids"])
    eos = tokenizer.eos_token
    if eos is None:
        raise ValueError("plain-text feedback needs a tokenizer with an eos_token, appended to every completion")
    if not completion.endswith(eos):
        completion = completion + eos
    return list(tokenizer(text=prompt)["input_ids"]), list(tokenizer(text=prompt + completion)["input_ids"])


def _check_args(max_length: int | None, truncation: str) -> None:
    if truncation not in TRUNCATION_POLICIES:
        raise ValueError(f"unknown truncation {truncation!r}; known: {', '.join(TRUNCATION_POLICIES)}")
    if max_length is not None and max_length < 2:
        raise ValueError(f"max_length={max_length}; expected None or at least 2 (one prompt + one completion token)")


def truncate(
    prompt_ids: list[int], completions: list[list[int]], max_length: int | None, truncation: str
) -> tuple[list[int], list[list[int]]] | None:
    """Fit ``prompt_ids + c`` for every ``c`` in ``completions`` into ``max_length`` tokens.

    Returns the cut ``(prompt_ids, completions)``, or None when the policy drops the example
    (see the module docstring). Several completions share one prompt (a preference pair), so
    they are cut together: the longest decides how much prompt ``keep_end`` keeps.
    """
    longest = max(len(c) for c in completions)
    if max_length is None or len(prompt_ids) + longest <= max_length:
        return prompt_ids, completions
    if truncation == "drop":
        return None
    if truncation == "keep_start":
        if len(prompt_ids) >= max_length:
            return None
        room = max_length - len(prompt_ids)
        return prompt_ids, [c[:room] for c in completions]
    room = max_length - 1 if prompt_ids else max_length
    completions = [c[:room] for c in completions]
    keep_prompt = max(0, max_length - max(len(c) for c in completions))
    return prompt_ids[len(prompt_ids) - keep_prompt :], completions


def _warn_dropped(n_dropped: int, n_total: int, max_length: int | None, truncation: str) -> None:
    if n_dropped:
        logger.warning(
            "dropped %d of %d examples that do not fit max_length=%s under truncation=%r",
            n_dropped, n_total, max_length, truncation,
        )


def _warn_prefix(n_split: int, n_total: int) -> None:
    if n_split:
        logger.warning(
            "%d of %d tokenized prompts are not a prefix of prompt+completion (the chat template renders the "
            "prompt differently alone, or tokens merge across the boundary); their completion starts where the "
            "two diverge, as in TRL",
            n_split, n_total,
        )


def tokenize_feedback(
    tokenizer, examples: list[FeedbackExample], max_length: int | None = None, truncation: str = "keep_start"
) -> list[TokenizedExample]:
    """Tokenize unpaired examples as TRL 1.16's ``KTOTrainer`` does, then truncate.

    tokenizer:  a Hugging Face tokenizer (with a chat template for chat examples)
    max_length: the most prompt + completion tokens per example; None = no limit
    truncation: one of :data:`TRUNCATION_POLICIES`
    Returns the kept examples in order; ``len(examples) - len(result)`` were dropped.
    """
    _check_args(max_length, truncation)
    out, n_split = [], 0
    for example in examples:
        prompt_ids, full_ids = _encode(tokenizer, example.prompt, example.completion)
        n = common_prefix_length(prompt_ids, full_ids)
        n_split += n < len(prompt_ids)
        fitted = truncate(prompt_ids[:n], [full_ids[n:]], max_length, truncation)
        if fitted is not None:
            out.append(TokenizedExample(fitted[0], fitted[1][0], bool(example.label), example.weight))
    _warn_prefix(n_split, len(examples))
    _warn_dropped(len(examples) - len(out), len(examples), max_length, truncation)
    return out


def tokenize_pairs(
    tokenizer, pairs: list[PreferencePair], max_length: int | None = None, truncation: str = "keep_start"
) -> list[TokenizedPair]:
    """Tokenize preference pairs as TRL 1.16's ``DPOTrainer`` does, then truncate.

    The shared prompt is cut where *both* tokenized sequences leave the tokenized prompt (the
    shorter of the two common prefixes), so ``prompt_ids + chosen_ids`` and
    ``prompt_ids + rejected_ids`` are exactly the two tokenized conversations.
    Returns the kept pairs in order; ``len(pairs) - len(result)`` were dropped.
    """
    _check_args(max_length, truncation)
    out, n_split = [], 0
    for pair in pairs:
        prompt_ids, chosen_full = _encode(tokenizer, pair.prompt, pair.chosen)
        _, rejected_full = _encode(tokenizer, pair.prompt, pair.rejected)
        n = min(common_prefix_length(prompt_ids, chosen_full), common_prefix_length(prompt_ids, rejected_full))
        n_split += n < len(prompt_ids)
        fitted = truncate(prompt_ids[:n], [chosen_full[n:], rejected_full[n:]], max_length, truncation)
        if fitted is not None:
            (chosen_ids, rejected_ids) = fitted[1]
            out.append(TokenizedPair(fitted[0], chosen_ids, rejected_ids, pair.weight))
    _warn_prefix(n_split, len(pairs))
    _warn_dropped(len(pairs) - len(out), len(pairs), max_length, truncation)
    return out
