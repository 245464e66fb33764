"""The ``ptalign serve`` command (registered on the main ``ptalign`` app)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

console = Console(stderr=True)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


def serve(
    model: str = typer.Option("embedded", "--model", help="Model for /v1/generate and the llm ranker: 'embedded', a folder written by 'ptalign export', a 'ptalign rec train' folder, any HF folder, or 'none' (ranking only)."),
    catalog: Optional[list[str]] = typer.Option(None, "--catalog", help="Product catalog JSONL to search (repeatable; named by file stem). Default: the shipped demo catalog ('demo')."),
    ranker: str = typer.Option("minilm", "--ranker", help="Reranker after the BM25 first stage: bm25, minilm or llm."),
    utility: Optional[str] = typer.Option(None, "--utility", help="llm ranker's buyer utility: yes-no or query-likelihood (default: as a `rec train` --model was trained, else yes-no)."),
    seller: Optional[bool] = typer.Option(None, "--seller/--no-seller", help="llm ranker writes seller descriptions (default: as a `rec train` --model was trained, else on for yes-no, off for query-likelihood)."),
    judge: str = typer.Option("auto", "--judge", help="Harm judge for generation: keyword, minilm, or auto (minilm when it loads, else keyword)."),
    guard: str = typer.Option("block", "--guard", help="block: replace answers judged harmful by a refusal; flag: return them with the verdict."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback by default; 0.0.0.0 exposes the model to the network)."),
    port: int = typer.Option(8000, "--port", help="TCP port (0 = any free port)."),
    max_candidates: int = typer.Option(50, "--max-candidates", help="Most candidates per rank request (more: 413)."),
    max_text_chars: int = typer.Option(2000, "--max-text-chars", help="Longest query, message or product field (longer: 413)."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Default and largest generation length."),
    request_timeout: float = typer.Option(30.0, "--request-timeout", help="Seconds a request may wait for the model (then 504)."),
    batch_window_ms: float = typer.Option(5.0, "--batch-window-ms", help="How long concurrent requests are gathered into one model pass."),
    max_batch: int = typer.Option(16, "--max-batch", help="Most requests merged into one model pass (1 = no micro-batching)."),
) -> None:
    """Serve ranking (POST /v1/rank), guarded generation (POST /v1/generate) and a web page at /.

    The OpenAPI schema is at /openapi.json and interactive docs at /docs.
    """
    from ptalign.serve.config import ServeConfig

    try:
        import uvicorn

        from ptalign.serve.app import build_app
    except ImportError as err:
        _fail(f"ptalign serve needs the serve extra: pip install 'ptalign[serve]' ({err})")
    try:
        config = ServeConfig(model=model, catalogs=list(catalog or ["demo"]), ranker=ranker, utility=utility, seller=seller,
                             judge=judge, guard=guard,
                             host=host, port=port, max_candidates=max_candidates, max_text_chars=max_text_chars,
                             max_new_tokens=max_new_tokens, request_timeout_s=request_timeout,
                             batch_window_ms=batch_window_ms, max_batch=max_batch)
        console.print(f"loading model {model!r}, ranker {ranker!r} and catalogs {config.catalogs} ...")
        app = build_app(config)
    except (ValueError, FileNotFoundError, KeyError, ImportError, OSError) as err:
        _fail(str(err))
    judge_name = getattr(app.state.generator.judge, "name", "") if app.state.generator else ""
    if judge_name == "keyword" and guard == "block":
        console.print("[yellow]warning:[/] the keyword judge calls every answer that is not a refusal harmful, so "
                      "--guard block withholds them all; use --judge minilm or --guard flag")
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/] binding {host}: anyone who can reach this machine can use the model")
    console.print(f"[green]serving[/] http://{host}:{port}/  (API docs at /docs)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
