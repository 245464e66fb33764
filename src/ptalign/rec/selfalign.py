"""Self-alignment of the seller/buyer reranker, and the trained baselines, as one recipe.

A round (:func:`run_round`) goes top to bottom:

1. **seller**: the current model describes every (training query, candidate) for that shopper;
2. **buyer**: the same model scores every candidate, utility u = log-odds of "Yes" (buyer.py);
3. **feedback** from the ground-truth labels, judged against the query's reference point: the
   mean gain of its candidates. A candidate above it is a *gain* (the buyer should say yes),
   below it a *loss* (the buyer should say no); the distance ``|gain - mean gain|`` is the
   example's weight (graded gains; ties with the mean carry no signal and are left out;
   weights are rescaled to mean 1). The buyer made a *decision* for every candidate: yes when
   its utility is above the query's mean utility. That decision is a desirable completion when
   it was right and an undesirable one when it was wrong. The seller's description is
   desirable when the buyer, reading it, decided right, undesirable when it misled the buyer.
4. **update**: both roles' feedback goes into one JSONL file and :func:`ptalign.trainer.train`
   fits LoRA adapters with the chosen loss (``prospect`` for the self-aligned model); the
   adapters are merged into the next round's model.

Methods (:data:`METHODS`) differ in the loss, whether the seller takes part, and how the buyer's
feedback is built: ``decisions`` (the on-policy decisions above), ``labels`` (the right answer as
the completion: SFT), ``pairs`` (right answer chosen over wrong answer: DPO) or ``reference``
(the utilities of all of a query's candidates judged together against the query's reference
point, listwise.py). With ``reference`` feedback the round's update has two stages: the seller's
descriptions (when the seller takes part) are trained as above, then the buyer, on the merged
seller model, with :func:`ptalign.rec.listwise.train_buyer_against_reference`.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ptalign.rec.buyer import UTILITIES, Buyer, buyer_messages, prospect_values
from ptalign.rec.data import RankingQuery, load_relevance_jsonl
from ptalign.rec.seller import DescriptionCache, Seller, default_cache_dir, seller_messages
from ptalign.registry import Registry

YES, NO = "Yes", "No"


@dataclass(frozen=True)
class RecMethod:
    """What a training method does."""

    loss: str
    """A registered loss name."""
    seller: bool
    """Whether the buyer reads seller descriptions (and the seller is trained)."""
    feedback: str
    """How buyer feedback is built: decisions, labels, pairs or reference."""
    loss_params: dict = field(default_factory=dict)
    """Defaults for the loss (the recipe's loss_params override them)."""


KT_PARAMS = {"gain_curvature": 0.88, "loss_curvature": 0.88, "loss_aversion": 2.25}
METHODS: Registry[RecMethod] = Registry("rec method")
METHODS.register("selfalign")(RecMethod("prospect", seller=True, feedback="decisions", loss_params=KT_PARAMS))
METHODS.register("selfalign-kto")(RecMethod("kto", seller=True, feedback="decisions"))
METHODS.register("prospect-noseller")(RecMethod("prospect", seller=False, feedback="decisions", loss_params=KT_PARAMS))
METHODS.register("kto")(RecMethod("kto", seller=False, feedback="decisions"))
METHODS.register("sft")(RecMethod("sft", seller=False, feedback="labels"))
METHODS.register("dpo")(RecMethod("dpo", seller=False, feedback="pairs"))
FULL_LEARNING_RATE = 5e-5
"""Default learning rate of full-parameter training (LoRA's defaults would wreck the whole model)."""
REFERENCE_PARAMS = {**KT_PARAMS, "beta": 1.0}
"""The buyer's utilities are log-odds of order 1, not sums of log-ratios: beta 1, not 0.1."""
METHODS.register("selfalign-ref")(RecMethod("prospect", seller=True, feedback="reference", loss_params=REFERENCE_PARAMS))
METHODS.register("prospect-ref")(RecMethod("prospect", seller=False, feedback="reference", loss_params=REFERENCE_PARAMS))
METHODS.register("reference-kto")(RecMethod("prospect", seller=False, feedback="reference", loss_params={"beta": 1.0}))


@dataclass
class RecTrainArgs:
    """Configuration of ``ptalign rec train``; saved as ``rec_config.json`` in the output folder."""

    train_data: str
    """Relevance JSONL (Home Depot format) to learn from."""
    output_dir: str = "runs/rec"
    """Rounds go to round-N/ (feedback.jsonl, judgements.jsonl, run/, model/); summary.json names the final model."""
    method: str = "selfalign"
    """A registered method: selfalign, selfalign-kto, prospect-noseller, kto, sft, dpo, selfalign-ref,
    prospect-ref, reference-kto (the prospect loss with alpha = lambda = 1: KTO against the query's reference point)."""
    model: str = "embedded"
    """Starting model spec (embedded, a folder, a hub id)."""
    rounds: int = 1
    """Self-alignment rounds (each: describe, judge, build feedback, train, merge)."""
    train_queries: int | None = 64
    """Use the first N queries of train_data (None: all)."""
    description_tokens: int = 40
    """Length cap of a seller description in tokens."""
    loss_params: dict[str, Any] = field(default_factory=dict)
    """Overrides of the method's loss hyper-parameters (for example beta, loss_aversion)."""
    learning_rate: float | None = None
    """None: with LoRA 2e-4 for the trainer's feedback and 1e-3 for the buyer trained against the
    reference point; 5e-5 for both in full-parameter training."""
    epochs: int = 1
    batch_size: int = 8
    queries_per_step: int = 4
    """Queries (all their candidates) per optimizer step of the ``reference`` buyer training."""
    lora: bool = True
    """False: full-parameter updates of the whole model instead of LoRA adapters (both roles)."""
    lora_r: int = 16
    max_length: int = 384
    seed: int = 0
    score_batch_size: int = 16
    """Candidates per buyer pass and descriptions per generation batch."""
    cache_dir: str | None = None
    """ptalign cache root (models, reference log-probs, seller descriptions)."""
    utility: str = "yes-no"
    """The buyer's utility: yes-no (log-odds of "would I buy this?") or query-likelihood (mean
    log-probability of the shopper's query given the product; only with the reference methods,
    whose loss works on any utility: prospect-ref, selfalign-ref, reference-kto)."""

    def __post_init__(self):
        method = METHODS.get(self.method)  # unknown names fail listing the known ones
        if self.utility not in UTILITIES:
            raise ValueError(f"unknown buyer utility {self.utility!r}; known: {', '.join(UTILITIES)}")
        if self.utility != "yes-no" and method.feedback != "reference":
            raise ValueError(f"method {self.method!r} trains yes/no answers, so it needs utility 'yes-no'; "
                             f"with {self.utility!r} use prospect-ref, selfalign-ref or reference-kto")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.train_queries is not None and self.train_queries < 1:
            raise ValueError(f"train_queries must be a positive integer or None, got {self.train_queries}")
        if self.queries_per_step < 1:
            raise ValueError(f"queries_per_step must be >= 1, got {self.queries_per_step}")
        if self.description_tokens < 1:
            raise ValueError(f"description_tokens must be >= 1, got {self.description_tokens}")


# --------------------------------------------------------------------------- feedback


def label_targets(query: RankingQuery) -> list[tuple[bool, float] | None]:
    """Per candidate: (is a gain, |gain - query mean gain|), or None on the reference point."""
    reference_point = statistics.fmean(c.gain for c in query.candidates)
    return [None if abs(c.gain - reference_point) < 1e-9 else (c.gain > reference_point, abs(c.gain - reference_point))
            for c in query.candidates]


@dataclass
class Judgement:
    """The buyer's judgement of one training candidate (a row of judgements.jsonl)."""

    query_id: str
    query: str
    product_id: str
    description: str | None
    utility: float
    decision: bool
    """Yes (utility above the query's mean utility)."""
    target: bool
    """Ground truth: the candidate's gain is above the query's mean gain."""
    weight: float


def judge(queries: Sequence[RankingQuery], utilities: dict[str, list[float]],
          descriptions: dict[str, list[str | None]]) -> list[Judgement]:
    """Judgements of every candidate that carries signal (not on its query's reference point)."""
    rows = []
    for q in queries:
        mean_u = statistics.fmean(utilities[q.query_id])
        for i, (c, target) in enumerate(zip(q.candidates, label_targets(q))):
            if target is None:
                continue
            u = utilities[q.query_id][i]
            rows.append(Judgement(q.query_id, q.query, c.product.product_id, descriptions[q.query_id][i], u,
                                  decision=u > mean_u, target=target[0], weight=target[1]))
    scale = statistics.fmean(j.weight for j in rows) if rows else 1.0
    for j in rows:
        j.weight = j.weight / scale
    return rows


def _answer(yes: bool) -> list[dict]:
    return [{"role": "assistant", "content": YES if yes else NO}]


def build_feedback(queries: Sequence[RankingQuery], judgements: Sequence[Judgement], method: RecMethod) -> list[dict]:
    """Feedback JSONL records for the trainer (unpaired, or paired for ``feedback="pairs"``); with
    ``feedback="reference"`` only the seller's."""
    products = {(q.query_id, c.product.product_id): c.product for q in queries for c in q.candidates}
    records = []
    for j in judgements:
        product = products[(j.query_id, j.product_id)]
        prompt = buyer_messages(j.query, product, j.description if method.seller else None)
        weight = round(j.weight, 6)
        if method.feedback == "pairs":
            records.append({"prompt": prompt, "chosen": _answer(j.target), "rejected": _answer(not j.target), "weight": weight})
        elif method.feedback == "labels":
            records.append({"prompt": prompt, "completion": _answer(j.target), "label": True, "weight": weight})
        elif method.feedback == "decisions":
            records.append({"prompt": prompt, "completion": _answer(j.decision), "label": j.decision == j.target,
                            "weight": weight})
        # "reference": the buyer trains on its utilities (listwise.py), not on records
        if method.seller and j.description:
            records.append({"prompt": seller_messages(j.query, product),
                            "completion": [{"role": "assistant", "content": j.description}],
                            "label": j.decision == j.target, "weight": weight})
    return records


# --------------------------------------------------------------------------- scoring


def model_id(spec: str, cache_dir: str | None = None) -> str:
    """A cache identity for the model's weights (folder, file sizes and times)."""
    from ptalign.models import resolve_model
    from ptalign.reference import model_identity

    return json.dumps(model_identity(resolve_model(spec, cache_dir), "float32"), sort_keys=True)


def load_roles(spec: str, use_seller: bool, description_tokens: int = 40, batch_size: int = 16,
               cache_dir: str | None = None, progress: bool = False, utility: str = "yes-no",
               seller_sees_query: bool = True) -> tuple[Buyer, Seller | None]:
    """The buyer (and the seller, sharing its weights) of model ``spec``; ``seller_sees_query=False``:
    the seller describes each product without the query."""
    from ptalign.models import load_model

    model, tokenizer = load_model(spec, cache_dir=cache_dir)
    model.eval()
    seller = None
    if use_seller:
        seller = Seller(model, tokenizer, model_id(spec, cache_dir), DescriptionCache(default_cache_dir(cache_dir)),
                        max_new_tokens=description_tokens, batch_size=batch_size, progress=progress,
                        sees_query=seller_sees_query)
    return Buyer(model, tokenizer, batch_size=batch_size, utility=utility), seller


def score_queries(buyer: Buyer, seller: Seller | None, queries: Sequence[RankingQuery], shared_prefix: bool = True,
                  ) -> tuple[dict[str, list[float]], dict[str, list[str | None]]]:
    """(utilities, descriptions) per query id."""
    descriptions: dict[str, list[str | None]] = {q.query_id: [None] * len(q.candidates) for q in queries}
    if seller is not None:
        flat = iter(seller.describe([(q.query, p) for q in queries for p in q.products]))
        descriptions = {q.query_id: [next(flat) for _ in q.candidates] for q in queries}
    score = buyer.utilities_many if shared_prefix else buyer.utilities_per_pair_many
    utilities = score([(q.query, q.products, descriptions[q.query_id]) for q in queries])
    return {q.query_id: u for q, u in zip(queries, utilities)}, descriptions


def ranking_values(utilities: dict[str, list[float]]) -> dict[str, list[float]]:
    """The prospect value v(u - z_q) of every candidate (what the reranker orders by)."""
    return {qid: prospect_values(u)[0] for qid, u in utilities.items()}


# --------------------------------------------------------------------------- the recipe


def run_round(args: RecTrainArgs, spec: str, queries: Sequence[RankingQuery], round_dir: Path, console) -> str:
    """One round; returns the spec (folder) of the updated, merged model."""
    from ptalign.config import atomic_write_text

    method = METHODS.get(args.method)
    t0 = time.perf_counter()
    if method.feedback == "reference" and not method.seller:  # nothing to judge: straight to the buyer's update
        merged = _train_buyer_against_reference(args, method, spec, queries, None, round_dir, console)
        atomic_write_text(round_dir / "round.json", json.dumps(
            {"model_in": spec, "model_out": str(merged), "decision_accuracy": None, "n_judged": 0, "n_feedback": 0,
             "seconds": time.perf_counter() - t0}, indent=1))
        return str(merged)
    buyer, seller = load_roles(spec, method.seller, args.description_tokens, args.score_batch_size, args.cache_dir,
                               progress=console.is_terminal, utility=args.utility)
    utilities, descriptions = score_queries(buyer, seller, queries)
    judgements = judge(queries, utilities, descriptions)
    right = sum(j.decision == j.target for j in judgements) / max(len(judgements), 1)
    console.print(f"{round_dir.name}: buyer decided right on {right:.3f} of {len(judgements)} candidates "
                  f"({time.perf_counter() - t0:.0f}s{'' if seller is None else f', seller {seller.stats}'})")
    del buyer, seller
    atomic_write_text(round_dir / "judgements.jsonl", "".join(json.dumps(asdict(j)) + "\n" for j in judgements))
    feedback = build_feedback(queries, judgements, method)
    atomic_write_text(round_dir / "feedback.jsonl", "".join(json.dumps(r) + "\n" for r in feedback))
    if method.feedback != "reference":
        merged = _train_and_merge(args, spec, round_dir, method.loss, {**method.loss_params, **args.loss_params}, console)
    else:  # the seller's descriptions first (prospect, KTO's beta), then the buyer on that model
        seller_spec = str(_train_and_merge(args, spec, round_dir, "prospect", KT_PARAMS, console, stage="seller-")) if feedback else spec
        merged = _train_buyer_against_reference(args, method, seller_spec, queries, descriptions, round_dir, console)
    atomic_write_text(round_dir / "round.json", json.dumps(
        {"model_in": spec, "model_out": str(merged), "decision_accuracy": right, "n_judged": len(judgements),
         "n_feedback": len(feedback), "seconds": time.perf_counter() - t0}, indent=1))
    return str(merged)


def _train_buyer_against_reference(args: RecTrainArgs, method: RecMethod, spec: str, queries: Sequence[RankingQuery],
                                   descriptions: dict[str, list[str | None]] | None, round_dir: Path, console) -> Path:
    """The buyer of ``spec`` trained against each query's reference point (``buyer-run/``), merged into ``model/``."""
    from ptalign.losses import build_loss
    from ptalign.rec.listwise import ReferenceTrainSettings, referenced_queries, train_buyer_against_reference

    loss_fn = build_loss(method.loss, **{**method.loss_params, **args.loss_params, "reference_point": "fixed"})
    settings = ReferenceTrainSettings(learning_rate=_learning_rate(args, 1e-3), epochs=args.epochs,
                                      queries_per_step=args.queries_per_step, lora=args.lora, lora_r=args.lora_r,
                                      seed=args.seed, utility=args.utility)
    trained = train_buyer_against_reference(spec, referenced_queries(queries, descriptions), loss_fn,
                                            round_dir / "buyer-run", settings, args.cache_dir, console)
    return _export(spec, trained, args.lora, round_dir / "model", args.cache_dir)


def _learning_rate(args: RecTrainArgs, lora_default: float) -> float:
    return args.learning_rate or (lora_default if args.lora else FULL_LEARNING_RATE)


def _export(spec: str, trained: Path, lora: bool, out_dir: Path, cache_dir: str | None) -> Path:
    """The round's plain model folder: ``spec`` with the adapter merged in, or the trained full model."""
    from ptalign.models import export_model

    if lora:
        return export_model(spec, out_dir, adapter_dir=trained, cache_dir=cache_dir, overwrite=True)
    return export_model(str(trained), out_dir, cache_dir=cache_dir, overwrite=True)


def _train_and_merge(args: RecTrainArgs, spec: str, round_dir: Path, loss: str, loss_params: dict, console,
                     stage: str = "") -> Path:
    """Train ``spec`` on ``round_dir/feedback.jsonl`` (run in ``{stage}run/``; LoRA unless ``args.lora``
    is false) and export the merged model to ``{stage}model/``; a run that finished before an
    interruption is kept."""
    from ptalign.config import build_config
    from ptalign.trainer import train

    run_dir = round_dir / f"{stage}run"
    cfg = build_config({
        "model": {"name": spec, "cache_dir": args.cache_dir, "lora": args.lora, "lora_r": args.lora_r,
                  "lora_alpha": 2 * args.lora_r},
        "data": {"train": str(round_dir / "feedback.jsonl"), "max_length": args.max_length, "truncation": "keep_end"},
        "loss": {"name": loss, **loss_params},
        "train": {"output_dir": str(run_dir), "epochs": args.epochs, "batch_size": args.batch_size,
                  "learning_rate": _learning_rate(args, 2e-4), "seed": args.seed},
    })  # fmt: skip
    if not (run_dir / "final").is_dir():
        train(cfg, resume=True, console=console)
    trained = run_dir / "final" / ("adapter" if args.lora else "model")
    return _export(spec, trained, args.lora, round_dir / f"{stage}model", args.cache_dir)


def self_align(args: RecTrainArgs, console=None) -> Path:
    """Run ``args.rounds`` rounds; writes ``summary.json`` naming the final model and returns its path."""
    from rich.console import Console

    from ptalign.config import atomic_write_text

    console = console or Console(stderr=True)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "rec_config.json", json.dumps(asdict(args), indent=1))
    queries = load_relevance_jsonl(args.train_data)[: args.train_queries]
    spec = args.model
    for r in range(1, args.rounds + 1):
        round_dir = out / f"round-{r}"
        done = round_dir / "round.json"
        if done.is_file():  # a finished round of an interrupted run is not redone
            spec = json.loads(done.read_text())["model_out"]
            continue
        spec = run_round(args, spec, queries, round_dir, console)
    summary = {"model": spec, "method": args.method, "seller": METHODS.get(args.method).seller, "rounds": args.rounds,
               "utility": args.utility}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return out


def resolve_ranker(spec: str, utility: str | None = None, seller: bool | None = None) -> tuple[str, str, bool]:
    """``(model, utility, seller)`` of a ranker on ``spec``: what is given wins, then what a ``rec
    train`` run was trained with, then ``yes-no``, with the seller for ``yes-no`` but not for
    ``query-likelihood`` (the seller repeats the search, so the query's likelihood given the
    description measures the description, not the product: 0.519 -> 0.478 pairwise on 60 dev queries)."""
    model, trained_seller, trained_utility = resolve_ranker_model(spec)
    utility = utility or trained_utility or "yes-no"
    if seller is None:
        seller = trained_seller if trained_seller is not None else utility == "yes-no"
    return model, utility, seller


def resolve_ranker_model(spec: str) -> tuple[str, bool | None, str | None]:
    """A ``ptalign rec train`` output folder -> (its final model, whether it uses the seller,
    the buyer utility it was trained with); any other model spec -> (spec, None, None)."""
    summary = Path(spec).expanduser() / "summary.json"  # "~/runs/rec" in a serve config, as load_model reads it
    if summary.is_file():
        s = json.loads(summary.read_text())
        return s["model"], s["seller"], s.get("utility", "yes-no")
    return spec, None, None
