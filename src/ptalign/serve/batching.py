"""Micro-batching: concurrent requests share one model pass, run off the event loop.

    batcher = MicroBatcher(ranker.rank_many, window_s=0.005, max_batch=16)
    await batcher.start()
    result, batch_size = await batcher.submit(item)     # from any number of concurrent handlers

The first request to arrive takes every request already queued (those that arrived while the
previous pass ran) and opens a window of ``window_s``; every request that arrives within it (up
to ``max_batch``) joins the same call of ``fn(items) -> results`` in a one-thread
executor, so the event loop keeps serving while the model works, and model calls never overlap
(torch on a small CPU is fastest one pass at a time). An exception in ``fn`` fails every request
of that batch with it, except that a failed batch of several is retried one request at a time
so that one bad request cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    future: asyncio.Future


@dataclass
class BatchStats:
    """Counters for /health and the load benchmark."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    busy_s: float = 0.0
    sizes: dict[int, int] = field(default_factory=dict)


class MicroBatcher(Generic[Item, Result]):
    def __init__(self, fn: Callable[[Sequence[Item]], Sequence[Result]], window_s: float = 0.005,
                 max_batch: int = 16, name: str = "model", executor: ThreadPoolExecutor | None = None):
        """``executor``: a one-thread executor shared with another batcher whose model calls must
        not overlap this one's (same weights); by default each batcher has its own."""
        self.fn, self.window_s, self.max_batch, self.name = fn, window_s, max_batch, name
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self._owns_executor = executor is None
        self._executor: ThreadPoolExecutor | None = executor
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Start the batching task on the running loop (``submit`` does this itself when needed)."""
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ptalign-{self.name}")
        self._task = asyncio.create_task(self._run(), name=f"ptalign-{self.name}-batcher")

    async def stop(self) -> None:
        if self._task is not None and self._loop is asyncio.get_running_loop():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._executor is not None and self._owns_executor:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._task = self._queue = self._loop = None

    async def submit(self, item: Item) -> tuple[Result, int]:
        """The result for ``item`` and the size of the batch it was computed in."""
        if self._loop is not asyncio.get_running_loop():
            # Not started, or started on another loop (a test client without lifespan runs one
            # loop per request): the old loop's task cannot serve this one.
            await self.start()
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(item, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            # Everything that queued while the last pass ran joins at once; then wait out the window.
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            deadline = loop.time() + self.window_s
            while len(batch) < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            # A request that timed out (its handler gave up) is not worth a model pass.
            batch = [p for p in batch if not p.future.done()]
            if batch:
                await self._compute(loop, batch)

    async def _compute(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        start = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self.fn, [p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: got {len(results)} results for {len(batch)} requests")
        except Exception as err:  # noqa: BLE001 - handed to the waiting requests
            if len(batch) > 1:
                for p in batch:
                    await self._compute(loop, [p])
                return
            if not batch[0].future.done():
                batch[0].future.set_exception(err)
            return
        finally:
            self._record(len(batch), time.perf_counter() - start)
        for p, result in zip(batch, results):
            if not p.future.done():
                p.future.set_result((result, len(batch)))

    def _record(self, size: int, seconds: float) -> None:
        s = self.stats
        s.batches, s.items, s.largest, s.busy_s = s.batches + 1, s.items + size, max(s.largest, size), s.busy_s + seconds
        s.sizes[size] = s.sizes.get(size, 0) + 1
