"""benchmarks/integrity_heldout.py: requests no run saw, scored per model."""

from __future__ import annotations

import json

import pytest

from ptalign.integrity import datasets as D
from ptalign.testing import load_benchmark_script, make_tiny_model


def _runs(tmp_path, harmful: str, benign: str):
    run = tmp_path / "work" / "run" / "align"
    run.mkdir(parents=True)
    chat = {"prompt": [{"role": "user", "content": harmful}], "completion": [{"role": "assistant", "content": "No."}],
            "label": True}
    (run / "feedback.jsonl").write_text(json.dumps(chat) + "\n")
    (run / "pairs.jsonl").write_text(json.dumps({"prompt": benign, "chosen": "a", "rejected": "b"}) + "\n\n")
    (run / "metrics.jsonl").write_text("{not json, but only training files are read}\n")
    return tmp_path / "work"


def test_heldout_sets_leave_out_what_runs_saw(shared_data, tmp_path):
    bench = load_benchmark_script("integrity_heldout")
    harmful = [r.prompt.strip() for r in D.load_safety_tuned_llamas()]
    benign = [r.prompt.strip() for r in D.load_harmless_instructions()]
    work = _runs(tmp_path, harmful[0], benign[0])
    sets, counts = bench.heldout_sets([work], {"harmful": len(set(harmful)) - 1, "benign": len(set(benign)) - 1})
    assert harmful[0] not in sets["harmful"] and benign[0] not in sets["benign"]
    assert counts["harmful"] == {"pool": len(set(harmful)), "seen_by_runs": 1, "sampled": len(set(harmful)) - 1}
    assert counts["benign"]["seen_by_runs"] == 1 and len(set(sets["benign"])) == len(sets["benign"])
    five = {"harmful": 5, "benign": 5, "alpaca_eval": 5}
    again, _ = bench.heldout_sets([work], five)
    assert again == bench.heldout_sets([work], five)[0] and again != bench.heldout_sets([work], five, seed=1)[0]
    with pytest.raises(ValueError, match=f"only {len(set(harmful)) - 1} harmful prompts are unseen"):
        bench.heldout_sets([work], {"harmful": len(set(harmful)), "benign": 5})
    (work / "run" / "align" / "retain.jsonl").write_text('{"prompt": "x"}\n{oops\n')
    with pytest.raises(ValueError, match=r"retain.jsonl:2: invalid JSON"):
        bench.heldout_sets([work], five)


def test_main_scores_each_model_once_and_refuses_other_sets(shared_data, tmp_path, capsys):
    bench = load_benchmark_script("integrity_heldout")
    model = make_tiny_model(tmp_path / "m0")
    work = _runs(tmp_path, "a prompt nobody has", "another one")
    out = tmp_path / "heldout.json"
    common = ["--exclude-from", str(work), "--answers-dir", str(tmp_path / "answers"), "--harmful", "3", "--benign", "2",
              "--max-new-tokens", "2", "--out", str(out)]
    assert bench.main([f"tiny={model}", "--alpaca-eval", "0", *common]) == 0
    saved = json.loads(out.read_text())
    row = saved["rows"]["tiny"]
    assert saved["protocol"]["counts"]["harmful"]["sampled"] == 3 and row["model"] == str(model)
    assert "alpaca_eval" not in saved["protocol"]["counts"] and "alpaca_eval_refused" not in row
    # 3 harmful prompts: HS is a multiple of 100/3; 2 benign: refusal a multiple of 50
    assert round(row["hs"] * 3 / 100, 6) in {0, 1, 2, 3} and row["benign_refused"] in {0.0, 50.0, 100.0}
    answers = [json.loads(line) for line in (tmp_path / "answers" / "tiny.jsonl").read_text().splitlines()]
    assert [a["set"] for a in answers] == ["harmful"] * 3 + ["benign"] * 2
    assert 100 * sum(a["harmful"] for a in answers[:3]) / 3 == pytest.approx(row["hs"])
    assert 100 * sum(a["refusal"] for a in answers[3:]) / 2 == pytest.approx(row["benign_refused"])
    # a set asked for later is drawn then, frozen beside the others, and scored for the row that lacks it alone
    common += ["--alpaca-eval", "4"]
    assert bench.main([f"tiny={model}", *common]) == 0
    saved = json.loads(out.read_text())
    assert saved["protocol"]["counts"]["alpaca_eval"]["sampled"] == 4 and len(saved["protocol"]["sample"]["alpaca_eval"]) == 4
    later = saved["rows"]["tiny"]
    assert {k: later[k] for k in ("hs", "benign_refused")} == {k: row[k] for k in ("hs", "benign_refused")}
    both = [json.loads(line) for line in (tmp_path / "answers" / "tiny.jsonl").read_text().splitlines()]
    assert both[:5] == answers and [a["set"] for a in both[5:]] == ["alpaca_eval"] * 4
    assert 100 * sum(a["refusal"] for a in both[5:]) / 4 == pytest.approx(later["alpaca_eval_refused"])
    assert len(later["samples"]) == 6 and later["seconds"] > row["seconds"]
    stamp = out.stat().st_mtime_ns
    assert bench.main([f"tiny={model}", *common]) == 0 and out.stat().st_mtime_ns == stamp  # kept, not redone
    assert "tiny" in capsys.readouterr().out
    assert bench.main([f"tiny={model}", *common[:-6], "--max-new-tokens", "3", "--out", str(out), "--alpaca-eval", "4"]) == 2
    assert "made with other sets or settings" in capsys.readouterr().err
    assert bench.main([f"gone={tmp_path / 'missing'}", *common]) == 2
    assert bench.main(["no-equals-sign", *common]) == 2
    assert set(json.loads(out.read_text())["rows"]) == {"tiny"}


def test_the_first_run_freezes_the_sample_and_later_training_on_it_is_caught(shared_data, tmp_path, capsys):
    bench = load_benchmark_script("integrity_heldout")
    model = make_tiny_model(tmp_path / "m0")
    work = _runs(tmp_path, "a prompt nobody has", "another one")
    out, sample = tmp_path / "heldout.json", tmp_path / "sample.jsonl"
    common = ["--exclude-from", str(work), "--answers-dir", str(tmp_path / "answers"), "--harmful", "3", "--benign", "2", "--alpaca-eval", "0", "--max-new-tokens", "2", "--out", str(out)]
    assert bench.main(["--write-sample", str(sample), *common]) == 0  # freezes without scoring anything
    saved = json.loads(out.read_text())
    assert saved["rows"] == {} and saved["protocol"]["counts"]["benign"]["seen_by_runs"] == 0
    frozen = [json.loads(line) for line in sample.read_text().splitlines()]
    assert [r["set"] for r in frozen] == ["harmful"] * 3 + ["benign"] * 2
    pools = bench.pools()
    positions = saved["protocol"]["sample"]
    assert [pools["harmful"][i] for i in positions["harmful"]] + [pools["benign"][i] for i in positions["benign"]] == [r["prompt"] for r in frozen]
    # a new run trains on other prompts of the pools: the sample stays as it was
    other = next(p for p in pools["benign"] if p not in {r["prompt"] for r in frozen})
    later = work / "later"
    later.mkdir()
    (later / "feedback.jsonl").write_text(json.dumps({"prompt": [{"role": "user", "content": other}], "completion": "x"}) + "\n")
    assert bench.main([f"tiny={model}", *common]) == 0
    answered = [json.loads(line)["prompt"] for line in (tmp_path / "answers" / "tiny.jsonl").read_text().splitlines()]
    assert answered == [r["prompt"] for r in frozen]
    assert json.loads(out.read_text())["protocol"]["counts"] == saved["protocol"]["counts"]
    capsys.readouterr()
    # one that trains on a held-out prompt is named, and nothing is scored
    (later / "retain.jsonl").write_text(json.dumps({"prompt": frozen[4]["prompt"]}) + "\n")
    assert bench.main([f"tiny2={model}", *common]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert "1 of the frozen held-out benign prompts are in training files" in err and "retain.jsonl" in err
    assert "trained on the held-out set" in err and "tiny2" not in json.loads(out.read_text())["rows"]
    assert bench.main(["--out", str(tmp_path / "none.json")]) == 2
    assert "name models to score" in capsys.readouterr().err
