"""``ptalign rec``: train, evaluate and use the prospect-theoretic seller/buyer reranker."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(help="Product reranking with a self-aligned seller/buyer language model.", no_args_is_help=True)
console = Console(stderr=True)
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, KeyError, ImportError)


def _fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(code=2)


def _loss_params(items: list[str]) -> dict:
    import yaml

    params = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--loss-param {item!r} must look like name=value (for example beta=0.2)")
        params[key] = yaml.safe_load(raw)
    return params


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="Training relevance JSONL, e.g. ../shared/data/rec/homedepot/train.jsonl."),
    output_dir: Path = typer.Option(Path("runs/rec"), "--output-dir", "-o", help="Run folder (round-N/ and summary.json)."),
    method: str = typer.Option("selfalign", help="selfalign (prospect, seller+buyer), selfalign-kto, prospect-noseller, kto, sft, dpo; "
                                "selfalign-ref, prospect-ref, reference-kto (buyer judged against each query's reference point)."),
    model: str = typer.Option("embedded", help="Starting model: embedded, a local folder or a hub id."),
    rounds: int = typer.Option(1, help="Self-alignment rounds."),
    train_queries: int = typer.Option(64, help="Use the first N training queries (0: all)."),
    description_tokens: int = typer.Option(40, help="Length cap of the seller's descriptions, in tokens."),
    learning_rate: Optional[float] = typer.Option(None, help="Learning rate (LoRA default 2e-4, 1e-3 for the *-ref methods' buyer; full: 5e-5)."),
    lora: bool = typer.Option(True, "--lora/--full", help="Train LoRA adapters (default) or every weight of the model."),
    epochs: int = typer.Option(1, help="Passes over each round's feedback."),
    batch_size: int = typer.Option(8, help="Training batch size."),
    queries_per_step: int = typer.Option(4, help="*-ref methods: queries (with all their candidates) per buyer training step."),
    loss_param: Optional[list[str]] = typer.Option(None, "--loss-param", help="Loss hyper-parameter override, e.g. --loss-param loss_aversion=3."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="ptalign cache (models, reference log-probs, descriptions)."),
    utility: str = typer.Option("yes-no", help="Buyer utility: yes-no (log-odds of 'would I buy this?') or query-likelihood "
                                "(log-prob of the query given the product; *-ref methods only)."),
) -> None:
    """Self-align the reranker (or train a baseline method).

    Each round: seller descriptions -> buyer decisions -> feedback from the labels -> a
    prospect-theoretic update of both roles, merged into the next round's model.
    """
    from ptalign.rec.selfalign import RecTrainArgs, self_align

    try:
        args = RecTrainArgs(train_data=str(data), output_dir=str(output_dir), method=method, model=model, rounds=rounds,
                            train_queries=train_queries or None, description_tokens=description_tokens,
                            loss_params=_loss_params(loss_param or []), learning_rate=learning_rate, lora=lora, epochs=epochs,
                            batch_size=batch_size, queries_per_step=queries_per_step, cache_dir=str(cache_dir) if cache_dir else None,
                            utility=utility)
        out = self_align(args, console)
    except USER_ERRORS as err:
        _fail(err)
    console.print(f"[green]done:[/] {out} (final model in {out}/summary.json)")


@app.command("eval")
def evaluate(
    data: Path = typer.Option(..., "--data", help="Relevance JSONL to evaluate on, e.g. ../shared/data/rec/homedepot/dev.jsonl."),
    model: Optional[list[str]] = typer.Option(None, "--model", help="[NAME=]SPEC: a `rec train` folder, a model folder or embedded (repeatable)."),
    seller: Optional[bool] = typer.Option(None, "--seller/--no-seller", help="Buyer reads seller descriptions (default: as the run was trained; else no)."),
    baselines: str = typer.Option("random,bm25,minilm", help="Comma-separated non-LLM rankers to include ('' for none)."),
    queries: int = typer.Option(0, help="Evaluate the first N queries (0: all)."),
    description_tokens: int = typer.Option(40, help="Length cap of seller descriptions."),
    out: Path = typer.Option(Path("runs/rec-eval"), "--out", "-o", help="Folder for metrics.json, per_query.jsonl, report.md, report.png."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="ptalign cache location."),
    utility: Optional[str] = typer.Option(None, help="Buyer utility, yes-no or query-likelihood (default: as the run was trained; else yes-no)."),
) -> None:
    """Evaluate rerankers and baselines: NDCG@5/10, MRR, pairwise accuracy, Kendall τ.

    Writes per-query results, metrics.json, a Markdown report and a plot.
    """
    from ptalign.rec.baselines import RANKERS
    from ptalign.rec.data import load_relevance_jsonl
    from ptalign.rec.report import markdown_table, write_report
    from ptalign.rec.selfalign import load_roles, ranking_values, resolve_ranker_model, score_queries

    try:
        ranking = load_relevance_jsonl(data)[: queries or None]
        scores = {name: RANKERS.get(name)().score_many(ranking) for name in filter(None, baselines.split(","))}
        for item in model or []:
            name, _, spec = item.rpartition("=")
            spec_model, trained_seller, trained_utility = resolve_ranker_model(spec)
            use_seller = seller if seller is not None else bool(trained_seller)
            name = name or f"{Path(spec).name or spec}{' +seller' if use_seller else ''}"
            buyer, seller_role = load_roles(spec_model, use_seller, description_tokens,
                                            cache_dir=str(cache_dir) if cache_dir else None, progress=console.is_terminal,
                                            utility=utility or trained_utility or "yes-no")
            scores[name] = ranking_values(score_queries(buyer, seller_role, ranking)[0])
        if not scores:
            raise ValueError("nothing to evaluate: pass --model and/or --baselines")
        result = write_report(out, ranking, scores, title=f"Ranking evaluation on {data.name}")
    except USER_ERRORS as err:
        _fail(err)
    print(markdown_table(result["methods"], result["stderr"]))
    console.print(f"[green]wrote[/] {out}/metrics.json, per_query.jsonl, report.md")


@app.command()
def rank(
    query: str = typer.Option(..., "--query", "-q", help="What the shopper searches for."),
    catalog: Optional[Path] = typer.Option(None, "--catalog", help="Product catalog JSONL (default: the shipped demo catalog)."),
    model: str = typer.Option("embedded", help="A `rec train` folder, a model folder or embedded."),
    first_stage: int = typer.Option(20, help="BM25 candidates passed to the reranker."),
    top_k: int = typer.Option(10, help="Products to print."),
    seller: Optional[bool] = typer.Option(None, "--seller/--no-seller", help="Write a tailored description of each candidate "
                                          "(default: as the run was trained; else on for yes-no, off for query-likelihood)."),
    description_tokens: int = typer.Option(40, help="Length cap of seller descriptions."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="ptalign cache location."),
    utility: Optional[str] = typer.Option(None, help="Buyer utility, yes-no or query-likelihood (default: as the run was trained; else yes-no)."),
) -> None:
    """Rank a catalog for one query: BM25 first stage, then the seller/buyer reranker.

    Prints the products with their descriptions, utilities and prospect values.
    """
    from rich.table import Table

    from ptalign.rec.baselines import BM25Index
    from ptalign.rec.buyer import prospect_values
    from ptalign.rec.data import demo_catalog_path, load_catalog
    from ptalign.rec.selfalign import load_roles, resolve_ranker

    try:
        products = load_catalog(catalog or demo_catalog_path())
        hits = BM25Index(products).search(query, k=first_stage)
        spec, utility, seller = resolve_ranker(model, utility, seller)
        buyer, seller_role = load_roles(spec, seller, description_tokens, cache_dir=str(cache_dir) if cache_dir else None,
                                        utility=utility)
        candidates = [h.product for h in hits]
        descriptions = seller_role.describe([(query, p) for p in candidates]) if seller_role else [None] * len(candidates)
        utilities = buyer.utilities(query, candidates, descriptions)
        values, reference_point = prospect_values(utilities)
    except USER_ERRORS as err:
        _fail(err)
    order = sorted(range(len(candidates)), key=lambda i: -values[i])[:top_k]
    table = Table(title=f"{query!r}: reference point z = {reference_point:.3f}")
    for column in ("#", "product", "utility", "value", "BM25", "seller's description"):
        table.add_column(column, overflow="fold")
    for rank_, i in enumerate(order, start=1):
        table.add_row(str(rank_), candidates[i].title, f"{utilities[i]:+.3f}", f"{values[i]:+.3f}",
                      f"{hits[i].score:.2f}", descriptions[i] or "")
    Console().print(table)
