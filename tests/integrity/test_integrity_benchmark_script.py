"""benchmarks/integrity_kt_ipa.py --merge: methods run in parallel processes joined into one result."""

from __future__ import annotations

import json

import pytest

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
