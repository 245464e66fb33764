"""The ``ptalign rec`` command line end to end on the tiny random Llama."""

import json

import pytest
from typer.testing import CliRunner

from ptalign.cli import app


def test_train_eval_rank_end_to_end(tiny_model_dir, relevance_file, tmp_path, seller_writes_text):
    cache = tmp_path / "cache"
    run = tmp_path / "rec-run"
    result = CliRunner().invoke(app, [
        "rec", "train", "--data", str(relevance_file), "--output-dir", str(run), "--model", str(tiny_model_dir),
        "--description-tokens", "6", "--batch-size", "4", "--cache-dir", str(cache),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "selfalign" and summary["seller"] is True
    assert (run / "round-1" / "model" / "model.safetensors").is_file()
    feedback = (run / "round-1" / "feedback.jsonl").read_text().splitlines()
    assert len(feedback) == 2 * 12  # 12 judged candidates, a buyer and a seller example each
    metrics = [json.loads(line) for line in (run / "round-1" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 6 and all("reference_point" in m for m in metrics)  # 24 examples / batch 4
    config = (run / "round-1" / "run" / "config.yaml").read_text()
    assert "name: prospect" in config and "loss_aversion: 2.25" in config
    assert len(list((cache / "seller").rglob("*.json"))) == 12  # 12 (query, product) descriptions
    first = json.loads(feedback[0])
    assert "The seller says: It is what you searched for." in first["prompt"][1]["content"]
    assert json.loads(feedback[1])["completion"][0]["content"] == "It is what you searched for."

    out = tmp_path / "eval"
    result = CliRunner().invoke(app, [
        "rec", "eval", "--data", str(relevance_file), "--model", f"aligned={run}", "--model", str(tiny_model_dir),
        "--baselines", "random,bm25", "--description-tokens", "6", "--out", str(out), "--cache-dir", str(cache),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    methods = json.loads((out / "metrics.json").read_text())["methods"]
    assert set(methods) == {"random", "bm25", "aligned", tiny_model_dir.name}
    assert all(0 <= m["pairwise_accuracy"] <= 1 and 0 < m["ndcg@10"] <= 1 for m in methods.values())
    assert len((out / "per_query.jsonl").read_text().splitlines()) == 4 * 3
    report = (out / "report.md").read_text()
    assert "| aligned |" in report and "pairwise acc." in report
    assert (out / "report.png").stat().st_size > 1000

    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(json.dumps({"product_id": str(i), "title": t}) + "\n" for i, t in enumerate(
        ["Cordless drill kit", "Drill bits", "LED bulb", "Garden hose", "Cordless drill, bare tool"])))
    result = CliRunner().invoke(app, [
        "rec", "rank", "--query", "cordless drill", "--catalog", str(catalog), "--model", str(run),
        "--first-stage", "3", "--top-k", "2", "--description-tokens", "6", "--cache-dir", str(cache),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "reference point z =" in result.output
    assert "│ 1 " in result.output and "│ 2 " in result.output and "│ 3 " not in result.output  # top-k rows


def test_train_full_parameter_exports_the_trained_model(tiny_model_dir, relevance_file, tmp_path):
    from safetensors.torch import load_file

    run = tmp_path / "rec-full"
    result = CliRunner().invoke(app, [
        "rec", "train", "--data", str(relevance_file), "--output-dir", str(run), "--model", str(tiny_model_dir),
        "--method", "kto", "--full", "--learning-rate", "1e-3", "--batch-size", "4", "--cache-dir", str(tmp_path / "cache"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    round_dir = run / "round-1"
    assert (round_dir / "run" / "final" / "model" / "config.json").is_file() and not (round_dir / "run" / "final" / "adapter").exists()
    assert "lora: false" in (round_dir / "run" / "config.yaml").read_text()
    base, new = load_file(tiny_model_dir / "model.safetensors"), load_file(round_dir / "model" / "model.safetensors")
    assert any(not (base[k] == new[k]).all() for k in base if "norm" in k)  # weights LoRA never touches moved


def test_eval_without_anything_fails_clearly(relevance_file, tmp_path):
    result = CliRunner().invoke(app, ["rec", "eval", "--data", str(relevance_file), "--baselines", "", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "nothing to evaluate" in result.output


def test_query_likelihood_run_is_evaluated_and_ranks_with_its_utility(tiny_model_dir, relevance_file, tmp_path, monkeypatch):
    from ptalign.models import load_model
    from ptalign.rec.buyer import Buyer
    from ptalign.rec.data import load_relevance_jsonl
    from ptalign.rec.metrics import evaluate

    run = tmp_path / "rec-ql"
    result = CliRunner().invoke(app, [
        "rec", "train", "--data", str(relevance_file), "--output-dir", str(run), "--model", str(tiny_model_dir),
        "--method", "prospect-ref", "--utility", "query-likelihood", "--cache-dir", str(tmp_path / "cache"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["utility"] == "query-likelihood"
    queries = load_relevance_jsonl(relevance_file)
    model, tokenizer = load_model(summary["model"])
    expected = {}
    for utility in ("query-likelihood", "yes-no"):
        scores = Buyer(model.eval(), tokenizer, utility=utility).utilities_many([(q.query, q.products, None) for q in queries])
        expected[utility] = evaluate(queries, {q.query_id: s for q, s in zip(queries, scores)}, ["kendall_tau"])[0]["kendall_tau"]
    assert expected["query-likelihood"] != pytest.approx(expected["yes-no"])
    for extra, utility in (([], "query-likelihood"), (["--utility", "yes-no"], "yes-no")):
        out = tmp_path / f"eval-{utility}"
        result = CliRunner().invoke(app, ["rec", "eval", "--data", str(relevance_file), "--model", f"ql={run}", "--baselines", "",
                                          "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *extra])
        assert result.exit_code == 0, result.output
        tau = json.loads((out / "metrics.json").read_text())["methods"]["ql"]["kendall_tau"]
        assert tau == pytest.approx(expected[utility], abs=1e-6), utility
    # rec rank on the run: its utility, and no seller unless asked (it was trained without one)
    import ptalign.rec.selfalign as selfalign

    seen, load_roles = [], selfalign.load_roles
    monkeypatch.setattr(selfalign, "load_roles", lambda spec, seller, *a, **k: seen.append((seller, k["utility"])) or
                        load_roles(spec, seller, *a, **k))
    for extra in ([], ["--seller"]):
        result = CliRunner().invoke(app, ["rec", "rank", "--query", "cordless drill", "--model", str(run), "--description-tokens",
                                          "4", "--cache-dir", str(tmp_path / "cache"), *extra])
        assert result.exit_code == 0, result.output
    assert seen == [(False, "query-likelihood"), (True, "query-likelihood")]


def test_query_likelihood_needs_a_reference_method(relevance_file, tmp_path):
    result = CliRunner().invoke(app, ["rec", "train", "--data", str(relevance_file), "--output-dir", str(tmp_path / "r"),
                                      "--method", "kto", "--utility", "query-likelihood"])
    assert result.exit_code == 2 and "needs utility 'yes-no'" in result.output
    result = CliRunner().invoke(app, ["rec", "train", "--data", str(relevance_file), "--output-dir", str(tmp_path / "r"),
                                      "--method", "prospect-ref", "--utility", "likelihood"])
    assert result.exit_code == 2 and "unknown buyer utility" in result.output


def test_resolve_ranker_reads_a_run_given_with_a_home_relative_path(tmp_path, monkeypatch):
    from ptalign.rec.selfalign import resolve_ranker

    monkeypatch.setenv("HOME", str(tmp_path))
    run = tmp_path / "runs" / "rec"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"model": "/models/final", "seller": False, "utility": "query-likelihood"}))
    assert resolve_ranker("~/runs/rec") == ("/models/final", "query-likelihood", False)
    assert resolve_ranker("~/runs/rec", utility="yes-no", seller=True) == ("/models/final", "yes-no", True)
    assert resolve_ranker("embedded") == ("embedded", "yes-no", True)  # a plain model: yes/no with the seller
