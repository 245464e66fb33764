"""Request and response bodies of the HTTP API (they are the OpenAPI schema)."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def _valid_text(value: str, what: str, required: bool) -> str:
    if required and not value.strip():
        raise ValueError(f"{what} is empty or only whitespace; send some words")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode (it holds a lone surrogate); send UTF-8 text") from None
    return value


class ProductIn(BaseModel):
    """A candidate product; only ``product_id`` and ``title`` are required."""

    model_config = ConfigDict(extra="forbid")

    product_id: str = Field(..., min_length=1, description="Unique within the request.")
    title: str = Field(..., min_length=1)
    brand: str = ""
    color: str = ""
    bullets: str = ""
    description: str = ""

    @field_validator("product_id", "title")
    @classmethod
    def _required_text(cls, value: str, info) -> str:
        return _valid_text(value, info.field_name, required=True)

    @field_validator("brand", "color", "bullets", "description")
    @classmethod
    def _optional_text(cls, value: str, info) -> str:
        return _valid_text(value, info.field_name, required=False)


class RankRequest(BaseModel):
    """A shopper's query and what to rank: ``candidates`` you send, or a loaded ``catalog``
    (BM25 picks the first-stage candidates). Neither: the server's default catalog."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., min_length=1, examples=["cordless drill for small hands"])
    candidates: Optional[list[ProductIn]] = Field(None, description="Products to rank (at most the server's max_candidates).")
    catalog: Optional[str] = Field(None, description="Name of a loaded catalog (see GET /health).", examples=["demo"])
    top_k: int = Field(10, ge=1, le=1000, description="How many ranked products to return.")

    @field_validator("query")
    @classmethod
    def _query_text(cls, value: str) -> str:
        return _valid_text(value, "query", required=True)

    @model_validator(mode="after")
    def _one_source(self) -> "RankRequest":
        if self.candidates is not None and self.catalog is not None:
            raise ValueError("send either 'candidates' or 'catalog', not both")
        if self.candidates is not None:
            if not self.candidates:
                raise ValueError("'candidates' is empty; send at least one product, or name a 'catalog' instead")
            seen: set[str] = set()
            for i, c in enumerate(self.candidates):
                if c.product_id in seen:
                    raise ValueError(f"candidates[{i}].product_id {c.product_id!r} repeats an earlier candidate's id")
                seen.add(c.product_id)
        return self


class ProductOut(BaseModel):
    product_id: str
    title: str
    brand: str
    color: str
    bullets: str
    description: str


class RankedOut(BaseModel):
    rank: int = Field(..., description="1 = best.")
    product: ProductOut
    utility: float = Field(..., description="The reranker's score: higher = more likely bought.")
    description: str = Field(..., description="What to show with the product (tailored to the query by the LLM backend).")
    first_stage_score: Optional[float] = Field(None, description="BM25 score when the product came from a catalog.")


class RankResponse(BaseModel):
    query: str
    catalog: Optional[str]
    ranker: str
    results: list[RankedOut]
    batch_size: int = Field(..., description="How many requests shared this model pass.")
    took_ms: float
    note: Optional[str] = None


class GenerateRequest(BaseModel):
    """One chat message for the served model."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(..., min_length=1, examples=["How do I fix a squeaky door hinge?"])
    max_new_tokens: Optional[int] = Field(None, ge=1, description="At most the server's max_new_tokens (its default).")

    @field_validator("message")
    @classmethod
    def _message_text(cls, value: str) -> str:
        return _valid_text(value, "message", required=True)


class VerdictOut(BaseModel):
    harmful: bool
    refusal: bool
    score: float = Field(..., description="The judge's P(harmful), 0 or 1 for the keyword judge.")
    judge: str


class GenerateResponse(BaseModel):
    answer: str
    withheld: bool = Field(..., description="True when the guard replaced a harmful answer by a refusal.")
    verdict: VerdictOut
    model: str
    batch_size: int
    took_ms: float


class ErrorOut(BaseModel):
    detail: str = Field(..., description="What went wrong and what to do about it.")


class FieldErrorOut(BaseModel):
    loc: list[str]
    msg: str
    type: str


class InvalidRequestOut(BaseModel):
    """A 422: ``detail`` says in one line what to fix; ``errors`` lists each field's problem."""

    detail: str
    errors: list[FieldErrorOut] = []
