"""LoRA wrapping and exporting a merged plain-transformers folder."""

from __future__ import annotations

import pytest
import torch

from ptalign import models


@pytest.fixture()
def lora_model(tiny_model_dir):
    model, tokenizer = models.load_model(str(tiny_model_dir))
    return models.apply_lora(model, r=16, alpha=32), tokenizer


def test_lora_trains_only_adapters(lora_model):
    model, _ = lora_model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    # r * (in + out) per linear: q 64->64, k 64->32, v 64->32, o 64->64, gate/up 64->128, down 128->64.
    per_layer = 16 * ((64 + 64) + (64 + 32) * 2 + (64 + 64) + (64 + 128) * 3)
    assert models.count_parameters(model)[0] == 2 * per_layer == 32768


def test_lora_step_moves_only_adapters(lora_model):
    model, _ = lora_model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    for _ in range(2):  # lora_B starts at zero, so lora_A only moves on the second step
        model(input_ids=ids, labels=ids).loss.backward()
        optim.step()
        optim.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {n for n, p in model.named_parameters() if p.requires_grad}


def _perturb_lora_b(model) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))


def test_export_merges_adapter(lora_model, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = lora_model
    _perturb_lora_b(model)
    model.save_pretrained(tmp_path / "adapter")
    out = models.export_model(str(tiny_model_dir), tmp_path / "merged", adapter_dir=tmp_path / "adapter")

    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert type(merged).__name__ == "LlamaForCausalLM"
    ids = tokenizer(["Would I buy this cordless drill?"], return_tensors="pt")["input_ids"]
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        base = model.get_base_model()
        with model.disable_adapter():
            unadapted = base(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    assert not torch.allclose(expected, unadapted, atol=1e-3)  # the perturbation matters
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert AutoTokenizer.from_pretrained(out).chat_template == tokenizer.chat_template


def test_export_without_adapter_copies_base(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = models.export_model(str(tiny_model_dir), tmp_path / "plain")
    a = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    b = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_export_refuses_to_overwrite(tiny_model_dir, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        models.export_model(str(tiny_model_dir), out)
    assert (out / "notes.txt").read_text() == "keep me"

    models.export_model(str(tiny_model_dir), out, overwrite=True)
    assert not (out / "notes.txt").exists() and (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no temp folders left behind


def test_export_into_empty_folder(tiny_model_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    assert (models.export_model(str(tiny_model_dir), tmp_path / "empty") / "config.json").is_file()
