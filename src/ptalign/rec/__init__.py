"""Product recommendation: ranking data, ranking metrics and non-LLM baseline rankers.

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
