import math

import pytest

from ptalign.rec.data import Candidate, Product, RankingQuery
from ptalign.rec.metrics import (
    UnknownMetricError,
    evaluate,
    kendall_tau,
    kendall_tau_b,
    pairwise_accuracy,
    ranking_order,
)


def query(qid: str, ratings: list[float]) -> RankingQuery:
    """Home Depot-style query: labels are ratings, gains linear (r - 1) / 2."""
    return RankingQuery(
        qid, f"query {qid}", [Candidate(Product(f"p{i}", f"title {i}"), r, (r - 1) / 2) for i, r in enumerate(ratings)]
    )


THREE = query("three", [3.0, 2.0, 1.0])  # gains 1, 0.5, 0
ALL = ["ndcg@10", "ndcg", "mrr", "pairwise_accuracy", "kendall_tau"]


def test_perfect_ranking_scores_one_everywhere():
    means, per_query = evaluate([THREE], {"three": [2.0, 1.0, 0.0]}, ALL)
    assert means == pytest.approx({m: 1.0 for m in ALL})
    assert per_query["three"] == pytest.approx({m: 1.0 for m in ALL})


def test_reversed_ranking_of_three_hand_computed():
    # order: gain 0, gain 0.5, gain 1 -> DCG = 0/log2(2) + 0.5/log2(3) + 1/log2(4)
    dcg = 0.5 / math.log2(3) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 0.5 / math.log2(3)
    assert dcg / idcg == pytest.approx(0.619906, abs=1e-6)
    means, _ = evaluate([THREE], {"three": [0.0, 1.0, 2.0]}, ALL)
    assert means["ndcg@10"] == pytest.approx(dcg / idcg, abs=1e-6)
    assert means["ndcg"] == pytest.approx(dcg / idcg, abs=1e-6)
    assert means["mrr"] == pytest.approx(1 / 3)  # only rating 3 has gain >= 0.75; it is last
    assert means["pairwise_accuracy"] == 0.0
    assert means["kendall_tau"] == pytest.approx(-1.0)


def test_ndcg_cutoff_and_jarvelin_linear_gain():
    q = query("cut", [1.0, 1.0, 3.0, 2.0])  # gains 0, 0, 1, 0.5; ranked in that order
    scores = {"cut": [4.0, 3.0, 2.0, 1.0]}
    means, _ = evaluate([q], scores, ["ndcg@2", "ndcg@3", "mrr@2", "mrr"])
    assert means["ndcg@2"] == 0.0
    # linear gain (Järvelin), not 2^g - 1 (Burges): 1/log2(4) / (1 + 0.5/log2(3))
    assert means["ndcg@3"] == pytest.approx((1 / 2) / (1 + 0.5 / math.log2(3)), abs=1e-6)
    assert means["mrr@2"] == 0.0 and means["mrr"] == pytest.approx(1 / 3)


def test_small_gains_survive_ranx_integer_qrels():
    # ESCI gains: a complement (0.01) ranked above a substitute (0.1) must cost NDCG.
    q = RankingQuery("esci", "q", [Candidate(Product(f"p{i}", "t"), lab, g) for i, (lab, g) in
                                   enumerate([(2.0, 0.1), (1.0, 0.01)])])  # fmt: skip
    means, _ = evaluate([q], {"esci": [0.0, 1.0]}, ["ndcg"])
    assert means["ndcg"] == pytest.approx((0.01 + 0.1 / math.log2(3)) / (0.1 + 0.01 / math.log2(3)), abs=1e-5)


def test_ties_break_by_candidate_position_for_ndcg_and_count_half_for_pairs():
    means, _ = evaluate([THREE], {"three": [5.0, 5.0, 5.0]}, ALL)
    assert means["ndcg"] == 1.0  # input order happens to be ideal
    assert means["pairwise_accuracy"] == 0.5
    assert means["kendall_tau"] == 0.0
    assert ranking_order([1.0, 3.0, 3.0, 0.0]) == [1, 2, 0, 3]


def test_undefined_queries_are_left_out_of_the_means():
    flat = query("flat", [2.0, 2.0])  # one distinct label: no pairs; nothing >= 2.5: no MRR
    means, per_query = evaluate([THREE, flat], {"three": [2.0, 1.0, 0.0], "flat": [0.0, 1.0]}, ALL)
    assert per_query["flat"]["pairwise_accuracy"] is None
    assert per_query["flat"]["kendall_tau"] is None
    assert per_query["flat"]["mrr"] is None
    assert per_query["flat"]["ndcg"] == 1.0
    assert means == pytest.approx({m: 1.0 for m in ALL})


def test_means_average_over_queries():
    perfect, reversed_ = query("a", [3.0, 2.0, 1.0]), query("b", [3.0, 2.0, 1.0])
    means, _ = evaluate([perfect, reversed_], {"a": [3, 2, 1], "b": [1, 2, 3]}, ["pairwise_accuracy", "mrr"])
    assert means["pairwise_accuracy"] == 0.5
    assert means["mrr"] == pytest.approx((1 + 1 / 3) / 2)


def test_mrr_relevance_threshold_is_a_parameter():
    means, _ = evaluate([THREE], {"three": [0.0, 1.0, 2.0]}, ["mrr"], relevant_gain=0.5)
    assert means["mrr"] == 0.5  # rating 2 (gain 0.5) now counts and sits at rank 2


def test_pairwise_accuracy_hand_values():
    assert pairwise_accuracy([3, 2, 1], [0.9, 0.1, 0.5]) == pytest.approx(2 / 3)
    assert pairwise_accuracy([3, 3, 1], [1.0, 0.0, 0.0]) == pytest.approx((1 + 0.5) / 2)
    assert pairwise_accuracy([2, 2], [1.0, 0.0]) is None


def test_kendall_tau_b_by_hand_matches_scipy():
    labels = [3, 3, 2, 1, 1, 2, 3]
    scores = [0.2, 0.9, 0.5, 0.5, 0.1, 0.7, 0.7]
    # C=11, D=3 (index 0 loses to 2, 3, 5), ties in labels 5, ties in scores 2, n0 = 21
    assert kendall_tau_b(labels, scores) == pytest.approx((11 - 3) / math.sqrt((21 - 5) * (21 - 2)))
    assert kendall_tau(labels, scores) == pytest.approx(kendall_tau_b(labels, scores))
    assert kendall_tau_b([1, 2, 3], [0, 0, 0]) == 0.0
    assert kendall_tau_b([1, 1], [0, 1]) is None


def test_unknown_metric_lists_known_ones():
    with pytest.raises(UnknownMetricError, match=r"'ndcg10'.*known: ndcg, ndcg@<k>, mrr.*kendall_tau"):
        evaluate([THREE], {"three": [1, 2, 3]}, ["ndcg10"])


def test_score_count_mismatch_names_the_query():
    with pytest.raises(ValueError, match="'three': 2 scores for 3 candidates"):
        evaluate([THREE], {"three": [1, 2]}, ["mrr"])
    with pytest.raises(ValueError, match="no scores for query 'three'"):
        evaluate([THREE], {}, ["mrr"])


def test_expected_random_ndcg_equals_mean_over_all_permutations():
    from itertools import permutations

    from ptalign.rec.metrics import expected_random_ndcg

    q = query("four", [3.0, 1.0, 2.33, 1.67])
    orders = list(permutations(range(4)))
    scores = {f"p{i}": [float(4 - order.index(j)) for j in range(4)] for i, order in enumerate(orders)}
    queries = [RankingQuery(f"p{i}", q.query, q.candidates) for i in range(len(orders))]
    for k in (2, None):
        name = "ndcg" if k is None else f"ndcg@{k}"
        means, _ = evaluate(queries, scores, [name])
        assert expected_random_ndcg(q, k) == pytest.approx(means[name], abs=1e-6)
    assert expected_random_ndcg(query("zero", [1.0, 1.0])) is None


def test_batch_where_nothing_is_relevant_gives_nan_means():
    flat = query("flat", [1.0, 1.0])  # every gain 0: NDCG, MRR and pairwise metrics undefined
    means, per_query = evaluate([flat], {"flat": [1.0, 0.0]}, ALL)
    assert all(math.isnan(v) for v in means.values())
    assert per_query["flat"] == {m: None for m in ALL}


def test_paired_difference_by_hand():
    from ptalign.rec.metrics import paired_difference

    # q3 is undefined for the method and q4 missing from it: diffs 0.25 and 0.5 only
    out = paired_difference({"q1": 0.5, "q2": 1.0, "q3": None}, {"q1": 0.25, "q2": 0.5, "q3": 0.5, "q4": 1.0})
    assert out["mean_difference"] == pytest.approx(0.375) and out["n_queries"] == 2
    assert out["stderr"] == pytest.approx(0.125)  # sd 0.1768 / sqrt 2
    with pytest.raises(ValueError, match="fewer than 2 queries"):
        paired_difference({"q1": 0.5}, {"q1": 0.25})
