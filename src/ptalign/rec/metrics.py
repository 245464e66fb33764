"""Ranking metrics for graded product relevance: NDCG@k and MRR (through ranx), pairwise accuracy
and Kendall's tau-b (hand-written / scipy), and the facade :func:`evaluate`.

Conventions, all per query and then averaged over the queries where the metric is defined:

* **Order.** A ranker returns one score per candidate, higher = better. Tied scores are broken
  by candidate position in the data (Home Depot candidates are in hashed order, so this is an
  arbitrary but deterministic tie-break) before NDCG / MRR see the ranking. Pairwise accuracy
  counts a tie as half right instead; Kendall's tau-b has its own tie correction.
* **NDCG@k** (Järvelin & Kekäläinen 2002, "Cumulated gain-based evaluation of IR techniques";
  ranx ``ndcg``, the *linear-gain* formulation, not Burges et al.'s ``2^g - 1``)::

      DCG@k = sum_{i=1..k} g_(i) / log2(i + 1),     NDCG@k = DCG@k / IDCG@k

  with ``g_(i)`` the gain of the candidate at rank i, exactly as the loader set it (Home Depot
  default (rating - 1) / 2; ESCI 1 / 0.1 / 0.01 / 0). ranx stores relevance as int64, so gains
  are multiplied by :data:`GAIN_SCALE` and rounded first: linear-gain NDCG is invariant to a
  positive scale, so this is exact up to 1e-6 relative rounding (and the reason the Burges form,
  which is not scale-invariant, is not offered). Undefined (left out) when every gain is 0.
* **MRR** = 1 / rank of the first *relevant* candidate, relevant meaning ``gain >=
  relevant_gain`` (default 0.75: Home Depot rating >= 2.5 under the linear gain; ESCI Exact
  only). Undefined (left out) for a query with no relevant candidate.
* **Pairwise accuracy** = share of candidate pairs with different labels that the scores order
  the same way; a pair with tied scores counts 0.5, so any constant scorer gets exactly 0.5.
  Undefined when all labels of the query are equal.
* **Kendall's tau-b** between labels and scores::

      tau_b = (C - D) / sqrt((n0 - n1) (n0 - n2)),   n0 = n (n - 1) / 2

  C / D = concordant / discordant pairs, n1 / n2 = pairs tied in labels / in scores. scipy's
  ``kendalltau`` when installed, the same formula by hand otherwise. Undefined when the query
  has fewer than 2 distinct labels; 0 when the scores are all equal (no ordering given).
"""

from __future__ import annotations

import math
import re
import statistics
import warnings
from typing import Callable, Sequence

from ptalign.rec.data import RankingQuery

GAIN_SCALE = 1_000_000
DEFAULT_METRICS = ("ndcg@5", "ndcg@10", "mrr", "pairwise_accuracy", "kendall_tau")
KNOWN_METRICS = ("ndcg", "ndcg@<k>", "mrr", "mrr@<k>", "pairwise_accuracy", "kendall_tau")
_RANX_NAME = re.compile(r"^(ndcg|mrr)(@([1-9][0-9]*))?$")

Scores = dict[str, Sequence[float]]
PerQuery = dict[str, dict[str, "float | None"]]


class UnknownMetricError(ValueError):
    """A metric name :func:`evaluate` does not know."""


# ---------------------------------------------------------------------------------------------
# per-query kernels (pure, plain lists)


def ranking_order(scores: Sequence[float]) -> list[int]:
    """Candidate indices best-first; ties keep input order (stable sort on -score)."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def pairwise_accuracy(labels: Sequence[float], scores: Sequence[float]) -> float | None:
    """Share of pairs with different labels ordered as the labels are; tied scores count 0.5.
    None when all labels are equal (no pair to judge)."""
    right, pairs = 0.0, 0
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            if labels[i] == labels[j]:
                continue
            pairs += 1
            agreement = (labels[i] - labels[j]) * (scores[i] - scores[j])
            right += 1.0 if agreement > 0 else 0.5 if agreement == 0 else 0.0
    return right / pairs if pairs else None


def kendall_tau_b(labels: Sequence[float], scores: Sequence[float]) -> float | None:
    """Kendall's tau-b by hand (see module docstring). None with < 2 distinct labels, 0 when
    the scores are all equal."""
    if len(set(labels)) < 2:
        return None
    concordant = discordant = tied_labels = tied_scores = 0
    n = len(labels)
    for i in range(n):
        for j in range(i + 1, n):
            dl, ds = labels[i] - labels[j], scores[i] - scores[j]
            tied_labels += dl == 0
            tied_scores += ds == 0
            if dl * ds > 0:
                concordant += 1
            elif dl * ds < 0:
                discordant += 1
    n0 = n * (n - 1) // 2
    denominator = math.sqrt((n0 - tied_labels) * (n0 - tied_scores))
    return (concordant - discordant) / denominator if denominator else 0.0


def kendall_tau(labels: Sequence[float], scores: Sequence[float]) -> float | None:
    """Kendall's tau-b through ``scipy.stats.kendalltau`` when scipy is installed, else by hand."""
    if len(set(labels)) < 2:
        return None
    try:
        from scipy.stats import kendalltau as scipy_kendalltau
    except ImportError:
        return kendall_tau_b(labels, scores)
    tau = scipy_kendalltau(labels, scores).statistic  # variant "b" is scipy's default
    return 0.0 if math.isnan(tau) else float(tau)


# ---------------------------------------------------------------------------------------------
# ranx-backed metrics (batched over queries)


def _ranx_run(queries: Sequence[RankingQuery], scores: Scores) -> dict[str, dict[str, float]]:
    """Run dict with tie-broken ranks as scores (doc id = candidate index)."""
    run = {}
    for q in queries:
        order = ranking_order(scores[q.query_id])
        run[q.query_id] = {str(i): float(len(order) - rank) for rank, i in enumerate(order)}
    return run


def _ranx_qrels(queries: Sequence[RankingQuery], relevance: Callable[[float], int]) -> dict[str, dict[str, int]]:
    return {
        q.query_id: {str(i): r for i, c in enumerate(q.candidates) if (r := relevance(c.gain)) > 0} for q in queries
    }


def _ranx_evaluate(qrels: dict, run: dict, names: list[str]) -> dict[str, dict[str, float | None]]:
    """ranx.evaluate on plain dicts -> {metric: {qid: value}}; queries without any relevant
    document are None (undefined) rather than ranx's 0."""
    try:
        import ranx
    except ImportError as e:
        raise ImportError("NDCG / MRR need ranx: pip install 'ptalign[rec]'") from e
    judged = [qid for qid in run if qrels[qid]]
    values: dict[str, dict[str, float | None]] = {name: dict.fromkeys(run) for name in names}
    if not judged:
        return values
    ranx_run = ranx.Run.from_dict({qid: run[qid] for qid in judged})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's uint64 -> int64 cast warning on hashed doc ids
        ranx.evaluate(ranx.Qrels.from_dict({qid: qrels[qid] for qid in judged}), ranx_run, names)
    for name in names:
        values[name].update({qid: float(ranx_run.scores[name][qid]) for qid in judged})
    return values


def ndcg(queries: Sequence[RankingQuery], scores: Scores, k: int | None = None) -> dict[str, float | None]:
    """Per-query linear-gain NDCG@k (all ranks when k is None), via ranx."""
    name = "ndcg" if k is None else f"ndcg@{k}"
    qrels = _ranx_qrels(queries, lambda g: round(g * GAIN_SCALE))
    return _ranx_evaluate(qrels, _ranx_run(queries, scores), [name])[name]


def mrr(
    queries: Sequence[RankingQuery], scores: Scores, relevant_gain: float = 0.75, k: int | None = None
) -> dict[str, float | None]:
    """Per-query reciprocal rank of the first candidate with ``gain >= relevant_gain``, via ranx."""
    name = "mrr" if k is None else f"mrr@{k}"
    qrels = _ranx_qrels(queries, lambda g: int(g >= relevant_gain))
    return _ranx_evaluate(qrels, _ranx_run(queries, scores), [name])[name]


def expected_random_ndcg(query: RankingQuery, k: int | None = None) -> float | None:
    """Exact expectation of NDCG@k under a uniformly random order of the candidates.

    Every candidate is equally likely at every rank, so with n candidates and mean gain g_bar::

        E[NDCG@k] = g_bar * sum_{r=1..min(n,k)} 1 / log2(r + 1) / IDCG@k

    (E[pairwise accuracy] = 0.5 and E[tau] = 0 exactly.) The noise-free random-order row for a
    data set where most candidates are relevant. None when every gain is 0.
    """
    gains = [c.gain for c in query.candidates]
    depth = len(gains) if k is None else min(k, len(gains))
    discounts = [1 / math.log2(r + 2) for r in range(depth)]
    ideal = sum(g * d for g, d in zip(sorted(gains, reverse=True), discounts))
    return sum(gains) / len(gains) * sum(discounts) / ideal if ideal > 0 else None


# ---------------------------------------------------------------------------------------------
# facade


def _check_metric_names(metrics: Sequence[str]) -> None:
    for name in metrics:
        if not (_RANX_NAME.match(name) or name in ("pairwise_accuracy", "kendall_tau")):
            raise UnknownMetricError(f"unknown metric {name!r}; known: {', '.join(KNOWN_METRICS)}")


def _check_scores(queries: Sequence[RankingQuery], scores: Scores) -> None:
    seen = set()
    for q in queries:
        if q.query_id in seen:
            raise ValueError(f"query_id {q.query_id!r} appears twice; query ids must be unique")
        seen.add(q.query_id)
        if not q.candidates:
            raise ValueError(f"query {q.query_id!r} has no candidates to rank")
        if q.query_id not in scores:
            raise ValueError(f"no scores for query {q.query_id!r}")
        if len(scores[q.query_id]) != len(q.candidates):
            raise ValueError(
                f"query {q.query_id!r}: {len(scores[q.query_id])} scores for {len(q.candidates)} candidates"
            )


def paired_difference(method: dict[str, float | None], base: dict[str, float | None]) -> dict:
    """Mean of ``method - base`` per query (query id -> figure) over the queries where both are
    defined, its standard error and n: methods scored on the same queries compare far more tightly
    this way than by their two means' own errors."""
    diffs = [method[q] - v for q, v in base.items() if v is not None and method.get(q) is not None]
    if len(diffs) < 2:
        raise ValueError("fewer than 2 queries with the metric defined for both")
    return {"mean_difference": statistics.fmean(diffs), "stderr": statistics.stdev(diffs) / len(diffs) ** 0.5,
            "n_queries": len(diffs)}


def _mean(values) -> float:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else math.nan


def evaluate(
    queries: Sequence[RankingQuery],
    scores: Scores,
    metrics: Sequence[str] = DEFAULT_METRICS,
    relevant_gain: float = 0.75,
) -> tuple[dict[str, float], PerQuery]:
    """Score a ranking run. ``scores[query_id]`` holds one score per candidate (higher = better).

    Returns ``(means, per_query)``: ``means[metric]`` averages the queries where the metric is
    defined (NaN if none); ``per_query[query_id][metric]`` is the value or None where undefined
    (see the module docstring). ``relevant_gain`` is MRR's relevance cut-off on the gain.
    """
    _check_metric_names(metrics)
    _check_scores(queries, scores)
    per_metric: dict[str, dict[str, float | None]] = {}
    ndcg_names = [m for m in metrics if m.startswith("ndcg")]
    mrr_names = [m for m in metrics if m.startswith("mrr")]
    if ndcg_names or mrr_names:
        run = _ranx_run(queries, scores)
        if ndcg_names:
            qrels = _ranx_qrels(queries, lambda g: round(g * GAIN_SCALE))
            per_metric.update(_ranx_evaluate(qrels, run, ndcg_names))
        if mrr_names:
            qrels = _ranx_qrels(queries, lambda g: int(g >= relevant_gain))
            per_metric.update(_ranx_evaluate(qrels, run, mrr_names))
    pairwise = {"pairwise_accuracy": pairwise_accuracy, "kendall_tau": kendall_tau}
    for name in metrics:
        if name in pairwise:
            per_metric[name] = {q.query_id: pairwise[name]([c.label for c in q.candidates], list(scores[q.query_id]))
                                for q in queries}  # fmt: skip
    per_query = {q.query_id: {m: per_metric[m][q.query_id] for m in metrics} for q in queries}
    means = {m: _mean(per_metric[m].values()) for m in metrics}
    return means, per_query
