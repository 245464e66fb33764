"""MicroBatcher: concurrent submissions within the window share one call, capped at max_batch."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ptalign.serve.batching import MicroBatcher


class Recorder:
    def __init__(self):
        self.calls, self.threads = [], set()

    def __call__(self, items):
        self.calls.append(list(items))
        self.threads.add(threading.current_thread().name)
        return [x * 10 for x in items]


async def _submit_all(batcher, items):
    await batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(x) for x in items))
    finally:
        await batcher.stop()


def test_requests_within_the_window_share_one_call_in_a_worker_thread():
    fn = Recorder()
    results = asyncio.run(_submit_all(MicroBatcher(fn, window_s=0.05, max_batch=16), range(5)))
    assert results == [(0, 5), (10, 5), (20, 5), (30, 5), (40, 5)]  # (result, batch size), in order
    assert fn.calls == [[0, 1, 2, 3, 4]]
    assert fn.threads == {"ptalign-model_0"} and threading.current_thread().name not in fn.threads


def test_batches_are_capped_at_max_batch():
    fn = Recorder()
    batcher = MicroBatcher(fn, window_s=0.05, max_batch=3)
    results = asyncio.run(_submit_all(batcher, range(7)))
    assert [r for r, _ in results] == [0, 10, 20, 30, 40, 50, 60]
    assert [len(c) for c in fn.calls] == [3, 3, 1]
    assert batcher.stats.batches == 3 and batcher.stats.items == 7 and batcher.stats.largest == 3


def test_a_failing_call_fails_only_the_request_that_breaks_it():
    def fn(items):
        if -1 in items:
            raise ValueError("bad item")
        return items

    async def scenario():
        batcher = MicroBatcher(fn, window_s=0.05)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(x) for x in (1, -1, 2)), return_exceptions=True)
        finally:
            await batcher.stop()

    ok1, bad, ok2 = asyncio.run(scenario())
    assert ok1 == (1, 1) and ok2 == (2, 1) and isinstance(bad, ValueError)


def test_submit_starts_the_batcher_on_first_use():
    async def scenario():
        batcher = MicroBatcher(lambda items: items, window_s=0)
        try:
            return await batcher.submit("x")
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) == ("x", 1)


def test_result_count_mismatch_is_an_error():
    with pytest.raises(RuntimeError, match="got 0 results for 1 requests"):
        asyncio.run(_submit_all(MicroBatcher(lambda items: [], window_s=0), [1]))
