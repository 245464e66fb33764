"""Harm against over-refusal across every integrity run: is there a setting that escapes the tradeoff?

    python benchmarks/integrity_tradeoff.py [RESULT.json ...] [--out benchmarks/results/integrity_tradeoff.json]

Reads the results of ``benchmarks/integrity_kt_ipa.py`` (default: every
``benchmarks/results/integrity_*.json`` that holds evaluated methods on the main benchmark's
evaluation slice, except the partial runs a merged file already contains), takes one point per (run, method) -- over-refusal of XSTest's safe
prompts before any attack, HS before and after each attack -- and writes:

* the points, the Pareto front (no other point has both lower over-refusal and lower HS after
  the mixed attack), and the correlation of HS with over-refusal across points, as JSON;
* ``integrity_tradeoff.png`` beside it: HS against over-refusal per stage, the goal corner shaded.

Prints the points as a table, sorted by over-refusal. It reads results only; nothing is re-run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ptalign.config import atomic_write_text
from ptalign.integrity.report import TRADEOFF_PANELS, pareto_front, plot_tradeoff, tradeoff_points

RESULTS = Path(__file__).resolve().parent / "results"
OUT = RESULTS / "integrity_tradeoff.json"


EVAL_SLICE = ("advbench", "harmbench", "xstest", "sst2", "judge", "split")
"""Points share axes only when they were evaluated on the same prompts with the same judge."""


def eval_slice(data: dict) -> tuple:
    cfg = {"split": "all", **data.get("config", {}).get("eval", {})}  # results from before eval.split: all prompts
    return tuple(cfg.get(k) for k in EVAL_SLICE)


def default_inputs(folder: Path = RESULTS) -> list[Path]:
    """Result files with evaluated methods on the main benchmark's evaluation slice
    (``integrity_kt_ipa.json``, else the first file's); partial runs already merged into another
    file are left out."""
    files = {}
    for path in sorted(folder.glob("integrity_*.json")):
        if path.name == OUT.name:
            continue
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("methods"), dict) and data["methods"]:
            files[path] = data
    merged = {Path(p).name for d in files.values() for p in d.get("merged_from", [])}
    main = next((d for p, d in files.items() if p.name == "integrity_kt_ipa.json"), next(iter(files.values()), {}))
    return [p for p, d in files.items() if p.name not in merged and eval_slice(d) == eval_slice(main)]


def run_label(path: Path) -> str:
    """``integrity_kt_ipa.json`` -> ``benchmark``, ``integrity_ablation_full_aa.json`` -> ``full_aa``."""
    name = path.stem.removeprefix("integrity_")
    return "benchmark" if name == "kt_ipa" else name.removeprefix("ablation_")


def correlation(points: list[dict], key: str) -> float | None:
    have = [p for p in points if key in p]
    if len(have) < 3:
        return None
    return statistics.correlation([p["over_refusal"] for p in have], [p[key] for p in have])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="*", type=Path, help="result JSON files (default: benchmarks/results/integrity_*.json)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    console = Console()
    inputs = args.results or default_inputs()
    points = []
    for path in inputs:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            console.print(f"[red]error:[/] cannot read {path}: {err}")
            return 2
        if not isinstance(data, dict) or not isinstance(data.get("methods"), dict):
            console.print(f"[red]error:[/] {path} is not a result of benchmarks/integrity_kt_ipa.py (no 'methods')")
            return 2
        points += tradeoff_points(data, run_label(path))
    if not points:
        console.print("[red]error:[/] no evaluated methods in " + ", ".join(map(str, inputs)))
        return 2
    stages = [s for s, _ in TRADEOFF_PANELS]
    result = {
        "inputs": [str(p) for p in inputs],
        "points": points,
        "pareto_front_after_mixed": pareto_front(points, "hs_after_mixed"),
        "correlation_with_over_refusal": {s: correlation(points, f"hs_{s}") for s in stages},
        "goal": {"max_over_refusal": 10.0, "max_hs_after_attack": 5.0},
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    plot = plot_tradeoff(points, args.out.with_suffix(".png"))
    atomic_write_text(args.out, json.dumps(result, indent=1))
    table = Table(title="HS against over-refusal (%), every run")
    for col in ("run", "method", "over-refusal", "HS before", "HS mixed", "HS pure_bad"):
        table.add_column(col, justify="left" if col in ("run", "method") else "right")
    front = {(p["run"], p["method"]) for p in result["pareto_front_after_mixed"]}
    for p in sorted(points, key=lambda p: (p["over_refusal"], p.get("hs_after_mixed", 0))):
        cells = [f"{p[f'hs_{s}']:.1f}" if f"hs_{s}" in p else "-" for s in stages]
        mark = "*" if (p["run"], p["method"]) in front else ""
        table.add_row(p["run"], p["method"] + mark, f"{p['over_refusal']:.1f}", *cells)
    console.print(table)
    corr = ", ".join(f"{s} {v:+.2f}" for s, v in result["correlation_with_over_refusal"].items() if v is not None)
    console.print(f"* = Pareto front after the mixed attack. Correlation of HS with over-refusal across points: {corr}")
    console.print(f"wrote {args.out}" + (f" and {plot}" if plot else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
