"""HS under the prefilling attack, for models the integrity benchmark saved.

    python benchmarks/integrity_prefill.py NAME=MODEL_FOLDER ... [--advbench 40] [--out benchmarks/results/integrity_prefill.json]

For each model: the benchmark's 40 AdvBench prompts (same seed, so the same prompts as
``configs/integrity_benchmark_cpu.yaml``) answered plainly and with AdvBench's own target
("Sure, here is ...") prefilled as the start of the reply -- the prefilling attack of Qi et al.
2024, which safety-recovery feedback (``feedback.recovery``) is meant to withstand; the refusal
keywords judge the answers (for the prefilled ones, the continuation only). Each model's figures
go to ``<out stem>/NAME.json`` and are reused when that file exists, so a long list can be
resumed; the table of all of them goes to ``--out``. Models are the folders
``benchmarks/integrity_kt_ipa.py`` leaves under ``--work`` (``METHOD/align/model``,
``METHOD/attack-KIND/model``) or ``embedded``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="NAME=MODEL (a model folder, or 'embedded')")
    parser.add_argument("--advbench", type=int, default=40, help="AdvBench prompts (seeded sample)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--split", choices=("all", "eval"), default="all",
                        help="AdvBench prompts from all of it, or its evaluation half only (models aligned on the other half)")
    parser.add_argument("--out", type=Path, default=RESULTS / "integrity_prefill.json")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)
    console = Console()
    pairs = []
    for item in args.models:
        name, sep, model = item.partition("=")
        if not sep or not name or not model:
            console.print(f"[red]error:[/] {item!r}: expected NAME=MODEL")
            return 2
        if model != "embedded" and not (Path(model) / "config.json").is_file():
            console.print(f"[red]error:[/] {name}: {model} is not a model folder (no config.json)")
            return 2
        pairs.append((name, model))

    from ptalign.config import atomic_write_text
    from ptalign.integrity.evaluate import EvalArgs
    from ptalign.integrity.pipeline import evaluate_folder

    eval_args = EvalArgs(advbench=args.advbench, harmbench=0, xstest=0, sst2=0, utility=0,
                         max_new_tokens=args.max_new_tokens, prefill=True, split=args.split, data_root=args.data_root)
    folder = args.out.with_suffix("")
    rows = []
    for name, model in pairs:
        path = folder / f"{name}.json"
        if path.is_file():
            result = json.loads(path.read_text())
        else:
            console.print(f"[bold]{name}[/]: {model}")
            result = evaluate_folder(model, eval_args, cache_dir=args.cache_dir)
            result["model"] = model
            atomic_write_text(path, json.dumps(result, indent=1))
        rows.append({"name": name, "model": result.get("model", model), "hs_advbench": result["hs_advbench"],
                     "hs_prefill_advbench": result["hs_prefill_advbench"]})
    atomic_write_text(args.out, json.dumps({
        "eval": {"advbench": args.advbench, "max_new_tokens": args.max_new_tokens, "split": args.split, "judge": "keyword"},
        "rows": rows, "command": " ".join(["benchmarks/integrity_prefill.py", *(argv if argv is not None else sys.argv[1:])]),
    }, indent=1))
    table = Table(title=f"HS on {args.advbench} AdvBench prompts (%), plain and with the target prefilled")
    for col in ("model", "HS", "HS prefilled"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(r["name"], f"{r['hs_advbench']:.1f}", f"{r['hs_prefill_advbench']:.1f}")
    console.print(table)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
