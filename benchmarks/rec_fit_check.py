"""Can the buyer fit its own training queries? A capacity check for the prospect-ref training.

    python benchmarks/rec_fit_check.py [--train-queries 24] [--epochs 8] [--dev-queries 40]

Trains the buyer against each query's reference point (the ``prospect-ref`` method of
``rec_selfalign.py``: prospect loss, LoRA) for several epochs on a few Home Depot training
queries, and ranks those same queries, and the first dev queries, before and after. If the
training queries' pairwise accuracy rises well above the zero-shot buyer's while the dev queries'
does not, the loss and the trainer work and what fails is generalisation, not fitting.

Writes ``benchmarks/results/rec_fit_check.json`` (metrics before/after on both sets, loss and the
share of candidates on the right side of their reference point per epoch) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def rank_metrics(model, tokenizer, queries, batch_size: int) -> dict:
    """Ranking metrics of the buyer (no descriptions) on ``queries``."""
    import torch

    from ptalign.rec.buyer import Buyer
    from ptalign.rec.metrics import evaluate

    model.eval()
    with torch.inference_mode():
        utilities = Buyer(model, tokenizer, batch_size=batch_size).utilities_many([(q.query, q.products, None) for q in queries])
    metrics, _ = evaluate(queries, {q.query_id: u for q, u in zip(queries, utilities)})
    return {k: round(v, 4) for k, v in metrics.items()}


def per_epoch(rows: list[dict], epochs: int) -> list[dict]:
    out = []
    for epoch in range(epochs):
        mine = [r for r in rows if r["epoch"] == epoch]
        out.append({"epoch": epoch, "loss": round(statistics.fmean(r["loss"] for r in mine), 4),
                    "right_side_of_reference": round(statistics.fmean(r["right_side_of_reference"] for r in mine), 4)})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "rec" / "homedepot")
    parser.add_argument("--train-queries", type=int, default=24, help="first N training queries (those with signal are used)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--dev-queries", type=int, default=40, help="first N dev queries, ranked before and after (0: skip)")
    parser.add_argument("--batch-size", type=int, default=32, help="candidates per scoring pass")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "rec_fit_check")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "rec_fit_check.json")
    args = parser.parse_args(argv)
    console = Console()
    for split in ("train", "dev"):
        if not (args.data / f"{split}.jsonl").is_file():
            console.print(f"[red]error:[/] {args.data / f'{split}.jsonl'} not found (--data names the homedepot folder)")
            return 2
    if args.work.exists() and any(args.work.iterdir()):
        console.print(f"[red]error:[/] {args.work} is not empty; remove it or pass another --work")
        return 2

    from peft import PeftModel

    from ptalign.config import atomic_write_text
    from ptalign.losses import build_loss
    from ptalign.models import load_model
    from ptalign.rec.data import load_relevance_jsonl
    from ptalign.rec.listwise import ReferenceTrainSettings, referenced_queries, train_buyer_against_reference
    from ptalign.rec.selfalign import REFERENCE_PARAMS

    items = referenced_queries(load_relevance_jsonl(args.data / "train.jsonl")[: args.train_queries])
    train = [it.query for it in items]
    dev = load_relevance_jsonl(args.data / "dev.jsonl")[: args.dev_queries]
    model, tokenizer = load_model(args.model, cache_dir=args.cache_dir)
    before = {"train": rank_metrics(model, tokenizer, train, args.batch_size)}
    if dev:
        before["dev"] = rank_metrics(model, tokenizer, dev, args.batch_size)
    loss_fn = build_loss("prospect", **{**REFERENCE_PARAMS, "reference_point": "fixed"})
    t0 = time.perf_counter()
    adapter = train_buyer_against_reference(args.model, items, loss_fn, args.work,
                                            ReferenceTrainSettings(learning_rate=args.learning_rate, epochs=args.epochs),
                                            args.cache_dir, console)
    seconds = time.perf_counter() - t0
    trained = PeftModel.from_pretrained(model, adapter)
    after = {"train": rank_metrics(trained, tokenizer, train, args.batch_size)}
    if dev:
        after["dev"] = rank_metrics(trained, tokenizer, dev, args.batch_size)
    rows = [json.loads(line) for line in (args.work / "metrics.jsonl").read_text().splitlines()]
    result = {"train_queries": len(train), "dev_queries": len(dev), "epochs": args.epochs,
              "learning_rate": args.learning_rate, "model": args.model, "train_seconds": round(seconds, 1),
              "before": before, "after": after, "epochs_log": per_epoch(rows, args.epochs),
              "command": " ".join(["benchmarks/rec_fit_check.py", *(argv if argv is not None else sys.argv[1:])])}
    atomic_write_text(args.out, json.dumps(result, indent=1))
    table = Table(title=f"buyer fit: {len(train)} training queries, {args.epochs} epochs")
    for col in ("queries", "metric", "before", "after"):
        table.add_column(col)
    for split in before:
        for metric in ("pairwise_accuracy", "ndcg@10", "kendall_tau"):
            table.add_row(f"{split} ({len(train) if split == 'train' else len(dev)})", metric,
                          f"{before[split][metric]:.3f}", f"{after[split][metric]:.3f}")
    console.print(table)
    console.print("per epoch (training queries, before each step's update): " + ", ".join(
        f"{e['epoch']}: loss {e['loss']:.3f} / right side {e['right_side_of_reference']:.2f}" for e in result["epochs_log"]))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
