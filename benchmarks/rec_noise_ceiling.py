"""How well can *any* title-based ranker order Home Depot's candidates? The label-noise ceiling.

Each Home Depot label is the mean of three raters' ratings, and the raters saw the product page,
not only the title. Within a query the same title sometimes appears twice, under two product ids
judged separately: the two labels are two independent measurements of the same (query, title),
so their spread is the label noise that a ranker reading titles cannot predict:

    noise variance         sigma^2 = mean over replicate pairs of (l_a - l_b)^2 / 2
    within-query variance  s^2     = pooled variance of the labels around their query's mean
    reliability            rho^2   = (s^2 - sigma^2) / s^2   (the share of label variance a ranker can know)

The ceiling is the pairwise accuracy of an *oracle* that scores each candidate by its expected
label f (the best any title-based scorer can do) on pairs whose observed labels differ:

    Gaussian, continuous labels:  1/2 + arcsin(rho) / pi
    simulated, the data's grid:   f ~ N(query mean, V_f), l = round(3 (f + e)) / 3 clipped to [1, 3],
                                  e ~ N(0, V_e), on the dev set's own queries and candidate counts;
                                  V_f and V_e chosen so that the simulated labels reproduce the
                                  observed s^2 and replicate sigma^2 (method of moments), pairs with
                                  equal simulated labels left out as in the metric.

A bootstrap over replicate groups gives the interval. If the two copies of a title were judged by
overlapping raters, their labels agree more than independent ones would, sigma^2 is too small and
the ceiling too high: read it as an upper estimate.

    python benchmarks/rec_noise_ceiling.py     # -> benchmarks/results/rec_noise_ceiling.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from ptalign.config import atomic_write_text
from ptalign.rec.data import RankingQuery, load_relevance_jsonl

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "rec" / "homedepot"
MEASURED = {"random order": 0.496, "BM25": 0.559, "MiniLM bi-encoder": 0.570,
            "MiniLM cross-encoder, fine-tuned (rec_ceiling.py)": 0.573, "best LLM row (query likelihood)": 0.556}
"""Dev pairwise accuracies measured by the other rec benchmarks (README tables), for the table."""
GOAL = 0.65


def replicate_groups(queries: list[RankingQuery]) -> list[list[float]]:
    """Labels of each title that appears more than once within one query (case and spacing ignored)."""
    groups = []
    for q in queries:
        by_title: dict[str, list[float]] = defaultdict(list)
        for c in q.candidates:
            by_title[" ".join(c.product.title.lower().split())].append(c.label)
        groups += [labels for labels in by_title.values() if len(labels) > 1]
    return groups


def noise_variance(groups: list[list[float]]) -> float:
    """sigma^2: half the mean squared difference over every pair of replicates."""
    diffs = [(a - b) ** 2 for g in groups for a, b in itertools.combinations(g, 2)]
    if not diffs:
        raise ValueError("no title appears twice within a query: the label noise cannot be measured")
    return sum(diffs) / len(diffs) / 2


def within_query_variance(queries: list[RankingQuery]) -> float:
    """s^2: the labels' variance around their own query's mean, pooled over queries (n - 1 per query)."""
    squares, dof = 0.0, 0
    for q in queries:
        labels = [c.label for c in q.candidates]
        if len(labels) > 1:
            mean = sum(labels) / len(labels)
            squares += sum((x - mean) ** 2 for x in labels)
            dof += len(labels) - 1
    return squares / dof


def gaussian_ceiling(reliability: float) -> float:
    """Sign agreement of (f_i - f_j) and (l_i - l_j) when l = f + e, all Gaussian: 1/2 + arcsin(rho)/pi."""
    return 0.5 + math.asin(math.sqrt(min(max(reliability, 0.0), 1.0))) / math.pi


def _grid(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(3 * x), 3, 9) / 3


def simulate(queries: list[RankingQuery], signal_var: float, noise_var: float, draws: int, rng: np.random.Generator) -> dict:
    """One simulation of the dev set (see the module docstring): the oracle's pairwise accuracy, and
    the simulated labels' within-query variance and replicate noise variance."""
    size = max(len(q.candidates) for q in queries)
    mask = np.array([[i < len(q.candidates) for i in range(size)] for q in queries])
    means = np.array([np.mean([c.label for c in q.candidates]) for q in queries])[:, None]
    f = means[None] + math.sqrt(signal_var) * rng.standard_normal((draws, len(queries), size))
    labels = _grid(f + math.sqrt(noise_var) * rng.standard_normal(f.shape))
    twin = _grid(f + math.sqrt(noise_var) * rng.standard_normal(f.shape))  # a second, independent judgement
    i, j = np.triu_indices(size, 1)
    valid = (mask[:, i] & mask[:, j])[None]
    dl, df = labels[..., i] - labels[..., j], f[..., i] - f[..., j]
    counted = valid & (dl != 0)
    n = mask.sum(1, keepdims=True)
    centred = np.where(mask[None], labels - (labels * mask[None]).sum(-1, keepdims=True) / n[None], 0.0)
    return {"ceiling": float(((np.sign(dl) == np.sign(df)) & counted).sum() / counted.sum()),
            "within_var": float((centred ** 2).sum() / (draws * (n - 1).sum())),
            "noise_var": float((((labels - twin) ** 2 / 2) * mask[None]).sum() / (draws * mask.sum()))}


def fit_and_simulate(queries: list[RankingQuery], within_var: float, noise_var: float, draws: int, seed: int,
                     iterations: int = 8) -> dict:
    """V_f, V_e such that the simulated grid labels reproduce ``within_var`` and ``noise_var`` (fixed-point
    updates on the moment gaps, the same random numbers each time), and the oracle's ceiling there."""
    v_f, v_e = max(within_var - noise_var, 1e-6), noise_var
    for _ in range(iterations):
        sim = simulate(queries, v_f, v_e, draws, np.random.default_rng(seed))
        v_f = max(v_f + within_var - sim["within_var"] - (noise_var - sim["noise_var"]), 1e-6)
        v_e = max(v_e + noise_var - sim["noise_var"], 1e-6)
    sim = simulate(queries, v_f, v_e, draws, np.random.default_rng(seed))
    return {**sim, "signal_var_fit": v_f, "noise_var_fit": v_e}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with train.jsonl and dev.jsonl")
    parser.add_argument("--bootstrap", type=int, default=200, help="resamples of the replicate groups")
    parser.add_argument("--draws", type=int, default=40, help="simulated dev sets per fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rec_noise_ceiling.json")
    args = parser.parse_args(argv)
    if not (args.data / "dev.jsonl").is_file():
        sys.exit(f"{args.data / 'dev.jsonl'} not found: pass --data (the shared Home Depot folder)")
    t0 = time.perf_counter()
    dev = load_relevance_jsonl(args.data / "dev.jsonl")
    everything = dev + (load_relevance_jsonl(args.data / "train.jsonl") if (args.data / "train.jsonl").is_file() else [])
    groups = replicate_groups(everything)
    noise, within = noise_variance(groups), within_query_variance(dev)
    point = fit_and_simulate(dev, within, noise, args.draws, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    boot = []
    for _ in range(args.bootstrap):
        resampled = [groups[k] for k in rng.integers(0, len(groups), len(groups))]
        boot_noise = noise_variance(resampled)
        boot.append({"gaussian": gaussian_ceiling(1 - boot_noise / within),
                     "simulated": fit_and_simulate(dev, within, boot_noise, max(args.draws // 4, 4), args.seed)["ceiling"]})

    def interval(key):
        values = sorted(b[key] for b in boot)
        return [values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))]] if values else None

    result = {
        "replicate_groups": len(groups), "replicate_pairs": sum(len(g) * (len(g) - 1) // 2 for g in groups),
        "replicate_pairs_with_different_labels": sum(a != b for g in groups for a, b in itertools.combinations(g, 2)),
        "noise_var": noise, "within_query_var_dev": within, "reliability": 1 - noise / within,
        "ceiling_gaussian": gaussian_ceiling(1 - noise / within), "ceiling_gaussian_95": interval("gaussian"),
        "ceiling_simulated": point["ceiling"], "ceiling_simulated_95": interval("simulated"), "simulation": point,
        "measured_dev_pairwise": MEASURED, "goal": GOAL, "bootstrap": args.bootstrap, "draws": args.draws,
        "seconds": time.perf_counter() - t0, "command": " ".join(["python", "benchmarks/rec_noise_ceiling.py", *(argv or sys.argv[1:])]),
    }
    atomic_write_text(args.out, json.dumps(result, indent=1))
    table = Table(title=f"Home Depot dev: pairwise accuracy against the label-noise ceiling ({args.out})")
    table.add_column("what")
    table.add_column("pairwise accuracy", justify="right")
    for name, value in MEASURED.items():
        table.add_row(name, f"{value:.3f}")
    table.add_row("[bold]goal", f"{GOAL:.3f}")
    lo, hi = result["ceiling_simulated_95"] or (float("nan"), float("nan"))
    table.add_row("[bold]oracle ceiling, simulated on the label grid", f"{point['ceiling']:.3f} ({lo:.3f}-{hi:.3f})")
    lo, hi = result["ceiling_gaussian_95"] or (float("nan"), float("nan"))
    table.add_row("oracle ceiling, Gaussian closed form", f"{result['ceiling_gaussian']:.3f} ({lo:.3f}-{hi:.3f})")
    Console().print(table)
    Console().print(f"{result['replicate_pairs']} replicate pairs in {len(groups)} titles "
                    f"({result['replicate_pairs_with_different_labels']} with different labels): noise variance {noise:.3f}, "
                    f"within-query variance {within:.3f}, reliability {result['reliability']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
