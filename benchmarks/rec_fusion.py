"""Does the LLM buyer add to the first-stage rankers? Parameter-free score fusion on Home Depot dev.

    python benchmarks/rec_fusion.py            # -> benchmarks/results/rec_fusion.json and _per_query.jsonl

Reads the per-candidate dev scores that earlier runs saved (``*_scores.json`` of
``rec_selfalign.py``, all on the same 300 dev queries), standardises each method's scores within a
query (z-scores; a query whose scores are all equal gets zeros) and ranks by their unweighted sum.
Nothing is fitted, so nothing is tuned on dev: the fusions below were fixed before any of them was
scored. Each is compared query by query with MiniLM, the best single ranker measured, and with its
own parts (paired differences of pairwise accuracy, as ``rec_paired.py`` does).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ptalign.config import atomic_write_text
from ptalign.rec.data import load_relevance_jsonl
from ptalign.rec.metrics import paired_difference
from ptalign.rec.report import evaluate_methods

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SHARED = Path(os.environ.get("PTALIGN_SHARED_DATA", ROOT.parent / "shared" / "data"))

SOURCES = {
    "bm25": ("rec_query_likelihood_scores.json", "bm25"),
    "minilm": ("rec_query_likelihood_scores.json", "minilm"),
    "zero-shot QL": ("rec_query_likelihood_scores.json", "zero-shot buyer (query-likelihood)"),
    "prospect-ref QL": ("rec_query_likelihood_scores.json", "prospect-ref (query-likelihood)"),
    "prospect-ref yes/no": ("rec_reference_scores.json", "prospect-ref"),
}
"""Each part: (scores file in benchmarks/results, method name in it)."""
FUSIONS = {
    "bm25 + minilm": ["bm25", "minilm"],
    "bm25 + minilm + zero-shot QL": ["bm25", "minilm", "zero-shot QL"],
    "bm25 + minilm + prospect-ref QL": ["bm25", "minilm", "prospect-ref QL"],
    "minilm + prospect-ref QL": ["minilm", "prospect-ref QL"],
    "bm25 + minilm + prospect-ref yes/no": ["bm25", "minilm", "prospect-ref yes/no"],
}
METRIC = "pairwise_accuracy"


def zscores(values: list[float]) -> list[float]:
    """Scores standardised within one query; all zeros when they are all equal."""
    mean, spread = statistics.fmean(values), statistics.pstdev(values)
    return [0.0] * len(values) if spread == 0 else [(v - mean) / spread for v in values]


def fuse(parts: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Sum of the parts' within-query z-scores, query by query."""
    return {q: [sum(z) for z in zip(*(zscores(p[q]) for p in parts))] for q in parts[0]}


def load_part(results: Path, name: str) -> dict[str, list[float]]:
    file, method = SOURCES[name]
    path = results / file
    if not path.is_file():
        sys.exit(f"{path} not found: it is written by the rec_selfalign.py run the README names for {name!r}")
    scores = json.loads(path.read_text())
    if method not in scores:
        sys.exit(f"{path}: no method {method!r} (it has {', '.join(scores)})")
    return scores[method]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", type=Path, default=SHARED / "rec" / "homedepot" / "dev.jsonl", help="the scored queries' labels")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the *_scores.json files are")
    parser.add_argument("--out", type=Path, default=RESULTS / "rec_fusion.json")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    parts = {name: load_part(args.results, name) for name in SOURCES}
    ids = set(parts["minilm"])
    for name, scores in parts.items():
        if set(scores) != ids:
            sys.exit(f"{name} was scored on other queries than minilm: cannot fuse them")
    dev = [q for q in load_relevance_jsonl(args.dev) if q.query_id in ids]
    if len(dev) != len(ids):
        sys.exit(f"{args.dev} lacks {len(ids) - len(dev)} of the scored queries")
    runs = {**{name: parts[name] for name in SOURCES}, **{f: fuse([parts[p] for p in ps]) for f, ps in FUSIONS.items()}}
    evaluated = evaluate_methods(dev, runs)
    means, per_query = evaluated["methods"], evaluated["per_query"]
    by_query = {name: {q: row[METRIC] for q, row in rows.items()} for name, rows in per_query.items()}
    paired = {f: {base: paired_difference(by_query[f], by_query[base]) for base in dict.fromkeys(["minilm", *ps])}
              for f, ps in FUSIONS.items()}
    result = {"dev_queries": len(dev), "sources": {n: {"file": f, "method": m} for n, (f, m) in SOURCES.items()},
              "fusions": FUSIONS, "means": means, "stderr": evaluated["stderr"], "paired_pairwise_accuracy": paired,
              "seconds": time.perf_counter() - t0, "command": "python benchmarks/rec_fusion.py"}
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    rows = [json.dumps({"method": name, "query_id": q, **row}) for name, qs in per_query.items() for q, row in qs.items()]
    atomic_write_text(args.out.with_name(f"{args.out.stem}_per_query.jsonl"), "\n".join(rows) + "\n")

    table = Table(title=f"Home Depot dev, {len(dev)} queries: z-score fusion (nothing fitted)")
    for column in ("method", "NDCG@5", "NDCG@10", "MRR", "pairwise acc.", "Kendall τ", "− MiniLM (paired)"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, m in means.items():
        diff = paired.get(name, {}).get("minilm")
        table.add_row(name, *(f"{m[k]:.3f}" for k in ("ndcg@5", "ndcg@10", "mrr", METRIC, "kendall_tau")),
                      f"{diff['mean_difference']:+.3f} ± {diff['stderr']:.3f}" if diff else "")
    Console(width=140).print(table)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
