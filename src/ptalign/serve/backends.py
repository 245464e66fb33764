"""Ranking backends: what the service's /v1/rank calls after the BM25 first stage.

A backend orders one query's candidates and says why::

    backend = build_backend("minilm")
    rank(backend, "cordless drill", products)     # -> [RankedProduct(product, utility, description), ...]
    backend.rank_many([(query, products), ...])   # one model pass for several requests (micro-batching)

``utility`` is the backend's score, higher = more likely bought (BM25 score, MiniLM cosine, or
the LLM buyer's log-odds of "yes"); ``description`` is the text shown with the product (the
catalog's own description, or the LLM seller's description tailored to the query).

Adding a backend: a class with ``name`` and ``rank_many``, registered with
``@RANKING_BACKENDS.register("name")``; its factory receives the loaded generation model.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import numpy as np

from ptalign.rec.data import Product
from ptalign.registry import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

RankInput = tuple[str, Sequence[Product]]
"""(query, candidate products) of one request."""


@dataclass
class RankedProduct:
    product: Product
    utility: float
    description: str


class RankingBackend(Protocol):
    name: str

    def rank_many(self, requests: Sequence[RankInput]) -> list[list[RankedProduct]]:
        """For each (query, products): the products best first, each with utility and description."""
        ...


def rank(backend: RankingBackend, query: str, products: Sequence[Product]) -> list[RankedProduct]:
    """One request through a backend (the batch-of-one case)."""
    return backend.rank_many([(query, products)])[0]


def catalog_description(product: Product) -> str:
    """The catalog's own words for a product: its description, else its bullet points."""
    return product.description or product.bullets


def order(products: Sequence[Product], utilities: Sequence[float],
          descriptions: Sequence[str] | None = None) -> list[RankedProduct]:
    """Products sorted by utility, best first; ties keep the given (first-stage) order."""
    descriptions = descriptions or [catalog_description(p) for p in products]
    ranked = [RankedProduct(p, float(u), d) for p, u, d in zip(products, utilities, descriptions)]
    return sorted(ranked, key=lambda r: -r.utility)  # sorted() is stable


RANKING_BACKENDS: Registry[Callable[..., RankingBackend]] = Registry("ranking backend")


@RANKING_BACKENDS.register("bm25")
class BM25Backend:
    """BM25 over each request's candidates (idf from those candidates); no model pass."""

    name = "bm25"

    def __init__(self, **_: Any):
        from ptalign.rec.baselines import BM25Ranker

        self._ranker = BM25Ranker()

    def rank_many(self, requests: Sequence[RankInput]) -> list[list[RankedProduct]]:
        return [order(products, self._scores(query, products)) for query, products in requests]

    def _scores(self, query: str, products: Sequence[Product]) -> list[float]:
        # Candidates with no indexable word (bm25s drops words under 2 characters, so a title like
        # "0") match nothing: bm25s refuses to index them all (ValueError: empty vocabulary) and
        # scores some of them NaN (0 / mean length 0). Both mean score 0.
        try:
            with np.errstate(invalid="ignore", divide="ignore"):
                scores = self._ranker.score(query, products)
        except ValueError:
            return [0.0] * len(products)
        return np.nan_to_num(scores, nan=0.0).tolist()


@RANKING_BACKENDS.register("minilm")
class MiniLMBackend:
    """Cosine similarity of all-MiniLM-L6-v2 embeddings of query and product text.

    All requests of a batch are embedded in one encoder call, every distinct text once; the
    embeddings are kept (up to ``cache_size`` texts, oldest dropped first), so the products of a
    loaded catalog are embedded once and later requests only embed their query.
    """

    name = "minilm"

    def __init__(self, cache_size: int = 50_000, **_: Any):
        from ptalign.rec.baselines import MiniLMRanker

        self._ranker = MiniLMRanker()
        self._cache: dict[str, np.ndarray] = {}
        self.cache_size = cache_size
        self._ranker.embed(["warm-up"])  # load the encoder now, not inside the first request

    def embed(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Unit-norm embedding of each distinct text, encoding only those not seen before."""
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if new:
            for text, vector in zip(new, self._ranker.embed(new)):
                self._cache[text] = vector
            for old in list(self._cache)[: max(0, len(self._cache) - self.cache_size)]:
                del self._cache[old]  # dicts keep insertion order: the oldest go first
        return {t: self._cache[t] for t in texts}

    def rank_many(self, requests: Sequence[RankInput]) -> list[list[RankedProduct]]:
        vectors = self.embed([t for q, ps in requests for t in [q, *(p.text() for p in ps)]])
        return [
            order(products, (np.stack([vectors[p.text()] for p in products]) @ vectors[query]).tolist())
            if products else []
            for query, products in requests
        ]


# --------------------------------------------------------------------------- LLM seller/buyer


def llm_rec_available() -> bool:
    """True when the LLM seller/buyer modules (``ptalign.rec.seller``, ``ptalign.rec.buyer``) exist."""
    return all(importlib.util.find_spec(f"ptalign.rec.{m}") is not None for m in ("seller", "buyer"))


@RANKING_BACKENDS.register("llm")
class LLMBackend:
    """The prospect-theoretic seller/buyer reranker (``ptalign.rec.seller`` / ``ptalign.rec.buyer``)
    on the served model.

    One batch of requests is one seller generation call over all of their (query, product)
    pairs (descriptions cached on disk by content hash), then one buyer pass per query
    (shared-prefix for the ``yes-no`` utility). ``utility`` is the buyer's log-odds of "yes, I
    would buy this", or with ``utility="query-likelihood"`` the mean log-probability of the query
    given the product; within a query the order is that of the prospect value v(u - z_q), which is
    increasing in u.
    """

    name = "llm"
    uses_generation_model = True
    """Its model calls must not overlap the generator's (they share the weights)."""

    def __init__(self, model: "PreTrainedModel | None" = None, tokenizer: "PreTrainedTokenizerBase | None" = None,
                 model_spec: str | None = None, description_tokens: int = 40, batch_size: int = 16,
                 seller: bool = True, utility: str = "yes-no", **_: Any):
        if not llm_rec_available():
            raise ImportError(
                "the 'llm' ranking backend needs ptalign.rec.seller and ptalign.rec.buyer (the seller/buyer "
                "reranker), which this install does not have; use --ranker minilm or bm25"
            )
        if model is None or tokenizer is None:
            raise ValueError("the 'llm' ranking backend needs a model: start the server with --model (not 'none')")
        from ptalign.rec.buyer import Buyer
        from ptalign.rec.seller import DescriptionCache, Seller, default_cache_dir

        self.buyer = Buyer(model, tokenizer, batch_size=batch_size, utility=utility)
        self.settings = {"utility": utility, "seller": bool(seller)}
        self.seller = None
        if seller:
            # The disk cache is keyed by the weights' identity; weights known only in memory get none.
            known = model_spec is not None and model_spec != "none"
            self.seller = Seller(model, tokenizer, _model_id(model_spec) if known else "in-memory",
                                 DescriptionCache(default_cache_dir()) if known else None,
                                 max_new_tokens=description_tokens, batch_size=batch_size)

    def rank_many(self, requests: Sequence[RankInput]) -> list[list[RankedProduct]]:
        pairs = [(q, p) for q, products in requests for p in products]
        described = iter(self.seller.describe(pairs) if self.seller else [None] * len(pairs))
        ranked = []
        for query, products in requests:
            descriptions = [next(described) for _ in products]
            utilities = self.buyer.utilities(query, products, descriptions)
            shown = [d or catalog_description(p) for d, p in zip(descriptions, products)]
            ranked.append(order(products, utilities, shown))
        return ranked


def _model_id(spec: str) -> str:
    """What names the weights in the seller's cache key (folder, file sizes and times, dtype)."""
    import json

    from ptalign.models import resolve_model
    from ptalign.reference import model_identity

    return json.dumps(model_identity(resolve_model(spec), "float32"), sort_keys=True)


def build_backend(name: str, model: Any = None, tokenizer: Any = None, model_spec: str | None = None,
                  **settings: Any) -> RankingBackend:
    """A ready backend by name (``settings``: backend options such as the llm ranker's ``utility``
    and ``seller``, ignored by backends without them); unknown names fail listing the known ones."""
    return RANKING_BACKENDS.get(name)(model=model, tokenizer=tokenizer, model_spec=model_spec, **settings)
