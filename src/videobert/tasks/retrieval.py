"""Text-to-video and video-to-text retrieval over annotated segments: a segment's caption against its visual tokens.

Candidate pool (`candidate_pool`)
    One segment per distinct caption (case and spacing ignored; the first in order), so that every query has exactly
    one correct answer: two segments captioned "cut the tomato" would otherwise give a text query two equally right
    videos and a video query two identical texts, one of them counted wrong. Scoring every (text, video) pair
    costs N^2 forward passes, so the pool is then cut to `max_candidates` segments drawn at random with `seed`.
    Both methods rank the same pool, so their numbers are comparable (recall@K falls as the pool grows).

Methods (each gives a (texts, videos) similarity matrix with the true pairs on its diagonal)
    ``alignment``: every pair ``[CLS] caption [>] visual tokens [SEP]`` scored by the alignment head. Ranking is by
    the log-odds ``logit(ALIGNED) - logit(NOT_ALIGNED)``, which orders pairs exactly as P(aligned) does, but does
    not round to 1.0 in float32 for confident pairs (those would tie, and ties count against the gold item).
    ``embedding``: the text-only (``[CLS] caption [SEP]``) and video-only (``[CLS] [>] visual tokens [SEP]``)
    encodings, each the mean of its last hidden states over the sequence's tokens (padding excluded, `[CLS]` and
    `[SEP]` included, which is how the default MiniLM initialisation was trained to embed sentences),
    L2-normalised, and searched exactly by inner product (cosine) with a faiss `IndexFlatIP`.

Both directions rank the same similarities: text-to-video a text's videos (a row), video-to-text a video's texts
(a column); the embeddings are searched once each way.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from videobert.model.configuration import ALIGNED, NOT_ALIGNED
from videobert.model.modeling import IGNORE_INDEX
from videobert.model.tokenization import VideoBertTokenizer
from videobert.tasks.metrics import retrieval_metrics
from videobert.tasks.zeroshot import encode_batch, model_device
from videobert.utils.errors import ConfigError

METHODS = ("alignment", "embedding")
DIRECTIONS = ("text_to_video", "video_to_text")
RECALL_AT = (1, 5, 10)


def distinct_captions(captions: Sequence[str]) -> np.ndarray:
    """Sorted indices into `captions` of the first segment of each distinct caption (case and spacing ignored)."""
    first: dict[str, int] = {}
    for i, caption in enumerate(captions):
        first.setdefault(" ".join(caption.lower().split()), i)
    return np.asarray(sorted(first.values()), dtype=np.int64)


def candidate_pool(captions: Sequence[str], max_candidates: int, seed: int = 0) -> np.ndarray:
    """Sorted indices into `captions`: the `distinct_captions`, of which at most `max_candidates` drawn without
    replacement with `seed` (module docstring)."""
    if max_candidates < 2:
        raise ConfigError(f"max_candidates must be at least 2 (one right answer and one wrong), got {max_candidates}")
    distinct = distinct_captions(captions)
    if len(distinct) <= max_candidates:
        return distinct
    return np.sort(np.random.default_rng(seed).choice(distinct, size=max_candidates, replace=False))


def alignment_similarity(
    model: Any,
    tokenizer: VideoBertTokenizer,
    texts: Sequence[str],
    visual_tokens: Sequence[Sequence[int]],
    batch_size: int = 64,
) -> np.ndarray:
    """(texts, videos) alignment log-odds of every pair ``[CLS] text [>] visual [SEP]``, higher = more aligned.

    `model` is called like `VideoBertForPreTraining` and returns `alignment_logits` (batch, 2); it runs as it is
    (the caller chooses eval mode and gradient handling).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    n_texts, n_videos = len(texts), len(visual_tokens)
    scores = np.empty(n_texts * n_videos)  # row-major over (text, video) pairs
    device = model_device(model)
    for start in tqdm(range(0, len(scores), batch_size), desc="alignment pairs", leave=False, disable=None):
        pairs = np.arange(start, min(start + batch_size, len(scores)))
        text_rows, video_rows = np.divmod(pairs, n_videos)
        batch = encode_batch(tokenizer, [texts[i] for i in text_rows], [visual_tokens[j] for j in video_rows], device)
        # No labelled position: the model skips the (batch, seq, vocab) projection of the masked-token head.
        no_labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        logits = model(**batch, labels=no_labels).alignment_logits.double()  # (batch, 2)
        scores[pairs] = (logits[:, ALIGNED] - logits[:, NOT_ALIGNED]).cpu().numpy()
    return scores.reshape(n_texts, n_videos)  # (texts, videos)


def pooled_embeddings(
    model: Any,
    tokenizer: VideoBertTokenizer,
    texts: Sequence[str] | None = None,
    visual_tokens: Sequence[Sequence[int]] | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """(n, hidden) float32 L2-normalised mean of the last hidden states over each sequence's tokens, padding
    excluded. Give `texts` for text-only encodings, `visual_tokens` for video-only ones (both: text–video)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    n = len(texts) if texts is not None else len(visual_tokens)
    device = model_device(model)
    out = []
    for start in tqdm(range(0, n, batch_size), desc="embeddings", leave=False, disable=None):
        part = slice(start, start + batch_size)
        batch = encode_batch(
            tokenizer,
            None if texts is None else texts[part],
            None if visual_tokens is None else visual_tokens[part],
            device,
        )
        no_labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        hidden = model(**batch, labels=no_labels, output_hidden_states=True).hidden_states[-1].float()  # (b, seq, h)
        weights = batch["attention_mask"].unsqueeze(-1).float()  # (batch, seq, 1)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)  # (batch, hidden)
        out.append(F.normalize(pooled, dim=-1).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def embedding_similarity(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """(queries, gallery) inner products found by an exact faiss `IndexFlatIP` search over the whole gallery."""
    # Imported here: faiss may lack a wheel on a platform (see tokenizer.hkmeans), and only this search needs it.
    import faiss

    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(np.ascontiguousarray(gallery, dtype=np.float32))
    found, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), len(gallery))  # (queries, gallery)
    similarity = np.empty((len(queries), len(gallery)), dtype=np.float32)
    np.put_along_axis(similarity, ids, found, axis=1)  # back from best-first order to gallery order
    return similarity


def retrieval(
    model: Any,
    tokenizer: VideoBertTokenizer,
    texts: Sequence[str],
    visual_tokens: Sequence[Sequence[int]],
    batch_size: int = 64,
) -> dict[str, dict[str, dict[str, float]]]:
    """method -> direction -> {r1, r5, r10, median_rank} for the pairs (`texts[i]`, `visual_tokens[i]`).

    Methods ``alignment`` and ``embedding``, directions ``text_to_video`` and ``video_to_text`` (module docstring).
    """
    if len(texts) != len(visual_tokens):
        raise ValueError(f"got {len(texts)} texts but {len(visual_tokens)} visual sequences")
    if len(texts) < 2:
        raise ValueError(f"retrieval needs at least 2 pairs, got {len(texts)}")
    aligned = alignment_similarity(model, tokenizer, texts, visual_tokens, batch_size)  # (texts, videos)
    text_embeddings = pooled_embeddings(model, tokenizer, texts=texts, batch_size=batch_size)  # (n, hidden)
    video_embeddings = pooled_embeddings(model, tokenizer, visual_tokens=visual_tokens, batch_size=batch_size)
    similarities = {
        "alignment": {"text_to_video": aligned, "video_to_text": aligned.T},
        "embedding": {
            "text_to_video": embedding_similarity(text_embeddings, video_embeddings),
            "video_to_text": embedding_similarity(video_embeddings, text_embeddings),
        },
    }
    return {
        method: {direction: retrieval_metrics(similarities[method][direction], RECALL_AT) for direction in DIRECTIONS}
        for method in METHODS
    }
