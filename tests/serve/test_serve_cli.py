"""`ptalign serve` as a user runs it: a subprocess on a free loopback port, on the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

from serve_helpers import free_port


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ptalign.cli", "serve", *args]


def test_serve_starts_answers_and_stops(tiny_model_dir):
    port = free_port()
    server = subprocess.Popen(serve_command("--model", str(tiny_model_dir), "--ranker", "bm25", "--judge", "keyword",
                                            "--guard", "flag", "--port", str(port), "--max-candidates", "5"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                health = json.load(urllib.request.urlopen(url + "/health", timeout=2))
                break
            except OSError:
                assert time.monotonic() < deadline, "ptalign serve did not answer within 60 s"
                time.sleep(0.2)
        assert health["ranker"] == "bm25" and health["limits"]["max_candidates"] == 5 and health["guard"] == "flag"
        request = urllib.request.Request(url + "/v1/rank", data=json.dumps({"query": "led light bulb"}).encode(),
                                         headers={"content-type": "application/json"})
        results = json.load(urllib.request.urlopen(request, timeout=10))["results"]
        assert "bulb" in results[0]["product"]["title"].lower()
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert f"serving http://127.0.0.1:{port}/" in output


def test_unknown_ranker_fails_listing_the_known_ones(tiny_model_dir):
    done = subprocess.run(serve_command("--model", "none", "--ranker", "nope"), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "unknown ranking backend 'nope'; known: bm25, llm, minilm" in " ".join(done.stderr.split())


def test_unknown_utility_fails_naming_the_choices():
    done = subprocess.run(serve_command("--model", "none", "--utility", "likelihood"), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "utility must be yes-no or query-likelihood, got 'likelihood'" in " ".join(done.stderr.split())
