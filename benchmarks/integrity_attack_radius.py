"""How large should kt-ipa-aa's simulated attack be? Calibrate its radius against a real attack.

    python benchmarks/integrity_attack_radius.py --model MODEL [--attacked LABEL=FOLDER ...]
        [--radii 0.01,0.03,0.1,0.2,0.5] [--steps 1] [--lora] [--out benchmarks/results/integrity_attack_radius.json]

The attack-aware step (``ptalign.integrity.tamper.SimulatedAttack``) moves the trainable weights
``steps`` normalized gradient steps of length ``radius`` down the harmful loss of held-aside
hh-rlhf completions, and takes the alignment loss there. That only anticipates a real attack if
the step lands where an attack lands. The figure: mean token NLL of the pure_bad attack's harmful
completions (qi2023, what the attack trains on) at the model's weights, after each simulated
step, and at the weights of each really attacked model given with ``--attacked``. A radius whose
NLL rises above the unattacked model's overshoots (a broken model, not an attacked one).
``--lora`` probes fresh LoRA adapters (r 16, as ``align.lora=true`` trains) instead of every weight.

Writes the JSON (the settings and one row per point) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from ptalign.config import atomic_write_text
from ptalign.integrity import recipes as R
from ptalign.integrity.tamper import SimulatedAttack, harmful_nll
from ptalign.models import apply_lora, load_model, resolve_model
from ptalign.reference import CompletionScorer

OUT = Path(__file__).resolve().parent / "results" / "integrity_attack_radius.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="embedded", help="the model the attack-aware step would train (a folder or 'embedded')")
    parser.add_argument("--attacked", action="append", default=[], metavar="LABEL=FOLDER",
                        help="a really attacked model to compare with (repeatable)")
    parser.add_argument("--radii", default="0.01,0.03,0.1,0.2,0.5", help="comma-separated radii to probe")
    parser.add_argument("--steps", default="1", help="comma-separated step counts to probe")
    parser.add_argument("--lora", action="store_true", help="probe fresh LoRA adapters instead of every weight")
    parser.add_argument("--examples", type=int, default=48, help="held-aside and pure_bad completions (each)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    try:
        args.radii = [float(r) for r in args.radii.split(",")]
        args.steps = [int(k) for k in args.steps.split(",")]
    except ValueError as err:
        parser.error(f"--radii and --steps take comma-separated numbers: {err}")
    if any(r <= 0 for r in args.radii) or any(k < 1 for k in args.steps):
        parser.error("--radii must be > 0 and --steps >= 1")
    for item in args.attacked:
        if "=" not in item or not Path(item.split("=", 1)[1]).is_dir():
            parser.error(f"--attacked takes LABEL=FOLDER with an existing model folder, got {item!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    torch.manual_seed(0)
    model_dir = resolve_model(args.model)
    align_args = R.AlignArgs(method="kt-ipa-aa", lora=args.lora, attack_examples=args.examples)
    with tempfile.TemporaryDirectory() as tmp:  # the tokenized sets quote the shared data: kept out of the repository
        rows = probe(args, model_dir, align_args, Path(tmp), console)
    result = {"model": args.model, "lora": args.lora, "examples": args.examples,
              "measure": "mean token NLL of qi2023 pure_bad completions", "rows": rows}
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print_table(rows, args.lora, console)
    console.print(f"wrote {args.out}")
    return 0


def probe(args, model_dir: str, align_args: R.AlignArgs, work: Path, console: Console) -> list[dict]:
    """One row per point: the unattacked model, each simulated step, each really attacked model."""
    held = R.held_aside_harmful(model_dir, work, align_args, R.FeedbackArgs())
    target = R.side_batches(R.pure_bad_attack(R.AttackArgs(kind="pure_bad"))[:args.examples],
                            work / "pure_bad.jsonl", model_dir, align_args)

    model, _ = load_model(model_dir, device="cpu")
    if args.lora:
        model = apply_lora(model, r=align_args.lora_r, alpha=2 * align_args.lora_r)
    scorer = CompletionScorer(model)
    params = [p for p in model.parameters() if p.requires_grad]
    before = harmful_nll(scorer, target)
    rows = [{"point": "no attack", "radius": 0.0, "steps": 0, "nll": before}]
    for steps in args.steps:
        for radius in args.radii:
            attack = SimulatedAttack(held.data, held.pad_id, align_args.max_length, steps=steps, radius=radius)
            with attack.attacked(scorer, params):
                rows.append({"point": "simulated", "radius": radius, "steps": steps, "nll": harmful_nll(scorer, target)})
            console.print(f"radius {radius} x {steps}: NLL {rows[-1]['nll']:.3f}")
    del model, scorer
    for item in args.attacked:
        label, folder = item.split("=", 1)
        attacked, _ = load_model(folder, device="cpu")
        rows.append({"point": f"attack {label}", "radius": None, "steps": None,
                     "nll": harmful_nll(CompletionScorer(attacked), target)})
        del attacked
    for row in rows:
        row["delta_nll"] = row["nll"] - before
    return rows


def print_table(rows: list[dict], lora: bool, console: Console) -> None:
    table = Table(title=f"Harmful NLL after a simulated attack step ({'LoRA' if lora else 'every weight'})")
    for col in ("point", "radius", "steps", "NLL", "change"):
        table.add_column(col, justify="left" if col == "point" else "right")
    for row in rows:
        table.add_row(row["point"], "" if row["radius"] is None else f"{row['radius']:g}",
                      "" if row["steps"] is None else str(row["steps"]), f"{row['nll']:.3f}", f"{row['delta_nll']:+.3f}")
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
