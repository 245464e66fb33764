"""Take docs/screenshot.png: start `ptalign serve`, search the demo catalog and ask a question in
headless Chromium (Debian's /usr/bin/chromium, driven by Playwright), and save the page.

    .venv/bin/python scripts/screenshot.py                      # embedded model, MiniLM ranker and judge
    .venv/bin/python scripts/screenshot.py --ranker llm         # seller/buyer reranker: tailored descriptions
    .venv/bin/python scripts/screenshot.py --model /path/tiny --judge keyword --out /tmp/page.png
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"ptalign serve exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"the server did not answer /health within {timeout_s:g} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--ranker", default="minilm")
    parser.add_argument("--judge", default="auto")
    parser.add_argument("--query", default="cordless drill for small jobs")
    parser.add_argument("--message", default="How do I fix a squeaky door hinge?")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot.png")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="First start converts the embedded model.")
    args = parser.parse_args()

    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "ptalign.cli", "serve", "--model", args.model, "--ranker", args.ranker,
               "--judge", args.judge, "--port", str(port), "--max-new-tokens", "48", "--request-timeout", "600"]
    server = subprocess.Popen(command, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    try:
        wait_healthy(url, server, args.startup_timeout)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(url + "/")
            expect(page.locator("#status")).to_contain_text("ranker:")
            page.fill("#query", args.query)
            page.click("#search-form button")
            expect(page.locator("#results .card").first).to_be_visible(timeout=600_000)
            page.fill("#message", args.message)
            page.click("#chat-form button")
            expect(page.locator("#chat-log .msg.bot")).to_have_count(1, timeout=120_000)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=False)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
