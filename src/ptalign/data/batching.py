"""Batches of example indices, KTO's mismatched KL completions, and right-padded tensors."""

from __future__ import annotations

import random

import torch

from ptalign.data.tokenize import TokenizedExample

# Examples sorted together per bucket, in batches: large enough that neighbours in a sorted
# bucket have similar lengths, small enough that a bucket still mixes the shuffled data.
BUCKET_BATCHES = 64


def make_batches(
    lengths: list[int], batch_size: int, seed: int, bucket_by_length: bool = True, drop_last: bool = False,
    labels: list[bool] | None = None,
) -> list[list[int]]:
    """Split ``range(len(lengths))`` into batches of indices.

    With ``bucket_by_length``: shuffle the indices with ``seed``, split them into buckets of
    ``64 * batch_size``, sort each bucket by length, cut it into batches, and shuffle the batch
    order with the same generator -- batches hold similar lengths, so little compute goes to
    padding, while each epoch still sees a random order. Without it: consecutive batches in
    dataset order (TRL's sequential sampler for KTO, so the mismatched KL pairs are fixed by
    the data order); ``seed`` is then unused. ``drop_last`` drops the one short batch, if any.
    Deterministic for a given ``seed``.

    ``labels`` (KTO's desirable/undesirable) keeps both labels in every bucketed batch: each label
    is sorted by length on its own and the two are merged by relative rank, so the k-th shortest
    desirable example sits beside the k-th shortest undesirable one. Without it, lengths that
    differ by label (short refusals, long compliance) would make one-label batches, where KTO's
    KL reference point and its gains-versus-losses balance break down.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; expected at least 1")
    order = list(range(len(lengths)))
    rng = random.Random(seed)
    if bucket_by_length:
        rng.shuffle(order)
        bucket = BUCKET_BATCHES * batch_size
        buckets = [_sort_bucket(order[s : s + bucket], lengths, labels) for s in range(0, len(order), bucket)]
        order = [i for b in buckets for i in b]
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if bucket_by_length:
        rng.shuffle(batches)
    return batches


def _sort_bucket(bucket: list[int], lengths: list[int], labels: list[bool] | None) -> list[int]:
    if labels is None:
        return sorted(bucket, key=lengths.__getitem__)
    groups = [sorted((i for i in bucket if labels[i] == value), key=lengths.__getitem__) for value in (True, False)]
    rank = {i: (k + 0.5) / len(g) for g in groups for k, i in enumerate(g)}
    return sorted(bucket, key=rank.__getitem__)


def rotate_completions(batch: list[TokenizedExample]) -> list[list[int]]:
    """Mismatched completions for KTO's KL reference point: example ``i`` gets example ``i-1``'s.

    TRL's convention ``[c[-1]] + c[:-1]``: ``(x_1, y_n), (x_2, y_1), ..., (x_n, y_{n-1})``, so the
    mismatched completions are the same set as the matched ones, paired with other prompts.
    A batch of one gets its own completion back (no mismatch is possible).
    """
    completions = [example.completion_ids for example in batch]
    return completions[-1:] + completions[:-1]


def collate(
    prompt_ids: list[list[int]],
    completion_ids: list[list[int]],
    pad_id: int,
    max_length: int | None = None,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Right-padded ``[B, T]`` int64 tensors, the same as TRL's ``DataCollatorForUnpairedPreference``.

    input_ids:       ``prompt + completion`` (cut at ``max_length``), then ``pad_id``
    attention_mask:  1 on real tokens, 0 on padding
    completion_mask: 1 on completion tokens, 0 on prompt and padding
    ``T`` is the longest sequence, rounded up to a multiple of ``pad_to_multiple_of`` if given.
    """
    if len(prompt_ids) != len(completion_ids) or not prompt_ids:
        raise ValueError(
            f"got {len(prompt_ids)} prompts and {len(completion_ids)} completions; expected the same number, at least 1"
        )
    rows = [(p + c, [0] * len(p) + [1] * len(c)) for p, c in zip(prompt_ids, completion_ids)]
    if max_length is not None:
        rows = [(ids[:max_length], mask[:max_length]) for ids, mask in rows]
    width = max(len(ids) for ids, _ in rows)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.int64)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.int64)
    completion_mask = torch.zeros((len(rows), width), dtype=torch.int64)
    for b, (ids, mask) in enumerate(rows):
        input_ids[b, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
        attention_mask[b, : len(ids)] = 1
        completion_mask[b, : len(ids)] = torch.tensor(mask, dtype=torch.int64)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}


def padding_fraction(batches: list[list[int]], lengths: list[int]) -> float:
    """Share of padded positions when each batch is padded to its longest sequence.

    ``sum_b (|b| * max_{i in b} l_i - sum_{i in b} l_i) / sum_b |b| * max_{i in b} l_i``;
    0.0 when there is nothing to pad.
    """
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    real = sum(lengths[i] for b in batches for i in b)
    return (padded - real) / padded if padded else 0.0
