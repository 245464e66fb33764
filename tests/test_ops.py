"""Shared log-prob plumbing: completion log-probs, KTO's reference point across processes, and the MMD."""

from __future__ import annotations

import math

import pytest
import torch
import torch.multiprocessing as mp

from ptalign.ops import RunningMean, kl_reference_point, mmd_rbf, sequence_logps


def test_sequence_logps_equals_full_log_softmax():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11, bias=False)
    hidden = torch.randn(2, 5, 8)
    ids = torch.randint(0, 11, (2, 5))
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])  # row 1: right padding after two completion tokens
    logps, n = sequence_logps(hidden, head, ids, mask)
    full = torch.log_softmax(head(hidden)[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    expected = (full * mask[:, 1:]).sum(-1)
    torch.testing.assert_close(logps, expected)
    assert n.tolist() == [3, 2]


def test_kl_reference_point_is_clamped_and_detached():
    p = torch.tensor([-1.0, -2.0], requires_grad=True)
    assert kl_reference_point(p, torch.tensor([0.0, 0.0])).item() == 0.0  # mean -1.5 clamps to 0
    z = kl_reference_point(p, torch.tensor([-3.0, -3.0]))
    assert z.item() == pytest.approx(1.5) and not z.requires_grad


def test_running_mean_judges_a_batch_against_the_past():
    rm = RunningMean(momentum=0.5)
    assert rm.update(torch.tensor(2.0)).item() == 2.0  # first batch: its own mean
    assert rm.update(torch.tensor(4.0)).item() == 2.0  # judged against the mean before it
    assert rm.value == pytest.approx(3.0)


def _worker(rank: int, port: int, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    # rank 0 holds three mismatched pairs, rank 1 holds one: unequal shares of the global batch
    diffs = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0])][rank]
    out[rank] = kl_reference_point(diffs, torch.zeros_like(diffs)).item()
    dist.destroy_process_group()


def test_kl_reference_point_is_global_sum_over_global_count_across_two_processes():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(port, out), nprocs=2, join=True)
    global_mean = (1 + 2 + 3 + 10) / 4  # 4.0; the mean of per-process means would be (2 + 10) / 2 = 6.0
    assert out[0] == out[1] == pytest.approx(global_mean)
    assert not math.isclose(out[0], 6.0)


def test_mmd_rbf_matches_a_hand_computation():
    # z = {0, 1}: mean squared distance between distinct points h = 1, bandwidths 1/4, 1/2, 1, 2, 4;
    # k(x, x) = k(y, y) = 5 and k(x, y) = e^-4 + e^-2 + e^-1 + e^-1/2 + e^-1/4
    cross = sum(math.exp(-1 / b) for b in (0.25, 0.5, 1, 2, 4))
    assert float(mmd_rbf(torch.tensor([[0.0]]), torch.tensor([[1.0]]))) == pytest.approx(10 - 2 * cross, abs=1e-6)
    # two points against one: h = (1 + 4 + 1) * 2 / 6 = 2, so the bandwidths double
    x, y = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0]])
    k = lambda d2: sum(math.exp(-d2 / (2 * b)) for b in (0.25, 0.5, 1, 2, 4))  # noqa: E731
    expected = (2 * k(0) + 2 * k(4)) / 4 + k(0) - 2 * k(1)
    assert float(mmd_rbf(x, y)) == pytest.approx(expected, abs=1e-6)


def test_mmd_rbf_is_zero_for_one_sample_and_separates_shifted_ones():
    torch.manual_seed(0)
    x = torch.randn(200, 8)
    assert float(mmd_rbf(x, x)) == pytest.approx(0.0, abs=1e-6)
    same, shifted = float(mmd_rbf(x, torch.randn(200, 8))), float(mmd_rbf(x, torch.randn(200, 8) + 1.0))
    assert same < 0.1 < 0.5 < shifted
    x.requires_grad_(True)
    mmd_rbf(x, torch.randn(200, 8) + 1.0).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
