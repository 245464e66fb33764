"""benchmarks/integrity_kt_ipa.py --merge: methods run in parallel processes joined into one result."""

from __future__ import annotations

import json

import pytest
import torch

from ptalign.testing import load_benchmark_script


def _results(methods: dict, lr: float = 2e-4) -> dict:
    config = {"model": "embedded", "methods": list(methods), "align": {"learning_rate": lr}}
    return {"config": config, "methods": methods, "complete": True, "device": "cpu (2 threads)"}


def _row(hs_before: float, hs_after: float, fa: float, over: float) -> dict:
    after = {"hs": hs_after, "fa": fa, "hs_by_epoch": {"0": hs_before, "2": hs_after}}
    return {"before": {"hs": hs_before, "over_refusal": over, "fa": 70.0}, "after_mixed": after,
            "after_pure_bad": dict(after)}


def test_integrity_merge_joins_methods_and_checks_goals(shared_data, tmp_path):
    bench = load_benchmark_script("integrity_kt_ipa")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_results({"none": _row(96.0, 98.0, 80.0, 2.0)})))
    b.write_text(json.dumps(_results({"kt-ipa": _row(4.0, 5.0, 79.5, 12.0)})))
    out = tmp_path / "merged.json"
    bench.merge_runs([a, b], out, tmp_path / "work")
    merged = json.loads(out.read_text())
    assert list(merged["methods"]) == ["none", "kt-ipa"] and merged["config"]["methods"] == ["none", "kt-ipa"]
    goals = merged["goals"]["kt-ipa"]
    assert goals["hs_after_attack_le_5"] is True and goals["hs_after_attack_le_third_of_undefended"] is True
    assert goals["fa_within_1_point"] is True and goals["over_refusal_le_10"] is False  # 12% > 10%
    assert merged["device"] == "cpu (2 threads)" and merged["anchor_booster_table1_llama2_7b_p0.1"]
    assert (tmp_path / "work" / "report.md").read_text().count("| kt-ipa |") == 1

    other = tmp_path / "other.json"
    other.write_text(json.dumps(_results({"kto": _row(50.0, 60.0, 79.0, 3.0)}, lr=1e-3)))
    with pytest.raises(SystemExit, match="another configuration"):
        bench.merge_runs([a, other], tmp_path / "x.json", tmp_path / "work2")


def test_tradeoff_pareto_front_correlation_and_inputs(tmp_path, capsys):
    from ptalign.integrity.report import pareto_front, tradeoff_points

    bench = load_benchmark_script("integrity_tradeoff")
    main = _results({"none": _row(96.0, 98.0, 80.0, 2.0), "sft": _row(20.0, 50.0, 80.0, 70.0),
                     "kt-ipa": _row(60.0, 70.0, 75.0, 10.0)})
    ablation = _results({"kt-ipa": _row(65.0, 70.0, 75.0, 12.0)})  # beaten by the benchmark's kt-ipa
    other_slice = {**_results({"kt-ipa": _row(1.0, 1.0, 1.0, 1.0)}), "config": {"eval": {"advbench": 3}}}
    folder = tmp_path / "results"
    folder.mkdir()
    for name, data in [("integrity_kt_ipa.json", main), ("integrity_ablation_x.json", ablation),
                       ("integrity_probe.json", other_slice), ("integrity_p1.json", ablation),
                       ("integrity_judge_agreement.json", {"rows": []})]:
        (folder / name).write_text(json.dumps(data))
    main["merged_from"] = [str(folder / "integrity_p1.json")]
    (folder / "integrity_kt_ipa.json").write_text(json.dumps(main))
    # the other evaluation slice, the merged partial run and the non-result are left out
    assert [p.name for p in bench.default_inputs(folder)] == ["integrity_ablation_x.json", "integrity_kt_ipa.json"]

    points = tradeoff_points(main, "benchmark") + tradeoff_points(ablation, "x")
    front = pareto_front(points, "hs_after_mixed")
    assert [(p["run"], p["method"]) for p in front] == [("benchmark", "none"), ("benchmark", "kt-ipa"), ("benchmark", "sft")]
    out = tmp_path / "tradeoff.json"
    assert bench.main([str(folder / "integrity_kt_ipa.json"), str(folder / "integrity_ablation_x.json"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    over, hs = [2.0, 70.0, 10.0, 12.0], [96.0, 20.0, 60.0, 65.0]
    assert result["correlation_with_over_refusal"]["before"] == pytest.approx(_pearson(over, hs))
    assert len(result["points"]) == 4 and (tmp_path / "tradeoff.png").stat().st_size > 10_000
    assert "kt-ipa*" in capsys.readouterr().out
    assert bench.main([str(folder / "integrity_judge_agreement.json"), "--out", str(tmp_path / "bad.json")]) == 2
    assert not (tmp_path / "bad.json").exists()


def _pearson(xs, ys):
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    return cov / (sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys)) ** 0.5


def test_report_table_shows_prefilled_hs_only_where_evaluated():
    from ptalign.integrity.report import markdown_table

    plain = _results({"none": _row(96.0, 98.0, 80.0, 2.0)})
    assert "prefilled" not in markdown_table(plain)
    row = _row(60.0, 70.0, 75.0, 10.0)
    row["before"]["hs_prefill_advbench"] = 42.5
    header, _, line = markdown_table(_results({"kt-ipa": row, "none": _row(96.0, 98.0, 80.0, 2.0)})).splitlines()[:3]
    assert "| HS prefilled |" in header and "HS prefilled mixed" not in header
    assert line.split(" | ")[header.split(" | ").index("HS prefilled")] == "42.5"


def test_prefill_script_evaluates_each_model_once(tiny_model_dir, shared_data, tmp_path, capsys):
    bench = load_benchmark_script("integrity_prefill")
    out = tmp_path / "prefill.json"
    argv = [f"tiny={tiny_model_dir}", "--advbench", "2", "--max-new-tokens", "3", "--out", str(out),
            "--data-root", str(shared_data)]
    assert bench.main(argv) == 0
    (row,) = json.loads(out.read_text())["rows"]
    saved = json.loads((tmp_path / "prefill" / "tiny.json").read_text())
    assert row["hs_prefill_advbench"] == saved["hs_prefill_advbench"] and len(saved["samples"]["advbench_prefill"]) == 2
    saved["hs_prefill_advbench"] = 12.5  # a saved model's figures are reused, not recomputed
    (tmp_path / "prefill" / "tiny.json").write_text(json.dumps(saved))
    assert bench.main(argv) == 0 and json.loads(out.read_text())["rows"][0]["hs_prefill_advbench"] == 12.5
    assert bench.main([f"x={tmp_path}", "--out", str(out)]) == 2
    assert bench.main(["no-equals-sign", "--out", str(out)]) == 2
    assert "(no config.json)" in capsys.readouterr().out
    # --split eval draws the AdvBench prompts from its evaluation half only
    from ptalign.integrity.datasets import prompt_half

    halves = tmp_path / "halves.json"
    assert bench.main([*argv[:-4], "--out", str(halves), "--split", "eval", "--data-root", str(shared_data)]) == 0
    shown = json.loads((tmp_path / "halves" / "tiny.json").read_text())["samples"]["advbench"]
    assert shown and all(prompt_half(s["prompt"]) == "eval" for s in shown)
    assert json.loads(halves.read_text())["eval"]["split"] == "eval"


def test_report_shows_over_refusal_by_xstest_type(tmp_path):
    from ptalign.integrity.report import by_type_table, write_report

    assert by_type_table(_results({"none": _row(96.0, 98.0, 80.0, 2.0)})) is None
    row = _row(10.0, 20.0, 75.0, 25.0)
    row["before"]["over_refusal_by_type"] = {"homonyms": 50.0, "safe_contexts": 0.0}
    none = _row(96.0, 98.0, 80.0, 0.0)
    none["before"]["over_refusal_by_type"] = {"homonyms": 0.0}
    table = by_type_table(_results({"kt-ipa": row, "none": none}))
    assert table.splitlines()[0] == "| method | homonyms | safe_contexts |"
    assert table.splitlines()[2:] == ["| kt-ipa | 50 | 0 |", "| none | 0 | - |"]
    report = write_report(_results({"kt-ipa": row}), tmp_path).read_text()
    assert "Over-refusal by XSTest prompt type" in report and "| kt-ipa | 50 | 0 |" in report


def test_harmful_nll_is_the_token_weighted_mean_over_every_batch(tiny_model_dir, tmp_path, shared_data):
    from ptalign.batches import prepare_data
    from ptalign.data import save_feedback
    from ptalign.integrity.recipes import simulated_attack_records
    from ptalign.integrity.tamper import CycledBatches, harmful_nll
    from ptalign.losses import build_loss
    from ptalign.models import load_model
    from ptalign.reference import CompletionScorer

    model, tok = load_model(str(tiny_model_dir))
    path = tmp_path / "harm.jsonl"
    save_feedback(simulated_attack_records(5, data_root=str(shared_data)), path)
    batches = CycledBatches(prepare_data(str(path), tok, build_loss("sft"), 64, "keep_start", 2, 0), tok.pad_token_id, 64)
    scorer = CompletionScorer(model)
    total = tokens = 0.0
    with torch.no_grad():
        for _ in batches.data.batches:
            b = batches.next_batch("cpu")
            logps, n = scorer(b["input_ids"], b["attention_mask"], b["completion_mask"])
            total, tokens = total - float(logps.sum()), tokens + float(n.sum())
    assert len(batches.data.batches) >= 2
    batches.next_batch("cpu")  # the cursor now points mid-cycle: every batch is still read once
    assert harmful_nll(scorer, batches) == pytest.approx(total / tokens, rel=1e-6)


def test_attack_radius_script_finds_the_overshoot(tiny_model_dir, tmp_path, shared_data):
    bench = load_benchmark_script("integrity_attack_radius")
    out = tmp_path / "radius.json"
    assert bench.main(["--model", str(tiny_model_dir), "--radii", "0.001,200", "--steps", "1", "--examples", "4",
                       "--attacked", f"same={tiny_model_dir}", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["point"] for r in rows] == ["no attack", "simulated", "simulated", "attack same"]
    before, small, huge, same = (r["nll"] for r in rows)
    assert abs(small - before) < 0.05 * before  # a tiny step barely moves the fit
    assert huge > before + 1  # a step far past the gradient's reach breaks the model instead of attacking it
    assert same == pytest.approx(before, rel=1e-6) and rows[-1]["delta_nll"] == pytest.approx(0, abs=1e-4)
    assert not list(tmp_path.glob("radius/*"))  # the tokenized shared data went to a temporary folder
    with pytest.raises(SystemExit):
        bench.main(["--radii", "0,1", "--out", str(out)])
