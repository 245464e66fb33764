"""The training recipe: one readable loop on accelerate.

``train(config)`` loads the model, builds fixed batches, obtains reference log-probs (cached
on disk, or from the adapter-disabled base under LoRA), then runs AdamW with warmup and decay,
gradient accumulation and clipping, writes metrics as JSONL, and checkpoints atomically so that
``resume=True`` continues exactly where a killed run stopped.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import get_scheduler

from ptalign.batches import TrainData, collate_batch, prepare_data
from ptalign.checkpoint import CHECKPOINTS, atomic_dir, list_checkpoints, load_checkpoint, prune_checkpoints, save_checkpoint
from ptalign.config import TrainConfig, atomic_write_text
from ptalign.losses.base import Loss, LossOutput, PairedLogps, UnpairedLogps
from ptalign.ops import RunningMean, all_reduce_sum, kl_reference_point
from ptalign.reference import (
    CompletionScorer, adapters_disabled, cache_key, cached_reference_logps, compute_reference_logps, model_identity,
)


def train(cfg: TrainConfig, resume: bool = False, console: Console | None = None, adversary=None, on_epoch_end=None,
          regularizer=None) -> Path:
    """Run ``cfg`` and return its run folder.

    adversary:    optional inner attack (see :class:`ptalign.integrity.tamper.SimulatedAttack`):
                  each micro-batch's loss is also taken at the attacked weights and its
                  gradient added (first-order meta-learning against harmful fine-tuning).
    regularizer:  optional ``regularizer(scorer) -> (loss, figures)`` whose loss is added to every
                  micro-batch's (for example :class:`ptalign.integrity.tamper.RepresentationNoise`);
                  its figures are averaged into the step's metrics.
    on_epoch_end: optional ``callback(epoch, model)`` run on the main process after each epoch,
                  with the model in eval mode (for example to evaluate harm after each epoch).
    """
    console = console or Console(stderr=True)
    run_dir = Path(cfg.train.output_dir)
    config_yaml = _prepare_run_dir(run_dir, cfg, resume)
    # bf16 is our own autocast, not accelerate's: its mixed precision is fixed once per process, and an
    # integrity benchmark aligns in bf16 and attacks in float32 in one process (fp16 needs its grad scaler)
    fp16 = cfg.train.mixed_precision == "fp16"
    accelerator = Accelerator(mixed_precision="fp16" if fp16 else "no", cpu=not torch.cuda.is_available())
    autocast = _autocast(cfg.train.mixed_precision, accelerator)
    main = accelerator.is_main_process
    set_seed(cfg.train.seed)
    loss_fn = cfg.loss.build()

    from ptalign.models import apply_lora, load_model, resolve_model

    resolved = resolve_model(cfg.model.name, cache_dir=cfg.model.cache_dir)
    model, tokenizer = load_model(resolved, dtype=cfg.model.dtype, cache_dir=cfg.model.cache_dir, device=str(accelerator.device))
    model.config.use_cache = False
    d = cfg.data
    data = prepare_data(d.train, tokenizer, loss_fn, d.max_length, d.truncation, cfg.train.batch_size,
                        cfg.train.seed, d.bucket_by_length, d.limit)
    if cfg.model.lora:
        model = apply_lora(model, r=cfg.model.lora_r, alpha=cfg.model.lora_alpha, dropout=cfg.model.lora_dropout,
                           target_modules=cfg.model.lora_target_modules)
    scorer = CompletionScorer(model, cfg.train.chunk_tokens).to(accelerator.device)
    pad_id = tokenizer.pad_token_id

    reference, ref_scorer = None, None
    if loss_fn.requires_reference and cfg.train.reference == "cached":
        key = cache_key(model_identity(resolved, cfg.model.dtype, cfg.train.mixed_precision), data, d.max_length)
        from ptalign.models import cache_root

        def compute():
            scorer.eval()
            with adapters_disabled(model), autocast():  # the policy's own precision: rewards start at 0
                return compute_reference_logps(scorer, data, pad_id, d.max_length, accelerator.device, show_progress=main)

        t0 = time.perf_counter()
        with accelerator.main_process_first():  # one process computes, the others load its file
            reference, hit = cached_reference_logps(cache_root(cfg.model.cache_dir), key, compute)
        if main:
            console.print(f"reference log-probs: {'loaded from cache' if hit else 'computed'} ({time.perf_counter() - t0:.1f}s, key {key})")
    elif loss_fn.requires_reference and not cfg.model.lora:
        ref_scorer = copy.deepcopy(scorer).eval().requires_grad_(False)

    world, rank, ga = accelerator.num_processes, accelerator.process_index, cfg.train.grad_accum
    steps_per_epoch = len(data.batches) // (ga * world)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(data.batches)} batches cannot fill one step of {ga} micro-batches x {world} processes")
    total_steps = cfg.train.max_steps or cfg.train.epochs * steps_per_epoch
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay)
    scheduler = get_scheduler(_schedule_name(cfg.train.schedule), optimizer,
                              num_warmup_steps=math.ceil(cfg.train.warmup_ratio * total_steps), num_training_steps=total_steps)
    scorer, optimizer = accelerator.prepare(scorer, optimizer)
    tracker = RunningMean(getattr(loss_fn, "running_momentum", 0.9))

    start = 0
    checkpoints = list_checkpoints(run_dir)
    if resume and checkpoints:
        state = load_checkpoint(checkpoints[-1], model, optimizer, scheduler)
        start = state["step"]
        if state.get("reference_point") is not None:
            tracker.load_state_dict(state["reference_point"])
        if main:
            console.print(f"resumed from {checkpoints[-1]} at step {start}")
    metrics = MetricsLog(run_dir / "metrics.jsonl", keep_until=start, enabled=main)

    scorer.train()
    progress = training_progress(console, main)
    task = progress.add_task("train", total=total_steps, completed=start, stats="")
    with progress:
        for step in range(start, total_steps):
            t0 = time.perf_counter()
            stats = StepStats()
            for micro in range(ga):
                m = (step * ga + micro) * world + rank
                batch_ids = _batch_at(m, data, steps_per_epoch * ga * world, cfg.train.seed, d.shuffle)
                batch = {k: v.to(accelerator.device) for k, v in collate_batch(data, batch_ids, pad_id, d.max_length).items()}
                passes = [None] if adversary is None else [None, adversary]
                for j, adv in enumerate(passes):  # gradients sync once, on the step's last backward
                    last = micro == ga - 1 and j == len(passes) - 1
                    with contextlib.nullcontext() if last else accelerator.no_sync(scorer):
                        with adv.attacked(accelerator.unwrap_model(scorer), params) if adv else contextlib.nullcontext():
                            # the attacked pass must not move a running-mean reference point
                            point_state = copy.deepcopy(tracker) if adv else tracker
                            with autocast():  # policy, live reference and regularizer in the run's precision
                                out, point = _batch_loss(scorer, ref_scorer, model, loss_fn, batch, data, reference, point_state)
                                loss = out.losses.mean() * (adv.weight if adv else 1.0)
                                if regularizer is not None and adv is None:  # one backward with the clean loss
                                    extra, figures = regularizer(accelerator.unwrap_model(scorer))
                                    loss = loss + extra
                                    stats.add_figures(figures)
                            accelerator.backward(loss / ga)
                    stats.add(out, point, batch, adversarial=adv is not None)
            grad_norm = accelerator.clip_grad_norm_(params, cfg.train.max_grad_norm) if cfg.train.max_grad_norm > 0 else None
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            row = stats.summary(step + 1, step / steps_per_epoch, time.perf_counter() - t0, scheduler.get_last_lr()[0], grad_norm)
            metrics.write(row)
            progress.update(task, advance=1, stats=_short(row))
            if main and not console.is_terminal:  # logs and CI: one line per step instead of a live bar
                console.print(f"step {step + 1}/{total_steps}  {_short(row)}")
            if cfg.train.save_every and (step + 1) % cfg.train.save_every == 0 and step + 1 < total_steps and main:
                _save(run_dir, step + 1, model, optimizer, scheduler, tracker, config_yaml, cfg.train.keep_checkpoints)
            if on_epoch_end is not None and (step + 1) % steps_per_epoch == 0 and main:
                scorer.eval()
                on_epoch_end((step + 1) // steps_per_epoch, accelerator.unwrap_model(scorer).model)
                scorer.train()
            accelerator.wait_for_everyone()

    if main:
        _save(run_dir, total_steps, model, optimizer, scheduler, tracker, config_yaml, cfg.train.keep_checkpoints)
        _save_final(run_dir, accelerator.unwrap_model(scorer).model, tokenizer, config_yaml, cfg)
        atomic_write_text(run_dir / "summary.json", json.dumps(metrics.summary(total_steps, len(data.examples)), indent=1))
    accelerator.wait_for_everyone()
    return run_dir


def _batch_loss(scorer, ref_scorer, model, loss_fn: Loss, batch, data: TrainData, reference, tracker) -> tuple[LossOutput, float | None]:
    """Per-example losses of one micro-batch, and the reference point it was judged against."""

    def ref_logps(prefix: str, cached_key: str):
        if reference is not None:
            return reference[cached_key][batch["index"].cpu()].to(batch["weights"].device)
        with torch.no_grad(), (contextlib.nullcontext() if ref_scorer is not None else adapters_disabled(model)):
            live = ref_scorer or scorer
            return live(batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"], batch[f"{prefix}completion_mask"])[0]

    needs_ref = loss_fn.requires_reference
    if data.paired:
        logps, n_tokens = scorer(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        ref_c = ref_r = None
        if needs_ref and reference is not None:
            ref_c, ref_r = ref_logps("", "chosen"), ref_logps("", "rejected")
        elif needs_ref:
            ref_c, ref_r = ref_logps("", "").chunk(2)
        (chosen, rejected), (tc, tr) = logps.chunk(2), n_tokens.chunk(2)
        return loss_fn(PairedLogps(chosen, rejected, tc, tr, batch["weights"], ref_c, ref_r)), None

    point = None
    if loss_fn.requires_kl:
        with torch.no_grad():
            kl_policy = scorer(batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_completion_mask"])[0]
        point = kl_reference_point(kl_policy, ref_logps("kl_", "kl_logps"))
    logps, n_tokens = scorer(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    ref = ref_logps("", "logps") if needs_ref else None
    kind = getattr(loss_fn, "reference_point", None)
    if kind == "running_mean":
        point = tracker.update((logps.detach() - ref).mean())
    elif kind == "fixed":
        point = logps.new_tensor(loss_fn.reference_value)
    inputs = UnpairedLogps(policy=logps, labels=batch["labels"], weights=batch["weights"], n_tokens=n_tokens,
                           reference=ref, reference_point=point)
    return loss_fn(inputs), (None if point is None else float(point))


def _autocast(mixed_precision: str, accelerator: Accelerator):
    """A factory of the forward passes' autocast context: bf16, or accelerate's (fp16, or none)."""
    if mixed_precision == "bf16":
        return lambda: torch.autocast(accelerator.device.type, dtype=torch.bfloat16)
    return accelerator.autocast


def _batch_at(m: int, data: TrainData, per_epoch: int, seed: int, shuffle: bool = True) -> list[int]:
    """The m-th micro-batch of the run: epochs reshuffle the batch order, never the batches."""
    epoch, pos = divmod(m, per_epoch)
    if not shuffle:
        return data.batches[pos]
    order = torch.randperm(len(data.batches), generator=torch.Generator().manual_seed(seed + epoch))
    return data.batches[int(order[pos])]


class StepStats:
    """Accumulates one optimizer step's figures over its micro-batches."""

    def __init__(self):
        self.losses, self.chosen, self.rejected, self.points, self.tokens = [], [], [], [], 0
        self.adversarial, self.figures = [], {}

    def add(self, out: LossOutput, point: float | None, batch: dict, adversarial: bool = False) -> None:
        if adversarial:  # the loss at attacked weights: reported, not mixed into the clean figures
            self.adversarial.append(float(out.losses.detach().mean()))
            return
        self.losses.append(out.losses.detach().float().cpu())
        self.chosen.append(out.chosen_rewards.float().cpu())
        self.rejected.append(out.rejected_rewards.float().cpu())
        if point is not None:
            self.points.append(point)
        self.tokens += int(batch["attention_mask"].sum()) + int(batch.get("kl_attention_mask", torch.zeros(1)).sum())

    def add_figures(self, figures: dict[str, float]) -> None:
        for k, v in figures.items():
            self.figures.setdefault(k, []).append(v)

    def summary(self, step, epoch, seconds, lr, grad_norm) -> dict:
        """Means over every process's examples (sums and counts are all-reduced)."""
        losses, chosen, rejected = torch.cat(self.losses), torch.cat(self.chosen), torch.cat(self.rejected)
        sums = torch.tensor([losses.sum(), len(losses), chosen.sum(), len(chosen), rejected.sum(), len(rejected), self.tokens],
                            dtype=torch.float64)
        loss_sum, n, chosen_sum, n_chosen, rejected_sum, n_rejected, tokens = all_reduce_sum(sums).tolist()
        row = {"step": step, "epoch": round(epoch, 4), "loss": loss_sum / n, "lr": lr}
        if n_chosen:
            row["rewards/chosen"] = chosen_sum / n_chosen
        if n_rejected:
            row["rewards/rejected"] = rejected_sum / n_rejected
        if n_chosen and n_rejected:
            row["rewards/margins"] = row["rewards/chosen"] - row["rewards/rejected"]
        if self.points:
            row["reference_point"] = sum(self.points) / len(self.points)
        if self.adversarial:
            row["loss_after_attack"] = sum(self.adversarial) / len(self.adversarial)
        row.update({k: sum(v) / len(v) for k, v in self.figures.items()})  # this process's micro-batches
        if grad_norm is not None:
            row["grad_norm"] = float(grad_norm)
        row.update(seconds=seconds, tokens=int(tokens), tokens_per_s=tokens / seconds, examples_per_s=n / seconds)
        return row


class MetricsLog:
    """metrics.jsonl, one row per optimizer step; on resume, rows after the checkpoint are dropped."""

    def __init__(self, path: Path, keep_until: int, enabled: bool):
        self.path, self.enabled, self.rows = path, enabled, []
        if enabled and path.exists():
            self.rows = [r for r in map(json.loads, path.read_text().splitlines()) if r["step"] <= keep_until]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def write(self, row: dict) -> None:
        if self.enabled:
            self.rows.append(row)
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def summary(self, steps: int, n_examples: int) -> dict:
        seconds = sum(r["seconds"] for r in self.rows)
        last = self.rows[-1] if self.rows else {}
        return {"steps": steps, "examples": n_examples, "train_seconds": seconds,
                "tokens_per_s": sum(r["tokens"] for r in self.rows) / max(seconds, 1e-9),
                "final": {k: v for k, v in last.items() if k.startswith(("loss", "rewards", "reference"))}}


def _short(row: dict) -> str:
    keys = [("loss", "loss"), ("rewards/chosen", "r+"), ("rewards/rejected", "r-"), ("reference_point", "kl"), ("noise/mmd", "mmd"),
            ("tokens_per_s", "tok/s")]
    return "  ".join(f"{short} {row[k]:.3g}" for k, short in keys if k in row)


def training_progress(console: Console, enabled: bool = True) -> Progress:
    """The live training bar (description, bar, steps, times, a ``stats`` field); off outside a terminal."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), console=console,
                    disable=not (enabled and console.is_terminal))


def _schedule_name(schedule: str) -> str:
    return {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[schedule]


def _prepare_run_dir(run_dir: Path, cfg: TrainConfig, resume: bool) -> str:
    import yaml

    config_yaml = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    saved = run_dir / "config.yaml"
    if list_checkpoints(run_dir) or (run_dir / "final").exists():
        if not resume:
            raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another train.output_dir")
        before = yaml.safe_load(saved.read_text()) if saved.exists() else None
        if before is not None and before != cfg.to_dict():
            diff = [f"{g}.{k}" for g in before for k in before[g] if before[g][k] != cfg.to_dict()[g].get(k)]
            raise ValueError(f"--resume needs the configuration the run started with; these differ: {', '.join(diff)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, config_yaml)
    return config_yaml


def _save(run_dir, step, model, optimizer, scheduler, tracker, config_yaml, keep) -> None:
    state = {"step": step, "reference_point": tracker.state_dict()}
    save_checkpoint(run_dir / CHECKPOINTS / f"step-{step:06d}", model, optimizer, scheduler, state, config_yaml)
    prune_checkpoints(run_dir, keep)


def _save_final(run_dir: Path, model, tokenizer, config_yaml: str, cfg: TrainConfig) -> None:
    """final/ holds the adapter (LoRA) or the full model, the tokenizer and the run configuration."""
    with atomic_dir(run_dir / "final") as tmp:
        model.save_pretrained(tmp / ("adapter" if cfg.model.lora else "model"))
        tokenizer.save_pretrained(tmp / ("adapter" if cfg.model.lora else "model"))
        (tmp / "config.yaml").write_text(config_yaml)
