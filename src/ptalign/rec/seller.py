"""The seller: the language model writes a short description of a product for one shopper.

For each (query, product) the seller prompt asks what need of *this* shopper the product meets
and what might disappoint them. Descriptions are generated in batches (greedy by default) and
cached on disk, one small JSON file per description, named by the sha256 of everything the
text depends on (model identity, prompt, generation settings), so a repeated run generates
nothing. Files are written to a temporary name and renamed into place, so a killed run never
leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ptalign.rec.data import Product

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

SELLER_SYSTEM = (
    "You are an honest shop assistant. In one or two short sentences, tell the shopper whether this "
    "product fits what they searched for: the need it meets, and what might disappoint them."
)
PRODUCT_SELLER_SYSTEM = (
    "You are an honest shop assistant. In one or two short sentences, tell a shopper what this product "
    "is for: the need it meets, and what might disappoint them."
)
MAX_PRODUCT_CHARS = 400


def seller_messages(query: str, product: Product, sees_query: bool = True) -> list[dict]:
    """The seller's chat prompt for one (query, product); with ``sees_query=False`` the seller
    describes the product alone (one description per product, whatever the query)."""
    text = f"Product: {product.text()[:MAX_PRODUCT_CHARS]}"
    if not sees_query:
        return [{"role": "system", "content": PRODUCT_SELLER_SYSTEM}, {"role": "user", "content": text}]
    content = f"The shopper searched for: {query}\n{text}"
    return [{"role": "system", "content": SELLER_SYSTEM}, {"role": "user", "content": content}]


class DescriptionCache:
    """Descriptions on disk under ``root/<key[:2]>/<key>.json`` (atomic writes)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        path = self._path(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))["description"]
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, KeyError):  # a foreign or damaged file: regenerate it
            return None

    def put(self, key: str, description: str, meta: dict | None = None) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"description": description, **(meta or {})}, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def default_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """``<ptalign cache root>/seller``."""
    from ptalign.models import cache_root

    return cache_root(cache_dir) / "seller"


@dataclass
class Seller:
    """Writes (and caches) tailored descriptions with a causal LM.

    ``model_id`` names the weights in the cache key: two different models must never share it
    (:func:`ptalign.reference.model_identity` of the model folder is a good choice).
    """

    model: "PreTrainedModel"
    tokenizer: "PreTrainedTokenizerBase"
    model_id: str
    cache: DescriptionCache | None = None
    max_new_tokens: int = 40
    """Length cap of a description in tokens."""
    batch_size: int = 16
    progress: bool = False
    sees_query: bool = True
    """False: describe each product without the shopper's query (cached once per product)."""
    stats: dict = field(default_factory=lambda: {"generated": 0, "cached": 0})

    def messages(self, query: str, product: Product) -> list[dict]:
        return seller_messages(query, product, self.sees_query)

    def key(self, query: str, product: Product) -> str:
        payload = {"model": self.model_id, "messages": self.messages(query, product),
                   "max_new_tokens": self.max_new_tokens, "decoding": "greedy"}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def describe(self, pairs: Sequence[tuple[str, Product]]) -> list[str]:
        """One description per (query, product), in order; cached ones are not generated again."""
        from ptalign.models import generate

        keys = [self.key(q, p) for q, p in pairs]
        out = [self.cache.get(k) if self.cache else None for k in keys]
        todo = [i for i, d in enumerate(out) if d is None]
        todo = list({keys[i]: i for i in todo}.values())  # a repeated pair is generated once
        if todo:
            prompts = [self.messages(*pairs[i]) for i in todo]
            texts = generate(self.model, self.tokenizer, prompts, max_new_tokens=self.max_new_tokens,
                             batch_size=self.batch_size, progress=self.progress)
            fresh = {keys[i]: clean_description(t) for i, t in zip(todo, texts)}
            for k, text in fresh.items():
                if self.cache:
                    self.cache.put(k, text, {"model": self.model_id})
            out = [d if d is not None else fresh[k] for d, k in zip(out, keys)]
        self.stats["generated"] += len(todo)
        self.stats["cached"] += len(pairs) - len(todo)
        return out


def clean_description(text: str) -> str:
    """One line, no surrounding whitespace (a cut-off last sentence is kept: it still informs)."""
    return " ".join(text.split())
