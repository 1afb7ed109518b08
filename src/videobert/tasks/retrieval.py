"""Text-to-video and video-to-text retrieval over annotated segments: a segment's caption against its visual tokens.

Candidate pool (`candidate_pool`) and right answers
    Scoring every (text, video) pair costs N^2 forward passes, so the pool is at most `max_candidates` segments drawn
    at random with `seed`. Captions repeat (two segments may both be "cut the tomato"), so the text queries are the
    pool's distinct captions (case and spacing ignored) and the right answers of a caption are *all* the pool's
    segments with that caption: text-to-video counts the best-ranked of them (`metrics.relevant_ranks`), and
    video-to-text ranks the distinct captions, one of which is right. With distinct captions this is the usual
    one-to-one protocol. All methods rank the same pool, so their numbers are comparable (recall@K falls as the pool
    grows).

Methods (each gives a (distinct captions, videos) similarity matrix)
    ``alignment``: every pair ``[CLS] caption [>] visual tokens [SEP]`` scored by the alignment head. Ranking is by
    the log-odds ``logit(ALIGNED) - logit(NOT_ALIGNED)``, which orders pairs exactly as P(aligned) does, but does
    not round to 1.0 in float32 for confident pairs (those would tie, and ties count against the gold item).
    ``embedding``: the text-only (``[CLS] caption [SEP]``) and video-only (``[CLS] [>] visual tokens [SEP]``)
    encodings, each the mean of its last hidden states over the sequence's tokens (padding excluded, `[CLS]` and
    `[SEP]` included, which is how the default MiniLM initialisation was trained to embed sentences),
    L2-normalised, and searched exactly by inner product (cosine) with a faiss `IndexFlatIP`.
    ``likelihood``: how much the video raises the masked-word likelihood of the caption, the pointwise mutual
    information ``sum_l log P(piece_l | caption with piece l masked, video) - sum_l log P(piece_l | caption with piece
    l masked)`` (the pseudo-log-likelihood of the caption given the video minus the same without video). It asks the
    masked-token head, like zero-shot classification, instead of the alignment head; subtracting the text-only term
    keeps a frequent caption from ranking first for every video. One forward pass per (caption piece, video).

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

METHODS = ("alignment", "embedding", "likelihood")
DIRECTIONS = ("text_to_video", "video_to_text")
RECALL_AT = (1, 5, 10)


def distinct_captions(captions: Sequence[str]) -> np.ndarray:
    """Sorted indices into `captions` of the first segment of each distinct caption (case and spacing ignored)."""
    first: dict[str, int] = {}
    for i, caption in enumerate(captions):
        first.setdefault(_caption_key(caption), i)
    return np.asarray(sorted(first.values()), dtype=np.int64)


def candidate_pool(captions: Sequence[str], max_candidates: int, seed: int = 0) -> np.ndarray:
    """Sorted indices into `captions`: all of them, or `max_candidates` drawn without replacement with `seed`
    (module docstring)."""
    if max_candidates < 2:
        raise ConfigError(f"max_candidates must be at least 2 (one right answer and one wrong), got {max_candidates}")
    if len(captions) <= max_candidates:
        return np.arange(len(captions), dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(len(captions), size=max_candidates, replace=False))


def _caption_key(caption: str) -> str:
    return " ".join(caption.lower().split())


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


def likelihood_similarity(
    model: Any,
    tokenizer: VideoBertTokenizer,
    texts: Sequence[str],
    visual_tokens: Sequence[Sequence[int]],
    batch_size: int = 64,
) -> np.ndarray:
    """(texts, videos) masked-word pointwise mutual information of every caption with every video (module docstring).

    `model` is called like `VideoBertForPreTraining` and returns `prediction_logits` of the labelled positions; it
    runs as it is (the caller chooses eval mode and gradient handling).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    config = tokenizer.config
    device = model_device(model)
    contexts: list[Sequence[int] | None] = [*visual_tokens, None]  # the last column: without video
    scores = np.zeros((len(texts), len(contexts)))
    longest = max(visual_tokens, key=len)
    for i, text in enumerate(tqdm(texts, desc="caption likelihood", leave=False, disable=None)):
        jobs = [(j, piece) for j in range(len(contexts)) for piece in range(_text_length(tokenizer, text, longest))]
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            batch = encode_batch(tokenizer, [text] * len(chunk), [contexts[j] for j, _ in chunk], device)
            rows = torch.arange(len(chunk), device=device)
            # Text pieces sit at positions 1..L, right after [CLS] (model.tokenization).
            positions = torch.tensor([1 + piece for _, piece in chunk], device=device)
            gold = batch["input_ids"][rows, positions]  # (chunk,)
            labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
            labels[rows, positions] = gold
            batch["input_ids"][rows, positions] = config.mask_token_id
            logits = model(**batch, labels=labels).prediction_logits  # (chunk, vocab): one labelled position a row
            log_probs = logits[:, : config.text_vocab_size].double().log_softmax(dim=-1)  # (chunk, text_vocab)
            picked = log_probs[rows, gold].cpu().numpy()
            np.add.at(scores[i], [j for j, _ in chunk], picked)
    return scores[:, :-1] - scores[:, -1:]  # (texts, videos)


def _text_length(tokenizer: VideoBertTokenizer, text: str, longest: Sequence[int]) -> int:
    """Word pieces of `text` kept by every encoding of it (a long text is cut to fit the model's positions, more so
    beside the longest visual sequence)."""
    alone = len(tokenizer.encode(text, None)["input_ids"]) - 2  # [CLS] text [SEP]
    # Only the visual length matters; placeholder words stand for clip features.
    beside = tokenizer.encode(text, [0] * len(longest))["token_type_ids"].count(0) - 2  # [CLS] text [>]
    return min(alone, beside)


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
    """method -> direction -> {r1, r5, r10, median_rank} for the segments (`texts[i]`, `visual_tokens[i]`); texts may
    repeat (module docstring: the queries are the distinct texts, a text's right answers all its segments).

    Methods ``alignment``, ``embedding`` and ``likelihood``, directions ``text_to_video`` and ``video_to_text``.
    """
    if len(texts) != len(visual_tokens):
        raise ValueError(f"got {len(texts)} texts but {len(visual_tokens)} visual sequences")
    if len(texts) < 2:
        raise ValueError(f"retrieval needs at least 2 pairs, got {len(texts)}")
    queries = [texts[i] for i in distinct_captions(texts)]
    if len(queries) < 2:
        raise ValueError("retrieval needs at least 2 distinct texts")
    keys = np.array([_caption_key(t) for t in texts])
    relevant = np.array([_caption_key(q) for q in queries])[:, None] == keys[None, :]  # (queries, videos)
    aligned = alignment_similarity(model, tokenizer, queries, visual_tokens, batch_size)  # (queries, videos)
    likely = likelihood_similarity(model, tokenizer, queries, visual_tokens, batch_size)  # (queries, videos)
    text_embeddings = pooled_embeddings(model, tokenizer, texts=queries, batch_size=batch_size)  # (queries, hidden)
    video_embeddings = pooled_embeddings(model, tokenizer, visual_tokens=visual_tokens, batch_size=batch_size)
    similarities = {
        "alignment": {"text_to_video": aligned, "video_to_text": aligned.T},
        "embedding": {
            "text_to_video": embedding_similarity(text_embeddings, video_embeddings),
            "video_to_text": embedding_similarity(video_embeddings, text_embeddings),
        },
        "likelihood": {"text_to_video": likely, "video_to_text": likely.T},
    }
    right = {"text_to_video": relevant, "video_to_text": relevant.T}
    return {
        method: {
            direction: retrieval_metrics(similarities[method][direction], RECALL_AT, relevant=right[direction])
            for direction in DIRECTIONS
        }
        for method in METHODS
    }
