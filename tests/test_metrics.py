"""Ranking metrics on hand-computed cases: ranks with pessimistic ties, top-k accuracy, recall@K, median rank."""
from __future__ import annotations

import numpy as np
import pytest

from videobert.tasks.metrics import gold_ranks, relevant_ranks, retrieval_metrics, top_k_accuracy

# Rows are examples, columns candidates. Gold column and its rank (ties counted against gold):
SCORES = np.array(
    [
        [0.1, 0.5, 0.3, 0.5],  # gold 1: ties with column 3          -> rank 2
        [0.9, 0.2, 0.2, 0.0],  # gold 0: best                         -> rank 1
        [0.1, 0.2, 0.3, 0.4],  # gold 0: worst                        -> rank 4
        [1.0, 1.0, 1.0, 1.0],  # gold 2: a constant row ranks gold last -> rank 4
    ]
)
GOLD = np.array([1, 0, 0, 2])

# Queries are rows, the gold item is the diagonal.
SIMILARITY = np.array(
    [
        [0.9, 0.1, 0.2, 0.3],  # 0.9 is best                                   -> rank 1
        [0.8, 0.5, 0.6, 0.1],  # 0.8 and 0.6 beat 0.5                          -> rank 3
        [0.2, 0.2, 0.2, 0.1],  # two ties at 0.2                               -> rank 3
        [0.4, 0.7, 0.1, 0.3],  # 0.4 and 0.7 beat 0.3                          -> rank 3
    ]
)
# Columns as queries (SIMILARITY.T): [.9 .8 .2 .4] -> 1, [.1 .5 .2 .7] -> 2, [.2 .6 .2 .1] -> 3, [.3 .1 .1 .3] -> 2.


def test_gold_ranks_count_ties_against_gold():
    assert gold_ranks(SCORES, GOLD).tolist() == [2, 1, 4, 4]
    assert gold_ranks(SIMILARITY, np.arange(4)).tolist() == [1, 3, 3, 3]
    assert gold_ranks(SIMILARITY.T, np.arange(4)).tolist() == [1, 2, 3, 2]


def test_top_k_accuracy():
    assert top_k_accuracy(SCORES, GOLD, ks=(1, 2, 3, 4)) == {1: 0.25, 2: 0.5, 3: 0.5, 4: 1.0}
    # k at or above the number of candidates: every row is correct.
    assert top_k_accuracy(SCORES, GOLD) == {1: 0.25, 5: 1.0}
    # Integer scores (e.g. counts) work the same way.
    assert top_k_accuracy(np.array([[3, 1, 2]]), np.array([2]), ks=(1, 2)) == {1: 0.0, 2: 1.0}


def test_retrieval_metrics_both_directions():
    assert retrieval_metrics(SIMILARITY, ks=(1, 2, 3)) == {"r1": 0.25, "r2": 0.25, "r3": 1.0, "median_rank": 3.0}
    assert retrieval_metrics(SIMILARITY.T, ks=(1, 2, 3)) == {"r1": 0.25, "r2": 0.75, "r3": 1.0, "median_rank": 2.0}
    assert retrieval_metrics(SIMILARITY) == {"r1": 0.25, "r5": 1.0, "r10": 1.0, "median_rank": 3.0}


def test_median_rank_of_an_even_number_of_queries_is_the_middle_mean():
    # Ranks 1 and 2 (the second row's gold 0 ties with the 1): median 1.5.
    assert retrieval_metrics(np.array([[1.0, 0.0], [1.0, 0.0]]), ks=(1,)) == {"r1": 0.5, "median_rank": 1.5}


def test_identity_similarity_is_perfect():
    assert retrieval_metrics(np.eye(5)) == {"r1": 1.0, "r5": 1.0, "r10": 1.0, "median_rank": 1.0}


@pytest.mark.parametrize(
    "scores, gold, message",
    [
        (np.zeros((2, 3)), np.array([0, 3]), "column indices"),
        (np.zeros((2, 3)), np.array([0]), "shape"),
        (np.zeros((0, 3)), np.zeros(0, dtype=int), "non-empty"),
        (np.array([[0.0, np.nan]]), np.array([0]), "finite"),
        (np.zeros((1, 2)), np.array([0.0]), "column indices"),
    ],
)
def test_gold_ranks_rejects_bad_input(scores, gold, message):
    with pytest.raises(ValueError, match=message):
        gold_ranks(scores, gold)


def test_retrieval_metrics_needs_a_square_matrix_and_positive_ks():
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="at least 1"):
        retrieval_metrics(np.eye(2), ks=(0,))
    with pytest.raises(ValueError, match="at least 1"):
        top_k_accuracy(SCORES, GOLD, ks=(0,))


def test_relevant_ranks_take_the_best_right_answer_and_count_ties_against_it():
    scores = np.array([[0.9, 0.5, 0.9, 0.1], [0.2, 0.4, 0.3, 0.4], [0.0, 0.0, 0.0, 0.0]])
    relevant = np.array([[False, True, True, False], [True, False, True, False], [False, False, False, True]])
    # row 0: best right answer 0.9 ties with the wrong 0.9 -> 2; row 1: best right 0.3 < 0.4, 0.4 -> 3; row 2: all
    # tie -> behind the 3 wrong ones: 4.
    assert relevant_ranks(scores, relevant).tolist() == [2, 3, 4]
    # One right answer per row is gold_ranks.
    assert relevant_ranks(SIMILARITY, np.eye(4, dtype=bool)).tolist() == gold_ranks(SIMILARITY, np.arange(4)).tolist()
    assert retrieval_metrics(scores, ks=(1, 3), relevant=relevant) == {"r1": 0.0, "r3": 2 / 3, "median_rank": 3.0}
    with pytest.raises(ValueError, match="at least one relevant"):
        relevant_ranks(scores, np.zeros_like(relevant))
