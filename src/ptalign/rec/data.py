"""Product-ranking data: products, graded candidates and the loaders for Home Depot, ESCI and catalogs.

A :class:`RankingQuery` is one search query with the candidates a ranker must order. Each
:class:`Candidate` carries the raw human ``label`` (what pairwise metrics compare) and a ``gain``
(what NDCG sums), so a data set states its own gain mapping once, at load time.

Home Depot (Kaggle 2016) ratings are means of >= 3 raters on 1..3; the default gain is linear,

    gain(r) = (r - 1) / 2        (1 -> 0, 2 -> 0.5, 3 -> 1),

so an irrelevant product contributes nothing to DCG. Amazon ESCI uses the official gains
E = 1, S = 0.1, C = 0.01, I = 0 (Reddy et al. 2022, "Shopping Queries Dataset").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ptalign.registry import Registry

TEXT_FIELDS = ("brand", "color", "bullets", "description")


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file, the line (or row) and the field."""


@dataclass
class Product:
    """One catalog item; empty strings mean "unknown"."""

    product_id: str
    title: str
    brand: str = ""
    color: str = ""
    bullets: str = ""
    description: str = ""

    def text(self) -> str:
        """Title, then each non-empty field on its own line (brand and color labelled)."""
        parts = [self.title]
        if self.brand:
            parts.append(f"Brand: {self.brand}")
        if self.color:
            parts.append(f"Color: {self.color}")
        parts.extend(p for p in (self.bullets, self.description) if p)
        return "\n".join(parts)


@dataclass
class Candidate:
    """A product judged for one query.

    ``label`` is the raw judgement (Home Depot: the mean rating in [1, 3]; ESCI: 3/2/1/0 for
    E/S/C/I); ``gain`` is what NDCG sums for it.
    """

    product: Product
    label: float
    gain: float


@dataclass
class RankingQuery:
    """A search query and its judged candidates (in file order, which carries no signal)."""

    query_id: str
    query: str
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def products(self) -> list[Product]:
        return [c.product for c in self.candidates]


# ---------------------------------------------------------------------------------------------
# gain mappings for Home Depot ratings: fn(rating, gain_field_from_file) -> gain

GAINS: Registry[Callable[[float, Any], float]] = Registry("gain mapping")


@GAINS.register("linear")
def linear_gain(rating: float, file_gain: Any = None) -> float:
    """gain = (rating - 1) / 2: 1 (irrelevant) -> 0, 3 (perfect) -> 1. The default."""
    return (rating - 1.0) / 2.0


@GAINS.register("file")
def file_gain(rating: float, file_gain: Any = None) -> float:
    """The ``gain`` field stored in the file (Home Depot ships rating / 3)."""
    if isinstance(file_gain, bool) or not isinstance(file_gain, (int, float)):
        raise ValueError(f"expected a number in 'gain', got {file_gain!r}")
    return float(file_gain)


@GAINS.register("rating")
def rating_gain(rating: float, file_gain: Any = None) -> float:
    """gain = rating itself (1..3); irrelevant items still earn gain 1."""
    return rating


# ---------------------------------------------------------------------------------------------
# JSONL helpers


def _read_jsonl(path: Path):
    """Yield (line_number, object) for each non-blank line; invalid JSON names file:line."""
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DataFormatError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def _field(obj: dict, key: str, where: str, *, kind: type = str, default: Any = ...) -> Any:
    """obj[key] checked for type; ``where`` is the "file:line: prefix" used in the error."""
    if key not in obj:
        if default is not ...:
            return default
        raise DataFormatError(f"{where}missing key {key!r}")
    value = obj[key]
    if value is None and default is not ...:
        return default
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool) and key.endswith("_id"):
        value = str(value)  # numeric ids are common; keep them as strings
    if not isinstance(value, kind):
        raise DataFormatError(f"{where}{key!r} should be {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _product(obj: dict, where: str) -> Product:
    return Product(
        product_id=_field(obj, "product_id", where),
        title=_field(obj, "title", where),
        **{name: _field(obj, name, where, default="") or "" for name in TEXT_FIELDS},
    )


def _rating(value: Any, where: str) -> float:
    try:
        rating = float(value)
    except (TypeError, ValueError):
        rating = math.nan
    if isinstance(value, bool) or not math.isfinite(rating):
        raise DataFormatError(f"{where}'label' should be a rating number like \"2.33\", got {value!r}")
    return rating


def load_relevance_jsonl(path: str | Path, gain: str = "linear") -> list[RankingQuery]:
    """Load graded query-product judgements in the Home Depot JSONL format.

    One query per line: ``{"query_id", "query", "candidates": [{"product_id", "title", "brand",
    "color", "bullets", "description", "label", "gain"}]}`` where ``label`` is the mean rating as
    a string ("2.33"). ``gain`` names the mapping from rating to NDCG gain (see :data:`GAINS`):
    ``"linear"`` = (rating - 1) / 2 (default), ``"file"`` = the file's own ``gain`` field,
    ``"rating"`` = the rating itself. Errors name ``file:line`` and the field.
    """
    path = Path(path)
    to_gain = GAINS.get(gain)
    queries = []
    for lineno, obj in _read_jsonl(path):
        where = f"{path}:{lineno}: "
        candidates = []
        for i, c in enumerate(_field(obj, "candidates", where, kind=list)):
            cwhere = f"{where}candidates[{i}]: "
            if not isinstance(c, dict):
                raise DataFormatError(f"{cwhere}expected a JSON object, got {type(c).__name__}")
            rating = _rating(_field(c, "label", cwhere, kind=object), cwhere)
            try:
                g = to_gain(rating, c.get("gain"))
            except ValueError as e:
                raise DataFormatError(f"{cwhere}{e}") from None
            candidates.append(Candidate(_product(c, cwhere), label=rating, gain=g))
        queries.append(RankingQuery(_field(obj, "query_id", where), _field(obj, "query", where), candidates))
    return queries


def load_catalog(path: str | Path) -> list[Product]:
    """Load a product catalog: one ``{"product_id", "title", [brand, color, bullets, description]}``
    per line. Duplicate ids, missing keys and invalid JSON fail naming ``file:line``."""
    path = Path(path)
    products: list[Product] = []
    first_seen: dict[str, int] = {}
    for lineno, obj in _read_jsonl(path):
        product = _product(obj, f"{path}:{lineno}: ")
        if product.product_id in first_seen:
            raise DataFormatError(
                f"{path}:{lineno}: duplicate product_id {product.product_id!r} "
                f"(first on line {first_seen[product.product_id]})"
            )
        first_seen[product.product_id] = lineno
        products.append(product)
    return products


def demo_catalog_path() -> Path:
    """The shipped ~40-product home-improvement demo catalog (hand-written)."""
    return Path(__file__).resolve().parents[1] / "resources" / "demo_catalog.jsonl"


# ---------------------------------------------------------------------------------------------
# Amazon Shopping Queries (ESCI)

ESCI_GAINS = {"E": 1.0, "S": 0.1, "C": 0.01, "I": 0.0}
"""Official ESCI gains: Exact, Substitute, Complement, Irrelevant."""
ESCI_LABELS = {"E": 3.0, "S": 2.0, "C": 1.0, "I": 0.0}
"""Ordinal labels for pairwise metrics (E > S > C > I)."""

ESCI_EXAMPLE_COLUMNS = ("query_id", "query", "product_id", "product_locale", "esci_label", "small_version", "split")
ESCI_PRODUCT_COLUMNS = (
    "product_id", "product_locale", "product_title", "product_description",
    "product_bullet_point", "product_brand", "product_color",
)  # fmt: skip


def _check_columns(frame, needed: tuple[str, ...], path: Path) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataFormatError(f"{path}: missing columns {missing}; found {list(frame.columns)}")


def _text(value: Any) -> str:
    """Parquet nulls (None / NaN) -> ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def load_esci(
    examples_parquet: str | Path,
    products_parquet: str | Path,
    split: str = "test",
    locale: str = "us",
    small_version: bool = True,
) -> list[RankingQuery]:
    """Load the Amazon Shopping Queries (ESCI) ranking task.

    Keeps the examples of ``split`` ("train" / "test") and ``locale`` ("us" / "es" / "jp"),
    restricted to the reduced Task-1 set when ``small_version`` (the official ranking task).
    Gains are the official E=1, S=0.1, C=0.01, I=0; labels are E/S/C/I -> 3/2/1/0. Queries and
    candidates keep file order. Needs pandas + pyarrow (``pip install 'ptalign[rec]'``).
    """
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - pandas comes with datasets
        raise ImportError("load_esci needs pandas and pyarrow: pip install 'ptalign[rec]'") from e
    examples_parquet, products_parquet = Path(examples_parquet), Path(products_parquet)
    examples = pd.read_parquet(examples_parquet)
    products = pd.read_parquet(products_parquet)
    _check_columns(examples, ESCI_EXAMPLE_COLUMNS, examples_parquet)
    _check_columns(products, ESCI_PRODUCT_COLUMNS, products_parquet)

    keep = (examples["split"] == split) & (examples["product_locale"] == locale)
    if small_version:
        keep &= examples["small_version"].astype(int) == 1
    examples = examples[keep]
    catalog = {
        (row.product_id, row.product_locale): row
        for row in products[products["product_locale"] == locale].itertuples(index=False)
    }

    queries: dict[str, RankingQuery] = {}
    for row in examples.itertuples():
        where = f"{examples_parquet}: row {row.Index} (query_id {row.query_id}, product_id {row.product_id}): "
        if row.esci_label not in ESCI_GAINS:
            raise DataFormatError(f"{where}esci_label should be one of E/S/C/I, got {row.esci_label!r}")
        item = catalog.get((row.product_id, row.product_locale))
        if item is None:
            raise DataFormatError(f"{where}product not found in {products_parquet} for locale {locale!r}")
        product = Product(
            product_id=str(row.product_id),
            title=_text(item.product_title),
            brand=_text(item.product_brand),
            color=_text(item.product_color),
            bullets=_text(item.product_bullet_point),
            description=_text(item.product_description),
        )
        qid = str(row.query_id)
        query = queries.setdefault(qid, RankingQuery(qid, str(row.query), []))
        query.candidates.append(Candidate(product, ESCI_LABELS[row.esci_label], ESCI_GAINS[row.esci_label]))
    return list(queries.values())
