import math

import pytest
import torch

from ptalign.rec.buyer import Buyer, BuyerRanker, buyer_messages, prospect_values, split_prompt
from ptalign.rec.data import Product

PRODUCTS = [Product(str(i), f"Cordless drill model {i}" + " with battery" * i) for i in range(7)]
DESCRIPTIONS = [None, "A drill for you.", "Long text " * 9, "x", None, "No.", "Yes, it fits your search."]


def test_shared_prefix_scores_equal_per_pair_scores(tiny_roles):
    model, tokenizer = tiny_roles
    buyer = Buyer(model, tokenizer, batch_size=3)  # 7 candidates: batches of 3, 3 and 1
    shared = buyer.utilities("cordless drill", PRODUCTS, DESCRIPTIONS)
    per_pair = buyer.utilities_per_pair("cordless drill", PRODUCTS, DESCRIPTIONS)
    assert len(shared) == 7
    assert shared == pytest.approx(per_pair, abs=1e-4)
    assert len(set(round(u, 6) for u in shared)) > 1  # the candidates really are scored differently


def test_utility_is_log_odds_of_yes_against_no(tiny_roles):
    model, tokenizer = tiny_roles
    buyer = Buyer(model, tokenizer)
    prefix, suffix = split_prompt(tokenizer, "cordless drill", PRODUCTS[1], DESCRIPTIONS[1])
    with torch.no_grad():
        logp = model(torch.tensor([prefix + suffix])).logits[0, -1].log_softmax(-1)
    expected = float(logp[buyer.yes_ids].logsumexp(0) - logp[buyer.no_ids].logsumexp(0))
    assert buyer.utilities("cordless drill", PRODUCTS[1:2], DESCRIPTIONS[1:2])[0] == pytest.approx(expected, abs=1e-5)


def test_prefix_depends_on_the_query_only(tiny_roles):
    _, tokenizer = tiny_roles
    a = split_prompt(tokenizer, "led bulb", PRODUCTS[0], None)
    b = split_prompt(tokenizer, "led bulb", PRODUCTS[3], "some description")
    assert a[0] == b[0] and a[1] != b[1]
    assert split_prompt(tokenizer, "paint", PRODUCTS[0], None)[0] != a[0]
    text = buyer_messages("led bulb", PRODUCTS[0], "bright")[1]["content"]
    assert "I searched the store for: led bulb" in text and "The seller says: bright" in text


def test_prospect_values_pinned():
    # u = (2, 0, -2): z = 0; v(2) = 2^0.88, v(-2) = -2.25 * 2^0.88
    values, z = prospect_values([2.0, 0.0, -2.0])
    assert z == 0.0
    assert values == pytest.approx([2 ** 0.88, 0.0, -2.25 * 2 ** 0.88], abs=1e-9)
    values, z = prospect_values([1.0, 3.0], gain_curvature=1.0, loss_curvature=1.0, loss_aversion=2.0)
    assert z == 2.0 and values == pytest.approx([-2.0, 1.0])


def test_ranking_by_value_keeps_the_utility_order(tiny_roles):
    model, tokenizer = tiny_roles
    ranker = BuyerRanker(Buyer(model, tokenizer))
    values = ranker.score("cordless drill", PRODUCTS)
    utilities = Buyer(model, tokenizer).utilities("cordless drill", PRODUCTS)
    order = lambda xs: sorted(range(len(xs)), key=lambda i: -xs[i])  # noqa: E731
    assert order(values) == order(utilities)
    assert not any(math.isnan(v) for v in values)


@pytest.mark.parametrize("batch_size", [5, 2])  # one prefix group (4 x 5 candidates) or several (4 x 2)
def test_cross_query_packing_gives_the_same_scores(tiny_roles, batch_size):
    model, tokenizer = tiny_roles
    requests = [("cordless drill", PRODUCTS[:3], DESCRIPTIONS[:3]),  # prefixes of different lengths
                ("a much longer query about white interior paint", PRODUCTS[3:5], None),
                ("bulb", [], None),
                ("led bulb", PRODUCTS, DESCRIPTIONS)]  # more candidates than one batch holds
    buyer = Buyer(model, tokenizer, batch_size=batch_size)
    packed = buyer.utilities_many(requests)
    assert [len(u) for u in packed] == [3, 2, 0, 7]
    for (query, products, descriptions), scores in zip(requests, packed):
        assert scores == pytest.approx(buyer.utilities_per_pair(query, products, descriptions), abs=1e-4)
        assert scores == pytest.approx(buyer.utilities(query, products, descriptions), abs=1e-4)  # one query per pass
    flat = [u for scores in buyer.utilities_per_pair_many(requests) for u in scores]
    assert flat == pytest.approx([u for scores in packed for u in scores], abs=1e-4)


def test_query_likelihood_is_the_mean_log_prob_of_the_query(tiny_roles):
    from ptalign.rec.buyer import query_likelihood_parts

    model, tokenizer = tiny_roles
    buyer = Buyer(model, tokenizer, utility="query-likelihood")
    prompt, target = query_likelihood_parts(tokenizer, "cordless drill", PRODUCTS[2], DESCRIPTIONS[2])
    assert tokenizer.decode(target) == "cordless drill" and "The seller says: Long text" in tokenizer.decode(prompt)
    with torch.no_grad():
        logp = model(torch.tensor([prompt + target])).logits[0].log_softmax(-1)
    expected = sum(float(logp[len(prompt) - 1 + t, tok]) for t, tok in enumerate(target)) / len(target)
    assert buyer.utilities("cordless drill", PRODUCTS[2:3], DESCRIPTIONS[2:3])[0] == pytest.approx(expected, abs=1e-5)


def test_query_likelihood_paths_and_gradients_agree(tiny_roles):
    model, tokenizer = tiny_roles
    buyer = Buyer(model, tokenizer, batch_size=3, utility="query-likelihood")
    requests = [("cordless drill", PRODUCTS[:4], DESCRIPTIONS[:4]), ("paint", [], None), ("a longer query about bulbs", PRODUCTS[4:], None)]
    many = buyer.utilities_many(requests)
    assert [len(u) for u in many] == [4, 0, 3] and len({round(u, 6) for u in many[0]}) > 1
    for (query, products, descriptions), scores in zip(requests, many):
        assert scores == pytest.approx(buyer.utilities(query, products, descriptions), abs=1e-4)
    group = [buyer.encode(q, p, d) for q, p, d in requests if p]
    with_grad = buyer.group_utilities(group)  # one unsorted pass, with gradients, as training runs it
    assert with_grad.requires_grad
    assert with_grad.tolist() == pytest.approx(many[0] + many[2], abs=1e-4)
    assert Buyer(model, tokenizer).group_utilities([Buyer(model, tokenizer).encode("paint", PRODUCTS[:2])]).shape == (2,)
    with pytest.raises(ValueError, match="unknown buyer utility"):
        Buyer(model, tokenizer, utility="likelihood")
