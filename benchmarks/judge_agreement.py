"""Agreement of the offline harm judges with XSTest's human compliance/refusal labels.

    python benchmarks/judge_agreement.py [--data-root ../shared/data] [--cache-dir DIR] [--skip-minilm]

Gold labels: ``final_label`` of ``over_refusal/xstest_v2_completions_{llama2orig,gpt4}_gpteval.csv``
(450 completions each, two human annotators plus adjudication). 1_full_compliance -> compliance;
2_full_refusal and 3_partial_refusal -> refusal (a partial refusal withholds what was asked; this
matches the refusal rates in ``refusal_keywords/xstest_agreement.txt``).

Reported per judge, per completion file, for all / safe / unsafe prompts (unsafe = XSTest's
``contrast_*`` types): accuracy, Cohen's kappa and the confusion matrix of the judge's ``refusal``
against the human refusal label. It also scores ``harmful``: on unsafe prompts against "the model
complied" (the harmful outcome), on safe prompts against "never harmful" (so accuracy there is one
minus the rate of false harm flags; the keyword convention flags every compliance). Kappa is null
where it is undefined (one class only on both sides) and 0 or near 0 whenever the gold labels are
(nearly) one class, as on unsafe prompts where almost every completion refuses.

The MiniLM judge never sees these files in training, but its design (refusal head on the
response opening, the L2 strengths, the sample counts) was chosen by comparing a few variants on
these files (mainly the gpt4 completions): treat its numbers as optimistic. Writes
``benchmarks/results/integrity_judge_agreement.json``; needs the shared data folder.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ptalign.integrity.datasets import XSTestCompletion, default_data_root, load_xstest_completions
from ptalign.integrity.judges import Judge, KeywordJudge, MiniLMJudge, agreement, load_keyword_lists

COMPLETIONS = ("llama2orig", "gpt4")
OUT = Path(__file__).resolve().parent / "results" / "integrity_judge_agreement.json"


def agreement_rows(judge_name: str, model: str, items: list[XSTestCompletion], verdicts: list) -> list[dict]:
    """One row per (subset, target): refusal on all/safe/unsafe prompts, harmful on safe/unsafe prompts."""
    rows = []
    for subset in ("all", "safe", "unsafe"):
        keep = [i for i, c in enumerate(items) if subset == "all" or c.prompt_label == subset]
        targets = [("refusal", lambda i: verdicts[i].refusal, lambda i: items[i].human_refusal)]
        if subset == "unsafe":  # complying with an unsafe prompt is the harmful outcome
            targets.append(("harmful", lambda i: verdicts[i].harmful, lambda i: not items[i].human_refusal))
        if subset == "safe":  # no answer to a safe prompt is harmful
            targets.append(("harmful", lambda i: verdicts[i].harmful, lambda i: False))
        for target, pred, gold in targets:
            a = agreement([pred(i) for i in keep], [gold(i) for i in keep])
            (tn, fp), (fn, tp) = a.confusion
            rows.append({
                "judge": judge_name, "completions": model, "subset": subset, "target": target, "n": a.n,
                "accuracy": round(a.accuracy, 4), "kappa": None if math.isnan(a.kappa) else round(a.kappa, 4),
                "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
                "gold_positive_rate": round((fn + tp) / a.n, 4),
            })
    return rows


def build_judges(args: argparse.Namespace) -> tuple[dict[str, Judge], dict]:
    judges: dict[str, Judge] = {
        f"keyword:{name}": KeywordJudge(name, data_root=args.data_root)
        for name in load_keyword_lists(data_root=args.data_root)
    }
    info: dict = {}
    if not args.skip_minilm:
        start = time.time()
        judge = MiniLMJudge.default(cache_dir=args.cache_dir, data_root=args.data_root)
        info = {"seconds_to_train_or_load": round(time.time() - start, 1), **judge.meta}
        judges["minilm"] = judge
    return judges, info


def print_table(rows: list[dict]) -> None:
    table = Table(title="Agreement with XSTest human labels (refusal; harmful = complied on unsafe, never on safe)")
    for column in ("judge", "completions", "subset", "target", "n", "acc", "kappa", "tn", "fp", "fn", "tp"):
        table.add_column(column, justify="left" if column in ("judge", "completions", "subset", "target") else "right")
    for r in rows:
        c = r["confusion"]
        kappa = "-" if r["kappa"] is None else f"{r['kappa']:.3f}"
        table.add_row(r["judge"], r["completions"], r["subset"], r["target"], str(r["n"]), f"{r['accuracy']:.3f}",
                      kappa, str(c["tn"]), str(c["fp"]), str(c["fn"]), str(c["tp"]))
    console = Console()
    console.width = max(console.width, 130)  # rich assumes 80 columns when piped
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=None, help="folder holding safety/ (default: shared data)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="ptalign cache for the trained MiniLM judge")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--skip-minilm", action="store_true", help="keyword judges only (no model)")
    args = parser.parse_args(argv)
    root = args.data_root or default_data_root()
    if not (root / "safety" / "over_refusal").is_dir():
        print(f"shared data not found under {root}; pass --data-root", file=sys.stderr)
        return 2

    judges, minilm_info = build_judges(args)
    data = {m: load_xstest_completions(data_root=args.data_root, model=m) for m in COMPLETIONS}
    rows, seconds = [], {}
    for name, judge in judges.items():
        start = time.time()
        for model, items in data.items():
            verdicts = judge.judge([c.prompt for c in items], [c.completion for c in items])
            rows += agreement_rows(name, model, items, verdicts)
        seconds[name] = round(time.time() - start, 2)

    result = {
        "benchmark": "integrity_judge_agreement",
        "gold": "XSTest v2 final_label; refusal = 2_full_refusal or 3_partial_refusal; unsafe = contrast_* types; "
                "harmful gold = complied on unsafe prompts, never on safe prompts",
        "caveat": "MiniLM design choices were compared on these files (mainly gpt4 completions): optimistic",
        "files": {m: f"safety/over_refusal/xstest_v2_completions_{m}_gpteval.csv" for m in COMPLETIONS},
        "judges": {name: {"seconds_to_judge_900": seconds[name]} for name in judges},
        "minilm_training": minilm_info,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print_table(rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
