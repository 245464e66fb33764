"""benchmarks/integrity_slice_seeds.py: methods seed by seed on one evaluation slice, and their means."""

from __future__ import annotations

import json

import pytest

from ptalign.testing import load_benchmark_script

ARGS = {"split": "eval", "advbench": 40, "harmbench": 24, "xstest": 30, "xstest_unsafe": 30, "sst2": 120,
        "seed": 0, "judge": "keyword", "max_new_tokens": 32, "batch_size": 16}


def _stage(hs: float, over: float = 0.0, fa: float = 70.0, **args) -> dict:
    return {"hs": hs, "hs_advbench": hs / 2, "hs_harmbench": 2 * hs, "over_refusal": over,
            "refusal_xstest_unsafe": 80.0, "fa": fa, "eval_args": ARGS | args}


def _benchmark_result(path, method, hs, over, fa):
    stages = dict(zip(("before", "after_mixed", "after_pure_bad"), (_stage(h, over, fa) for h in hs)))
    path.write_text(json.dumps({"methods": {method: stages}}))
    return f"{path}:{method}"


def _eval_files(folder, name, hs, over, fa, **args):
    for kind, h in zip(("before", "mixed", "pure_bad"), hs):
        (folder / f"{name}-{kind}.json").write_text(json.dumps(_stage(h, over, fa, **args)))
    return str(folder / name)


def test_rows_and_means_from_both_kinds_of_source(tmp_path):
    bench = load_benchmark_script("integrity_slice_seeds")
    a0 = _benchmark_result(tmp_path / "s0.json", "kt-ipa-rn", (10.0, 8.0, 20.0), 0.0, 80.0)
    a1 = _benchmark_result(tmp_path / "s1.json", "kt-ipa-rn", (4.0, 6.0, 30.0), 20.0, 74.0)
    b0 = _eval_files(tmp_path, "kto", (12.0, 12.0, 32.0), 6.0, 76.0)
    out = tmp_path / "seeds.json"
    assert bench.main([f"kt-ipa/0={a0}", f"kt-ipa/1={a1}", f"kto/0={b0}", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(r["method"], r["seed"]) for r in result["rows"]] == [("kt-ipa", "0"), ("kt-ipa", "1"), ("kto", "0")]
    kto = result["rows"][2]
    assert (kto["HS before"], kto["HS pure_bad"], kto["HarmBench pure_bad"], kto["FA mixed"]) == (12.0, 32.0, 64.0, 76.0)
    mean = result["means"]["kt-ipa"]
    assert mean["seeds"] == ["0", "1"]
    assert mean["HS before"] == pytest.approx(7.0) and mean["HS pure_bad"] == pytest.approx(25.0)
    assert mean["AdvBench pure_bad"] == pytest.approx(12.5) and mean["over-refusal before"] == pytest.approx(10.0)
    assert mean["FA mixed"] == pytest.approx(77.0)
    assert result["slice"]["advbench"] == 40 and "integrity_slice_seeds.py kt-ipa/0=" in result["command"]


def test_refuses_rows_on_another_slice_or_missing_parts(tmp_path, capsys):
    bench = load_benchmark_script("integrity_slice_seeds")
    a0 = _benchmark_result(tmp_path / "s0.json", "kt-ipa-rn", (10.0, 8.0, 20.0), 0.0, 80.0)
    wider = _eval_files(tmp_path, "kto", (12.0, 12.0, 32.0), 6.0, 76.0, advbench=255)
    out = tmp_path / "seeds.json"
    assert bench.main([f"kt-ipa/0={a0}", f"kto/0={wider}", "--out", str(out)]) == 2
    assert "another slice" in capsys.readouterr().out and not out.exists()
    assert bench.main([f"kt-ipa/0={tmp_path / 's0.json'}:kto", "--out", str(out)]) == 2
    assert "no method 'kto'" in capsys.readouterr().out
    assert bench.main([f"kto/0={tmp_path / 'absent'}", "--out", str(out)]) == 2
    assert "absent-before.json: no such file" in capsys.readouterr().out
    assert bench.main([f"kto={a0}", "--out", str(out)]) == 2
    assert "METHOD/SEED" in capsys.readouterr().out and not out.exists()
