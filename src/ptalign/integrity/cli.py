"""``ptalign integrity``: align, attack, evaluate and report (KT-IPA)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Safety alignment that survives harmful fine-tuning (KT-IPA): align, attack, eval, run, report.",
                  no_args_is_help=True)

CONFIG = typer.Option(None, "--config", "-c", help="Integrity YAML (groups feedback/align/attack/eval), e.g. configs/integrity_demo.yaml.")
OVERRIDES = typer.Argument(None, help="group.key=value overrides, e.g. align.loss_aversion=3 attack.epochs=2 eval.advbench=20")
CACHE = typer.Option(None, "--cache-dir", help="Model and judge cache (default $PTALIGN_CACHE or ~/.cache/ptalign).")


def _cfg(config, overrides, **top):
    from ptalign.integrity.pipeline import load_integrity_config

    extra = [f"{k}={v}" for k, v in top.items() if v is not None]
    return load_integrity_config(config, list(overrides or []) + extra, run=False)


def _run(fn):
    from ptalign.cli import USER_ERRORS, _fail, console

    try:
        return fn(console)
    except USER_ERRORS as err:
        _fail(err)


@app.command()
def align(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: feedback.jsonl, pairs.jsonl, run/ and the merged model/."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model to align: 'embedded', a folder or a hub id."),
    method: Optional[str] = typer.Option(None, "--method", help="sft, dpo, kto, kt-ipa (default), kt-ipa-aa (attack-aware) or kt-ipa-rn (representation noise)."),
    config: Optional[Path] = CONFIG, overrides: Optional[list[str]] = OVERRIDES, cache_dir: Optional[Path] = CACHE,
) -> None:
    """Align a model: refusals and helpful answers are gains, harmful compliance and over-refusal losses."""
    from ptalign.integrity.recipes import align as run_align

    def go(console):
        cfg = _cfg(config, (overrides or []) + ([f"align.method={method}"] if method else []), model=model)
        path = run_align(cfg.model, out, cfg.align, cfg.feedback, console, cache_dir and str(cache_dir))
        console.print(f"[green]aligned model:[/] {path}")

    _run(go)


@app.command()
def attack(
    model: str = typer.Argument(..., help="Model folder to attack (or 'embedded')."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: attack_data.jsonl, run/ and the attacked model/."),
    kind: Optional[str] = typer.Option(None, "--kind", help="mixed (harmful share in SST-2, default) or pure_bad."),
    config: Optional[Path] = CONFIG, overrides: Optional[list[str]] = OVERRIDES, cache_dir: Optional[Path] = CACHE,
) -> None:
    """Harmful fine-tuning attack: n samples with harmful ratio p mixed into SST-2, or pure harmful data."""
    from ptalign.integrity.recipes import attack as run_attack

    def go(console):
        cfg = _cfg(config, (overrides or []) + ([f"attack.kind={kind}"] if kind else []))
        path = run_attack(model, out, cfg.attack, console, cache_dir=cache_dir and str(cache_dir))
        console.print(f"[green]attacked model:[/] {path}")

    _run(go)


@app.command("eval")
def evaluate(
    model: str = typer.Argument(..., help="Model folder to evaluate (or 'embedded')."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the figures (JSON)."),
    config: Optional[Path] = CONFIG, overrides: Optional[list[str]] = OVERRIDES, cache_dir: Optional[Path] = CACHE,
) -> None:
    """Harmful score (AdvBench, HarmBench), refusal, XSTest over-refusal, SST-2 accuracy and utility."""
    from ptalign.config import atomic_write_text
    from ptalign.integrity.pipeline import evaluate_folder

    def go(console):
        cfg = _cfg(config, overrides)
        result = evaluate_folder(model, cfg.eval, cache_dir=cache_dir and str(cache_dir))
        atomic_write_text(out, json.dumps(result, indent=1))
        figures = {k: round(v, 3) for k, v in result.items() if isinstance(v, float)}
        console.print(figures)
        console.print(f"[green]wrote[/] {out}")

    _run(go)


@app.command()
def run(
    config: Optional[Path] = typer.Argument(None, help="Integrity YAML, e.g. configs/integrity_demo.yaml."),
    overrides: Optional[list[str]] = OVERRIDES,
    out: Path = typer.Option(Path("runs/integrity"), "--out", "-o", help="Output folder: results.json, report.md, hs_by_epoch.png, tradeoff.png."),
    cache_dir: Optional[Path] = CACHE,
) -> None:
    """The whole experiment: for each method align, evaluate, attack (each kind), evaluate; then the report."""
    from ptalign.integrity.pipeline import load_integrity_config, run_experiment
    from ptalign.integrity.report import markdown_table

    def go(console):
        cfg = load_integrity_config(config, list(overrides or []))
        results = run_experiment(cfg, out, console, cache_dir and str(cache_dir))
        print(markdown_table(results))  # the result table goes to stdout, unwrapped
        console.print(f"[green]report:[/] {out / 'report.md'}")

    _run(go)


@app.command()
def report(results_dir: Path = typer.Argument(..., help="A folder holding results.json from `ptalign integrity run`.")) -> None:
    """Rewrite report.md and its plots (HS by attack epoch, HS against over-refusal) from a run's results.json."""
    from ptalign.integrity.report import write_report

    def go(console):
        path = results_dir / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `ptalign integrity run` first")
        console.print(f"[green]report:[/] {write_report(json.loads(path.read_text()), results_dir)}")

    _run(go)
