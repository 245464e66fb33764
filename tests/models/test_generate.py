"""Batched generation with left padding done inside generate()."""

from __future__ import annotations

import pytest
import torch

from ptalign import models

CHAT = [{"role": "user", "content": "Would I buy this drill?"}]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    return models.load_model(str(tiny_model_dir))


def test_chat_prompt_ends_with_generation_prompt(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    ids = models.encode_prompt(tokenizer, [{"role": "user", "content": "hi"}])
    assert tokenizer.decode(ids) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_prefilled_reply_is_continued(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prefilled = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure, here is"}]
    ids = models.encode_prompt(tokenizer, prefilled)
    assert tokenizer.decode(ids) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nSure, here is"
    (continued,) = models.generate(model, tokenizer, [prefilled], max_new_tokens=5)
    ids = torch.tensor([ids])
    greedy = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id)
    assert continued == tokenizer.decode(greedy[0, ids.shape[1]:], skip_special_tokens=True)


def test_generate_text_and_chat_is_deterministic(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompts = ["The weather today is", CHAT, "A cordless drill"]
    first = models.generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=2)
    assert len(first) == 3 and all(isinstance(t, str) for t in first)
    assert any(first)
    assert models.generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=2) == first
    assert tokenizer.padding_side == "right"  # left padding stayed inside generate()


def test_left_padding_matches_unpadded(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    short, long = "Sure", "Please describe the product and what the shopper needs from it."
    batched = models.generate(model, tokenizer, [short, long], max_new_tokens=6, batch_size=2)
    alone = [models.generate(model, tokenizer, [p], max_new_tokens=6, batch_size=1)[0] for p in (short, long)]
    assert batched == alone


def test_completion_excludes_prompt(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompt = "The quick brown fox"
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    full = model.generate(input_ids=ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    expected = tokenizer.decode(full[0, ids.shape[1] :], skip_special_tokens=True)
    assert models.generate(model, tokenizer, [prompt], max_new_tokens=5) == [expected]


def test_sampling_is_seeded_and_leaves_global_rng(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    kwargs = dict(max_new_tokens=8, do_sample=True, temperature=1.5, progress=True)
    torch.manual_seed(123)
    a = models.generate(model, tokenizer, ["Refusing is", CHAT], seed=7, **kwargs)
    after = torch.rand(1)
    torch.manual_seed(123)
    b = models.generate(model, tokenizer, ["Refusing is", CHAT], seed=7, **kwargs)
    assert a == b
    assert models.generate(model, tokenizer, ["Refusing is", CHAT], seed=8, **kwargs) != a
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after)


def test_generate_on_peft_model_restores_training_mode(tiny_model_dir):
    model, tokenizer = models.load_model(str(tiny_model_dir))
    peft_model = models.apply_lora(model)
    peft_model.train()
    out = models.generate(peft_model, tokenizer, [CHAT], max_new_tokens=4)
    assert len(out) == 1 and isinstance(out[0], str)
    assert peft_model.training


def test_generate_nothing(model_and_tokenizer):
    assert models.generate(*model_and_tokenizer, []) == []
