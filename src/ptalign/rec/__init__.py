"""Product recommendation: ranking data, ranking metrics, baseline rankers and the seller/buyer reranker.

``seller`` writes tailored descriptions, ``buyer`` scores "would I buy this?" with shared-prefix
KV-cache reuse, ``selfalign`` trains both roles (``ptalign rec train``), ``report`` evaluates and
writes tables and plots (``ptalign rec eval``); ``cli`` holds the ``ptalign rec`` commands.

Heavy dependencies (bm25s, ranx, sentence-transformers, pyarrow) are imported lazily by the
functions that need them and come with the ``rec`` extra: ``pip install 'ptalign[rec]'``.
"""

from ptalign.rec.data import (
    Candidate,
    DataFormatError,
    Product,
    RankingQuery,
    demo_catalog_path,
    load_catalog,
    load_esci,
    load_relevance_jsonl,
)

__all__ = [
    "Candidate",
    "DataFormatError",
    "Product",
    "RankingQuery",
    "demo_catalog_path",
    "load_catalog",
    "load_esci",
    "load_relevance_jsonl",
]
