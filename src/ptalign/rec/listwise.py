"""Buyer training against each query's reference point: the ``reference`` feedback of selfalign.py.

The ``decisions`` feedback trains on the buyer's yes/no *answers* one candidate at a time: the
loss never sees two candidates of the same query together, and the cheapest way to lower it is
to move the buyer's overall yes-rate, which leaves every ranking as it was (measured: a KTO
buyer trained that way on 400 queries ranks the dev set at chance).

Here the utilities of all candidates of a query enter the loss together, judged against the
query's reference point, the same one the ranking values use (buyer.py). With u_i the buyer's
utility of candidate i (log-odds of yes, computed with gradients, shared prefix once per query)
and z_q the mean utility of the query's candidates (detached)::

    x_i = beta (u_i - z_q)   when i is a gain (its gain is above the query's mean gain)
        = beta (z_q - u_i)   when i is a loss
    L_i = w_i * lambda_{D|U} * (1 - sigmoid(v(x_i)))

with v the Kahneman-Tversky value function: this is :class:`~ptalign.losses.prospect.ProspectLoss`
with the reward r_i = u_i (no reference model: the utility already is a log-ratio) and a
per-query reference point. Moving every utility of a query by the same amount changes nothing;
only the order and spread within the query count. The weights w_i are the graded distances
``|gain_i - mean gain|``, rescaled to mean 1 over the training set; candidates on the
reference point carry no signal and are left out (:func:`ptalign.rec.selfalign.label_targets`).
With alpha = beta_l = lambda = 1 the same loss is KTO's against this reference point (the
``reference-kto`` ablation). With the query-likelihood utility (buyer.py) u_i is the mean
log-probability of the query given candidate i instead, and the same loss applies.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ptalign.losses.base import Loss, UnpairedLogps
from ptalign.rec.data import RankingQuery


@dataclass(frozen=True)
class ReferencedQuery:
    """A training query with its candidates' descriptions and targets."""

    query: RankingQuery
    descriptions: list[str | None]
    targets: list[tuple[bool, float] | None]
    """Per candidate (is a gain, weight), or None on the reference point (from label_targets)."""


def referenced_queries(queries: Sequence[RankingQuery], descriptions: dict[str, list[str | None]] | None = None,
                       ) -> list[ReferencedQuery]:
    """The queries with any signal (not every candidate on the reference point), weights
    rescaled to mean 1 over all their candidates."""
    from ptalign.rec.selfalign import label_targets

    rows = [(q, label_targets(q)) for q in queries]
    rows = [(q, t) for q, t in rows if any(x is not None for x in t)]
    if not rows:
        raise ValueError("no training query has candidates with different gains: nothing to learn from")
    scale = statistics.fmean(x[1] for _, t in rows for x in t if x is not None)
    out = []
    for q, targets in rows:
        texts = (descriptions or {}).get(q.query_id) or [None] * len(q.candidates)
        out.append(ReferencedQuery(q, list(texts), [None if x is None else (x[0], x[1] / scale) for x in targets]))
    return out


def referenced_inputs(utilities: torch.Tensor, batch: Sequence[ReferencedQuery]) -> UnpairedLogps:
    """The loss inputs of one batch: ``utilities`` holds every candidate of ``batch`` in order
    (with gradients); candidates on their reference point are dropped. ``reference`` is zero
    (the utility is the reward) and ``reference_point`` is each candidate's query mean utility."""
    n_candidates = sum(len(item.targets) for item in batch)
    if utilities.shape[0] != n_candidates:
        raise ValueError(f"{utilities.shape[0]} utilities for a batch of {n_candidates} candidates")
    keep, labels, weights, points = [], [], [], []
    start = 0
    for item in batch:
        n = len(item.targets)
        z = utilities[start : start + n].detach().mean()
        for i, target in enumerate(item.targets):
            if target is not None:
                keep.append(start + i)
                labels.append(target[0])
                weights.append(target[1])
                points.append(z)
        start += n
    policy = utilities[torch.tensor(keep, dtype=torch.long, device=utilities.device)]
    return UnpairedLogps(policy=policy, labels=torch.tensor(labels, device=policy.device),
                         weights=policy.new_tensor(weights), n_tokens=torch.ones_like(policy),
                         reference=torch.zeros_like(policy), reference_point=torch.stack(points))


@dataclass
class ReferenceTrainSettings:
    learning_rate: float = 1e-3
    epochs: int = 1
    queries_per_step: int = 4
    lora: bool = True
    """False: update every weight of the model (full-parameter training) instead of a LoRA adapter."""
    lora_r: int = 16
    seed: int = 0
    max_grad_norm: float = 1.0
    warmup_ratio: float = 0.1
    utility: str = "yes-no"
    """The buyer's utility (buyer.UTILITIES): yes/no log-odds or the query's likelihood."""


def train_buyer_against_reference(spec: str, items: Sequence[ReferencedQuery], loss_fn: Loss, out_dir: str | Path,
                                  settings: ReferenceTrainSettings, cache_dir: str | None = None, console=None) -> Path:
    """Train the buyer of model ``spec`` on ``items``; returns the LoRA adapter folder
    (``out_dir/final/adapter``) or, with ``settings.lora`` false, the whole trained model
    (``out_dir/final/model``), written atomically, and writes ``metrics.jsonl`` and
    ``summary.json`` beside it. A finished run (that folder exists) is not redone."""
    from rich.console import Console
    from transformers import get_scheduler, set_seed

    from ptalign.checkpoint import atomic_dir
    from ptalign.config import atomic_write_text
    from ptalign.models import apply_lora, load_model
    from ptalign.rec.buyer import Buyer
    from ptalign.trainer import training_progress

    console = console or Console(stderr=True)
    out_dir = Path(out_dir)
    final_dir = out_dir / "final" / ("adapter" if settings.lora else "model")
    if (final_dir / ("adapter_config.json" if settings.lora else "config.json")).is_file():
        return final_dir
    if not items:
        raise ValueError("no training queries")
    set_seed(settings.seed)
    model, tokenizer = load_model(spec, cache_dir=cache_dir)
    if settings.lora:
        model = apply_lora(model, r=settings.lora_r, alpha=2 * settings.lora_r)
    buyer = Buyer(model, tokenizer, utility=settings.utility)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    steps_per_epoch = -(-len(items) // settings.queries_per_step)
    total = settings.epochs * steps_per_epoch
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=round(settings.warmup_ratio * total),
                              num_training_steps=total)
    prompts = [buyer.encode(it.query.query, it.query.products, it.descriptions) for it in items]
    order = list(range(len(items)))
    rng = random.Random(settings.seed)
    rows, t_start = [], time.perf_counter()
    model.train()
    progress = training_progress(console)
    with progress:
        task = progress.add_task("buyer vs reference point", total=total, stats="")
        for epoch in range(settings.epochs):
            rng.shuffle(order)
            for start in range(0, len(order), settings.queries_per_step):
                chosen = order[start : start + settings.queries_per_step]
                inputs = referenced_inputs(buyer.group_utilities([prompts[i] for i in chosen]), [items[i] for i in chosen])
                loss = loss_fn(inputs).losses.mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                optimizer.step()
                scheduler.step()
                rows.append(_step_row(len(rows) + 1, epoch, loss, inputs, grad_norm, scheduler.get_last_lr()[0]))
                progress.update(task, advance=1, stats=f"loss {rows[-1]['loss']:.4f}")
                if not console.is_terminal and len(rows) % 25 == 0:
                    console.print(f"buyer step {len(rows)}/{total}  loss {statistics.fmean(r['loss'] for r in rows[-25:]):.4f}")
    with atomic_dir(final_dir) as tmp:
        model.save_pretrained(tmp)
        if not settings.lora:
            tokenizer.save_pretrained(tmp)
    atomic_write_text(out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(out_dir / "summary.json", json.dumps({
        "steps": total, "queries": len(items), "epochs": settings.epochs, "lora": settings.lora, "utility": settings.utility, "seconds": round(time.perf_counter() - t_start, 1),
        "loss_first_25": statistics.fmean(r["loss"] for r in rows[:25]),
        "loss_last_25": statistics.fmean(r["loss"] for r in rows[-25:])}, indent=1))
    return final_dir


def _step_row(step: int, epoch: int, loss: torch.Tensor, inputs: UnpairedLogps, grad_norm, lr: float) -> dict:
    above = (inputs.policy.detach() > inputs.reference_point) == inputs.labels
    return {"step": step, "epoch": epoch, "loss": loss.item(), "right_side_of_reference": above.float().mean().item(),
            "grad_norm": float(grad_norm), "lr": lr}
