import pytest

from ptalign.data.feedback import load_feedback
from ptalign.rec.data import load_relevance_jsonl
from ptalign.rec.selfalign import METHODS, RecTrainArgs, build_feedback, judge, label_targets
from ptalign.registry import UnknownNameError


def test_label_targets_judge_gains_against_the_query_mean(relevance_file):
    q1 = load_relevance_jsonl(relevance_file)[0]  # ratings 3, 1.67, 2.67, 1 -> gains 1, 0.335, 0.835, 0
    targets = label_targets(q1)
    mean = (1 + 0.335 + 0.835 + 0) / 4
    assert [t[0] for t in targets] == [True, False, True, False]
    assert [t[1] for t in targets] == pytest.approx([1 - mean, mean - 0.335, 0.835 - mean, mean])


def test_judge_decisions_weights_and_ties(relevance_file):
    queries = load_relevance_jsonl(relevance_file)
    utilities = {"q1": [2.0, 1.0, -1.0, -2.0], "q2": [0.0, 1.0, 2.0], "q3": [1.0, 1.0, 1.0, 1.0, 1.0]}
    descriptions = {q.query_id: [f"d{i}" for i in range(len(q.candidates))] for q in queries}
    rows = judge(queries, utilities, descriptions)
    assert len(rows) == 12  # no candidate sits exactly on its query's mean gain
    q1 = [r for r in rows if r.query_id == "q1"]
    assert [r.decision for r in q1] == [True, True, False, False]  # mean utility 0
    assert [r.target for r in q1] == [True, False, True, False]
    assert sum(r.weight for r in rows) / len(rows) == pytest.approx(1.0)  # weights rescaled to mean 1
    assert not any(r.decision for r in rows if r.query_id == "q3")  # all tied: nothing above the mean


def test_feedback_per_method(relevance_file, tmp_path):
    queries = load_relevance_jsonl(relevance_file)
    utilities = {"q1": [2.0, 1.0, -1.0, -2.0], "q2": [0.0, 1.0, 2.0], "q3": [5.0, 4.0, 3.0, 2.0, 1.0]}
    descriptions = {q.query_id: [f"note {i}" for i in range(len(q.candidates))] for q in queries}
    rows = judge(queries, utilities, descriptions)

    full = build_feedback(queries, rows, METHODS.get("selfalign"))
    assert len(full) == 2 * len(rows)  # a buyer and a seller example per judged candidate
    buyer = full[0]
    assert buyer["completion"] == [{"role": "assistant", "content": "Yes"}] and buyer["label"] is True
    assert "The seller says: note 0" in buyer["prompt"][1]["content"]
    seller = full[1]
    assert seller["completion"][0]["content"] == "note 0" and seller["label"] is True
    misled = full[2:4]  # q1 second candidate: buyer said yes to an irrelevant product
    assert misled[0]["completion"][0]["content"] == "Yes" and misled[0]["label"] is False and misled[1]["label"] is False

    kto = build_feedback(queries, rows, METHODS.get("kto"))
    assert len(kto) == len(rows) and "The seller says" not in kto[0]["prompt"][1]["content"]
    sft = build_feedback(queries, rows, METHODS.get("sft"))
    assert all(r["label"] is True for r in sft) and [r["completion"][0]["content"] for r in sft[:4]] == ["Yes", "No", "Yes", "No"]
    dpo = build_feedback(queries, rows, METHODS.get("dpo"))
    assert dpo[1]["chosen"][0]["content"] == "No" and dpo[1]["rejected"][0]["content"] == "Yes"

    for name, records in {"full": full, "dpo": dpo}.items():  # the trainer's loader accepts them
        import json

        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        assert len(load_feedback(path)) == len(records)


def test_unknown_method_lists_the_known_ones(relevance_file):
    with pytest.raises(UnknownNameError, match="known: dpo, kto, prospect-noseller, prospect-ref, reference-kto, selfalign, selfalign-kto, selfalign-ref, sft"):
        RecTrainArgs(train_data=str(relevance_file), method="selfalgn")
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        RecTrainArgs(train_data=str(relevance_file), rounds=0)
    with pytest.raises(ValueError, match="queries_per_step must be >= 1"):
        RecTrainArgs(train_data=str(relevance_file), queries_per_step=0)
