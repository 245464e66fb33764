"""From a feedback file to the fixed batches a run trains on.

Batches are built once per run (bucketed by length, seeded) and only their *order* changes
between epochs. That keeps KTO's mismatched KL completions -- rotated within a batch -- the same
in every epoch, so reference log-probs computed once stay valid for the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ptalign.data import (
    PreferencePair,
    collate,
    load_feedback,
    make_batches,
    rotate_completions,
    tokenize_feedback,
    tokenize_pairs,
    unpair,
)
from ptalign.losses.base import Loss

RESOURCES = Path(__file__).parent / "resources"
DEMO_DATA = {"demo": RESOURCES / "demo_feedback.jsonl", "demo_pairs": RESOURCES / "demo_pairs.jsonl"}


@dataclass
class TrainData:
    """Tokenized examples and the fixed batches over them.

    examples:  TokenizedExample (unpaired losses) or TokenizedPair (paired losses)
    batches:   lists of example indices, one list per micro-batch
    kl_completion_ids: per example, the completion it is mismatched with for KTO's KL
                       estimate (None when the loss needs no KL batch)
    """

    examples: list
    batches: list[list[int]]
    paired: bool
    kl_completion_ids: list[list[int]] | None = None


def resolve_data_path(spec: str) -> Path:
    path = DEMO_DATA.get(spec, Path(spec))
    if not path.is_file():
        raise FileNotFoundError(f"training data not found: {path} (give a JSONL file, or one of: {', '.join(DEMO_DATA)})")
    return path


def prepare_data(
    path: str, tokenizer, loss: Loss, max_length: int, truncation: str, batch_size: int,
    seed: int, bucket_by_length: bool = True, limit: int | None = None,
) -> TrainData:
    records = load_feedback(resolve_data_path(path))[:limit]
    is_paired = isinstance(records[0], PreferencePair)
    if loss.paired:
        if not is_paired:
            raise ValueError(
                f"loss {type(loss).__name__} needs preference pairs: give lines "
                '{"prompt", "chosen", "rejected"} instead of unpaired prompt/completion/label'
            )
        examples = _tokenized(tokenize_pairs(tokenizer, records, max_length=max_length, truncation=truncation))
        lengths = [len(e.prompt_ids) + max(len(e.chosen_ids), len(e.rejected_ids)) for e in examples]
    else:
        records = unpair(records) if is_paired else records
        if loss.desirable_only:
            records = [r for r in records if r.label]
        examples = _tokenized(tokenize_feedback(tokenizer, records, max_length=max_length, truncation=truncation))
        lengths = [len(e.prompt_ids) + len(e.completion_ids) for e in examples]
    if not examples:
        raise ValueError(f"{path}: no example is left after filtering and truncation (max_length={max_length})")
    labels = None if loss.paired else [e.label for e in examples]
    batches = make_batches(lengths, batch_size, seed, bucket_by_length=bucket_by_length, labels=labels)
    kl = None
    if not loss.paired and loss.requires_kl:
        if batch_size < 2:
            raise ValueError("KTO's KL estimate needs train.batch_size >= 2 (with 1 the KL term equals the implied reward)")
        kl = [[] for _ in examples]
        for batch in batches:
            for i, ids in zip(batch, rotate_completions([examples[i] for i in batch])):
                kl[i] = ids
    return TrainData(examples=examples, batches=batches, paired=loss.paired, kl_completion_ids=kl)


def _tokenized(result):
    # the tokenizers may also report how many examples truncation dropped
    return result[0] if isinstance(result, tuple) else result


def collate_batch(data: TrainData, batch: list[int], pad_id: int, max_length: int) -> dict[str, torch.Tensor]:
    """Tensors for one micro-batch.

    Unpaired: ``input_ids``/``attention_mask``/``completion_mask`` ``[B, T]``, ``labels`` and
    ``weights`` ``[B]``, and ``kl_*`` ``[B, T']`` when the loss needs a KL batch.
    Paired: chosen sequences then rejected ones stacked into ``[2B, T]``, ``weights`` ``[B]``.
    """
    ex = [data.examples[i] for i in batch]
    weights = torch.tensor([e.weight for e in ex], dtype=torch.float32)
    if data.paired:
        prompts = [e.prompt_ids for e in ex] * 2
        out = collate(prompts, [e.chosen_ids for e in ex] + [e.rejected_ids for e in ex], pad_id, max_length)
        return {**out, "weights": weights, "index": torch.tensor(batch)}
    prompts = [e.prompt_ids for e in ex]
    out = collate(prompts, [e.completion_ids for e in ex], pad_id, max_length)
    out.update(labels=torch.tensor([e.label for e in ex]), weights=weights, index=torch.tensor(batch))
    if data.kl_completion_ids is not None:
        kl = collate(prompts, [data.kl_completion_ids[i] for i in batch], pad_id, max_length)
        out.update({f"kl_{k}": v for k, v in kl.items()})
    return out
