from unittest import mock

from ptalign.rec.data import Product
from ptalign.rec.seller import DescriptionCache, Seller, seller_messages

PAIRS = [("cordless drill", Product("d1", "DeWalt 20V Cordless Drill Kit")),
         ("cordless drill", Product("d2", "Drill bit set")),
         ("led bulb", Product("b1", "Philips LED bulb"))]


def test_descriptions_are_cached_by_content_hash(tiny_roles, tmp_path):
    model, tokenizer = tiny_roles
    cache = DescriptionCache(tmp_path / "seller")
    seller = Seller(model, tokenizer, "tiny-v1", cache, max_new_tokens=6, batch_size=2)
    first = seller.describe(PAIRS)
    assert len(first) == 3 and all(isinstance(d, str) for d in first)
    assert seller.stats == {"generated": 3, "cached": 0}
    assert len(list((tmp_path / "seller").rglob("*.json"))) == 3
    assert not list((tmp_path / "seller").rglob("*.tmp"))  # atomic writes leave nothing behind

    with mock.patch("ptalign.models.generate", side_effect=AssertionError("must not generate")):
        again = Seller(model, tokenizer, "tiny-v1", cache, max_new_tokens=6).describe(PAIRS[::-1])
    assert again == first[::-1]


def test_cache_key_depends_on_model_prompt_and_length(tiny_roles, tmp_path):
    model, tokenizer = tiny_roles
    a = Seller(model, tokenizer, "tiny-v1", max_new_tokens=6)
    key = a.key(*PAIRS[0])
    assert len(key) == 64 and key == a.key(*PAIRS[0])
    assert key != Seller(model, tokenizer, "tiny-v2", max_new_tokens=6).key(*PAIRS[0])
    assert key != Seller(model, tokenizer, "tiny-v1", max_new_tokens=7).key(*PAIRS[0])
    assert key != a.key(*PAIRS[1])


def test_repeated_pairs_generate_once(tiny_roles):
    model, tokenizer = tiny_roles
    seller = Seller(model, tokenizer, "tiny", max_new_tokens=4)
    out = seller.describe([PAIRS[0], PAIRS[0], PAIRS[1]])
    assert out[0] == out[1] and seller.stats["generated"] == 2


def test_damaged_cache_entry_is_regenerated(tmp_path):
    cache = DescriptionCache(tmp_path)
    cache.put("ab" * 32, "fine")
    assert cache.get("ab" * 32) == "fine"
    (tmp_path / "ab" / f"{'ab' * 32}.json").write_text("{not json")
    assert cache.get("ab" * 32) is None


def test_seller_prompt_names_query_and_product():
    messages = seller_messages("led bulb", Product("b1", "Philips LED bulb", brand="Philips"))
    assert messages[0]["role"] == "system" and "disappoint" in messages[0]["content"]
    assert messages[1]["content"] == "The shopper searched for: led bulb\nProduct: Philips LED bulb\nBrand: Philips"


def test_product_only_seller_leaves_the_query_out_and_describes_each_product_once(tiny_roles):
    model, tokenizer = tiny_roles
    product = Product("b1", "Philips LED bulb", brand="Philips")
    messages = seller_messages("led bulb", product, sees_query=False)
    assert messages[1]["content"] == "Product: Philips LED bulb\nBrand: Philips"
    assert "led bulb" not in messages[0]["content"].lower()

    blind = Seller(model, tokenizer, "tiny", max_new_tokens=4, sees_query=False)
    assert blind.key("led bulb", product) == blind.key("ceiling light", product)
    assert blind.key("led bulb", product) != Seller(model, tokenizer, "tiny", max_new_tokens=4).key("led bulb", product)
    out = blind.describe([("led bulb", product), ("ceiling light", product), PAIRS[0]])
    assert out[0] == out[1] and blind.stats == {"generated": 2, "cached": 1}
