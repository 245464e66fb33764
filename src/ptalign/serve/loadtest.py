"""A bounded load test for a running service: N rank requests at fixed concurrency, latency percentiles.

    result = asyncio.run(load_test("http://127.0.0.1:8000", requests=200, concurrency=8))
    result.p50_ms, result.p99_ms, result.errors

Used by ``tests/serve/test_serve_load.py`` and ``benchmarks/serve_load.py``. Needs httpx.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

# Shopper queries over the demo catalog, cycled through by the load test.
DEMO_QUERIES = (
    "cordless drill", "interior white paint", "led light bulb", "kitchen faucet", "toilet repair",
    "tape measure", "circular saw", "step ladder", "smart dimmer switch", "wood glue", "paint roller",
    "masonry drill bits", "gas grill", "garden mulch", "programmable thermostat", "copper wire",
)


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks (NumPy's default)."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * q / 100
    lo, hi = math.floor(position), math.ceil(position)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (position - lo)


@dataclass
class LoadResult:
    requests: int
    concurrency: int
    errors: int
    wall_s: float
    latencies_ms: list[float] = field(repr=False)
    status_counts: dict[int, int]
    batch_sizes: dict[int, int]
    """How many responses reported each micro-batch size."""

    @property
    def p50_ms(self) -> float:
        return percentile(sorted(self.latencies_ms), 50)

    @property
    def p99_ms(self) -> float:
        return percentile(sorted(self.latencies_ms), 99)

    @property
    def throughput_rps(self) -> float:
        return self.requests / self.wall_s

    def summary(self) -> dict:
        return {
            "requests": self.requests, "concurrency": self.concurrency, "errors": self.errors,
            "wall_s": round(self.wall_s, 3), "throughput_rps": round(self.throughput_rps, 2),
            "p50_ms": round(self.p50_ms, 2), "p99_ms": round(self.p99_ms, 2),
            "max_ms": round(max(self.latencies_ms), 2),
            "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
        }


def rank_body(i: int, workload: str = "catalog") -> dict:
    """Request ``i`` of a workload: ``catalog`` = a demo query against the loaded demo catalog;
    ``candidates`` = a demo query with 20 demo products sent along, their titles numbered by
    request so that no two requests share a text (every product must be embedded afresh)."""
    query = DEMO_QUERIES[i % len(DEMO_QUERIES)]
    if workload == "catalog":
        return {"query": query, "top_k": 5}
    if workload != "candidates":
        raise ValueError(f"unknown workload {workload!r}; known: catalog, candidates")
    from dataclasses import asdict

    from ptalign.rec.data import demo_catalog_path, load_catalog

    products = load_catalog(demo_catalog_path())
    picked = [products[(i + k) % len(products)] for k in range(20)]
    return {"query": query, "top_k": 5,
            "candidates": [{**asdict(p), "title": f"{p.title} #{i}"} for p in picked]}


async def load_test(base_url: str, requests: int = 200, concurrency: int = 8, path: str = "/v1/rank",
                    timeout_s: float = 60.0, workload: str = "catalog") -> LoadResult:
    """Send ``requests`` rank requests of ``workload`` (see :func:`rank_body`), ``concurrency`` in
    flight at a time.

    An error is any response other than 200, or a failed connection; latency is measured per
    request from send to full response.
    """
    import httpx

    bodies = [rank_body(i, workload) for i in range(requests)]

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    batch_sizes: dict[int, int] = {}
    errors = 0
    next_index = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors, next_index
        while next_index < requests:
            i, next_index = next_index, next_index + 1
            start = time.perf_counter()
            try:
                response = await client.post(path, json=bodies[i])
                status = response.status_code
            except httpx.HTTPError:
                status = 0  # no response at all
            latencies.append(1000 * (time.perf_counter() - start))
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                size = response.json().get("batch_size", 0)
                batch_sizes[size] = batch_sizes.get(size, 0) + 1
            else:
                errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return LoadResult(requests, concurrency, errors, wall, latencies, statuses, batch_sizes)
