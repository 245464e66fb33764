"""Load on the service: 200 rank requests at concurrency 8 over loopback against `ptalign serve`.

Each setting starts the real command line as its own process (so the load client does not share
its interpreter), warms it up with one pass over the queries (the catalog's embeddings get
cached), then measures. Workloads: ``catalog`` (a query against the demo catalog: BM25 top 20,
reranked; after warm-up MiniLM only embeds the query) and ``candidates`` (each request sends 20
products no other request shares, so MiniLM embeds 21 texts per request: where micro-batching
has work to merge). Each MiniLM workload runs with micro-batching (5 ms window, up to 16
requests a pass: the default) and without (--max-batch 1). Writes
benchmarks/results/serve_load.json and prints a table.

    .venv/bin/python benchmarks/serve_load.py [--requests 200] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ptalign.serve.loadtest import DEMO_QUERIES, load_test

RESULTS = Path(__file__).resolve().parent / "results" / "serve_load.json"
SETTINGS = {  # name: (workload, ptalign serve options)
    "bm25/catalog": ("catalog", ["--ranker", "bm25"]),
    "minilm/catalog": ("catalog", ["--ranker", "minilm"]),
    "minilm/catalog/no_batching": ("catalog", ["--ranker", "minilm", "--max-batch", "1"]),
    "minilm/candidates": ("candidates", ["--ranker", "minilm"]),
    "minilm/candidates/no_batching": ("candidates", ["--ranker", "minilm", "--max-batch", "1"]),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(extra: list[str], model: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "ptalign.cli", "serve", "--model", model, "--port", str(port), *extra]
    server = subprocess.Popen(command, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"`{' '.join(command)}` exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return server, url
        except OSError:
            time.sleep(0.3)
    server.kill()
    sys.exit("the server did not start within 300 s")


def measure(name: str, args: argparse.Namespace) -> dict:
    workload, extra = SETTINGS[name]
    server, url = start_server(extra, args.model)
    try:
        asyncio.run(load_test(url, requests=len(DEMO_QUERIES), concurrency=1))  # warm-up: embed the catalog
        result = asyncio.run(load_test(url, requests=args.requests, concurrency=args.concurrency, workload=workload))
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"setting": name, "workload": workload, "serve_args": extra, **result.summary()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--model", default="none", help="Generation model (unused by rank requests): none skips loading one.")
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()

    load_before = os.getloadavg()[0]  # other work on the machine skews latencies: recorded with them
    rows = [measure(name, args) for name in args.settings]
    result = {
        "benchmark": "serve_load", "endpoint": "POST /v1/rank (top 5 back)",
        "requests": args.requests, "concurrency": args.concurrency, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}, "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{'setting':<30} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}  batch sizes")
    for r in rows:
        print(f"{r['setting']:<30} {r['errors']:>6} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['throughput_rps']:>8.1f}  "
              f"{r['batch_sizes']}")
    print(f"load average (1 min) before/after: {result['load_average_1m']}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
