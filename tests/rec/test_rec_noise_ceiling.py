"""benchmarks/rec_noise_ceiling.py: the noise estimate by hand, and the ceiling it infers against the
true oracle's accuracy on data drawn from a known model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ptalign.rec.data import load_relevance_jsonl
from ptalign.testing import load_benchmark_script

nc = load_benchmark_script("rec_noise_ceiling")


def test_noise_and_within_query_variance_by_hand(relevance_file, tmp_path):
    # pairs (3, 2), (2, 2), (2, 3), (2, 3): squared differences 1, 0, 1, 1 -> mean 3/4, halved
    assert nc.noise_variance([[3.0, 2.0], [2.0, 2.0, 3.0]]) == pytest.approx(0.375)
    with pytest.raises(ValueError, match="cannot be measured"):
        nc.noise_variance([[3.0]])
    queries = load_relevance_jsonl(relevance_file)
    # q1 3, 1.67, 2.67, 1; q2 3, 2, 1.33; q3 3, 2.33, 1.67, 1.33, 2.67: squares about each mean over 3 + 2 + 4 dof
    by_hand = sum(sum((x - sum(ls) / len(ls)) ** 2 for x in ls) for ls in
                  ([3, 1.67, 2.67, 1], [3, 2, 1.33], [3, 2.33, 1.67, 1.33, 2.67])) / 9
    assert nc.within_query_variance(queries) == pytest.approx(by_hand)
    assert nc.replicate_groups(queries) == []
    assert nc.gaussian_ceiling(1.0) == 1.0 and nc.gaussian_ceiling(0.0) == 0.5
    assert nc.gaussian_ceiling(0.5) == pytest.approx(0.75)  # arcsin(sqrt(1/2)) = pi/4


def _synthetic(folder, signal_var, noise_var, n_queries, seed):
    """Relevance files drawn from the module's own model, every query with one title judged twice;
    returns the true oracle's pairwise accuracy on dev (pairs whose labels differ)."""
    rng = np.random.default_rng(seed)
    grid = lambda x: float(np.clip(np.round(3 * x), 3, 9) / 3)
    agree = counted = 0
    for split in ("train", "dev"):
        rows = []
        for q in range(n_queries):
            mean = rng.uniform(2.0, 2.6)
            f = mean + math.sqrt(signal_var) * rng.standard_normal(6)
            f = np.append(f, f[0])  # the first title again, under another product id
            labels = [grid(x + math.sqrt(noise_var) * rng.standard_normal()) for x in f]
            titles = [f"product {q}-{i}" for i in range(6)] + [f"Product {q}-0"]
            rows.append({"query_id": f"{split}{q}", "query": f"query {q}", "candidates": [
                {"product_id": f"{split}{q}-{i}", "title": t, "label": f"{l:.2f}", "gain": l / 3}
                for i, (t, l) in enumerate(zip(titles, labels))]})
            if split == "dev":
                for i in range(7):
                    for j in range(i + 1, 7):
                        if labels[i] != labels[j] and f[i] != f[j]:
                            counted += 1
                            agree += (labels[i] > labels[j]) == (f[i] > f[j])
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return agree / counted


@pytest.mark.parametrize("signal_var, noise_var", [(0.08, 0.17), (0.25, 0.05)])
def test_the_inferred_ceiling_matches_the_true_oracle_on_data_from_a_known_model(tmp_path, signal_var, noise_var):
    truth = _synthetic(tmp_path, signal_var, noise_var, n_queries=400, seed=3)
    out = tmp_path / "ceiling.json"
    assert nc.main(["--data", str(tmp_path), "--bootstrap", "8", "--draws", "20", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["replicate_groups"] == 800 and result["replicate_pairs"] == 800
    assert result["ceiling_simulated"] == pytest.approx(truth, abs=0.03)
    assert result["simulation"]["signal_var_fit"] == pytest.approx(signal_var, rel=0.25)
    lo, hi = result["ceiling_simulated_95"]
    assert lo <= result["ceiling_simulated"] <= hi


def test_a_folder_without_dev_fails_with_its_path(tmp_path):
    with pytest.raises(SystemExit, match="dev.jsonl not found"):
        nc.main(["--data", str(tmp_path), "--out", str(tmp_path / "x.json")])
