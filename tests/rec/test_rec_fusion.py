"""benchmarks/rec_fusion.py: within-query z-scores by hand, the fused ranking on hand-made scores, and
what it refuses."""

from __future__ import annotations

import json

import pytest

from ptalign.testing import load_benchmark_script

fusion = load_benchmark_script("rec_fusion")


def test_zscores_by_hand():
    # mean 2, population variance (1 + 0 + 1) / 3 = 2/3
    assert fusion.zscores([1.0, 2.0, 3.0]) == pytest.approx([-(1.5 ** 0.5), 0.0, 1.5 ** 0.5])
    assert fusion.zscores([4.0, 4.0]) == [0.0, 0.0]
    # scale and shift do not matter; the parts weigh the same whatever their units
    assert fusion.zscores([10.0, 20.0, 30.0]) == pytest.approx(fusion.zscores([-1.0, 0.0, 1.0]))


def test_fuse_sums_standardised_parts():
    a = {"q": [1.0, 2.0, 3.0]}
    b = {"q": [300.0, 100.0, 200.0]}  # z: +1.2247, -1.2247, 0
    fused = fusion.fuse([a, b])["q"]
    assert fused == pytest.approx([0.0, -(1.5 ** 0.5), 1.5 ** 0.5])
    # a part whose scores are all equal in a query adds nothing there
    assert fusion.fuse([a, {"q": [7.0, 7.0, 7.0]}])["q"] == pytest.approx(fusion.zscores(a["q"]))


def _write_scores(results, relevance_file, scores_of):
    queries = [json.loads(line) for line in relevance_file.read_text().splitlines()]
    for file in {f for f, _ in fusion.SOURCES.values()}:
        methods = {m: {q["query_id"]: scores_of(m, q) for q in queries} for f, m in fusion.SOURCES.values() if f == file}
        (results / file).write_text(json.dumps(methods))


def test_end_to_end_on_the_fixture(tmp_path, relevance_file):
    results = tmp_path / "results"
    results.mkdir()
    labels = lambda q: [float(c["label"]) for c in q["candidates"]]  # noqa: E731
    # every part but bm25 orders the candidates exactly by label; bm25 exactly against it
    _write_scores(results, relevance_file,
                  lambda m, q: [-x for x in labels(q)] if m == "bm25" else labels(q))
    out = results / "fusion.json"
    assert fusion.main(["--dev", str(relevance_file), "--results", str(results), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    means = result["means"]
    assert means["minilm"]["pairwise_accuracy"] == 1.0 and means["bm25"]["pairwise_accuracy"] == 0.0
    # two equal and opposite parts cancel: every candidate ties, which pairwise accuracy scores 1/2
    assert means["bm25 + minilm"]["pairwise_accuracy"] == 0.5
    # two parts against one: the right order wins
    assert means["bm25 + minilm + prospect-ref QL"]["pairwise_accuracy"] == 1.0
    paired = result["paired_pairwise_accuracy"]["bm25 + minilm"]
    assert paired["minilm"]["mean_difference"] == pytest.approx(-0.5) and paired["bm25"]["mean_difference"] == pytest.approx(0.5)
    rows = [json.loads(line) for line in (results / "fusion_per_query.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * (len(fusion.SOURCES) + len(fusion.FUSIONS))


def test_refuses_parts_scored_on_other_queries(tmp_path, relevance_file):
    results = tmp_path / "results"
    results.mkdir()
    _write_scores(results, relevance_file, lambda m, q: [0.0] * len(q["candidates"]))
    scores = json.loads((results / "rec_reference_scores.json").read_text())
    scores["prospect-ref"].pop("q2")
    (results / "rec_reference_scores.json").write_text(json.dumps(scores))
    with pytest.raises(SystemExit, match="prospect-ref yes/no was scored on other queries"):
        fusion.main(["--dev", str(relevance_file), "--results", str(results), "--out", str(tmp_path / "f.json")])
    with pytest.raises(SystemExit, match="not found"):
        fusion.main(["--dev", str(relevance_file), "--results", str(tmp_path), "--out", str(tmp_path / "f.json")])
    assert not (tmp_path / "f.json").exists()
