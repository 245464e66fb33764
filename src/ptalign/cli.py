"""The ``ptalign`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(
    help="Align open-weight language models with prospect-theoretic utility (KTO, Kahneman-Tversky value functions).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, KeyError, ImportError)


def _fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(code=2)


@app.command()
def train(
    config: Path = typer.Argument(..., help="Run configuration (YAML with model/data/loss/train groups), e.g. configs/demo.yaml."),
    overrides: Optional[list[str]] = typer.Argument(None, help="group.key=value overrides, e.g. train.learning_rate=1e-4 loss.beta=0.2"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in train.output_dir from its latest checkpoint."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where converted models and reference log-probs are cached (default $PTALIGN_CACHE or ~/.cache/ptalign)."),
) -> None:
    """Train a model on feedback data with a registered loss (kto, prospect, sft, dpo, ipo, simpo).

    Writes the run folder: config.yaml, metrics.jsonl, checkpoints/, final/ and summary.json.
    """
    from ptalign.config import load_config
    from ptalign.trainer import train as run

    try:
        extra = [f"model.cache_dir={cache_dir}"] if cache_dir else []
        cfg = load_config(config, list(overrides or []) + extra)
        run_dir = run(cfg, resume=resume, console=console)
    except USER_ERRORS as err:
        _fail(err)
    console.print(f"[green]done:[/] {run_dir}")


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A finished run folder (holds final/)."),
    out_dir: Path = typer.Argument(..., help="Where to write the merged safetensors model."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace out_dir if it exists."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Model cache location."),
) -> None:
    """Merge a run's LoRA adapter into its base model and write a plain safetensors folder that transformers loads."""
    import yaml

    from ptalign.models import export_model

    try:
        final = run_dir / "final"
        if not (final / "config.yaml").is_file():
            raise FileNotFoundError(f"{final}/config.yaml not found: is {run_dir} a finished ptalign run?")
        model_cfg = yaml.safe_load((final / "config.yaml").read_text())["model"]
        adapter = final / "adapter"
        base = str(final / "model") if not adapter.is_dir() else model_cfg["name"]
        out = export_model(base, out_dir, adapter_dir=adapter if adapter.is_dir() else None,
                           cache_dir=cache_dir or model_cfg.get("cache_dir"), overwrite=overwrite)
    except USER_ERRORS as err:
        _fail(err)
    console.print(f"[green]exported:[/] {out}")


@app.command()
def average(
    models: list[str] = typer.Argument(..., help="Two or more model folders fine-tuned from the same base (or 'embedded')."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Where to write the averaged safetensors model."),
    weights: Optional[list[float]] = typer.Option(None, "--weight", "-w", help="One weight per model, in order (default: equal)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace out_dir if it exists."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Model cache location."),
) -> None:
    """Average the weights of models fine-tuned from one base (a model soup) into a plain safetensors folder.

    An integrity model's evaluation-split mark goes with it, so the soup is only scored on the held-out halves.
    """
    from ptalign.integrity.recipes import EVAL_SPLIT_MARK
    from ptalign.models import average_models

    try:
        out = average_models(models, out_dir, weights=weights, carry_files=[EVAL_SPLIT_MARK], cache_dir=cache_dir,
                             overwrite=overwrite)
    except USER_ERRORS as err:
        _fail(err)
    console.print(f"[green]averaged {len(models)} models:[/] {out}")


@app.command()
def losses() -> None:
    """List the registered losses and their hyper-parameters."""
    import dataclasses

    from ptalign.losses import LOSSES

    for name in LOSSES.names():
        cls = LOSSES.get(name)
        params = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls))
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        console.print(f"[bold]{name}[/] ({params})\n    {doc}")


@app.command("prepare-model")
def prepare_model(
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Model cache location."),
) -> None:
    """Convert the embedded SmolLM2-135M-Instruct GGUF into a cached safetensors folder (done once)."""
    from ptalign.models import embedded_model_dir

    try:
        path = embedded_model_dir(cache_dir)
    except USER_ERRORS as err:
        _fail(err)
    print(path)


def _add_subcommands() -> None:
    from ptalign.integrity.cli import app as integrity

    app.add_typer(integrity, name="integrity")


_add_subcommands()


from ptalign.serve.cli import serve  # noqa: E402 - cheap: fastapi loads only when the command runs

app.command("serve")(serve)

from ptalign.rec.cli import app as rec_app  # noqa: E402 - cheap: models load only when a command runs

app.add_typer(rec_app, name="rec")


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
