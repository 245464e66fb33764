"""How far supervised rankers get on Home Depot dev from the titles alone: a ceiling for the LLM rows.

The LLM rows of benchmarks/rec_selfalign.py stay near BM25 (0.559 pairwise) and MiniLM (0.570)
however they are trained. This asks what the *data* allows a ranker that is trained directly on
the 2000 training queries' labels, with the same text the LLM sees (titles only):

- ``learned fusion``: a pairwise logistic regression (RankNet with a linear scorer) over per-query
  standardized BM25 and MiniLM scores and lexical match features, fitted on every train pair;
- ``MiniLM cross-encoder``: the embedded all-MiniLM-L6-v2 read as a cross-encoder (query and title
  in one input, a linear head on the [CLS] state), every weight fine-tuned with RankNet's pairwise
  logistic loss on the training queries; dev figures after each epoch.

    python benchmarks/rec_ceiling.py                               # ../shared/data, 3 epochs
    python benchmarks/rec_ceiling.py --epochs 1 --train-queries 200 --dev-queries 50

Writes benchmarks/results/rec_ceiling.json (figures, stderr over queries, dev pairwise accuracy
per epoch, paired differences against MiniLM) and rec_ceiling_per_query.jsonl, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ptalign.rec.baselines import RANKERS, _tokens, minilm_model_dir
from ptalign.rec.data import RankingQuery, load_relevance_jsonl
from ptalign.rec.metrics import DEFAULT_METRICS, paired_difference, pairwise_accuracy
from ptalign.rec.report import evaluate_methods, markdown_table

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PTALIGN_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "benchmarks" / "results" / "rec_ceiling.json"
FEATURES = ("bm25 (z)", "minilm (z)", "query words in title", "title words in query", "last query word in title",
            "title length")


def ranknet_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of ``log(1 + exp(-(s_i - s_j)))`` over the pairs with ``label_i > label_j`` (Burges et al. 2005)."""
    better = (labels[:, None] > labels[None, :]).float()
    if better.sum() == 0:
        return scores.sum() * 0.0
    margins = scores[:, None] - scores[None, :]
    return (torch.nn.functional.softplus(-margins) * better).sum() / better.sum()


def _zscore(values: Sequence[float]) -> list[float]:
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    mean = statistics.fmean(values)
    return [(v - mean) / sd if sd > 0 else 0.0 for v in values]


def match_features(query: RankingQuery, bm25: Sequence[float], minilm: Sequence[float]) -> np.ndarray:
    """One row of :data:`FEATURES` per candidate, shape ``[candidates, 6]``."""
    q_words = _tokens([query.query])[0]
    rows = []
    for product, b, m in zip(query.products, _zscore(bm25), _zscore(minilm)):
        t_words = _tokens([product.title])[0]
        q_set, t_set = set(q_words), set(t_words)
        rows.append([b, m, len(q_set & t_set) / max(len(q_set), 1), len(q_set & t_set) / max(len(t_set), 1),
                     float(bool(q_words) and q_words[-1] in t_set), len(t_words) / 20])
    return np.asarray(rows, dtype=np.float32)


def fit_fusion(features: list[np.ndarray], labels: list[list[float]], l2: float = 1e-3) -> torch.Tensor:
    """Weights of the linear scorer minimizing the mean RankNet loss over queries (L-BFGS)."""
    weights = torch.zeros(features[0].shape[1], requires_grad=True)
    xs = [torch.from_numpy(f) for f in features]
    ys = [torch.tensor(y) for y in labels]
    optimizer = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = sum(ranknet_loss(x @ weights, y) for x, y in zip(xs, ys)) / len(xs) + l2 * weights.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weights.detach()


class CrossEncoder(torch.nn.Module):
    """MiniLM over ``[CLS] query [SEP] title [SEP]`` with a linear head on the [CLS] state."""

    def __init__(self, model_dir: str, max_length: int = 64):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.encoder = AutoModel.from_pretrained(model_dir)
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, 1)
        self.max_length = max_length

    def forward(self, query: str, titles: Sequence[str]) -> torch.Tensor:
        batch = self.tokenizer([query] * len(titles), list(titles), padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        return self.head(self.encoder(**batch).last_hidden_state[:, 0]).squeeze(-1)

    @torch.no_grad()
    def score_many(self, queries: Sequence[RankingQuery]) -> dict[str, list[float]]:
        self.eval()
        scores = {q.query_id: self(q.query, [p.title for p in q.products]).tolist() for q in queries}
        self.train()
        return scores


def macro_pairwise(queries: Sequence[RankingQuery], scores: dict[str, list[float]]) -> float:
    values = [pairwise_accuracy([c.label for c in q.candidates], scores[q.query_id]) for q in queries]
    return statistics.fmean(v for v in values if v is not None)


def train_cross_encoder(train: Sequence[RankingQuery], dev: Sequence[RankingQuery], epochs: int, lr: float,
                        queries_per_step: int, seed: int) -> tuple[CrossEncoder, list[dict]]:
    from rich.progress import Progress

    torch.manual_seed(seed)
    model = CrossEncoder(str(minilm_model_dir()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = random.Random(seed)
    curve = [{"epoch": 0, "dev_pairwise_accuracy": macro_pairwise(dev, model.score_many(dev))}]
    steps = (len(train) + queries_per_step - 1) // queries_per_step
    with Progress(transient=True) as progress:
        task = progress.add_task("cross-encoder", total=epochs * steps)
        for epoch in range(1, epochs + 1):
            order = list(train)
            rng.shuffle(order)
            for i in range(0, len(order), queries_per_step):
                part = order[i : i + queries_per_step]
                loss = sum(ranknet_loss(model(q.query, [p.title for p in q.products]),
                                        torch.tensor([c.label for c in q.candidates])) for q in part) / len(part)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                progress.advance(task)
            curve.append({"epoch": epoch, "dev_pairwise_accuracy": macro_pairwise(dev, model.score_many(dev))})
            print(f"cross-encoder epoch {epoch}: dev pairwise {curve[-1]['dev_pairwise_accuracy']:.4f}", flush=True)
    return model, curve


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "rec" / "homedepot")
    parser.add_argument("--train-queries", type=int, default=0, help="first N training queries (0 = all)")
    parser.add_argument("--dev-queries", type=int, default=0, help="first N dev queries (0 = all)")
    parser.add_argument("--epochs", type=int, default=3, help="cross-encoder epochs (0 skips it)")
    parser.add_argument("--learning-rate", type=float, default=3e-5)
    parser.add_argument("--queries-per-step", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        sys.exit(f"no Home Depot data at {args.data}; pass --data or set PTALIGN_SHARED_DATA")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    train = load_relevance_jsonl(args.data / "train.jsonl")[: args.train_queries or None]
    dev = load_relevance_jsonl(args.data / "dev.jsonl")[: args.dev_queries or None]
    started = time.perf_counter()

    base = {name: RANKERS.get(name)() for name in ("bm25", "minilm")}
    scores = {split: {name: r.score_many(qs) for name, r in base.items()} for split, qs in (("train", train), ("dev", dev))}

    def features(split, queries):
        return [match_features(q, scores[split]["bm25"][q.query_id], scores[split]["minilm"][q.query_id]) for q in queries]

    weights = fit_fusion(features("train", train), [[c.label for c in q.candidates] for q in train])
    dev_scores = {"bm25": scores["dev"]["bm25"], "minilm": scores["dev"]["minilm"],
                  "learned fusion (BM25, MiniLM, lexical)": {q.query_id: (torch.from_numpy(f) @ weights).tolist()
                                                              for q, f in zip(dev, features("dev", dev))}}
    result = {"train_queries": len(train), "dev_queries": len(dev), "fusion_weights": dict(zip(FEATURES, weights.tolist()))}
    if args.epochs:
        t0 = time.perf_counter()
        model, curve = train_cross_encoder(train, dev, args.epochs, args.learning_rate, args.queries_per_step, args.seed)
        dev_scores["MiniLM cross-encoder (fine-tuned)"] = model.score_many(dev)
        result["cross_encoder"] = {"epochs": args.epochs, "learning_rate": args.learning_rate,
                                   "queries_per_step": args.queries_per_step, "seed": args.seed, "curve": curve,
                                   "seconds": round(time.perf_counter() - t0, 1)}
    evaluated = evaluate_methods(dev, dev_scores, DEFAULT_METRICS)
    result["methods"], result["stderr"] = evaluated["methods"], evaluated["stderr"]
    pairwise = {m: {q: row["pairwise_accuracy"] for q, row in pq.items()} for m, pq in evaluated["per_query"].items()}
    result["paired_vs_minilm"] = {m: paired_difference(pairwise[m], pairwise["minilm"]) for m in dev_scores if m != "minilm"}
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["command"] = "python benchmarks/rec_ceiling.py " + " ".join(argv if argv is not None else sys.argv[1:])
    from ptalign.config import atomic_write_text

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=1))
    rows = [json.dumps({"method": m, "query_id": q, **row}) for m, pq in evaluated["per_query"].items() for q, row in pq.items()]
    atomic_write_text(args.out.with_name(args.out.stem + "_per_query.jsonl"), "\n".join(rows) + "\n")
    print(markdown_table(result["methods"], result["stderr"]))
    for m, d in result["paired_vs_minilm"].items():
        print(f"{m} - minilm: {d['mean_difference']:+.3f} ± {d['stderr']:.3f} pairwise ({d['n_queries']} queries)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
