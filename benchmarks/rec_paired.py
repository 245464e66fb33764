"""Paired differences of a per-query rec result: method minus base, query by query, with the
standard error of the mean difference (the methods saw the same queries, so this is far tighter
than comparing two means with their own errors).

    python benchmarks/rec_paired.py benchmarks/results/rec_reference_per_query.jsonl \\
        --base "zero-shot buyer" --pair prospect-ref:reference-kto
    python benchmarks/rec_paired.py benchmarks/results/rec_query_likelihood_per_query.jsonl \\
        --with benchmarks/results/rec_reference_per_query.jsonl   # methods of two runs on the same queries

Writes ``<per-query stem>_paired.json`` beside the input and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ptalign.rec.metrics import paired_difference


def paired(per_query: dict[str, dict[str, float | None]], method: str, base: str) -> dict:
    """Mean of ``method - base`` over the queries where both are defined, its standard error and n."""
    try:
        return {"method": method, "base": base, **paired_difference(per_query[method], per_query[base])}
    except ValueError as err:
        raise ValueError(f"{method} and {base}: {err}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("per_query", type=Path, help="a *_per_query.jsonl written by rec_selfalign.py")
    parser.add_argument("--metric", default="pairwise_accuracy")
    parser.add_argument("--base", default="zero-shot buyer", help="every other method is compared with this one")
    parser.add_argument("--pair", action="append", default=[], help="METHOD:BASE, an extra comparison (repeatable)")
    parser.add_argument("--with", dest="others", type=Path, action="append", default=[],
                        help="another *_per_query.jsonl on the same queries: its methods that the first file lacks "
                             "join the comparison (repeatable)")
    args = parser.parse_args(argv)
    per_query: dict[str, dict[str, float | None]] = {}
    for path in [args.per_query, *args.others]:
        known, found = set(per_query), {}
        for n, line in enumerate(path.read_text().splitlines(), 1):
            row = json.loads(line)
            if args.metric not in row:
                sys.exit(f"{path}:{n}: no {args.metric!r} in this row")
            if row["method"] not in known:  # the first file's rows win
                found.setdefault(row["method"], {})[row["query_id"]] = row[args.metric]
        if per_query and found and set().union(*found.values()) != set().union(*per_query.values()):
            sys.exit(f"{path} is on other queries than {args.per_query}: cannot compare")
        per_query.update(found)
    comparisons = [(m, args.base) for m in per_query if m != args.base] + [tuple(p.split(":", 1)) for p in args.pair]
    for method, base in comparisons:
        if method not in per_query or base not in per_query:
            sys.exit(f"unknown method in {method}:{base}; the file has {', '.join(per_query)}")
    rows = [paired(per_query, m, b) for m, b in comparisons]
    out = args.per_query.with_name(args.per_query.stem.removesuffix("_per_query") + "_paired.json")
    sources = {"source": args.per_query.name, **({"with": [p.name for p in args.others]} if args.others else {})}
    out.write_text(json.dumps({**sources, "metric": args.metric, "comparisons": rows}, indent=1) + "\n")
    table = Table(title=f"{args.metric}: paired differences over queries ({args.per_query.name})")
    for column in ("method", "minus", "mean difference", "s.e.", "queries"):
        table.add_column(column, justify="left" if column in ("method", "minus") else "right")
    for r in rows:
        table.add_row(r["method"], r["base"], f"{r['mean_difference']:+.3f}", f"{r['stderr']:.3f}", str(r["n_queries"]))
    Console(width=120).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
