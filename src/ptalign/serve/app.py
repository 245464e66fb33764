"""The HTTP service: ranking, guarded generation, health and the web page.

``create_app`` wires ready parts (a ranking backend, a guarded generator, catalogs, limits) into a
FastAPI app; ``build_app`` loads those parts from a :class:`ServeConfig` (what ``ptalign serve``
does). Every model call goes through a :class:`MicroBatcher`, so it runs in a worker thread and
concurrent requests share a pass.

Errors: malformed input is a 422 whose ``detail`` says what to fix; oversize input (body,
candidates, text) a 413; a request that waits longer than the timeout a 504; generation on a
server started without a model a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ptalign.rec.data import Product, demo_catalog_path, load_catalog
from ptalign.serve.backends import RankedProduct, RankingBackend, build_backend
from ptalign.serve.batching import MicroBatcher
from ptalign.serve.config import ServeConfig
from ptalign.serve.guard import GenerateInput, GuardedGenerator, load_judge
from ptalign.serve.schemas import (
    ErrorOut, GenerateRequest, GenerateResponse, InvalidRequestOut, ProductOut, RankedOut, RankRequest, RankResponse,
    VerdictOut,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ptalign.rec.baselines import BM25Index

STATIC_DIR = Path(__file__).parent / "static"


@dataclass
class Catalog:
    name: str
    products: list[Product]
    index: "BM25Index"


def load_catalogs(specs: Sequence[str]) -> dict[str, Catalog]:
    """Catalog JSONL files by name (the file stem); ``"demo"`` is the shipped demo catalog."""
    from ptalign.rec.baselines import BM25Index

    catalogs: dict[str, Catalog] = {}
    for spec in specs:
        path = demo_catalog_path() if spec == "demo" else Path(spec).expanduser()
        name = "demo" if spec == "demo" else path.stem
        if name in catalogs:
            raise ValueError(f"two catalogs are named {name!r} (catalogs are named by file stem); rename one")
        if not path.is_file():
            raise FileNotFoundError(f"catalog {path} does not exist (a catalog is a JSONL file, or 'demo')")
        products = load_catalog(path)
        if not products:
            raise ValueError(f"catalog {path} holds no products")
        catalogs[name] = Catalog(name, products, BM25Index(products))
    return catalogs


def _missing_extra(err: ImportError) -> ImportError:
    return ImportError(f"the service needs fastapi and uvicorn: pip install 'ptalign[serve]' ({err})")


def build_app(config: ServeConfig) -> "FastAPI":
    """Load the model, judge, ranking backend and catalogs named by ``config`` and create the app.

    ``config.model == "none"`` serves ranking only (generation answers 503).
    """
    from ptalign.rec.selfalign import resolve_ranker

    generator, model, tokenizer = None, None, None
    spec, utility, seller = resolve_ranker(config.model, config.utility, config.seller)  # a rec train run: its settings
    if spec != "none":
        from ptalign.models import load_model

        model, tokenizer = load_model(spec)
        model.eval()
        generator = GuardedGenerator(model, tokenizer, load_judge(config.judge), policy=config.guard)
    backend = build_backend(config.ranker, model=model, tokenizer=tokenizer, model_spec=spec, utility=utility, seller=seller)
    return create_app(backend, generator, load_catalogs(config.catalogs), config)


def create_app(backend: RankingBackend, generator: GuardedGenerator | None, catalogs: dict[str, Catalog],
               config: ServeConfig | None = None) -> "FastAPI":
    try:
        from fastapi import FastAPI, HTTPException, Request
        from fastapi.exception_handlers import http_exception_handler
        from fastapi.exceptions import RequestValidationError
        from starlette.exceptions import HTTPException as StarletteHTTPException
        from fastapi.responses import FileResponse, JSONResponse
        from fastapi.staticfiles import StaticFiles
    except ImportError as err:
        raise _missing_extra(err) from err

    config = config or ServeConfig()
    default_catalog = next(iter(catalogs), None)
    window = config.batch_window_ms / 1000
    # A backend that runs the generation model shares the generator's thread: one pass at a time.
    shared = ThreadPoolExecutor(1, "ptalign-model") if getattr(backend, "uses_generation_model", False) else None
    rank_batcher = MicroBatcher(backend.rank_many, window, config.max_batch, "rank", executor=shared)
    generate_batcher = (MicroBatcher(generator.answer_many, window, config.max_batch, "generate", executor=shared)
                        if generator is not None else None)
    batchers = [b for b in (rank_batcher, generate_batcher) if b is not None]

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        for b in batchers:
            await b.start()
        yield
        for b in batchers:
            await b.stop()

    errors: dict[int | str, dict[str, Any]] = {
        422: {"model": InvalidRequestOut, "description": "Malformed request: detail says what to fix."},
        404: {"model": ErrorOut, "description": "No catalog of that name is loaded."},
        413: {"model": ErrorOut, "description": "Too many candidates, text too long, or body too large."},
        504: {"model": ErrorOut, "description": "The model did not answer within the request timeout."},
    }
    app = FastAPI(
        title="ptalign", version="0.1.0", lifespan=lifespan,
        description="Prospect-theoretic product ranking and guarded generation. The web page is at /.",
    )
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
    app.state.config, app.state.backend, app.state.generator = config, backend, generator
    app.state.batchers = {"rank": rank_batcher, "generate": generate_batcher}

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        # The raw errors echo the input, which may be huge or not even encodable: keep where and why only.
        errors = [{"loc": [_printable(str(x)) for x in e.get("loc", ())], "msg": _printable(str(e.get("msg", ""))),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": _printable(describe_validation_errors(exc.errors())),
                                                      "errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:  # FastAPI's "There was an error parsing the body" (e.g. not UTF-8)
            return JSONResponse(status_code=422, content={
                "detail": "the body could not be read as JSON: send UTF-8 JSON with Content-Type: application/json",
                "errors": []})
        return await http_exception_handler(request, exc)

    async def run(batcher: MicroBatcher, item: Any) -> tuple[Any, int]:
        try:
            return await asyncio.wait_for(batcher.submit(item), config.request_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"the model did not answer within {config.request_timeout_s:g} s; "
                                     "retry later or raise --request-timeout") from None

    @app.post("/v1/rank", response_model=RankResponse, responses=errors)
    async def rank(req: RankRequest) -> RankResponse:
        """Rank products for a shopper's query: the candidates sent, or BM25's first stage over a catalog, reranked."""
        start = time.perf_counter()
        check_rank_sizes(req, config)
        catalog, first_stage, note = None, {}, None
        if req.candidates is not None:
            products = [Product(**c.model_dump()) for c in req.candidates]
        else:
            name = default_catalog if req.catalog is None else req.catalog  # "" names no catalog: 404
            if name not in catalogs:
                raise HTTPException(404, f"unknown catalog {name!r}; loaded: {', '.join(catalogs) or '(none)'}")
            catalog = catalogs[name]
            hits = await asyncio.to_thread(catalog.index.search, req.query, config.first_stage_k)
            hits = [h for h in hits if h.score > 0]
            products = [h.product for h in hits]
            first_stage = {h.product.product_id: h.score for h in hits}
            if not hits:
                note = f"no product of catalog {name!r} contains any word of the query"
        ranked, batch_size = await run(rank_batcher, (req.query, products)) if products else ([], 0)
        return RankResponse(
            query=req.query, catalog=catalog.name if catalog else None, ranker=backend.name,
            results=[ranked_out(i + 1, r, first_stage) for i, r in enumerate(ranked[: req.top_k])],
            batch_size=batch_size, took_ms=round(1000 * (time.perf_counter() - start), 2), note=note,
        )

    @app.post("/v1/generate", response_model=GenerateResponse,
              responses={**errors, 503: {"model": ErrorOut, "description": "Started without a model."}})
    async def generate(req: GenerateRequest) -> GenerateResponse:
        """Answer one chat message; the harm judge's verdict comes with the answer (withheld if harmful under 'block')."""
        start = time.perf_counter()
        if generate_batcher is None:
            raise HTTPException(503, "this server was started without a model (--model none); generation is off")
        if len(req.message) > config.max_text_chars:
            raise HTTPException(413, f"message has {len(req.message)} characters; the limit is {config.max_text_chars}")
        budget = req.max_new_tokens or config.max_new_tokens
        if budget > config.max_new_tokens:
            raise HTTPException(413, f"max_new_tokens {budget} is above this server's limit of {config.max_new_tokens}")
        out, batch_size = await run(generate_batcher, GenerateInput(req.message, budget))
        return GenerateResponse(
            answer=out.answer, withheld=out.withheld, model=config.model, batch_size=batch_size,
            verdict=VerdictOut(**asdict(out.verdict), judge=getattr(generator.judge, "name", "judge")),
            took_ms=round(1000 * (time.perf_counter() - start), 2),
        )

    @app.get("/health")
    async def health() -> dict:
        """Liveness, what is loaded, the limits, and micro-batching counters."""
        return {
            "status": "ok", "model": config.model if generator else None, "ranker": backend.name,
            "ranker_settings": getattr(backend, "settings", {}),
            "judge": getattr(generator.judge, "name", None) if generator else None, "guard": config.guard,
            "catalogs": {name: len(c.products) for name, c in catalogs.items()}, "default_catalog": default_catalog,
            "limits": {k: getattr(config, k) for k in ("max_candidates", "max_text_chars", "max_body_bytes",
                                                       "max_new_tokens", "request_timeout_s", "first_stage_k")},
            "batching": {name: asdict(b.stats) for name, b in app.state.batchers.items() if b is not None},
        }

    def openapi() -> dict:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = schema_with_limits(schema, config, list(catalogs))
        return app.openapi_schema

    app.openapi = openapi

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


NOT_BLANK = r"\S"  # JSON Schema pattern: at least one non-space character somewhere


def schema_with_limits(schema: dict, config: ServeConfig, catalog_names: list[str]) -> dict:
    """The OpenAPI schema with this server's limits written in (maxLength, maxItems, maximum, the
    loaded catalogs' names), so a client or a fuzzer sees what the server will accept."""
    models = schema["components"]["schemas"]

    def text(model: str, field: str, required: bool = True) -> None:
        prop = models[model]["properties"][field]
        target = next((alt for alt in prop.get("anyOf", []) if alt.get("type") == "string"), prop)
        target["maxLength"] = config.max_text_chars
        if required:
            target["pattern"] = NOT_BLANK

    for field in ("product_id", "title"):
        text("ProductIn", field)
    for field in ("brand", "color", "bullets", "description"):
        text("ProductIn", field, required=False)
    text("RankRequest", "query")
    text("GenerateRequest", "message")
    candidates = next(alt for alt in models["RankRequest"]["properties"]["candidates"]["anyOf"] if alt.get("type") == "array")
    candidates.update(minItems=1, maxItems=config.max_candidates)
    catalog = next(alt for alt in models["RankRequest"]["properties"]["catalog"]["anyOf"] if alt.get("type") == "string")
    catalog["enum"] = catalog_names
    budget = next(alt for alt in models["GenerateRequest"]["properties"]["max_new_tokens"]["anyOf"]
                  if alt.get("type") == "integer")
    budget["maximum"] = config.max_new_tokens
    return schema


def check_rank_sizes(req: RankRequest, config: ServeConfig) -> None:
    """413 for a rank request over the limits: too long a query or field, too many candidates."""
    from fastapi import HTTPException

    if len(req.query) > config.max_text_chars:
        raise HTTPException(413, f"query has {len(req.query)} characters; the limit is {config.max_text_chars}")
    if req.candidates is None:
        return
    if len(req.candidates) > config.max_candidates:
        raise HTTPException(413, f"{len(req.candidates)} candidates sent; the limit is {config.max_candidates} "
                                 "per request (split the list, or load them as a catalog)")
    for i, c in enumerate(req.candidates):
        for field, value in c.model_dump().items():
            if len(value) > config.max_text_chars:
                raise HTTPException(413, f"candidates[{i}].{field} has {len(value)} characters; "
                                         f"the limit is {config.max_text_chars}")


def ranked_out(rank: int, r: RankedProduct, first_stage: dict[str, float]) -> RankedOut:
    return RankedOut(rank=rank, product=ProductOut(**asdict(r.product)), utility=r.utility,
                     description=r.description, first_stage_score=first_stage.get(r.product.product_id))


def describe_validation_errors(errors: Sequence[dict]) -> str:
    """FastAPI's validation errors as one line a person can act on, e.g.
    ``body.query: String should have at least 1 character; body.top_k: ...``."""
    parts = []
    for e in errors:
        where = ".".join(str(x) for x in e.get("loc", ()))
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if e.get("loc") == ("body",) and e.get("type") in ("model_attributes_type", "dict_type"):
            msg = "the body must be a JSON object sent with Content-Type: application/json (schema at /docs)"
        elif e.get("type") == "string_unicode":
            msg = "not valid Unicode text (a lone surrogate escape such as \\ud800?)"
        elif e.get("type") == "json_invalid":
            msg = "the body is not valid JSON (" + str(e.get("ctx", {}).get("error", "parse error")) + ")"
        elif e.get("type") == "missing":
            msg = "required field is missing"
        elif e.get("type") == "extra_forbidden":
            msg = "unknown field; remove it (see the schema at /docs)"
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts) or "invalid request"


def _printable(text: str) -> str:
    """``text`` with anything UTF-8 cannot encode (lone surrogates) replaced, so a response can carry it."""
    return text.encode("utf-8", "replace").decode("utf-8")


class BodySizeLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 before anything parses it.

    The body is read here (up to the limit) and replayed to the app, so an oversize body costs no
    more than ``max_bytes`` of memory whether or not it declared a Content-Length.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._too_large(send)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send):
        payload = json.dumps({"detail": f"request body is larger than this server's limit of {self.max_bytes} bytes"})
        await send({"type": "http.response.start", "status": 413,
                     "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload.encode()})
