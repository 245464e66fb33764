"""benchmarks/rec_selfalign.py's split runs: LLM scores computed on one machine (--defer-metrics),
finished with baselines, metrics and a report on another (--from-scores, --merge)."""

from __future__ import annotations

import json
import shutil

import pytest

from ptalign.testing import load_benchmark_script


@pytest.fixture
def homedepot_dir(relevance_file, tmp_path):
    folder = tmp_path / "homedepot"
    folder.mkdir()
    for split in ("train", "dev"):
        shutil.copy(relevance_file, folder / f"{split}.jsonl")
    return folder


def test_rec_deferred_scores_are_finished_with_baselines_and_merged(homedepot_dir, tiny_model_dir, tmp_path, monkeypatch):
    from ptalign.rec.baselines import minilm_model_dir

    if not minilm_model_dir().is_dir():
        pytest.skip("the embedded MiniLM is not installed (bash scripts/setup.sh --dev installs it)")
    monkeypatch.setenv("PTALIGN_CACHE", str(tmp_path / "cache"))
    rec = load_benchmark_script("rec_selfalign")
    common = ["--data", str(homedepot_dir), "--model", str(tiny_model_dir), "--train-queries", "2", "--dev-queries", "3",
              "--speed-queries", "0", "--description-tokens", "4", "--defer-metrics", "--work", str(tmp_path / "work")]
    first, second = tmp_path / "a" / "rec.json", tmp_path / "b" / "rec.json"
    assert rec.main(common + ["--methods", "sft", "--out", str(first)]) == 0
    assert rec.main(common + ["--methods", "kto", "prospect-ref", "--no-zero-shot-seller", "--out", str(second)]) == 0
    assert set(json.loads(second.with_name("rec_scores.json").read_text())) == {"zero-shot buyer", "kto", "prospect-ref"}
    deferred = json.loads(first.read_text())
    assert "metrics" not in deferred["methods"]["sft"]  # deferred: scores only
    scores = json.loads(first.with_name("rec_scores.json").read_text())
    assert set(scores) == {"zero-shot buyer", "zero-shot buyer + seller", "sft"}
    assert [len(v) for v in scores["sft"].values()] == [4, 3, 5]

    assert rec.main(["--data", str(homedepot_dir), "--from-scores", "--out", str(first), "--merge", str(second),
                     "--work", str(tmp_path / "work")]) == 0
    done = json.loads(first.read_text())
    assert list(done["methods"]) == ["random", "bm25", "minilm", "zero-shot buyer", "zero-shot buyer + seller", "sft", "kto",
                                    "prospect-ref"]
    for name, row in done["methods"].items():
        assert 0.0 <= row["metrics"]["pairwise_accuracy"] <= 1.0, name
    assert done["methods"]["kto"]["loss"] == "kto" and done["merged_from"] == ["rec.json"]
    assert done["methods"]["prospect-ref"]["loss"] == "prospect"
    assert done["methods"]["random"]["seeds"] == 20
    assert (tmp_path / "work" / "report" / "report.md").is_file()
    per_query = [json.loads(line) for line in first.with_name("rec_per_query.jsonl").read_text().splitlines()]
    assert {r["method"] for r in per_query} == set(done["methods"])


def test_rec_from_scores_refuses_other_dev_slices(homedepot_dir, tmp_path):
    rec = load_benchmark_script("rec_selfalign")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path, dev in ((a, 3), (b, 2)):
        path.write_text(json.dumps({"data": {"dev": f"dev[:{dev}]"}, "settings": {"dev_queries": dev}, "methods": {}}))
        path.with_name(f"{path.stem}_scores.json").write_text("{}")
    with pytest.raises(SystemExit, match="cannot merge"):
        rec.main(["--data", str(homedepot_dir), "--from-scores", "--out", str(a), "--merge", str(b)])
    with pytest.raises(SystemExit, match="needs"):
        rec.main(["--data", str(homedepot_dir), "--from-scores", "--out", str(tmp_path / "missing.json")])


def test_paired_differences_by_hand(tmp_path):
    rec_paired = load_benchmark_script("rec_paired")
    rows = [("a", "q1", 0.5), ("a", "q2", 1.0), ("a", "q3", None), ("b", "q1", 0.25), ("b", "q2", 0.5), ("b", "q3", 0.5)]
    path = tmp_path / "x_per_query.jsonl"
    path.write_text("".join(json.dumps({"method": m, "query_id": q, "pairwise_accuracy": v}) + "\n" for m, q, v in rows))
    assert rec_paired.main([str(path), "--base", "b", "--pair", "b:a"]) == 0
    out = json.loads((tmp_path / "x_paired.json").read_text())["comparisons"]
    assert out[0]["mean_difference"] == pytest.approx(0.375) and out[0]["n_queries"] == 2  # q3 undefined for a
    assert out[0]["stderr"] == pytest.approx(0.125)  # diffs .25, .5: sd .1768 / sqrt 2
    assert out[1]["mean_difference"] == pytest.approx(-0.375)
    with pytest.raises(SystemExit, match="unknown method"):
        rec_paired.main([str(path), "--pair", "a:c"])
    other = tmp_path / "y_per_query.jsonl"  # another run on the same queries: its new method joins, "b" stays the first file's
    other.write_text("".join(json.dumps({"method": m, "query_id": q, "pairwise_accuracy": v}) + "\n"
                             for m, q, v in [("c", "q1", 0.0), ("c", "q2", 0.0), ("c", "q3", 0.0), ("b", "q1", 9.0)]))
    assert rec_paired.main([str(path), "--base", "b", "--with", str(other)]) == 0
    joined = json.loads((tmp_path / "x_paired.json").read_text())
    assert joined["with"] == ["y_per_query.jsonl"]
    assert [(r["method"], r["mean_difference"]) for r in joined["comparisons"]] == [("a", pytest.approx(0.375)),
                                                                                     ("c", pytest.approx(-1.25 / 3))]
    other.write_text(json.dumps({"method": "c", "query_id": "q9", "pairwise_accuracy": 0.0}) + "\n")
    with pytest.raises(SystemExit, match="other queries"):
        rec_paired.main([str(path), "--with", str(other)])


def test_speed_only_measures_every_path_with_the_same_scores(homedepot_dir, tiny_model_dir, tmp_path, monkeypatch,
                                                              seller_writes_text):
    from ptalign.models import load_model
    from ptalign.rec.buyer import split_prompt
    from ptalign.rec.data import load_relevance_jsonl

    monkeypatch.setenv("PTALIGN_CACHE", str(tmp_path / "cache"))
    rec = load_benchmark_script("rec_selfalign")
    out = tmp_path / "speed.json"
    assert rec.main(["--data", str(homedepot_dir), "--model", str(tiny_model_dir), "--speed-only", "--speed-queries", "2",
                     "--dev-queries", "1", "--description-tokens", "4", "--out", str(out)]) == 0
    speed = json.loads(out.read_text())["speed"]
    assert speed["n_queries"] == 2 and speed["n_candidates"] == 7
    _, tokenizer = load_model(str(tiny_model_dir))
    queries = load_relevance_jsonl(homedepot_dir / "dev.jsonl")[:2]
    parts = [[split_prompt(tokenizer, q.query, p, None) for p in q.products] for q in queries]
    alone = speed["without_descriptions"]
    assert alone["tokens_per_pair"] == sum(len(a) + len(b) for ps in parts for a, b in ps)
    assert alone["tokens_shared_prefix"] == sum(len(ps[0][0]) + sum(len(b) for _, b in ps) for ps in parts)
    for label in ("with_descriptions", "without_descriptions"):
        s = speed[label]
        assert s["max_abs_score_diff_vs_batched"] < 1e-4 and s["max_abs_score_diff_vs_one_at_a_time"] < 1e-4
        assert s["shared_prefix_packed_candidates_per_s"] > 0 and s["token_ratio"] > 1
    assert speed["with_descriptions"]["tokens_per_pair"] > alone["tokens_per_pair"]


def test_fit_check_trains_and_ranks_the_same_queries(homedepot_dir, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PTALIGN_CACHE", str(tmp_path / "cache"))
    fit = load_benchmark_script("rec_fit_check")
    out, work = tmp_path / "fit.json", tmp_path / "work"
    argv = ["--data", str(homedepot_dir), "--model", str(tiny_model_dir), "--train-queries", "3", "--epochs", "2",
            "--dev-queries", "2", "--work", str(work), "--out", str(out)]
    assert fit.main(argv) == 0
    result = json.loads(out.read_text())
    assert [e["epoch"] for e in result["epochs_log"]] == [0, 1] and result["dev_queries"] == 2
    for when in ("before", "after"):
        assert set(result[when]) == {"train", "dev"} and 0 <= result[when]["train"]["pairwise_accuracy"] <= 1
    assert all(0 < e["loss"] < 10 and 0 <= e["right_side_of_reference"] <= 1 for e in result["epochs_log"])
    assert (work / "final" / "adapter" / "adapter_config.json").is_file()
    assert fit.main(argv) == 2  # a used work folder is refused, not silently reused
    assert fit.main([*argv[:1], str(tmp_path / "nowhere"), *argv[2:]]) == 2


def test_rec_query_likelihood_rows_are_named_with_their_utility(homedepot_dir, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PTALIGN_CACHE", str(tmp_path / "cache"))
    rec = load_benchmark_script("rec_selfalign")
    out = tmp_path / "rec.json"
    assert rec.main(["--data", str(homedepot_dir), "--model", str(tiny_model_dir), "--train-queries", "2", "--dev-queries", "3",
                     "--speed-queries", "0", "--defer-metrics", "--no-zero-shot-seller", "--work", str(tmp_path / "work"),
                     "--methods", "prospect-ref", "--utility", "query-likelihood", "--out", str(out)]) == 0
    scores = json.loads(out.with_name("rec_scores.json").read_text())
    assert set(scores) == {"zero-shot buyer (query-likelihood)", "prospect-ref (query-likelihood)"}
    assert rec.main(["--data", str(homedepot_dir), "--model", str(tiny_model_dir), "--dev-queries", "3", "--speed-queries", "0",
                     "--defer-metrics", "--no-zero-shot-buyer", "--no-zero-shot-seller", "--methods", "--out", str(out)]) == 0
    assert json.loads(out.with_name("rec_scores.json").read_text()) == {}  # no rows asked for, none scored
    assert json.loads((tmp_path / "work" / "prospect-ref" / "summary.json").read_text())["utility"] == "query-likelihood"
