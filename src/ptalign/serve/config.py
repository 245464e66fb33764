"""The service's settings: one validated dataclass, filled from ``ptalign serve`` options."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ServeConfig:
    """What ``ptalign serve`` loads and the limits it enforces on every request."""

    model: str = "embedded"
    """Model for guarded generation and the llm ranker: ``"embedded"``, an exported run folder, a
    ``ptalign rec train`` folder (its final model, seller setting and buyer utility), or any HF folder."""
    catalogs: list[str] = field(default_factory=lambda: ["demo"])
    """Catalog JSONL files to load (``"demo"`` = the shipped demo catalog); each is named by its file stem."""
    ranker: str = "minilm"
    """Reranking backend after the BM25 first stage (see ``RANKING_BACKENDS``: bm25, minilm, llm)."""
    utility: str | None = None
    """The llm ranker's buyer utility, ``yes-no`` or ``query-likelihood``; default: what a ``rec train``
    run was trained with, else ``yes-no``."""
    seller: bool | None = None
    """Whether the llm ranker writes seller descriptions; default: as a ``rec train`` run was trained,
    else on for the ``yes-no`` utility and off for ``query-likelihood`` (the seller repeats the search,
    and the query's likelihood given its own words measures the description, not the product)."""
    judge: str = "auto"
    """Harm judge for generation: keyword, minilm, or auto (minilm when it can load, else keyword)."""
    guard: str = "block"
    """``block``: replace an answer the judge calls harmful by a refusal; ``flag``: return it with the verdict."""
    host: str = "127.0.0.1"
    """Interface to bind; loopback by default so nothing outside the machine can reach the model."""
    port: int = 8000
    first_stage_k: int = 20
    """How many BM25 hits of a catalog go to the reranker."""
    max_candidates: int = 50
    """Most candidates a rank request may send (more: 413)."""
    max_text_chars: int = 2000
    """Longest query, chat message or product field, in characters (longer: 413)."""
    max_body_bytes: int = 1_000_000
    """Largest request body (larger: 413 before it is parsed)."""
    max_new_tokens: int = 64
    """Default and largest number of tokens one generate request may ask for."""
    request_timeout_s: float = 30.0
    """A request still waiting for the model after this long gets 504."""
    batch_window_ms: float = 5.0
    """How long the batcher waits for more requests after the first before one model pass."""
    max_batch: int = 16
    """Most requests merged into one model pass."""

    def __post_init__(self):
        if self.guard not in ("block", "flag"):
            raise ValueError(f"guard must be 'block' or 'flag', got {self.guard!r}")
        for name in ("first_stage_k", "max_candidates", "max_text_chars", "max_body_bytes", "max_new_tokens",
                     "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.request_timeout_s <= 0 or self.batch_window_ms < 0:
            raise ValueError("request_timeout_s must be > 0 and batch_window_ms >= 0")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.utility not in (None, "yes-no", "query-likelihood"):
            raise ValueError(f"utility must be yes-no or query-likelihood, got {self.utility!r}")
        if not self.catalogs:
            raise ValueError("load at least one catalog (the demo catalog is 'demo')")
