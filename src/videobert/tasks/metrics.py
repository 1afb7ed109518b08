"""Ranking metrics of the downstream evaluations, in NumPy: top-k accuracy, recall@K and median rank.

All of them rest on one rank: the 1-based position of the gold candidate when a row's candidates are sorted by
score, best first. Ties are broken *pessimistically*: every other candidate that scores at least as high as the
gold one is counted ahead of it, so ``rank = #{j : score[j] >= score[gold]}`` (the gold candidate itself included).
A model that gives every candidate the same score therefore ranks gold last, never first, and cannot look better
than chance by emitting constants; an optimistic or random tie break would reward exactly that.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def gold_ranks(scores: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """(rows,) 1-based rank of each row's gold column among the row's scores, ties counted against gold.

    `scores` is (rows, candidates), higher is better; `gold` is (rows,) column indices.
    """
    scores = np.asarray(scores)
    gold = np.asarray(gold)
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty (rows, candidates) matrix, got shape {scores.shape}")
    if gold.shape != (scores.shape[0],):
        raise ValueError(f"gold must have shape ({scores.shape[0]},), got {gold.shape}")
    if not np.issubdtype(gold.dtype, np.integer) or gold.min() < 0 or gold.max() >= scores.shape[1]:
        raise ValueError(f"gold must hold column indices in [0, {scores.shape[1]})")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    gold_scores = scores[np.arange(len(gold)), gold]  # (rows,)
    return (scores >= gold_scores[:, None]).sum(axis=1)


def top_k_accuracy(scores: np.ndarray, gold: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose gold column ranks within the top k, for each k in `ks` (ties as in `gold_ranks`).

    A k at or above the number of candidates gives 1.0.
    """
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be at least 1, got {list(ks)}")
    ranks = gold_ranks(scores, gold)
    return {k: float(np.mean(ranks <= k)) for k in ks}


def retrieval_metrics(similarity: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K and median rank of a (queries, gallery) similarity matrix whose gold pairs lie on the diagonal.

    Returns ``{"r1": ..., "r5": ..., "r10": ..., "median_rank": ...}`` (keys follow `ks`); recall@K is the fraction
    of queries whose gold item ranks within the top K (ties as in `gold_ranks`), the median rank is that of the
    1-based gold ranks (the mean of the two middle ones for an even number of queries). For the other retrieval
    direction pass ``similarity.T``.
    """
    similarity = np.asarray(similarity)
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be a square (queries, gallery) matrix, got shape {similarity.shape}")
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be at least 1, got {list(ks)}")
    ranks = gold_ranks(similarity, np.arange(similarity.shape[0]))
    metrics = {f"r{k}": float(np.mean(ranks <= k)) for k in ks}
    metrics["median_rank"] = float(np.median(ranks))
    return metrics
