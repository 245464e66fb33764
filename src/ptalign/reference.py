"""Reference-model log-probs: computed once per (model, data, settings) and cached on disk."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import torch
from rich.progress import Progress
from safetensors.torch import load_file, save_file

from ptalign.batches import TrainData, collate_batch


class CompletionScorer(torch.nn.Module):
    """Wraps a causal LM: ``forward`` returns ``(logps [B], n_tokens [B])`` of the completions.

    The backbone runs once; only positions that predict completion tokens go through the LM
    head (see :func:`ptalign.ops.sequence_logps`). Wrapping the model in a module of its own
    lets accelerate/DDP see this forward, so gradient sync stays correct across processes.
    """

    def __init__(self, model: torch.nn.Module, chunk_tokens: int = 768):
        super().__init__()
        self.model = model
        self.chunk_tokens = chunk_tokens

    def base(self) -> torch.nn.Module:
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def forward(self, input_ids, attention_mask, completion_mask):
        """Runs the batch in length-sorted chunks of about ``chunk_tokens`` padded tokens, each
        trimmed to its own longest row: on a CPU this cuts the compute spent on padding (a third
        of a typical batch) while keeping each matmul large enough to run near peak. The result
        is the same per-row computation, so log-probs agree with one padded pass to float noise.
        """
        chunks = length_chunks(attention_mask, self.chunk_tokens)
        if chunks is None:
            return self._score(input_ids, attention_mask, completion_mask)
        parts = [(rows, *self._score(input_ids[rows, :width], attention_mask[rows, :width], completion_mask[rows, :width]))
                 for rows, width in chunks]
        rows = torch.cat([p[0] for p in parts])
        inverse = torch.empty_like(rows)
        inverse[rows] = torch.arange(len(rows), device=rows.device)
        return torch.cat([p[1] for p in parts])[inverse], torch.cat([p[2] for p in parts])[inverse]

    def _score(self, input_ids, attention_mask, completion_mask):
        from ptalign.ops import sequence_logps

        base = self.base()
        hidden = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return sequence_logps(hidden, base.get_output_embeddings(), input_ids, completion_mask)


def length_chunks(attention_mask: torch.Tensor, chunk_tokens: int) -> list[tuple[torch.Tensor, int]] | None:
    """Rows grouped shortest first into chunks of about ``chunk_tokens`` padded tokens, each with
    the width of its longest row; ``None`` when one pass is as good (a single chunk, chunking
    off, or the batch is not right-padded so trimming would cut real tokens)."""
    if chunk_tokens <= 0 or attention_mask.shape[0] < 2:
        return None
    lengths = attention_mask.sum(1)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    if not torch.equal(attention_mask.bool(), positions[None, :] < lengths[:, None]):
        return None
    order = torch.argsort(lengths, stable=True)
    sizes = lengths[order].tolist()
    chunks, start = [], 0
    for i, width in enumerate(sizes):
        if (i + 1 - start) * width >= chunk_tokens or i == len(sizes) - 1:
            chunks.append((order[start : i + 1], max(int(width), 1)))
            start = i + 1
    return None if len(chunks) == 1 and chunks[0][1] == attention_mask.shape[1] else chunks


def adapters_disabled(model: torch.nn.Module):
    """The frozen base of a LoRA model is the reference model: run it with adapters off."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()


def cache_key(model_id: dict, data: TrainData, max_length: int) -> str:
    h = hashlib.sha256(json.dumps({"model": model_id, "max_length": max_length, "paired": data.paired}, sort_keys=True).encode())
    for e in data.examples:
        h.update(json.dumps(list(vars(e).values())).encode())
    for b in data.batches:
        h.update(json.dumps(b).encode())
    if data.kl_completion_ids is not None:
        h.update(json.dumps(data.kl_completion_ids).encode())
    return h.hexdigest()[:24]


def model_identity(resolved: str, dtype: str, mixed_precision: str = "no") -> dict:
    """What the reference log-probs depend on: the weights (by file size and mtime), dtype and autocast."""
    path = Path(resolved)
    files = sorted((f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in path.glob("*.safetensors")) if path.is_dir() else []
    identity = {"model": str(resolved), "files": files, "dtype": dtype}
    if mixed_precision != "no":  # float32 keys stay what they were
        identity["mixed_precision"] = mixed_precision
    return identity


@torch.no_grad()
def compute_reference_logps(scorer, data: TrainData, pad_id: int, max_length: int, device, show_progress=True) -> dict[str, torch.Tensor]:
    """Reference log-probs of every example (and of its KL mismatch), indexed by example.

    Keys: ``logps`` and ``kl_logps`` (unpaired) or ``chosen`` and ``rejected`` (paired).
    """
    n = len(data.examples)
    out = {k: torch.zeros(n) for k in (("chosen", "rejected") if data.paired else ("logps", "kl_logps"))}
    with Progress(disable=not show_progress, transient=True) as bar:
        task = bar.add_task("reference log-probs", total=len(data.batches))
        for batch in data.batches:
            t = {k: v.to(device) for k, v in collate_batch(data, batch, pad_id, max_length).items()}
            logps, _ = scorer(t["input_ids"], t["attention_mask"], t["completion_mask"])
            idx = torch.tensor(batch)
            if data.paired:
                out["chosen"][idx], out["rejected"][idx] = logps.float().cpu().chunk(2)
            else:
                out["logps"][idx] = logps.float().cpu()
                if "kl_input_ids" in t:
                    out["kl_logps"][idx] = scorer(t["kl_input_ids"], t["kl_attention_mask"], t["kl_completion_mask"])[0].float().cpu()
            bar.advance(task)
    return out


def cached_reference_logps(cache_dir: Path, key: str, compute) -> tuple[dict[str, torch.Tensor], bool]:
    """Load ``<cache_dir>/reference/<key>.safetensors`` or compute and store it atomically."""
    path = Path(cache_dir) / "reference" / f"{key}.safetensors"
    if path.is_file():
        return load_file(path), True
    tensors = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
    tmp.replace(path)
    return tensors, False
