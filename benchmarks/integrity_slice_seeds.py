"""Methods seed by seed on the evaluation slice: each row's HS before and after both attacks, and the mean per method.

    python benchmarks/integrity_slice_seeds.py METHOD/SEED=SOURCE ... [--out benchmarks/results/integrity_slice_seeds.json]

SOURCE is either a result of ``benchmarks/integrity_kt_ipa.py`` and one of its methods
(``benchmarks/results/integrity_halves_near_miss_600_seed1.json:kt-ipa-rn``) or the common prefix
of three ``ptalign integrity eval`` results of one aligned model and its two attacked models
(``benchmarks/results/integrity_halves_slice/near_miss_600_kto`` reads ``near_miss_600_kto-before.json``,
``-mixed.json`` and ``-pure_bad.json``). Every stage of every row must have been evaluated on the
same prompts with the same judge, or the rows would not share axes. Writes the rows and each
method's mean over its seeds as JSON (``command`` inside) and prints them as a table. It reads
results only; nothing is re-run.
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

RESULTS = Path(__file__).resolve().parent / "results"
OUT = RESULTS / "integrity_slice_seeds.json"
FILE_STAGE = {"before": "before", "after_mixed": "mixed", "after_pure_bad": "pure_bad"}
"""Each stage of a result and the suffix of its ``ptalign integrity eval`` file."""
STAGES = tuple(FILE_STAGE)
SLICE = ("split", "advbench", "harmbench", "xstest", "xstest_unsafe", "sst2", "seed", "judge", "max_new_tokens")
"""The evaluation arguments that decide which prompts are scored and how."""
FIGURES = {  # column -> (stage, figure)
    "HS before": ("before", "hs"), "HS mixed": ("after_mixed", "hs"), "HS pure_bad": ("after_pure_bad", "hs"),
    "AdvBench pure_bad": ("after_pure_bad", "hs_advbench"), "HarmBench pure_bad": ("after_pure_bad", "hs_harmbench"),
    "over-refusal before": ("before", "over_refusal"), "over-refusal pure_bad": ("after_pure_bad", "over_refusal"),
    "XSTest unsafe refused": ("before", "refusal_xstest_unsafe"), "FA mixed": ("after_mixed", "fa"),
}


class SourceError(ValueError):
    pass


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except json.JSONDecodeError as err:
        raise SourceError(f"{path}: not JSON ({err})") from None


def load_stages(source: str) -> dict[str, dict]:
    """The three stages' figures of one SOURCE (see the module's docstring)."""
    if ":" in source and source.rsplit(":", 1)[0].endswith(".json"):
        path, method = source.rsplit(":", 1)
        methods = _read(Path(path)).get("methods")
        if not isinstance(methods, dict) or method not in methods:
            have = ", ".join(methods) if isinstance(methods, dict) else "none"
            raise SourceError(f"{path}: no method {method!r} (methods: {have})")
        stages = {s: methods[method][s] for s in STAGES if s in methods[method]}
    else:
        stages = {s: _read(Path(f"{source}-{FILE_STAGE[s]}.json")) for s in STAGES}
    missing = [s for s in STAGES if s not in stages]
    if missing:
        raise SourceError(f"{source}: no {', '.join(missing)}")
    return stages


def slice_of(stage: dict, where: str) -> tuple:
    args = stage.get("eval_args")
    if not isinstance(args, dict):
        raise SourceError(f"{where}: no eval_args (which prompts were scored is unknown)")
    return tuple(args.get(k) for k in SLICE)


def build(rows: list[tuple[str, str]]) -> dict:
    """Rows (``METHOD/SEED``, SOURCE) -> the figures per row and each method's mean over its rows."""
    out, reference = [], None
    for label, source in rows:
        if label.count("/") != 1 or not all(label.split("/")):
            raise SourceError(f"row {label!r}: name rows METHOD/SEED, e.g. kto/1")
        stages = load_stages(source)
        for name, stage in stages.items():
            this = slice_of(stage, f"{source} ({name})")
            reference = reference or (this, f"{source} ({name})")
            if this != reference[0]:
                raise SourceError(f"{source} ({name}) was evaluated on another slice than {reference[1]}: "
                                  + ", ".join(f"{k} {a} vs {b}" for k, a, b in zip(SLICE, this, reference[0]) if a != b))
        method, seed = label.split("/")
        figures = {col: stages[stage].get(key) for col, (stage, key) in FIGURES.items()}
        out.append({"method": method, "seed": seed, "source": source, **figures})
    means = {}
    for method in dict.fromkeys(r["method"] for r in out):
        mine = [r for r in out if r["method"] == method]
        means[method] = {"seeds": [r["seed"] for r in mine],
                         **{col: statistics.fmean(r[col] for r in mine) for col in FIGURES
                            if all(r[col] is not None for r in mine)}}
    return {"slice": dict(zip(SLICE, reference[0])) if reference else {}, "rows": out, "means": means}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", nargs="+", help="METHOD/SEED=SOURCE")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    console = Console(width=160)  # ten columns: too wide for a folded 80-column pipe
    try:
        pairs = []
        for row in args.rows:
            if "=" not in row:
                raise SourceError(f"{row!r}: write rows as METHOD/SEED=SOURCE")
            pairs.append(tuple(row.split("=", 1)))
        result = build(pairs)
    except SourceError as err:
        console.print(f"[red]error:[/] {err}")
        return 2
    result["command"] = " ".join(["python benchmarks/integrity_slice_seeds.py",
                                  *(argv if argv is not None else sys.argv[1:])])
    atomic_write_text(args.out, json.dumps(result, indent=1))
    table = Table(title="seed by seed on the evaluation slice (%)")
    for col in ("method", "seed", *FIGURES):
        table.add_column(col, justify="left" if col in ("method", "seed") else "right")
    cell = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for r in result["rows"]:
        table.add_row(r["method"], r["seed"], *(cell(r[c]) for c in FIGURES))
    for method, m in result["means"].items():
        table.add_row(f"[bold]{method}[/]", "mean " + "+".join(m["seeds"]), *(cell(m.get(c)) for c in FIGURES))
    console.print(table)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
