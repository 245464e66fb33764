"""The buyer trained against each query's reference point (ptalign.rec.listwise)."""

import json
import math

import pytest
import torch

from ptalign.losses import build_loss
from ptalign.rec.data import load_relevance_jsonl
from ptalign.rec.listwise import (
    ReferenceTrainSettings,
    referenced_inputs,
    referenced_queries,
    train_buyer_against_reference,
)
from ptalign.rec.metrics import evaluate
from ptalign.rec.selfalign import METHODS, RecTrainArgs, self_align
from ptalign.rec.seller import SELLER_SYSTEM

KT = {"gain_curvature": 0.88, "loss_curvature": 0.88, "loss_aversion": 2.25}


def test_inputs_labels_weights_and_per_query_reference_points(relevance_file):
    q1, q2 = load_relevance_jsonl(relevance_file)[:2]  # gains q1: 1, .335, .835, 0; q2: 1, .5, .165
    items = referenced_queries([q1, q2])
    m1, m2 = (1 + 0.335 + 0.835) / 4, (1 + 0.5 + 0.165) / 3
    raw = [1 - m1, m1 - 0.335, 0.835 - m1, m1, 1 - m2, m2 - 0.5, m2 - 0.165]
    scale = sum(raw) / len(raw)
    u = torch.tensor([2.0, 1.0, -1.0, -2.0, 0.0, 1.0, 2.0], requires_grad=True)
    inputs = referenced_inputs(u, items)
    assert inputs.labels.tolist() == [True, False, True, False, True, False, False]
    assert inputs.weights.tolist() == pytest.approx([w / scale for w in raw])
    assert inputs.reference_point.tolist() == pytest.approx([0.0] * 4 + [1.0] * 3)  # each query's mean utility
    assert inputs.reference.tolist() == [0.0] * 7

    losses = build_loss("prospect", beta=1.0, reference_point="fixed", **KT)(inputs).losses
    # q1 candidate 0, a gain 2 above its reference point: v = 2^0.88; q1 candidate 1, a loss judged
    # 1 above the reference point: x = -(1 - 0) = -1, v = -2.25 * 1^0.88
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert losses[0].item() == pytest.approx(raw[0] / scale * (1 - sigmoid(2**0.88)), rel=1e-5)
    assert losses[1].item() == pytest.approx(raw[1] / scale * (1 - sigmoid(-2.25)), rel=1e-5)
    losses.sum().backward()
    assert u.grad[0] < 0 and u.grad[1] > 0  # descending raises the gain, lowers the loss


def test_a_shift_of_a_querys_utilities_changes_nothing(relevance_file):
    items = referenced_queries(load_relevance_jsonl(relevance_file))
    loss = build_loss("prospect", beta=1.0, reference_point="fixed", **KT)
    u = torch.randn(12, generator=torch.Generator().manual_seed(0))
    shifted = u + torch.tensor([5.0] * 4 + [-3.0] * 3 + [0.5] * 5)
    assert loss(referenced_inputs(shifted, items)).losses.tolist() == pytest.approx(
        loss(referenced_inputs(u, items)).losses.tolist(), abs=1e-6)


def test_candidates_on_the_reference_point_are_left_out_and_bad_sizes_fail(relevance_file, tmp_path):
    path = tmp_path / "ties.jsonl"
    row = json.loads(relevance_file.read_text().splitlines()[1])  # q2
    for c, label in zip(row["candidates"], ("3", "2", "1")):  # gains 1, .5, 0: the middle one is the mean
        c["label"] = label
    path.write_text(json.dumps(row) + "\n")
    items = referenced_queries(load_relevance_jsonl(path))
    assert items[0].targets[1] is None and items[0].targets[0] == (True, pytest.approx(1.0))
    inputs = referenced_inputs(torch.tensor([3.0, 0.0, 0.0]), items)
    assert inputs.labels.tolist() == [True, False] and inputs.reference_point.tolist() == [1.0, 1.0]
    flat = tmp_path / "flat.jsonl"
    row["candidates"] = [{**c, "label": "2"} for c in row["candidates"]]
    flat.write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="nothing to learn"):
        referenced_queries(load_relevance_jsonl(flat))
    with pytest.raises(ValueError, match="utilities for a batch"):
        referenced_inputs(torch.zeros(2), items)


def _pairwise(model_spec, queries) -> float:
    from ptalign.models import load_model
    from ptalign.rec.buyer import Buyer

    model, tokenizer = load_model(str(model_spec))
    utilities = Buyer(model.eval(), tokenizer).utilities_many([(q.query, q.products, None) for q in queries])
    return evaluate(queries, {q.query_id: u for q, u in zip(queries, utilities)}, ["pairwise_accuracy"])[0]["pairwise_accuracy"]


def test_training_orders_the_training_queries(tiny_model_dir, relevance_file, tmp_path):
    queries = load_relevance_jsonl(relevance_file)
    before = _pairwise(tiny_model_dir, queries)
    loss = build_loss("prospect", beta=1.0, reference_point="fixed", **KT)
    settings = ReferenceTrainSettings(learning_rate=1e-2, epochs=30, queries_per_step=3, lora_r=8)
    adapter = train_buyer_against_reference(str(tiny_model_dir), referenced_queries(queries), loss, tmp_path / "run", settings)
    assert (adapter / "adapter_config.json").is_file()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and rows[-1]["loss"] < rows[0]["loss"] - 0.1
    assert rows[-1]["right_side_of_reference"] == 1.0  # every gain above its query's mean utility, every loss below
    from ptalign.models import export_model

    merged = export_model(str(tiny_model_dir), tmp_path / "merged", adapter_dir=adapter)
    after = _pairwise(merged, queries)
    assert after >= before + 0.2, (before, after)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 30 and summary["loss_last_25"] < summary["loss_first_25"]


def test_selfalign_ref_round_trains_the_seller_then_the_buyer(tiny_model_dir, relevance_file, tmp_path, seller_writes_text):
    assert METHODS.get("reference-kto").loss_params == {"beta": 1.0}  # alpha = lambda = 1: KTO's value
    args = RecTrainArgs(train_data=str(relevance_file), output_dir=str(tmp_path / "run"), method="selfalign-ref",
                        model=str(tiny_model_dir), description_tokens=6, batch_size=4, queries_per_step=2,
                        cache_dir=str(tmp_path / "cache"))
    out = self_align(args)
    round_dir = out / "round-1"
    seller_feedback = [json.loads(line) for line in (round_dir / "feedback.jsonl").read_text().splitlines()]
    assert len(seller_feedback) == 12 and all(r["prompt"][0]["content"] == SELLER_SYSTEM for r in seller_feedback)
    assert (round_dir / "seller-model" / "model.safetensors").is_file()
    buyer_rows = (round_dir / "buyer-run" / "metrics.jsonl").read_text().splitlines()
    assert len(buyer_rows) == 2  # 3 queries, 2 per step
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == str(round_dir / "model") and summary["seller"] is True
    assert json.loads((round_dir / "round.json").read_text())["model_in"] == str(tiny_model_dir)


def test_prospect_ref_round_goes_straight_to_the_buyer(tiny_model_dir, relevance_file, tmp_path):
    args = RecTrainArgs(train_data=str(relevance_file), output_dir=str(tmp_path / "run"), method="prospect-ref",
                        model=str(tiny_model_dir), queries_per_step=3, epochs=2, cache_dir=str(tmp_path / "cache"))
    round_dir = self_align(args) / "round-1"
    assert not (round_dir / "judgements.jsonl").exists() and not (round_dir / "run").exists()
    assert len((round_dir / "buyer-run" / "metrics.jsonl").read_text().splitlines()) == 2  # 3 queries x 2 epochs / 3
    done = json.loads((round_dir / "round.json").read_text())
    assert done["decision_accuracy"] is None and (round_dir / "model" / "model.safetensors").is_file()
    again = self_align(args)  # a finished round is not redone
    assert json.loads((again / "round-1" / "round.json").read_text()) == done


def test_full_parameter_training_updates_every_weight_and_exports_the_model(tiny_model_dir, relevance_file, tmp_path):
    from safetensors.torch import load_file

    queries = load_relevance_jsonl(relevance_file)
    before = _pairwise(tiny_model_dir, queries)
    loss = build_loss("prospect", beta=1.0, reference_point="fixed", **KT)
    settings = ReferenceTrainSettings(learning_rate=3e-3, epochs=30, queries_per_step=3, lora=False)
    trained = train_buyer_against_reference(str(tiny_model_dir), referenced_queries(queries), loss, tmp_path / "run", settings)
    assert trained == tmp_path / "run" / "final" / "model" and not (trained / "adapter_config.json").exists()
    base, new = load_file(tiny_model_dir / "model.safetensors"), load_file(trained / "model.safetensors")
    norms = [k for k in base if "norm" in k]  # LoRA never touches these; full training does
    assert norms and any(not torch.equal(base[k], new[k]) for k in norms)
    assert _pairwise(trained, queries) >= before + 0.2
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["lora"] is False
    assert train_buyer_against_reference(str(tiny_model_dir), [], loss, tmp_path / "run", settings) == trained  # done


def test_full_parameter_round_defaults_to_a_small_learning_rate(tiny_model_dir, relevance_file, tmp_path):
    args = RecTrainArgs(train_data=str(relevance_file), output_dir=str(tmp_path / "run"), method="prospect-ref",
                        model=str(tiny_model_dir), queries_per_step=3, lora=False, cache_dir=str(tmp_path / "cache"))
    round_dir = self_align(args) / "round-1"
    rows = [json.loads(line) for line in (round_dir / "buyer-run" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["lr"] for r in rows) <= 5e-5 and (round_dir / "model" / "model.safetensors").is_file()
    assert (round_dir / "buyer-run" / "final" / "model" / "config.json").is_file()


def test_query_likelihood_training_orders_the_training_queries(tiny_model_dir, relevance_file, tmp_path):
    from ptalign.models import export_model, load_model
    from ptalign.rec.buyer import Buyer

    queries = load_relevance_jsonl(relevance_file)

    def pairwise(spec) -> float:
        model, tokenizer = load_model(str(spec))
        utilities = Buyer(model.eval(), tokenizer, utility="query-likelihood").utilities_many([(q.query, q.products, None) for q in queries])
        return evaluate(queries, {q.query_id: u for q, u in zip(queries, utilities)}, ["pairwise_accuracy"])[0]["pairwise_accuracy"]

    before = pairwise(tiny_model_dir)
    loss = build_loss("prospect", beta=1.0, reference_point="fixed", **KT)
    settings = ReferenceTrainSettings(learning_rate=1e-2, epochs=30, queries_per_step=3, lora_r=8, utility="query-likelihood")
    adapter = train_buyer_against_reference(str(tiny_model_dir), referenced_queries(queries), loss, tmp_path / "run", settings)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["utility"] == "query-likelihood" and summary["loss_last_25"] < summary["loss_first_25"]
    after = pairwise(export_model(str(tiny_model_dir), tmp_path / "merged", adapter_dir=adapter))
    assert after >= before + 0.2, (before, after)
