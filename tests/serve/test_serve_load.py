"""A bounded load test on loopback: 200 rank requests at concurrency 8 against a real uvicorn server."""

from __future__ import annotations

import asyncio

import pytest

from ptalign.serve.loadtest import load_test, percentile

pytest.importorskip("httpx", reason="the load test needs httpx (the dev extra)")


def test_percentile_interpolates_between_ranks():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([10.0], 99) == 10.0
    assert percentile([0.0, 100.0], 99) == pytest.approx(99.0)


def test_200_requests_at_concurrency_8_without_errors(live_url):
    result = asyncio.run(load_test(live_url, requests=200, concurrency=8))
    summary = result.summary()
    print("\nload test:", summary)
    assert result.errors == 0 and summary["status_counts"] == {"200": 200}
    assert len(result.latencies_ms) == 200 and result.p50_ms <= result.p99_ms
    assert result.p99_ms < 10_000  # bounded: no request waits anywhere near the 30 s timeout
    # concurrent requests were merged into shared model passes
    assert max(result.batch_sizes) > 1, summary["batch_sizes"]
