"""ptalign's KTO equals TRL 1.16's KTOTrainer on the same tiny model and batch (to 1e-5)."""

from __future__ import annotations

import json

import pytest
import torch

CHAT = [
    ("How do I boil an egg?", "Boil it for nine minutes, then cool it.", True),
    ("Name a colour.", "Blue.", False),
    ("What is the weather like?", "Sunny with a light breeze from the west.", True),
    ("Describe a drill.", "A cordless drill with two batteries and a charger.", False),
    ("Say something kind.", "You did a great job today.", True),
    ("Would I buy this?", "No, the price is too high.", False),
    ("Tell me a fact.", "The quick brown fox jumps over the lazy dog.", False),
    ("Please help.", "I cannot help with that request because it could cause harm.", True),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A policy and a *different* reference model (same tokenizer), so rewards and KL are non-zero."""
    from ptalign.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("policy"), seed=1), make_tiny_model(tmp_path_factory.mktemp("ref"), seed=2)


def _write(tmp_path):
    path = tmp_path / "feedback.jsonl"
    path.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": p}],
                                        "completion": [{"role": "assistant", "content": c}], "label": l}) + "\n"
                            for p, c, l in CHAT))
    return path


def _trl_metrics(policy_dir, ref_dir, data, tmp_path, batch_size, beta, weights):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    rows = [json.loads(line) for line in data.read_text().splitlines()]
    args = KTOConfig(str(tmp_path / "trl"), per_device_train_batch_size=batch_size, max_length=64, beta=beta,
                     desirable_weight=weights[0], undesirable_weight=weights[1], report_to=[], use_cpu=True,
                     bf16=False)  # TRL defaults to bf16 autocast; compare in float32
    trainer = KTOTrainer(model=AutoModelForCausalLM.from_pretrained(policy_dir),
                         ref_model=AutoModelForCausalLM.from_pretrained(ref_dir), args=args,
                         train_dataset=Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(policy_dir))
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    mode = "train" if trainer.model.training else "eval"
    m = {k: v[-1] for k, v in trainer._metrics[mode].items()}
    return {"loss": float(loss), "kl": m["kl"], "rewards/chosen": m["rewards/chosen"], "rewards/rejected": m["rewards/rejected"]}


def _ptalign_metrics(policy_dir, ref_dir, data, batch_size, beta, weights):
    from ptalign.batches import collate_batch, prepare_data
    from ptalign.losses import build_loss
    from ptalign.losses.base import UnpairedLogps
    from ptalign.models import load_model
    from ptalign.ops import kl_reference_point
    from ptalign.reference import CompletionScorer

    policy, tok = load_model(str(policy_dir))
    ref, _ = load_model(str(ref_dir))
    loss_fn = build_loss("kto", beta=beta, desirable_weight=weights[0], undesirable_weight=weights[1])
    td = prepare_data(str(data), tok, loss_fn, 64, "keep_start", batch_size, seed=0, bucket_by_length=False)
    b = collate_batch(td, td.batches[0], tok.pad_token_id, 64)
    pol, ref_s = CompletionScorer(policy).eval(), CompletionScorer(ref).eval()
    with torch.no_grad():
        z0 = kl_reference_point(pol(b["kl_input_ids"], b["kl_attention_mask"], b["kl_completion_mask"])[0],
                                ref_s(b["kl_input_ids"], b["kl_attention_mask"], b["kl_completion_mask"])[0])
        logps, n = pol(b["input_ids"], b["attention_mask"], b["completion_mask"])
        out = loss_fn(UnpairedLogps(policy=logps, labels=b["labels"], weights=b["weights"], n_tokens=n,
                                    reference=ref_s(b["input_ids"], b["attention_mask"], b["completion_mask"])[0],
                                    reference_point=z0))
    return {"loss": out.losses.mean().item(), "kl": z0.item(), "rewards/chosen": out.chosen_rewards.mean().item(),
            "rewards/rejected": out.rejected_rewards.mean().item()}


@pytest.mark.parametrize("swap", [False, True], ids=["kl-clamped-at-0", "kl-positive"])
@pytest.mark.parametrize("batch_size,beta,weights", [(4, 0.1, (1.0, 1.0)), (8, 0.5, (1.33, 0.7))])
def test_kto_matches_trl(models, tmp_path, batch_size, beta, weights, swap):
    policy, ref = models[::-1] if swap else models
    data = _write(tmp_path)
    trl = _trl_metrics(policy, ref, data, tmp_path, batch_size, beta, weights)
    ours = _ptalign_metrics(policy, ref, data, batch_size, beta, weights)
    assert abs(trl["rewards/chosen"]) > 1e-3  # the comparison is not between zeros
    assert (trl["kl"] > 0.1) if swap else (trl["kl"] == 0.0)
    for key in trl:
        assert ours[key] == pytest.approx(trl[key], abs=1e-5), key
