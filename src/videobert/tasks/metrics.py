"""Ranking metrics of the downstream evaluations, in NumPy: top-k accuracy, recall@K and median rank.

All of them rest on one rank: the 1-based position of the gold candidate (or of the best-placed of several right
candidates, `relevant_ranks`) when a row's candidates are sorted by
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


def relevant_ranks(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """(rows,) 1-based rank of each row's best-scored relevant column, ties counted against it: 1 + the number of
    irrelevant columns scoring at least as high. For queries with several right answers (a caption shared by several
    videos); with one relevant column per row it equals `gold_ranks`.

    `scores` is (rows, candidates), higher is better; `relevant` is a boolean matrix of the same shape with at
    least one True per row.
    """
    scores, relevant = np.asarray(scores), np.asarray(relevant, dtype=bool)
    if scores.ndim != 2 or scores.shape != relevant.shape or scores.size == 0:
        raise ValueError(f"scores and relevant must be non-empty matrices of one shape, got {scores.shape} and "
                         f"{relevant.shape}")  # fmt: skip
    if not relevant.any(axis=1).all():
        raise ValueError("every row needs at least one relevant candidate")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    best = np.where(relevant, scores, -np.inf).max(axis=1)  # (rows,)
    return 1 + ((scores >= best[:, None]) & ~relevant).sum(axis=1)


def top_k_accuracy(scores: np.ndarray, gold: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose gold column ranks within the top k, for each k in `ks` (ties as in `gold_ranks`).

    A k at or above the number of candidates gives 1.0.
    """
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be at least 1, got {list(ks)}")
    ranks = gold_ranks(scores, gold)
    return {k: float(np.mean(ranks <= k)) for k in ks}


def retrieval_metrics(
    similarity: np.ndarray, ks: Sequence[int] = (1, 5, 10), relevant: np.ndarray | None = None
) -> dict[str, float]:
    """Recall@K and median rank of a (queries, gallery) similarity matrix whose gold pairs lie on the diagonal, or,
    with `relevant` (a boolean matrix of the same shape), whose right answers are its True entries.

    Returns ``{"r1": ..., "r5": ..., "r10": ..., "median_rank": ...}`` (keys follow `ks`); recall@K is the fraction
    of queries whose gold item (with `relevant`: best-ranked right answer, `relevant_ranks`) ranks within the top K
    (ties as in `gold_ranks`), the median rank is that of the 1-based ranks (the mean of the two middle ones for an
    even number of queries). For the other retrieval direction pass ``similarity.T`` (and ``relevant.T``).
    """
    similarity = np.asarray(similarity)
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be at least 1, got {list(ks)}")
    if relevant is not None:
        ranks = relevant_ranks(similarity, relevant)
    elif similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be a square (queries, gallery) matrix, got shape {similarity.shape}")
    else:
        ranks = gold_ranks(similarity, np.arange(similarity.shape[0]))
    metrics = {f"r{k}": float(np.mean(ranks <= k)) for k in ks}
    metrics["median_rank"] = float(np.median(ranks))
    return metrics
