"""Feedback records and their JSONL files.

Two kinds of file, the same formats TRL accepts, one JSON object per line:

* unpaired (KTO):  ``{"prompt": ..., "completion": ..., "label": true}``
* paired (DPO):    ``{"prompt": ..., "chosen": ..., "rejected": ...}``

Each text is either plain text (a string) or chat messages (a list of
``{"role": ..., "content": ...}``): the prompt ends with a non-assistant turn and a completion
is one assistant message. An optional ``"weight"`` (a number > 0) scales the example's loss;
other keys (``"id"``, metadata) are allowed and ignored. A file holds one kind and one format;
every line is validated before anything is returned, and the first problem raises
:class:`DataError` naming ``file:line``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Union

Message = dict[str, Any]
Text = Union[str, list[Message]]
"""Plain text, or chat messages ``[{"role": "user", "content": "..."}, ...]``."""

UNPAIRED_KEYS = ("prompt", "completion", "label")
PAIRED_KEYS = ("prompt", "chosen", "rejected")


class DataError(ValueError):
    """A feedback file is malformed; the message starts with ``"{path}:{lineno}: "``."""


@dataclass
class FeedbackExample:
    """One unpaired judgement: was ``completion`` a desirable reply to ``prompt``?

    prompt:     plain text, or chat messages ending with a user (non-assistant) turn -- or with
                an assistant turn after it: a prefilled start of the reply that the completion
                continues (only the completion's tokens are scored; see :func:`ptalign.data.tokenize._encode`)
    completion: plain text, or a list holding one assistant message
    label:      True = desirable (a gain in KTO's value function), False = undesirable (a loss)
    weight:     per-example loss weight (> 0)
    source:     where it came from, ``"file:line"`` for loaded examples
    """

    prompt: Text
    completion: Text
    label: bool
    weight: float = 1.0
    source: str = ""

    @property
    def is_conversational(self) -> bool:
        return isinstance(self.prompt, list)


@dataclass
class PreferencePair:
    """One paired judgement: ``chosen`` is preferred over ``rejected`` as a reply to ``prompt``."""

    prompt: Text
    chosen: Text
    rejected: Text
    weight: float = 1.0
    source: str = ""

    @property
    def is_conversational(self) -> bool:
        return isinstance(self.prompt, list)


Feedback = Union[FeedbackExample, PreferencePair]


_JSON_TYPES = {
    type(None): "null", bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
    dict: "an object",
}


def _type_name(value: Any) -> str:
    """The JSON type of a decoded value, with its article: ``"an integer"``, ``"a list"``, ``"null"``."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _check_messages(key: str, value: list, completion: bool) -> str | None:
    """Why chat messages under ``key`` are malformed, or None when they are fine."""
    if not value:
        return f"{key!r} is an empty list; expected at least one message"
    for i, message in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(message, dict):
            return f"{where} is {_type_name(message)}; expected a message object {{'role': ..., 'content': ...}}"
        for field in ("role", "content"):
            if field not in message:
                return f"{where} has no {field!r}; expected a message object {{'role': ..., 'content': ...}}"
            if not isinstance(message[field], str):
                return f"{where}[{field!r}] is {_type_name(message[field])}; expected a string"
    if completion:
        if len(value) != 1 or value[0]["role"] != "assistant":
            roles = [m["role"] for m in value]
            return f"{key!r} has roles {roles}; expected exactly one message with role 'assistant'"
        if not value[0]["content"].strip():
            return f"{key!r} is an empty assistant message; expected the reply text"
    elif value[-1]["role"] == "assistant":
        if len(value) < 2 or value[-2]["role"] == "assistant":
            return (f"{key!r} ends with an assistant turn that follows no user turn; expected it to end with the "
                    "user turn being answered, or with one prefilled start of the reply after it")
        if not value[-1]["content"]:
            return f"{key!r} ends with an empty assistant turn; expected the prefilled start of the reply, or no such turn"
    return None


def _check_text(key: str, value: Any, completion: bool) -> str | None:
    """Why the text under ``key`` is malformed, or None when it is fine."""
    if isinstance(value, str):
        if completion and not value.strip():
            return f"{key!r} is empty; expected the reply text"
        return None
    if isinstance(value, list):
        return _check_messages(key, value, completion)
    return f"{key!r} is {_type_name(value)}; expected a string or a list of chat messages"


def _check_weight(record: dict) -> str | None:
    weight = record.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        return f"'weight' is {_type_name(weight)}; expected a number > 0"
    if not math.isfinite(weight) or weight <= 0:
        return f"'weight' is {weight}; expected a finite number > 0"
    return None


def _kind(record: dict) -> str:
    """``"paired"``, ``"unpaired"``, or an error message for a record that is neither or both."""
    paired = [k for k in ("chosen", "rejected") if k in record]
    unpaired = [k for k in ("completion", "label") if k in record]
    if paired and unpaired:
        return f"has both {unpaired} (unpaired) and {paired} (paired) keys; expected one kind per line"
    if paired:
        return "paired"
    if unpaired:
        return "unpaired"
    return (
        f"has keys {sorted(record)}; expected {{'prompt', 'completion', 'label'}} (unpaired) "
        f"or {{'prompt', 'chosen', 'rejected'}} (paired)"
    )


def _record_problem(record: Any) -> str | None:
    """What is wrong with one decoded line, or None when it is a valid record."""
    if not isinstance(record, dict):
        return f"line is {_type_name(record)}; expected a JSON object"
    kind = _kind(record)
    if kind not in ("paired", "unpaired"):
        return f"object {kind}"
    keys = PAIRED_KEYS if kind == "paired" else UNPAIRED_KEYS
    missing = [k for k in keys if k not in record]
    if missing:
        return f"missing key {missing[0]!r}; a {kind} line needs {list(keys)}"
    texts = [k for k in keys if k != "label"]
    problems = [_check_text(k, record[k], completion=k != "prompt") for k in texts]
    if any(problems):
        return next(p for p in problems if p)
    formats = {k: _format(record[k]) for k in texts}
    if len(set(formats.values())) > 1:
        return f"mixes plain text and chat messages ({formats}); expected one format for all texts"
    if kind == "unpaired" and not isinstance(record["label"], bool):
        label = record["label"]
        return f"'label' is {json.dumps(label)} ({_type_name(label)}); expected a JSON boolean, true or false"
    return _check_weight(record)


def _format(text: Text) -> str:
    return "chat messages" if isinstance(text, list) else "plain text"


def _parse_line(raw: bytes) -> Feedback | str:
    """One non-blank line as a record, or what is wrong with it."""
    try:
        record = json.loads(raw.decode("utf-8").strip())
    except UnicodeDecodeError as e:
        return f"not valid UTF-8 ({e.reason} at byte {e.start}); expected UTF-8 text"
    except json.JSONDecodeError as e:
        return f"invalid JSON ({e.msg} at column {e.colno}); expected one JSON object per line"
    problem = _record_problem(record)
    if problem:
        return problem
    weight = float(record.get("weight", 1.0))
    if "chosen" in record:
        return PreferencePair(record["prompt"], record["chosen"], record["rejected"], weight)
    return FeedbackExample(record["prompt"], record["completion"], record["label"], weight)


def _kind_of(item: Feedback) -> str:
    return "paired" if isinstance(item, PreferencePair) else "unpaired"


def _mismatch(item: Feedback, first: Feedback, first_line: int) -> str | None:
    """Why ``item`` cannot share a file with ``first`` (read at ``first_line``), or None."""
    if _kind_of(item) != _kind_of(first):
        return (
            f"{_kind_of(item)} line in a file whose line {first_line} is {_kind_of(first)}; expected one kind per "
            "file (all prompt/completion/label or all prompt/chosen/rejected)"
        )
    if _format(item.prompt) != _format(first.prompt):
        fmt, first_fmt = _format(item.prompt), _format(first.prompt)
        return f"{fmt} in a file whose line {first_line} is {first_fmt}; expected one format per file"
    return None


def load_feedback(path: str | Path) -> list[FeedbackExample] | list[PreferencePair]:
    """Read and validate a feedback JSONL file (unpaired or paired, see the module docstring).

    Blank lines are skipped; each record's ``source`` is ``"{path}:{lineno}"``. Raises
    :class:`DataError` at the first malformed line, naming ``path:lineno``, what is wrong and
    what is expected -- including a file that mixes paired and unpaired lines or plain-text
    and chat lines, and an empty file.
    """
    path = Path(path)
    records: list[Feedback] = []
    first_line = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            item = _parse_line(raw)
            if isinstance(item, str):
                raise DataError(f"{path}:{lineno}: {item}")
            problem = _mismatch(item, records[0], first_line) if records else None
            if problem:
                raise DataError(f"{path}:{lineno}: {problem}")
            item.source = f"{path}:{lineno}"
            first_line = first_line or lineno
            records.append(item)
    if not records:
        raise DataError(
            f"{path}:1: empty file; expected JSONL lines such as "
            '{"prompt": "...", "completion": "...", "label": true}'
        )
    return records  # type: ignore[return-value]


def unpair(pairs: list[PreferencePair]) -> list[FeedbackExample]:
    """Split preference pairs into KTO examples: chosen -> label True, rejected -> label False.

    The order interleaves ``chosen_0, rejected_0, chosen_1, rejected_1, ...``; weights and
    sources are carried over.
    """
    examples = []
    for pair in pairs:
        examples.append(FeedbackExample(pair.prompt, pair.chosen, True, pair.weight, pair.source))
        examples.append(FeedbackExample(pair.prompt, pair.rejected, False, pair.weight, pair.source))
    return examples


def _to_record(item: Feedback) -> dict[str, Any]:
    if isinstance(item, PreferencePair):
        record = {"prompt": item.prompt, "chosen": item.chosen, "rejected": item.rejected}
    else:
        record = {"prompt": item.prompt, "completion": item.completion, "label": bool(item.label)}
    if item.weight != 1.0:
        record["weight"] = item.weight
    return record


def save_feedback(examples: list[FeedbackExample] | list[PreferencePair], path: str | Path) -> None:
    """Write records as JSONL that :func:`load_feedback` reads back (``source`` is not written).

    ``weight`` is written only when it is not 1. The file is replaced atomically (a temporary
    file in the same folder, then ``os.replace``), so a crash never leaves half a file.
    """
    path = Path(path)
    kinds = {type(e) for e in examples}
    if not examples:
        raise ValueError(f"nothing to save to {path}: an empty feedback file cannot be loaded back")
    if len(kinds) > 1:
        raise ValueError(f"cannot save a mix of {sorted(k.__name__ for k in kinds)} to {path}; one kind per file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for item in examples:
                f.write(json.dumps(_to_record(item), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def demo_feedback_path() -> Path:
    """The shipped demo file: 64 harmless unpaired chat examples, half desirable."""
    return Path(str(resources.files("ptalign").joinpath("resources", "demo_feedback.jsonl")))
