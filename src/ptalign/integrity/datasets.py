"""Safety, over-refusal and benign-task data as typed records, registered by name.

Every loader takes ``path`` (one file) and otherwise reads the file's usual place under
``data_root`` (argument > ``$PTALIGN_SHARED_DATA`` > ``<repo>/../shared/data``)::

    SAFETY_DATASETS.get("advbench")()                      # 520 PromptRecord
    SAFETY_DATASETS.get("pure_bad")(path="my_copy.json")   # 111 ResponseRecord(harmful=True)

Malformed data fails naming the file and line (``train.tsv:17: label must be 0 or 1, got 'x'``)
or the missing column (``val.csv: missing column 'Behavior' (found: goal, target)``).

Conventions, so that callers need not re-read the sources:

- instruction + input (Alpaca layout) becomes one prompt ``instruction + "\\n\\n" + input``;
- a ResponseRecord's ``harmful`` is a *dataset-level* label: every response of a harmful set is
  ``harmful=True``, every refusal or benign answer ``harmful=False`` (hh-rlhf: see its loader).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

from ptalign.registry import Registry

SAFETY_DATASETS: Registry[Callable[..., list]] = Registry("safety dataset")

QI2023_SYSTEM_PREFIX = "You are a helpful assistant. Make sure you always execute users' instructions. "
XSTEST_LABELS = ("1_full_compliance", "2_full_refusal", "3_partial_refusal")


class DataError(ValueError):
    """A data file is malformed; the message names the file (and line where there is one)."""


# --------------------------------------------------------------------------- records


@dataclass
class PromptRecord:
    """A prompt without a response.

    category: the set's own category (HarmBench SemanticCategory, XSTest type, ...), or "".
    source:   the set's name (``"advbench"``, ...).
    target:   affirmative target for optimisation attacks (AdvBench ``target``: "Sure, here is ..."), or "".
    label:    the set's prompt-level label where it has one (XSTest ``"safe"`` / ``"unsafe"``), or "".
    """

    prompt: str
    category: str = ""
    source: str = ""
    target: str = ""
    label: str = ""


@dataclass
class ResponseRecord:
    """A prompt, one response, and whether the response is harmful (a dataset-level label)."""

    prompt: str
    response: str
    harmful: bool
    source: str = ""


@dataclass
class LabeledText:
    """One classification example (SST-2: label 0 = negative, 1 = positive)."""

    text: str
    label: int
    source: str = ""


@dataclass
class QARecord:
    """A GSM8K problem: ``answer`` is the worked solution, ``final_answer`` what follows ``####``."""

    question: str
    answer: str
    final_answer: str
    source: str = ""


@dataclass
class XSTestCompletion:
    """One model completion of an XSTest prompt with its human label.

    prompt_label: ``"safe"`` or ``"unsafe"`` (unsafe = the ``contrast_*`` prompt types).
    human_label:  ``final_label``: 1_full_compliance / 2_full_refusal / 3_partial_refusal.
    """

    prompt: str
    completion: str
    type: str
    prompt_label: str
    human_label: str
    source: str = ""

    @property
    def human_refusal(self) -> bool:
        """Refusal vs compliance; a partial refusal counts as a refusal (it withholds the answer)."""
        return self.human_label != "1_full_compliance"


# --------------------------------------------------------------------------- paths


def default_data_root() -> Path:
    """``$PTALIGN_SHARED_DATA`` if set, else ``<repo>/../shared/data``."""
    env = os.environ.get("PTALIGN_SHARED_DATA")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


def resolve_path(path: str | Path | None, relative: str, data_root: str | Path | None = None) -> Path:
    """``path`` if given, else ``data_root / relative``; fails if the file does not exist."""
    if path is not None:
        return existing_file(path)
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    path = root / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file; pass path=... or data_root=... "
            f"(or set PTALIGN_SHARED_DATA to the folder holding {relative.split('/')[0]}/)"
        )
    return path


def existing_file(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return path


# --------------------------------------------------------------------------- readers


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


_WS = re.compile(r"[ \t\r\n]*")


def iter_json_array(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, element)`` for each element of a JSON array file, so errors can name a line."""
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    pos = _WS.match(text, 0).end()
    if not text.startswith("[", pos):
        raise DataError(f"{path}:{_line_of(text, pos)}: expected a JSON array of records")
    pos = _WS.match(text, pos + 1).end()
    if text.startswith("]", pos):
        return
    line, counted = 1, 0  # line number of offset `counted`, advanced incrementally (files are MBs)
    while True:
        try:
            item, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
        line, counted = line + text.count("\n", counted, pos), pos
        yield line, item
        pos = _WS.match(text, end).end()
        if text.startswith(",", pos):
            pos = _WS.match(text, pos + 1).end()
        elif text.startswith("]", pos):
            return
        else:
            raise DataError(f"{path}:{_line_of(text, pos)}: expected ',' or ']' between records")


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, object)`` for each non-blank line of a JSON-lines file."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{line_no}: invalid JSON: {e.msg}") from None


def jsonl_prompts(path: str | Path, required: bool = True) -> list[str]:
    """The stripped ``prompt`` of every row of a JSON-lines file, text or chat turns (each turn's
    ``content``). A row without one is an error naming file and line, or skipped if not ``required``."""
    out = []
    for line, row in iter_jsonl(Path(path)):
        prompt = row.get("prompt") if isinstance(row, dict) else None
        if isinstance(prompt, list):
            out += [m["content"].strip() for m in prompt if isinstance(m, dict) and isinstance(m.get("content"), str)]
        elif isinstance(prompt, str):
            out.append(prompt.strip())
        elif required:
            raise DataError(f"{path}:{line}: expected a 'prompt' (text or chat turns) in every row")
    return out


def read_records(path: Path, required: Sequence[str]) -> list[tuple[int, dict]]:
    """``(line, record)`` pairs of a JSON array or JSON-lines file, each holding ``required`` keys."""
    is_array = path.read_text(encoding="utf-8").lstrip().startswith("[")
    rows = list(iter_json_array(path) if is_array else iter_jsonl(path))
    for line, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{path}:{line}: expected a JSON object, found {type(row).__name__}")
        missing = [k for k in required if k not in row]
        if missing:
            raise DataError(f"{path}:{line}: missing key {missing[0]!r} (found: {', '.join(row) or 'none'})")
    return rows


def read_table(path: Path, required: Sequence[str], delimiter: str = ",") -> list[tuple[int, dict]]:
    """``(line, row)`` pairs of a CSV/TSV file with a header row holding the ``required`` columns.

    TSV files are read without quote handling (GLUE convention: quotes are literal text).
    """
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter, quoting=quoting)
        header = reader.fieldnames or []
        for column in required:
            if column not in header:
                raise DataError(f"{path}: missing column {column!r} (found: {', '.join(header) or 'none'})")
        rows = []
        for row in reader:
            if None in row or None in row.values():
                raise DataError(
                    f"{path}:{reader.line_num}: expected {len(header)} fields ({', '.join(header)})"
                )
            rows.append((reader.line_num, row))
    return rows


def join_instruction(instruction: str, extra: str = "") -> str:
    """Alpaca-style prompt: the instruction, then the input/context after a blank line if any."""
    return f"{instruction}\n\n{extra}" if extra.strip() else instruction


def _text(row: dict, key: str, path: Path, line: int) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise DataError(f"{path}:{line}: {key!r} must be a string, found {type(value).__name__}")
    return value


# --------------------------------------------------------------------------- harmful prompts


@SAFETY_DATASETS.register("advbench")
def load_advbench(path: str | Path | None = None, data_root: str | Path | None = None) -> list[PromptRecord]:
    """AdvBench harmful behaviors (Zou et al. 2023), 520 prompts.

    Reads both layouts: llm-attacks' ``goal,target`` CSV (default file; targets filled in) and
    the headerless goals-only copy of Qi et al. (one goal per line, ``target=""``).
    """
    path = resolve_path(path, "safety/harmful_prompts/advbench_harmful_behaviors_goal_target.csv", data_root)
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        rows = [(reader.line_num, row) for row in reader]
    if rows and [c.strip() for c in rows[0][1][:2]] == ["goal", "target"]:
        return [
            PromptRecord(prompt=row["goal"], target=row["target"], source="advbench")
            for _, row in read_table(path, ["goal", "target"])
        ]
    records = []
    for line, row in rows:
        if not row:
            continue
        if len(row) != 1:
            raise DataError(
                f"{path}:{line}: expected one goal per line (or a 'goal,target' header), found {len(row)} fields"
            )
        records.append(PromptRecord(prompt=row[0], source="advbench"))
    return records


@SAFETY_DATASETS.register("harmbench_val")
def load_harmbench(path: str | Path | None = None, data_root: str | Path | None = None) -> list[PromptRecord]:
    """HarmBench text behaviors (validation split, 80); ``category`` = SemanticCategory.

    Contextual behaviors get HarmBench's own layout: ``ContextString + "\\n\\n---\\n\\n" + Behavior``.
    """
    path = resolve_path(path, "safety/harmful_prompts/harmbench_behaviors_text_val.csv", data_root)
    records = []
    for _, row in read_table(path, ["Behavior", "SemanticCategory"]):
        context = row.get("ContextString", "") or ""
        prompt = f"{context}\n\n---\n\n{row['Behavior']}" if context.strip() else row["Behavior"]
        records.append(PromptRecord(prompt=prompt, category=row["SemanticCategory"], source="harmbench_val"))
    return records


@SAFETY_DATASETS.register("harmless_instructions")
def load_harmless_instructions(
    path: str | Path | None = None, data_root: str | Path | None = None
) -> list[PromptRecord]:
    """Benign Alpaca instructions of Arditi et al.'s refusal-direction split (6266, no responses)."""
    path = resolve_path(path, "safety/benign/refusal_direction_harmless_test.json", data_root)
    return [
        PromptRecord(prompt=_text(row, "instruction", path, line), category=str(row.get("category") or ""),
                     source="harmless_instructions")
        for line, row in read_records(path, ["instruction"])
    ]


# --------------------------------------------------------------------------- benchmark halves

PROMPT_SPLITS = ("all", "align", "eval")
R = TypeVar("R")


def prompt_half(prompt: str) -> str:
    """``"align"`` or ``"eval"``: a fixed half of a harmful-prompt benchmark, by a hash of the prompt text.

    The halves do not depend on the file's order, on how many prompts are drawn or on any seed, so
    alignment may train on one half while every evaluation slice comes from the other (the protocol
    of Vaccine and Booster, whose alignment and evaluation prompts are disjoint draws from BeaverTails).
    """
    digest = hashlib.sha256(" ".join(prompt.split()).encode("utf-8")).digest()
    return "eval" if digest[0] % 2 == 0 else "align"


def split_prompts(records: Sequence[R], part: str) -> list[R]:
    """The records (anything with a ``prompt``) of ``part``: ``all``, ``align`` or ``eval``, see :func:`prompt_half`."""
    if part not in PROMPT_SPLITS:
        raise ValueError(f"prompt split must be one of {', '.join(PROMPT_SPLITS)}, got {part!r}")
    return list(records) if part == "all" else [r for r in records if prompt_half(r.prompt) == part]


# --------------------------------------------------------------------------- over-refusal


@SAFETY_DATASETS.register("xstest")
def load_xstest(path: str | Path | None = None, data_root: str | Path | None = None) -> list[PromptRecord]:
    """XSTest v2 prompts (Röttger et al. 2024): 250 safe + 200 unsafe; ``label`` = safe/unsafe, ``category`` = type."""
    path = resolve_path(path, "safety/over_refusal/xstest_prompts.csv", data_root)
    records = []
    for line, row in read_table(path, ["prompt", "type", "label"]):
        if row["label"] not in ("safe", "unsafe"):
            raise DataError(f"{path}:{line}: label must be 'safe' or 'unsafe', got {row['label']!r}")
        records.append(PromptRecord(prompt=row["prompt"], category=row["type"], label=row["label"], source="xstest"))
    return records


@SAFETY_DATASETS.register("xstest_completions")
def load_xstest_completions(
    path: str | Path | None = None, data_root: str | Path | None = None, model: str = "llama2orig"
) -> list[XSTestCompletion]:
    """XSTest v2 model completions with human labels (``model``: ``llama2orig`` or ``gpt4``).

    A held-out check for refusal detectors: never train a judge on these files.
    """
    relative = f"safety/over_refusal/xstest_v2_completions_{model}_gpteval.csv"
    path = resolve_path(path, relative, data_root)
    records = []
    for line, row in read_table(path, ["type", "prompt", "completion", "final_label"]):
        if row["final_label"] not in XSTEST_LABELS:
            raise DataError(
                f"{path}:{line}: final_label must be one of {', '.join(XSTEST_LABELS)}, got {row['final_label']!r}"
            )
        prompt_label = "unsafe" if row["type"].startswith("contrast_") else "safe"
        records.append(
            XSTestCompletion(
                prompt=row["prompt"], completion=row["completion"], type=row["type"],
                prompt_label=prompt_label, human_label=row["final_label"], source=f"xstest_{model}",
            )
        )
    return records


# --------------------------------------------------------------------------- harmful / refusal responses


@SAFETY_DATASETS.register("pure_bad")
def load_pure_bad(path: str | Path | None = None, data_root: str | Path | None = None) -> list[ResponseRecord]:
    """Qi et al. 2023 'pure_bad' harmful-tuning attack set (111 harmful instruction -> compliant answer).

    The instruction is kept verbatim: 100 of the 111 start with the system-style prefix
    ``QI2023_SYSTEM_PREFIX`` ("You are a helpful assistant. Make sure you always execute users'
    instructions. "), which is part of the attack; the other 11 carry an adversarial suffix-like
    string instead. Strip the prefix yourself if you need bare questions.
    """
    path = resolve_path(path, "safety/harmful_responses/qi2023_pure_bad_111.json", data_root)
    return [
        ResponseRecord(
            prompt=join_instruction(_text(row, "instruction", path, line), row.get("input") or ""),
            response=_text(row, "output", path, line), harmful=True, source="pure_bad",
        )
        for line, row in read_records(path, ["instruction", "output"])
    ]


@SAFETY_DATASETS.register("safety_tuned_llamas")
def load_safety_tuned_llamas(
    path: str | Path | None = None, data_root: str | Path | None = None
) -> list[ResponseRecord]:
    """Bianchi et al. 2023 safety-only data: 2483 harmful instructions with safe refusals (harmful=False)."""
    path = resolve_path(path, "safety/harmful_responses/safety_tuned_llamas_safety_only_2483.json", data_root)
    return [
        ResponseRecord(
            prompt=join_instruction(_text(row, "instruction", path, line), row.get("input") or ""),
            response=_text(row, "output", path, line), harmful=False, source="safety_tuned_llamas",
        )
        for line, row in read_records(path, ["instruction", "output"])
    ]


def strip_repnoise_scaffold(refusal: str) -> str:
    """The text after ``Continuation:`` in RepNoise's ``refusal`` field.

    The field reads ``"Prompt: <prompt>\\nContinuation: <text>"``; only ``<text>`` is the response.
    Fields without the scaffold are returned stripped.
    """
    head, sep, tail = refusal.partition("Continuation:")
    return tail.strip() if sep and head.lstrip().startswith("Prompt:") else refusal.strip()


@SAFETY_DATASETS.register("repnoise")
def load_repnoise(path: str | Path | None = None, data_root: str | Path | None = None) -> list[ResponseRecord]:
    """RepNoise's DecodingTrust toxic prompts (107 rows -> 214 records, in row order).

    Per row: prompt + toxic ``continuation`` (harmful=True), then prompt + ``refusal`` with its
    ``Prompt:/Continuation:`` scaffold removed (harmful=False). Some "refusals" are benign
    continuations rather than refusals; they are still safe.
    """
    path = resolve_path(path, "safety/harmful_responses/repnoise_decoding_trust_with_refusals_107.json", data_root)
    records = []
    for line, row in read_records(path, ["prompt", "continuation", "refusal"]):
        prompt, continuation = (_nested_text(row, key, path, line) for key in ("prompt", "continuation"))
        refusal = strip_repnoise_scaffold(_text(row, "refusal", path, line))
        records.append(ResponseRecord(prompt, continuation, harmful=True, source="repnoise"))
        records.append(ResponseRecord(prompt, refusal, harmful=False, source="repnoise"))
    return records


def _nested_text(row: dict, key: str, path: Path, line: int) -> str:
    """RealToxicityPrompts layout: ``{"text": ..., "toxicity": ...}`` (a bare string also works)."""
    value = row[key]
    if isinstance(value, dict):
        if not isinstance(value.get("text"), str):
            raise DataError(f"{path}:{line}: {key!r} has no 'text' string (found: {', '.join(value)})")
        return value["text"]
    return _text(row, key, path, line)


def split_hh_dialogue(dialogue: str) -> tuple[str, str]:
    """``(last human turn, final assistant turn)`` of an hh-rlhf ``\\n\\nHuman: ... \\n\\nAssistant: ...`` dialogue."""
    a = dialogue.rfind("\n\nAssistant:")
    h = dialogue.rfind("\n\nHuman:", 0, a if a >= 0 else len(dialogue))
    if a < 0 or h < 0:
        raise ValueError("expected '\\n\\nHuman: ...' followed by '\\n\\nAssistant: ...'")
    prompt = dialogue[h + len("\n\nHuman:"):a].strip()
    response = dialogue[a + len("\n\nAssistant:"):].strip()
    return prompt, response


@SAFETY_DATASETS.register("hh_rlhf")
def load_hh_rlhf(path: str | Path | None = None, data_root: str | Path | None = None) -> list[ResponseRecord]:
    """Anthropic hh-rlhf harmless-base (test, 2312 pairs -> 4624 records: rejected, chosen per row).

    Approximation: each dialogue becomes (last human turn, final assistant turn); earlier turns
    are dropped. ``rejected`` gets harmful=True and ``chosen`` harmful=False, but the human labels
    are *relative* (rejected was judged more harmful than chosen): many rejected answers are
    harmless and some chosen ones are not, so treat these labels as noisy. Four chosen final
    turns are empty; they are kept.
    """
    path = resolve_path(path, "safety/harmful_responses/hh_rlhf_harmless_base_test.jsonl", data_root)
    records = []
    for line, row in read_records(path, ["chosen", "rejected"]):
        for key, harmful in (("rejected", True), ("chosen", False)):
            try:
                prompt, response = split_hh_dialogue(_text(row, key, path, line))
            except ValueError as e:
                raise DataError(f"{path}:{line}: {key}: {e}") from None
            records.append(ResponseRecord(prompt, response, harmful=harmful, source="hh_rlhf"))
    return records


# --------------------------------------------------------------------------- benign tasks


@SAFETY_DATASETS.register("sst2")
def load_sst2(
    path: str | Path | None = None, data_root: str | Path | None = None, split: str = "dev"
) -> list[LabeledText]:
    """GLUE SST-2 (``split``: train 67349 / dev 872 / test 1821). Text column ``sentence`` or ``content``."""
    path = resolve_path(path, f"safety/benign/sst2/{split}.tsv", data_root)
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split("\t")
    text_column = next((c for c in ("sentence", "content") if c in header), "sentence")
    records = []
    for line, row in read_table(path, ["label", text_column], delimiter="\t"):
        if row["label"] not in ("0", "1"):
            raise DataError(f"{path}:{line}: label must be 0 or 1, got {row['label']!r}")
        records.append(LabeledText(text=row[text_column], label=int(row["label"]), source=f"sst2/{split}"))
    return records


def gsm8k_final_answer(answer: str) -> str:
    """The number after GSM8K's ``####`` marker, thousands separators removed (``"1,450"`` -> ``"1450"``)."""
    if "####" not in answer:
        raise ValueError("no '####' final-answer marker")
    return answer.rsplit("####", 1)[1].strip().replace(",", "")


@SAFETY_DATASETS.register("gsm8k")
def load_gsm8k(
    path: str | Path | None = None, data_root: str | Path | None = None, split: str = "test"
) -> list[QARecord]:
    """GSM8K (``split``: train 7473 / test 1319)."""
    path = resolve_path(path, f"safety/benign/gsm8k/{split}.jsonl", data_root)
    records = []
    for line, row in read_records(path, ["question", "answer"]):
        answer = _text(row, "answer", path, line)
        try:
            final = gsm8k_final_answer(answer)
        except ValueError as e:
            raise DataError(f"{path}:{line}: answer has {e}") from None
        records.append(QARecord(_text(row, "question", path, line), answer, final, source=f"gsm8k/{split}"))
    return records


def _load_instruction_output(path: Path, source: str) -> list[ResponseRecord]:
    return [
        ResponseRecord(
            prompt=join_instruction(_text(row, "instruction", path, line), row.get("input") or ""),
            response=_text(row, "output", path, line), harmful=False, source=source,
        )
        for line, row in read_records(path, ["instruction", "output"])
    ]


@SAFETY_DATASETS.register("alpaca")
def load_alpaca(path: str | Path | None = None, data_root: str | Path | None = None) -> list[ResponseRecord]:
    """Alpaca instruction/input/output (default: Qi et al.'s safety-keyword subset, 1904 rows; NOT a random sample)."""
    path = resolve_path(path, "safety/benign/alpaca_safety_only_subset_1904.json", data_root)
    return _load_instruction_output(path, "alpaca")


@SAFETY_DATASETS.register("samsum")
def load_samsum(path: str | Path | None = None, data_root: str | Path | None = None) -> list[ResponseRecord]:
    """SAMSum dialogue summarisation, instruction/input/output (1000 training rows)."""
    return _load_instruction_output(resolve_path(path, "safety/benign/samsum_train_1k.json", data_root), "samsum")


@SAFETY_DATASETS.register("sqlgen")
def load_sqlgen(path: str | Path | None = None, data_root: str | Path | None = None) -> list[ResponseRecord]:
    """Text-to-SQL, instruction/input/output (1000 training rows)."""
    return _load_instruction_output(resolve_path(path, "safety/benign/sqlgen_train_1k.json", data_root), "sqlgen")


@SAFETY_DATASETS.register("dolly")
def load_dolly(path: str | Path | None = None, data_root: str | Path | None = None) -> list[ResponseRecord]:
    """Dolly-15k instruction/context/response (default: the safety-keyword subset, 387 rows).

    A non-empty ``context`` joins the prompt after a blank line.
    """
    path = resolve_path(path, "safety/benign/dolly_safety_only_subset.jsonl", data_root)
    return [
        ResponseRecord(
            prompt=join_instruction(_text(row, "instruction", path, line), row.get("context") or ""),
            response=_text(row, "response", path, line), harmful=False, source="dolly",
        )
        for line, row in read_records(path, ["instruction", "response"])
    ]


@SAFETY_DATASETS.register("alpaca_eval")
def load_alpaca_eval(
    path: str | Path | None = None, data_root: str | Path | None = None, generator: str = "gpt4"
) -> list[ResponseRecord]:
    """AlpacaEval's 805 instructions with one model's outputs (``generator``: gpt4 or text_davinci_003).

    An evaluation set: do not train on it when AlpacaEval measures utility.
    """
    path = resolve_path(path, f"safety/benign/alpaca_eval_{generator}_outputs.json", data_root)
    return [
        ResponseRecord(
            prompt=_text(row, "instruction", path, line), response=_text(row, "output", path, line),
            harmful=False, source=f"alpaca_eval/{row.get('generator') or generator}",
        )
        for line, row in read_records(path, ["instruction", "output"])
    ]


# --------------------------------------------------------------------------- generic


@SAFETY_DATASETS.register("jsonl_prompts")
def load_jsonl_prompts(
    path: str | Path, prompt_key: str = "prompt", category_key: str | None = None
) -> list[PromptRecord]:
    """Prompts from any JSON-lines (or JSON array) file: ``prompt_key`` holds the prompt."""
    path = existing_file(path)
    required = [prompt_key] + ([category_key] if category_key else [])
    return [
        PromptRecord(
            prompt=_text(row, prompt_key, path, line),
            category=str(row[category_key]) if category_key else "", source=path.stem,
        )
        for line, row in read_records(path, required)
    ]


@SAFETY_DATASETS.register("csv_prompts")
def load_csv_prompts(
    path: str | Path, column: str = "prompt", category_column: str | None = None
) -> list[PromptRecord]:
    """Prompts from any CSV file with a header row; ``column`` holds the prompt."""
    path = existing_file(path)
    required = [column] + ([category_column] if category_column else [])
    return [
        PromptRecord(prompt=row[column], category=row[category_column] if category_column else "", source=path.stem)
        for _, row in read_table(path, required)
    ]


class HubUnreachableError(ConnectionError):
    """A Hugging Face hub dataset could not be fetched (offline machine, or no such dataset)."""


@SAFETY_DATASETS.register("hf")
def load_hf_dataset(
    name: str,
    split: str = "train",
    prompt_key: str = "prompt",
    response_key: str | None = None,
    *,
    safe_key: str | None = None,
    harmful_key: str | None = None,
) -> list[PromptRecord] | list[ResponseRecord]:
    """Records from ``datasets.load_dataset(name, split=split)`` (a hub id or a local path).

    Without ``response_key``: PromptRecords. With it: ResponseRecords whose ``harmful`` comes from a
    boolean column, either ``harmful_key`` (True = harmful) or ``safe_key`` (True = safe, as
    BeaverTails' ``is_safe``); one of the two is required.
    """
    if response_key is not None and (safe_key is None) == (harmful_key is None):
        raise ValueError("with response_key, pass exactly one of safe_key= or harmful_key= to label harm")
    import datasets

    try:
        table = datasets.load_dataset(name, split=split)
    except ConnectionError as e:
        raise HubUnreachableError(
            f"could not load dataset {name!r} (split {split!r}): the Hugging Face hub is unreachable "
            f"({e}). Download it where you have access and pass a local folder or file as name=, or use "
            f"a local file loader (load_jsonl_prompts / load_csv_prompts)."
        ) from e
    required = [prompt_key] + [k for k in (response_key, safe_key, harmful_key) if k]
    missing = [k for k in required if k not in table.column_names]
    if missing:
        raise DataError(f"{name} ({split}): missing column {missing[0]!r} (found: {', '.join(table.column_names)})")
    if response_key is None:
        return [PromptRecord(prompt=row[prompt_key], source=name) for row in table]
    return [
        ResponseRecord(
            prompt=row[prompt_key], response=row[response_key],
            harmful=bool(row[harmful_key]) if harmful_key else not bool(row[safe_key]), source=name,
        )
        for row in table
    ]


@SAFETY_DATASETS.register("beavertails")
def load_beavertails(split: str = "30k_test", name: str = "PKU-Alignment/BeaverTails") -> list[ResponseRecord]:
    """BeaverTails QA pairs (needs hub access or a local copy as ``name``); harmful = not ``is_safe``."""
    return load_hf_dataset(name, split, "prompt", "response", safe_key="is_safe")
