"""Shared log-prob plumbing: completion log-probs and KTO's reference point across processes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.multiprocessing as mp

from ptalign.ops import RunningMean, kl_reference_point, sequence_logps


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
