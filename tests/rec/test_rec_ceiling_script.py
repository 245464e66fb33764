"""benchmarks/rec_ceiling.py: the RankNet loss by hand, the lexical features, and a run on the fixture."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from ptalign.rec.data import load_relevance_jsonl
from ptalign.testing import load_benchmark_script

ceiling = load_benchmark_script("rec_ceiling")


def test_ranknet_loss_by_hand():
    scores, labels = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([3.0, 1.0, 3.0])
    # ordered pairs with label_i > label_j: (0, 1) margin 2, (2, 1) margin 1; the tie (0, 2) is left out
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    assert float(ceiling.ranknet_loss(scores, labels)) == pytest.approx(expected, rel=1e-6)
    assert float(ceiling.ranknet_loss(scores, torch.tensor([2.0, 2.0, 2.0]))) == 0.0


def test_match_features_by_hand(relevance_file):
    query = load_relevance_jsonl(relevance_file)[0]  # "cordless drill" over four titles
    rows = ceiling.match_features(query, bm25=[3.0, 1.0, 3.0, 1.0], minilm=[0.5, 0.5, 0.5, 0.5])
    assert rows.shape == (4, len(ceiling.FEATURES))
    assert rows[:, 0].tolist() == [1.0, -1.0, 1.0, -1.0] and rows[:, 1].tolist() == [0.0] * 4
    # "DeWalt 20V Cordless Drill Kit" holds both query words; "Garden hose 50 ft." none
    assert rows[0, 2] == 1.0 and rows[3, 2] == 0.0 and rows[1, 4] == 1.0  # "Drill bit set" ends on the query's last word


def test_the_fusion_learns_the_sign_of_a_useful_feature():
    x = [torch.tensor([[1.0, 0.3], [0.0, 0.3], [0.5, 0.9]]).numpy() for _ in range(4)]
    weights = ceiling.fit_fusion(x, [[3.0, 1.0, 2.0]] * 4)
    assert weights[0] > 0.5 and abs(weights[1]) < abs(weights[0])


def test_ceiling_run_on_the_fixture(relevance_file, tmp_path):
    from ptalign.rec.baselines import minilm_model_dir

    if not minilm_model_dir().is_dir():
        pytest.skip("the embedded MiniLM is not installed (bash scripts/setup.sh --dev installs it)")
    data = tmp_path / "homedepot"
    data.mkdir()
    for split in ("train", "dev"):
        shutil.copy(relevance_file, data / f"{split}.jsonl")
    out = tmp_path / "ceiling.json"
    assert ceiling.main(["--data", str(data), "--epochs", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["methods"]) == {"bm25", "minilm", "learned fusion (BM25, MiniLM, lexical)",
                                      "MiniLM cross-encoder (fine-tuned)"}
    assert [p["epoch"] for p in result["cross_encoder"]["curve"]] == [0, 1]
    assert all(0 <= m["pairwise_accuracy"] <= 1 for m in result["methods"].values())
    rows = [json.loads(line) for line in out.with_name("ceiling_per_query.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * 3 and {r["query_id"] for r in rows} == {"q1", "q2", "q3"}
