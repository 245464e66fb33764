"""Index batches, KL rotation, collation (equal to TRL's collator) and the padding saved by bucketing."""

from __future__ import annotations

import random

import pytest
import torch

from ptalign.data import TokenizedExample, collate, make_batches, padding_fraction, rotate_completions


def skewed_lengths(n: int = 2000, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [max(1, int(rng.lognormvariate(4.0, 0.8))) for _ in range(n)]


@pytest.mark.parametrize("bucket", [True, False])
@pytest.mark.parametrize("drop_last", [True, False])
def test_batches_cover_every_index_once(bucket, drop_last):
    lengths = skewed_lengths(1001)
    batches = make_batches(lengths, 8, seed=3, bucket_by_length=bucket, drop_last=drop_last)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) == (1000 if drop_last else 1001)
    assert all(len(b) == 8 for b in batches) if drop_last else sorted(map(len, batches))[0] == 1001 % 8


def test_batches_are_deterministic_per_seed():
    lengths = skewed_lengths(500)
    assert make_batches(lengths, 4, seed=1) == make_batches(lengths, 4, seed=1)
    assert make_batches(lengths, 4, seed=1) != make_batches(lengths, 4, seed=2)


def test_without_bucketing_batches_are_consecutive():
    assert make_batches([5, 1, 9, 2, 7], 2, seed=0, bucket_by_length=False) == [[0, 1], [2, 3], [4]]
    assert make_batches([5, 1, 9, 2, 7], 2, seed=9, bucket_by_length=False, drop_last=True) == [[0, 1], [2, 3]]


def test_bucketed_batches_hold_similar_lengths():
    # one bucket (16 <= 64 * 2): batches are neighbours in the length order, in shuffled order
    lengths = [40, 3, 17, 8, 25, 1, 33, 12, 5, 29, 21, 14, 37, 9, 2, 44]
    batches = make_batches(lengths, 2, seed=0)
    assert sorted(sorted(lengths[i] for i in b) for b in batches) == [
        [1, 2], [3, 5], [8, 9], [12, 14], [17, 21], [25, 29], [33, 37], [40, 44]
    ]


def test_bucketing_reduces_padding():
    lengths = skewed_lengths()
    plain = padding_fraction(make_batches(lengths, 8, seed=0, bucket_by_length=False), lengths)
    bucketed = padding_fraction(make_batches(lengths, 8, seed=0), lengths)
    assert plain > 0.4 and bucketed < 0.05


def test_padding_fraction_by_hand():
    # batch [0, 1]: 2 * 4 = 8 positions, 6 real; batch [2]: 1 position, 1 real -> 2 / 9
    assert padding_fraction([[0, 1], [2]], [4, 2, 1]) == pytest.approx(2 / 9)
    assert padding_fraction([], []) == 0.0


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size=0"):
        make_batches([1, 2], 0, seed=0)


def test_rotate_completions_follows_trl():
    batch = [TokenizedExample([1], [10 + i], True) for i in range(3)]
    assert rotate_completions(batch) == [[12], [10], [11]]
    assert rotate_completions(batch[:1]) == [[10]]


PROMPTS = [[1, 2, 3], [7, 8], [4], [5, 6, 7, 8, 9, 10]]
COMPLETIONS = [[4, 5], [9], [11, 12, 13, 14, 15], [16]]


def test_collate_by_hand():
    out = collate(PROMPTS[:2], COMPLETIONS[:2], pad_id=0)
    assert out["input_ids"].tolist() == [[1, 2, 3, 4, 5], [7, 8, 9, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert out["completion_mask"].tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 0, 0]]
    assert all(t.dtype == torch.int64 for t in out.values())


@pytest.mark.parametrize("max_length", [None, 4, 6, 100])
@pytest.mark.parametrize("multiple", [None, 8])
def test_collate_equals_trl_collator(max_length, multiple):
    from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

    trl = DataCollatorForUnpairedPreference(pad_token_id=99, max_length=max_length, pad_to_multiple_of=multiple)
    expected = trl([{"prompt_ids": p, "completion_ids": c, "label": True} for p, c in zip(PROMPTS, COMPLETIONS)])
    ours = collate(PROMPTS, COMPLETIONS, pad_id=99, max_length=max_length, pad_to_multiple_of=multiple)
    assert set(ours) == {"input_ids", "attention_mask", "completion_mask"}
    for key, value in ours.items():
        assert value.dtype == expected[key].dtype and torch.equal(value, expected[key]), key


def test_collate_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="2 prompts and 1 completions"):
        collate(PROMPTS[:2], COMPLETIONS[:1], pad_id=0)


def test_bucketing_keeps_both_labels_in_every_batch():
    # desirable examples short, undesirable long: plain length sorting would make one-label batches
    labels = [i % 2 == 0 for i in range(64)]
    lengths = [10 + i if label else 200 + i for i, label in enumerate(labels)]
    plain = make_batches(lengths, 8, seed=0)
    mixed = make_batches(lengths, 8, seed=0, labels=labels)
    assert any(len({labels[i] for i in b}) == 1 for b in plain)
    assert all(sorted(labels[i] for i in b) == [False] * 4 + [True] * 4 for b in mixed)
    assert sorted(i for b in mixed for i in b) == list(range(64))
