"""Seller/buyer reranker on Home Depot: every method in one table, and shared-prefix scoring speed.

    python benchmarks/rec_selfalign.py                                   # defaults: ~40 min on 2 CPU cores
    python benchmarks/rec_selfalign.py --train-queries 16 --dev-queries 40 --methods selfalign kto

Embedded SmolLM2-135M-Instruct. Trains on the first ``--train-queries`` queries of
``homedepot/train.jsonl`` (one round, LoRA r=16, one epoch) and evaluates on the first
``--dev-queries`` of ``homedepot/dev.jsonl`` (gain = (rating - 1) / 2; MRR relevance gain >= 0.75).
Methods, all in the same harness (scores -> ptalign.rec.metrics.evaluate):

* random (mean of 20 seeds), bm25, minilm: the non-LLM baselines
* zero-shot buyer, zero-shot buyer + seller: the untrained model
* sft (yes/no labels), dpo (right answer over wrong answer), kto (buyer decisions, no seller)
* prospect-noseller: the prospect-theoretic objective without the seller (ablation: seller step)
* selfalign-kto: seller + buyer, KTO objective (ablation: the prospect-theoretic value function)
* selfalign: seller + buyer, prospect objective (alpha = beta = 0.88, lambda = 2.25)
* prospect-ref, selfalign-ref, reference-kto: the buyer's utilities judged against each query's
  reference point (listwise.py), without / with the seller, and with KTO's value function
* ``--utility query-likelihood``: every LLM row with the buyer's utility the likelihood of the
  query given the product (buyer.py) instead of yes/no log-odds; rows are named with it

Speed: candidates/s of shared-prefix scoring against per-pair scoring of the full prompts (the
same batches, and one pair at a time) on the first ``--speed-queries`` dev queries, with the
zero-shot seller's descriptions, and the largest score difference. The result JSON is rewritten
after every method, so a cut-off run keeps what it finished. Writes
benchmarks/results/rec_selfalign.json, rec_selfalign_per_query.jsonl and a Markdown report with
a plot in benchmarks/work/rec_selfalign/report/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from ptalign.models import device_description
from ptalign.rec.baselines import RANKERS
from ptalign.rec.buyer import UTILITIES, split_prompt
from ptalign.rec.data import load_relevance_jsonl
from ptalign.rec.metrics import DEFAULT_METRICS, evaluate
from ptalign.rec.report import write_report
from ptalign.rec.selfalign import METHODS, RecTrainArgs, load_roles, ranking_values, score_queries, self_align

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TRAINED = ["selfalign", "kto", "sft", "prospect-noseller", "dpo", "selfalign-kto"]
console = Console(stderr=True)


def measure_speed(buyer, seller, queries, repeats: int = 2) -> dict:
    """candidates/s of the scoring paths (best of ``repeats``) and their agreement, with the
    zero-shot seller's descriptions and without (the buyer alone: shorter suffixes)."""
    n = sum(len(q.candidates) for q in queries)
    batch = 32

    def run(path, texts, batch_size=batch):
        buyer.batch_size, best, scores = batch_size, float("inf"), None
        requests = [(q.query, q.products, texts[q.query_id]) for q in queries]
        for _ in range(repeats):
            t0 = time.perf_counter()
            scores = [u for per_query in path(requests) for u in per_query]
            best = min(best, time.perf_counter() - t0)
        return n / best, scores

    one_query = lambda method: lambda requests: [method(*r) for r in requests]  # noqa: E731
    diff = lambda a, b: max(abs(x - y) for x, y in zip(a, b))  # noqa: E731
    out = {"n_queries": len(queries), "n_candidates": n, "batch_candidates": batch, "torch_threads": torch.get_num_threads()}
    described = {q.query_id: d for q, d in zip(queries, _describe(seller, queries))}
    for label, texts in (("with_descriptions", described), ("without_descriptions", {q.query_id: None for q in queries})):
        packed_cps, packed = run(buyer.utilities_many, texts)
        per_query_cps, per_query = run(one_query(buyer.utilities), texts)
        pair_cps, pair = run(buyer.utilities_per_pair_many, texts)
        single_cps, single = run(buyer.utilities_per_pair_many, texts, batch_size=1)
        pair_tokens, shared_tokens = _token_counts(buyer.tokenizer, queries, texts)
        out[label] = {
            "tokens_per_pair": pair_tokens, "tokens_shared_prefix": shared_tokens, "token_ratio": pair_tokens / shared_tokens,
            "shared_prefix_packed_candidates_per_s": packed_cps, "shared_prefix_one_query_per_pass_candidates_per_s": per_query_cps,
            "per_pair_batched_candidates_per_s": pair_cps, "per_pair_one_at_a_time_candidates_per_s": single_cps,
            "speedup_vs_per_pair_batched": packed_cps / pair_cps, "speedup_vs_one_at_a_time": packed_cps / single_cps,
            "max_abs_score_diff_vs_batched": diff(packed, pair), "max_abs_score_diff_vs_one_at_a_time": diff(packed, single),
            "max_abs_score_diff_one_query_vs_batched": diff(per_query, pair),
        }  # fmt: skip
    buyer.batch_size = 16
    return out


def _token_counts(tokenizer, queries, texts) -> tuple[int, int]:
    """Prompt tokens without padding: every pair's full prompt, against each query's prefix once
    plus every suffix. Their ratio bounds the shared-prefix speed-up when time goes with tokens."""
    pair = shared = 0
    for q in queries:
        parts = [split_prompt(tokenizer, q.query, p, d) for p, d in zip(q.products, texts[q.query_id] or [None] * len(q.products))]
        pair += sum(len(a) + len(b) for a, b in parts)
        shared += len(parts[0][0]) + sum(len(b) for _, b in parts) if parts else 0
    return pair, shared


def _describe(seller, queries):
    flat = iter(seller.describe([(q.query, p) for q in queries for p in q.products]))
    return [[next(flat) for _ in q.candidates] for q in queries]


def evaluate_model(spec: str, use_seller: bool, dev, args, seller_sees_query: bool = True) -> tuple[dict, dict]:
    t0 = time.perf_counter()
    buyer, seller = load_roles(spec, use_seller, args.description_tokens, args.batch_size, cache_dir=args.cache_dir,
                               utility=args.utility, seller_sees_query=seller_sees_query)
    utilities, descriptions = score_queries(buyer, seller, dev)
    scores = ranking_values(utilities)
    extra = {"eval_seconds": round(time.perf_counter() - t0, 1)}
    if seller is not None:
        extra["dev_descriptions"] = seller.stats
        extra["example_description"] = {"query": dev[0].query, "product": dev[0].candidates[0].product.title,
                                        "description": descriptions[dev[0].query_id][0]}
    return scores, extra


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "rec" / "homedepot")
    parser.add_argument("--train-queries", type=int, default=24)
    parser.add_argument("--dev-queries", type=int, default=40)
    parser.add_argument("--speed-queries", type=int, default=10, help="first N dev queries for the speed figure, whatever --dev-queries is (0: skip it)")
    parser.add_argument("--description-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--full", action="store_true", help="full-parameter training instead of LoRA")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: the method's (rec train --help)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs per round")
    parser.add_argument("--batch-size", type=int, default=16, help="candidates per buyer pass, descriptions per generation batch")
    parser.add_argument("--speed-only", action="store_true", help="only (re)measure the speed figure into the existing JSON")
    parser.add_argument("--defer-metrics", action="store_true",
                        help="score the LLM methods only and save the scores (for a machine without ranx or the "
                             "MiniLM model, such as a GPU box); finish later with --from-scores")
    parser.add_argument("--from-scores", action="store_true",
                        help="add the baselines and every metric, report and table to a --defer-metrics result")
    parser.add_argument("--merge", type=Path, nargs="*", default=[],
                        help="with --from-scores: more --defer-metrics results (other methods, same dev set) to add")
    parser.add_argument("--zero-shot-buyer", action=argparse.BooleanOptionalAction, default=True,
                        help="the zero-shot buyer row (leave it out when another run on the same dev slice has it)")
    parser.add_argument("--zero-shot-seller", action=argparse.BooleanOptionalAction, default=True,
                        help="the zero-shot buyer + seller row (its descriptions of every dev candidate are the slowest part on a CPU)")
    parser.add_argument("--seller-view", choices=["query", "product"], default="query",
                        help="the zero-shot seller row: descriptions for the shopper's query, or of the product alone")
    parser.add_argument("--methods", nargs="*", default=TRAINED, help=f"trained methods, in order ({', '.join(TRAINED)})")
    parser.add_argument("--utility", choices=UTILITIES, default="yes-no",
                        help="the buyer's utility for every LLM row (query-likelihood: only with the *-ref methods); "
                             "rows other than yes-no are named with it")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "rec_selfalign")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "rec_selfalign.json")
    args = parser.parse_args(argv)
    for name in args.methods:
        METHODS.get(name)
    if not (args.data / "dev.jsonl").is_file():
        print(f"skipping: {args.data} not found (the shared data is only on CI and developer machines)")
        return 0
    scores_path = args.out.with_name(f"{args.out.stem}_scores.json")
    if args.from_scores:
        return finish_from_scores(args, scores_path)
    train_path = args.data / "train.jsonl"
    dev_all = load_relevance_jsonl(args.data / "dev.jsonl")
    dev = dev_all[: args.dev_queries]
    if args.speed_only:
        result = json.loads(args.out.read_text()) if args.out.is_file() else {}
        buyer, seller = load_roles(args.model, True, args.description_tokens, cache_dir=args.cache_dir)
        result["speed"] = measure_speed(buyer, seller, dev_all[: args.speed_queries])
        _save(result, args.out)
        print(json.dumps(result["speed"], indent=1))
        return 0
    result = {"data": {"train": f"rec/homedepot/train.jsonl[:{args.train_queries}]",
                       "dev": f"rec/homedepot/dev.jsonl[:{args.dev_queries}]",
                       "n_dev_candidates": sum(len(q.candidates) for q in dev)},
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "gain": "linear: (rating - 1) / 2", "mrr_relevance": "gain >= 0.75",
              "model": "embedded SmolLM2-135M-Instruct (float32)", "device": device_description(), "methods": {}, "seconds": {},
              "python": sys.version.split()[0]}
    scores: dict[str, dict] = {}
    started = time.perf_counter()

    def record(name: str, method_scores: dict, **extra) -> None:
        scores[name] = method_scores
        result["methods"][name] = {**extra}
        if not args.defer_metrics:
            _add_metrics(result, name, dev, method_scores)
        result["elapsed_seconds"] = round(time.perf_counter() - started, 1)
        _save(result, args.out)
        _save(scores, scores_path)

    _save(result, args.out)  # a run starts a fresh result: nothing of an earlier one with this name is left over
    _save(scores, scores_path)
    if not args.defer_metrics:
        add_baselines(dev, record, result)

    label = (lambda name: name) if args.utility == "yes-no" else (lambda name: f"{name} ({args.utility})")  # noqa: E731
    if args.zero_shot_buyer:
        record(label("zero-shot buyer"), *evaluate_model(args.model, False, dev, args)[:1])
    if args.zero_shot_seller:
        sees_query = args.seller_view == "query"
        zs_scores, zs_extra = evaluate_model(args.model, True, dev, args, seller_sees_query=sees_query)
        seller_row = "zero-shot buyer + seller" if sees_query else "zero-shot buyer + product-only seller"
        record(label(seller_row), zs_scores, **zs_extra)

    for name in args.methods:
        t0 = time.perf_counter()
        run_dir = args.work / name
        train_args = RecTrainArgs(train_data=str(train_path), output_dir=str(run_dir), method=name, model=args.model,
                                  rounds=args.rounds, epochs=args.epochs, train_queries=args.train_queries,
                                  lora=not args.full, learning_rate=args.learning_rate,
                                  description_tokens=args.description_tokens, score_batch_size=args.batch_size,
                                  cache_dir=args.cache_dir, utility=args.utility)
        self_align(train_args, console)
        summary = json.loads((run_dir / "summary.json").read_text())
        rounds = [json.loads((run_dir / f"round-{r}" / "round.json").read_text()) for r in range(1, args.rounds + 1)]
        train_seconds = round(time.perf_counter() - t0, 1)
        method_scores, extra = evaluate_model(summary["model"], summary["seller"], dev, args)
        record(label(name), method_scores, seller=summary["seller"], loss=METHODS.get(name).loss, train_seconds=train_seconds,
               train_decision_accuracy=[r["decision_accuracy"] for r in rounds],
               n_feedback=[r["n_feedback"] for r in rounds], **extra)

    if args.speed_queries:
        buyer, seller = load_roles(args.model, True, args.description_tokens, cache_dir=args.cache_dir)
        result["speed"] = measure_speed(buyer, seller, dev_all[: args.speed_queries])
        del buyer, seller
        _save(result, args.out)
        console.print(f"speed: {json.dumps(result['speed'])}")
    if args.defer_metrics:
        print(f"scores saved to {scores_path}; finish with --from-scores (same --out, --data and --dev-queries)")
        return 0
    return finish(args, dev, result, scores)


def add_baselines(dev, record, result: dict) -> None:
    """random (metrics: the mean of 20 seeds; scores: seed 0), BM25 and the MiniLM bi-encoder."""
    random_runs = [RANKERS.get("random")(seed=s).score_many(dev) for s in range(20)]
    per_seed = [evaluate(dev, run, DEFAULT_METRICS)[0] for run in random_runs]
    record("random", random_runs[0], seeds=20)  # prints seed 0's figures; the row keeps the mean
    means = {m: statistics.fmean(p[m] for p in per_seed) for m in DEFAULT_METRICS}
    result["methods"]["random"]["metrics"] = means
    _print_metrics("random, mean of 20 seeds", means)
    for name in ("bm25", "minilm"):
        record(name, RANKERS.get(name)().score_many(dev))


def _add_metrics(result: dict, name: str, dev, method_scores: dict) -> None:
    means, _ = evaluate(dev, method_scores, DEFAULT_METRICS)
    result["methods"][name]["metrics"] = means
    _print_metrics(name, means)


def _print_metrics(name: str, means: dict) -> None:
    console.print(f"[bold]{name}[/]: " + "  ".join(f"{m} {v:.3f}" for m, v in means.items()))


def finish_from_scores(args, scores_path: Path) -> int:
    """Baselines, metrics, report and table for a result whose LLM scores were computed elsewhere."""
    if not args.out.is_file() or not scores_path.is_file():
        sys.exit(f"--from-scores needs {args.out} and {scores_path} (written by a --defer-metrics run)")
    deferred = json.loads(args.out.read_text())
    stored = json.loads(scores_path.read_text())
    for path in args.merge:  # methods of parallel runs on the same dev slice; the first run's row wins
        other = json.loads(path.read_text())
        if other["data"] != deferred["data"]:
            sys.exit(f"{path} was scored on {other['data']}, not {deferred['data']}: cannot merge")
        other_scores = json.loads(path.with_name(f"{path.stem}_scores.json").read_text())
        for name, extra in other["methods"].items():
            if name not in deferred["methods"]:
                deferred["methods"][name], stored[name] = extra, other_scores[name]
        deferred.setdefault("merged_from", []).append(path.name)
        if "speed" in other and "speed" not in deferred:
            deferred["speed"] = other["speed"]
    dev = load_relevance_jsonl(args.data / "dev.jsonl")[: int(deferred["settings"]["dev_queries"])]
    result = {**deferred, "methods": {}}
    scores: dict[str, dict] = {}

    def record(name: str, method_scores: dict, **extra) -> None:
        scores[name] = method_scores
        result["methods"][name] = {**extra}
        _add_metrics(result, name, dev, method_scores)

    add_baselines(dev, record, result)
    for name, extra in deferred["methods"].items():
        record(name, stored[name], **{k: v for k, v in extra.items() if k != "metrics"})
    result["metrics_computed"] = "separately, with --from-scores"
    return finish(args, dev, result, scores)


def finish(args, dev, result: dict, scores: dict) -> int:
    """The report with plots, the per-query file, the final JSON and the printed table."""
    ordered = {name: scores[name] for name in result["methods"]}
    report = write_report(args.work / "report", dev, ordered, title="Seller/buyer reranker on Home Depot dev")
    result["stderr_over_queries"] = report["stderr"]
    per_query = args.out.with_name(f"{args.out.stem}_per_query.jsonl")
    per_query.write_text("".join(json.dumps({"method": n, "query_id": q, **v}) + "\n"
                                 for n, pq in report["per_query"].items() for q, v in pq.items()))
    result["per_query_file"] = per_query.name
    _save(result, args.out)
    print_table(result)
    return 0


def _save(result: dict, path: Path) -> None:
    from ptalign.config import atomic_write_text

    atomic_write_text(path, json.dumps(result, indent=2) + "\n")


def print_table(result: dict) -> None:
    table = Table(title=f"Home Depot dev ({result['data']['dev']}), trained on {result['data']['train']}")
    table.add_column("method")
    for m in DEFAULT_METRICS:
        table.add_column(m, justify="right")
    table.add_column("train s", justify="right")
    for name, r in result["methods"].items():
        cells = [f"{r['metrics'][m]:.3f}" if r["metrics"][m] is not None else "-" for m in DEFAULT_METRICS]
        table.add_row(name, *cells, str(r.get("train_seconds", "")))
    Console(width=160).print(table)
    for label, s in (result.get("speed") or {}).items():
        if isinstance(s, dict):
            print(f"scoring speed {label} ({result['speed']['n_candidates']} candidates): shared prefix "
                  f"{s['shared_prefix_packed_candidates_per_s']:.1f}/s, per pair batched {s['per_pair_batched_candidates_per_s']:.1f}/s "
                  f"({s['speedup_vs_per_pair_batched']:.2f}x), one at a time {s['per_pair_one_at_a_time_candidates_per_s']:.1f}/s "
                  f"({s['speedup_vs_one_at_a_time']:.2f}x); max |score diff| {s['max_abs_score_diff_vs_batched']:.2e}"
                  + (f"; prompt tokens per pair / shared prefix {s['token_ratio']:.2f}x" if "token_ratio" in s else ""))


if __name__ == "__main__":
    raise SystemExit(main())
