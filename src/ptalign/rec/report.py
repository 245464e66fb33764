"""Ranking results on disk: per-query JSONL, a metrics JSON, a Markdown table and a plot.

``write_report(out_dir, queries, scores_by_method)`` evaluates every method on the same queries
(NDCG@5/10, MRR, pairwise accuracy, Kendall tau; see :mod:`ptalign.rec.metrics`) and writes

* ``metrics.json``      ``{"n_queries", "methods": {name: {metric: mean}}, "stderr": {...}}``
* ``per_query.jsonl``   one row per (method, query) with every metric (null where undefined)
* ``report.md``         the table, best value per column in bold
* ``report.png``        pairwise accuracy and NDCG@10 per method with standard-error bars
                        (needs matplotlib: ``pip install 'ptalign[plot]'``; skipped with a note otherwise)
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Sequence

from ptalign.config import atomic_write_text
from ptalign.rec.data import RankingQuery
from ptalign.rec.metrics import DEFAULT_METRICS, evaluate

HEADERS = {"ndcg@5": "NDCG@5", "ndcg@10": "NDCG@10", "mrr": "MRR", "pairwise_accuracy": "pairwise acc.",
           "kendall_tau": "Kendall τ"}


def standard_error(values) -> float | None:
    defined = [v for v in values if v is not None]
    return statistics.stdev(defined) / math.sqrt(len(defined)) if len(defined) > 1 else None


def evaluate_methods(queries: Sequence[RankingQuery], scores_by_method: dict[str, dict[str, list[float]]],
                     metrics: Sequence[str] = DEFAULT_METRICS) -> dict:
    """{"methods": {name: means}, "stderr": {name: {metric: se}}, "per_query": {name: {qid: {...}}}}."""
    result: dict = {"n_queries": len(queries), "methods": {}, "stderr": {}, "per_query": {}}
    for name, scores in scores_by_method.items():
        means, per_query = evaluate(queries, scores, metrics)
        result["methods"][name] = means
        result["stderr"][name] = {m: standard_error(pq[m] for pq in per_query.values()) for m in metrics}
        result["per_query"][name] = per_query
    return result


def markdown_table(methods: dict[str, dict[str, float]], stderr: dict | None = None,
                   metrics: Sequence[str] = DEFAULT_METRICS) -> str:
    """Methods as rows, metrics as columns; the best value of each column in bold."""
    best = {m: max(v[m] for v in methods.values() if v.get(m) is not None) for m in metrics}
    lines = ["| method | " + " | ".join(HEADERS.get(m, m) for m in metrics) + " |",
             "|---|" + "---:|" * len(metrics)]
    for name, values in methods.items():
        cells = []
        for m in metrics:
            v = values.get(m)
            cell = "–" if v is None else f"{v:.3f}"
            se = (stderr or {}).get(name, {}).get(m)
            if se is not None:
                cell += f" ± {se:.3f}"
            cells.append(f"**{cell}**" if v is not None and v == best[m] else cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(methods: dict, stderr: dict, path: Path, metrics=("pairwise_accuracy", "ndcg@10")) -> bool:
    """Horizontal bars per method for each metric; False (nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(methods)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 0.45 * len(names) + 1.5), sharey=True)
    for ax, m in zip(axes if len(metrics) > 1 else [axes], metrics):
        values = [methods[n].get(m) or 0.0 for n in names]
        errors = [stderr.get(n, {}).get(m) or 0.0 for n in names]
        ax.barh(range(len(names)), values, xerr=errors, color="#4c72b0", capsize=3)
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        low = min(v - e for v, e in zip(values, errors))
        ax.set_xlim(max(0.0, low - 0.05), min(1.0, max(v + e for v, e in zip(values, errors)) + 0.02))
        ax.set_title(HEADERS.get(m, m))
        if m == "pairwise_accuracy":
            ax.axvline(0.5, color="grey", linestyle=":", linewidth=1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(out_dir: str | Path, queries: Sequence[RankingQuery], scores_by_method: dict[str, dict[str, list[float]]],
                 title: str = "Ranking evaluation", notes: str = "") -> dict:
    """Evaluate and write metrics.json, per_query.jsonl, report.md (and report.png); returns the result."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = evaluate_methods(queries, scores_by_method)
    rows = [json.dumps({"method": name, "query_id": qid, **values})
            for name, per_query in result["per_query"].items() for qid, values in per_query.items()]
    atomic_write_text(out / "per_query.jsonl", "\n".join(rows) + "\n")
    summary = {k: v for k, v in result.items() if k != "per_query"}
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=1))
    plotted = plot(result["methods"], result["stderr"], out / "report.png")
    figure = "![pairwise accuracy and NDCG@10](report.png)\n" if plotted else "(plot skipped: pip install 'ptalign[plot]')\n"
    text = (f"# {title}\n\n{len(queries)} queries; mean ± standard error over queries.\n\n"
            f"{markdown_table(result['methods'], result['stderr'])}\n{figure}\n{notes}")
    atomic_write_text(out / "report.md", text)
    return result
