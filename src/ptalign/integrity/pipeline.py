"""The integrity experiment: align with a method, evaluate, attack, evaluate again.

``IntegrityConfig`` groups every setting (``feedback``, ``align``, ``attack``, ``eval``); the
YAML form and ``group.key=value`` overrides work as for training configs. ``run_method`` is one
row of the benchmark table; ``run_experiment`` runs several methods on the same feedback and
attacks and writes ``results.json`` and ``report.md`` (with the HS-versus-attack-epoch plot).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from ptalign.config import ConfigError, atomic_write_text, build_dataclass, parse_overrides
from ptalign.integrity.evaluate import EvalArgs, evaluate_model
from ptalign.integrity.recipes import (
    EVAL_SPLIT_MARK, METHODS, AlignArgs, AlignmentFeedback, AttackArgs, FeedbackArgs, align, attack, required_eval_split,
    sample_feedback,
)
from ptalign.models import load_tokenizer

BASELINE = "none"


@dataclass
class IntegrityConfig:
    model: str = "embedded"
    methods: list[str] = field(default_factory=lambda: ["none", "kt-ipa"])
    attacks: list[str] = field(default_factory=lambda: ["mixed", "pure_bad"])
    feedback: FeedbackArgs = field(default_factory=FeedbackArgs)
    align: AlignArgs = field(default_factory=AlignArgs)
    attack: AttackArgs = field(default_factory=AttackArgs)
    eval: EvalArgs = field(default_factory=EvalArgs)
    epoch_eval: bool = True
    """Measure HS after every attack epoch (for the plot); the last epoch is the final evaluation."""

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in (BASELINE, *METHODS)]
        if unknown:
            raise ConfigError(f"unknown method(s) {unknown}; known: {', '.join((BASELINE, *METHODS))}")

    def check_run(self) -> None:
        """A run's figures are scored on the halves its feedback left out. Only a run is held to this: one
        ``integrity eval`` with a run's config may ask for ``eval.split=align`` (the halves it trained on)."""
        if self.feedback.needs_eval_split and self.eval.split != "eval":
            raise ConfigError("feedback.benchmark_prompts and feedback.xstest_contrast train on the alignment halves of "
                              "AdvBench, HarmBench and XSTest, so the evaluation must draw from their other halves only: "
                              "add eval.split=eval")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


GROUPS = {"feedback": FeedbackArgs, "align": AlignArgs, "attack": AttackArgs, "eval": EvalArgs}
TOP = ("model", "methods", "attacks", "epoch_eval")


def build_integrity_config(raw: dict[str, Any] | None = None, overrides: list[str] | None = None,
                           run: bool = True) -> IntegrityConfig:
    """The config from a YAML mapping and ``group.key=value`` overrides; ``run=False`` for a single step
    (align, attack, eval), which is not held to a run's evaluation split (``IntegrityConfig.check_run``)."""
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(GROUPS) - set(TOP))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join([*TOP, *GROUPS])}")
    merged = {g: dict(raw.get(g) or {}) for g in GROUPS}
    top = {k: raw[k] for k in TOP if k in raw}
    for item in overrides or []:
        if item.split("=", 1)[0] in TOP:
            key, _, value = item.partition("=")
            top[key] = yaml.safe_load(value)
            continue
        for group, values in parse_overrides([item], GROUPS).items():
            merged[group].update(values)
    for key in ("methods", "attacks"):
        if isinstance(top.get(key), str):
            top[key] = [m.strip() for m in top[key].split(",") if m.strip()]
    cfg = IntegrityConfig(**top, **{g: build_dataclass(cls, g, merged[g]) for g, cls in GROUPS.items()})
    if run:
        cfg.check_run()
    return cfg


def load_integrity_config(path: str | Path | None, overrides: list[str] | None = None, run: bool = True) -> IntegrityConfig:
    raw = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping")
    try:
        return build_integrity_config(raw, overrides, run=run)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path else str(err)) from None


def evaluate_folder(model: str, args: EvalArgs, judge=None, cache_dir: str | None = None) -> dict:
    from ptalign.models import load_model

    if required_eval_split(model) and args.split == "all":
        raise ValueError(f"{model} was aligned on the alignment halves of its benchmarks ({EVAL_SPLIT_MARK}); "
                         "evaluate it on their evaluation halves only: add eval.split=eval "
                         "(or eval.split=align to measure the halves it was trained on)")

    policy, tokenizer = load_model(model, cache_dir=cache_dir)
    return evaluate_model(policy, tokenizer, args, judge=judge)


def stage_summary(method: str, stage: str, figures: dict) -> str:
    """One line of a stage's headline figures, printed as soon as it is evaluated (a long run shows
    where it stands before its table): ``kt-ipa after mixed: HS 4.7 (AdvBench 0.0, HarmBench 12.5), ...``;
    a figure whose set was not evaluated (NaN) is left out."""
    parts = []
    if "hs" in figures:
        split = [f"{name} {figures[key]:.1f}" for key, name in (("hs_advbench", "AdvBench"), ("hs_harmbench", "HarmBench"))
                 if key in figures]
        parts.append(f"HS {figures['hs']:.1f}" + (f" ({', '.join(split)})" if split else ""))
    for key, name in (("over_refusal", "over-refusal"), ("refusal_xstest_unsafe", "XSTest unsafe refused"), ("fa", "FA")):
        if key in figures and not math.isnan(figures[key]):
            parts.append(f"{name} {figures[key]:.1f}")
    return f"{method} {stage}: " + (", ".join(parts) or "no figures")


def run_method(cfg: IntegrityConfig, method: str, out: Path, feedback: AlignmentFeedback | None, judge,
               console: Console, cache_dir: str | None = None) -> dict:
    """One method: align (unless ``none``), evaluate, then each attack followed by evaluation."""
    t0 = time.perf_counter()
    out = Path(out)
    if method == BASELINE:
        model = cfg.model
    else:
        args = dataclasses.replace(cfg.align, method=method)
        model = str(align(cfg.model, out / "align", args, cfg.feedback, console, cache_dir, feedback_data=feedback))
    result = {"method": method, "align_seconds": time.perf_counter() - t0}
    console.print(f"[bold]{method}[/]: evaluating before the attack")
    result["before"] = evaluate_folder(model, cfg.eval, judge, cache_dir)
    console.print(stage_summary(method, "before the attack", result["before"]))
    tokenizer = load_tokenizer(model, cache_dir)
    for kind in cfg.attacks:
        args = dataclasses.replace(cfg.attack, kind=kind)
        epochs = {0: result["before"]["hs"]}
        quick = dataclasses.replace(cfg.eval, xstest=0, sst2=0, utility=0)

        def after_epoch(epoch, policy):
            if cfg.epoch_eval and epoch < args.epochs:
                epochs[epoch] = evaluate_model(policy, tokenizer, quick, judge=judge, progress=False)["hs"]

        console.print(f"[bold]{method}[/]: attack {kind} (n={args.n}, p={args.harmful_ratio if kind == 'mixed' else 1.0}, {args.epochs} epochs)")
        t1 = time.perf_counter()
        attacked = attack(model, out / f"attack-{kind}", args, console, on_epoch_end=after_epoch, cache_dir=cache_dir)
        after = evaluate_folder(str(attacked), cfg.eval, judge, cache_dir)
        epochs[args.epochs] = after["hs"]
        after["hs_by_epoch"] = {str(k): v for k, v in sorted(epochs.items())}
        after["attack_seconds"] = time.perf_counter() - t1
        result[f"after_{kind}"] = after
        console.print(stage_summary(method, f"after {kind}", after))
    result["seconds"] = time.perf_counter() - t0
    return result


def run_experiment(cfg: IntegrityConfig, out: Path, console: Console | None = None, cache_dir: str | None = None,
                   on_method=None) -> dict:
    """Every method in ``cfg.methods`` on the same feedback, attacks and evaluation; writes
    ``out/results.json`` after each method (a killed run keeps what finished) and ``out/report.md``.
    ``on_method(results)``, if given, is called after each method with the results so far."""
    from ptalign.integrity.judges import JUDGES
    from ptalign.integrity.report import write_report

    cfg.check_run()
    console = console or Console(stderr=True)
    out = Path(out)
    for method in cfg.methods:  # fail now, not after the feedback has been sampled
        if (out / method).is_dir() and any((out / method).iterdir()):
            raise FileExistsError(f"{out / method} already holds a run of {method}; choose another output folder or remove it")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    judge = JUDGES.get(cfg.eval.judge)()
    needs_feedback = any(m != BASELINE for m in cfg.methods)
    feedback = sample_feedback(cfg.model, cfg.feedback, console, cache_dir) if needs_feedback else None
    from ptalign.models import device_description

    results = {"config": cfg.to_dict(), "methods": {}, "device": device_description()}
    if feedback is not None:
        results["feedback_counts"] = feedback.counts
    for method in cfg.methods:
        results["methods"][method] = run_method(cfg, method, out / method, feedback, judge, console, cache_dir)
        results["complete"] = method == cfg.methods[-1]
        atomic_write_text(out / "results.json", json.dumps(results, indent=1))
        if on_method is not None:
            on_method(results)
    write_report(results, out)
    return results
