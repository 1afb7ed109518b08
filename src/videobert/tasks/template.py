"""The zero-shot template and its scoring, without torch: `tasks.zeroshot` (PyTorch) and the ONNX runtime
(`serving.runtime`) rank labels by the same code; each gives only a function that turns a batch of encoded
sequences into log-probabilities at their `[MASK]`s. The method is explained in `tasks.zeroshot`.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from videobert.utils.errors import ConfigError

logger = logging.getLogger(__name__)

TEMPLATE = "now let me show you how to [MASK] the [MASK]"
SLOTS = ("verb", "noun")

#: (texts, visual tokens) -> (batch, seq) int64 `input_ids`, `token_type_ids`, `attention_mask`
EncodeBatch = Callable[[Sequence[str | None], Sequence[Sequence[int] | None]], dict[str, np.ndarray]]
#: (encoded batch, (batch, seq) bool mask of the positions to score) -> (num_masked, text_vocab) log-probabilities
#: over the WordPiece vocabulary, one row per masked position in row-major order
MaskedLogProbs = Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]


@dataclass(frozen=True)
class LabelSet:
    """The candidates of one template slot: distinct labels, sorted, and the WordPiece ids of each."""

    names: tuple[str, ...]
    pieces: tuple[tuple[int, ...], ...]

    @classmethod
    def from_values(cls, values: Iterable[str | None], text_tokenizer: Any) -> "LabelSet":
        """The distinct non-empty `values` (surrounding whitespace removed), tokenized with `text_tokenizer` (a
        transformers tokenizer, or anything with its `encode(text, add_special_tokens=False)`, `unk_token_id` and
        `unk_token`)."""
        names = sorted({v.strip() for v in values if v is not None and v.strip()})
        if not names:
            raise ValueError("no labels: every value is missing or empty")
        pieces = tuple(tuple(text_tokenizer.encode(name, add_special_tokens=False)) for name in names)
        for name, ids in zip(names, pieces):
            if not ids:
                raise ValueError(f"label {name!r} has no WordPiece pieces")
            if text_tokenizer.unk_token_id in ids:
                # Still a candidate, but one the model can only predict through [UNK]: worth a word to the user.
                logger.warning("label %r contains %s for the text tokenizer", name, text_tokenizer.unk_token)
        return cls(tuple(names), pieces)

    def __len__(self) -> int:
        return len(self.names)

    def index(self, values: Sequence[str | None]) -> np.ndarray:
        """(len(values),) index of each value in `names`, -1 for a missing or empty value."""
        position = {name: i for i, name in enumerate(self.names)}
        out = np.full(len(values), -1, dtype=np.int64)
        for row, value in enumerate(values):
            if value is None or not value.strip():
                continue
            if value.strip() not in position:
                raise ValueError(f"label {value!r} is not among the {len(self.names)} candidates")
            out[row] = position[value.strip()]
        return out

    def groups(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Piece count n -> (label indices (L_n,), their piece ids (L_n, n))."""
        by_length: dict[int, list[int]] = {}
        for i, ids in enumerate(self.pieces):
            by_length.setdefault(len(ids), []).append(i)
        return {
            n: (np.asarray(rows), np.asarray([self.pieces[i] for i in rows], dtype=np.int64))
            for n, rows in sorted(by_length.items())
        }


def split_template(template: str, mask_token: str) -> tuple[str, str, str]:
    """The text before the verb slot, between the slots and after the noun slot; `ConfigError` unless the template
    has exactly two `mask_token`s."""
    parts = template.split(mask_token)
    if len(parts) != 3:
        raise ConfigError(
            f"the template must contain exactly two {mask_token} (verb, then noun), found {len(parts) - 1} in "
            f"{template!r}"
        )
    return parts[0], parts[1], parts[2]


def fill_template(template: str, mask_token: str, verb_masks: int, noun_masks: int) -> str:
    """`template` with `verb_masks` mask tokens in the verb slot and `noun_masks` in the noun slot."""
    before, between, after = split_template(template, mask_token)
    return before + " ".join([mask_token] * verb_masks) + between + " ".join([mask_token] * noun_masks) + after


def score_template(
    encode_batch: EncodeBatch,
    masked_log_probs: MaskedLogProbs,
    mask_token: str,
    mask_token_id: int,
    max_positions: int,
    visual_tokens: Sequence[Sequence[int] | None],
    verbs: LabelSet,
    nouns: LabelSet,
    template: str = TEMPLATE,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """(examples, verbs) and (examples, nouns) label scores: the mean log-probability of a label's pieces in its
    slot (`tasks.zeroshot`). An example is the visual tokens of a segment, or `None` for the template without video.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    verb_groups, noun_groups = verbs.groups(), nouns.groups()
    layouts = sorted({(n, 1) for n in verb_groups} | {(1, m) for m in noun_groups})
    texts = {layout: fill_template(template, mask_token, *layout) for layout in layouts}
    jobs = [(example, layout) for example in range(len(visual_tokens)) for layout in layouts]
    verb_scores = np.full((len(visual_tokens), len(verbs)), np.nan)
    noun_scores = np.full((len(visual_tokens), len(nouns)), np.nan)

    for start in tqdm(range(0, len(jobs), batch_size), desc="zero-shot", leave=False, disable=None):
        chunk = jobs[start : start + batch_size]
        batch = encode_batch([texts[layout] for _, layout in chunk], [visual_tokens[example] for example, _ in chunk])
        masked = batch["input_ids"] == mask_token_id  # (batch, seq)
        counts = masked.sum(axis=1).tolist()
        if counts != [sum(layout) for _, layout in chunk]:
            raise ConfigError(
                f"the template {template!r} does not keep its {mask_token} slots once encoded; is it longer "
                f"than the model's {max_positions} positions?"
            )
        log_probs = masked_log_probs(batch, masked)  # (num_masked, text_vocab), row-major
        for (example, (n_verb, n_noun)), rows in zip(chunk, np.split(log_probs, np.cumsum(counts)[:-1])):
            # rows: (n_verb + n_noun, text_vocab), the verb slot's masks first.
            if n_noun == 1 and n_verb in verb_groups:
                labels_of_length, pieces = verb_groups[n_verb]
                verb_scores[example, labels_of_length] = _mean_piece_log_prob(rows[:n_verb], pieces)
            if n_verb == 1 and n_noun in noun_groups:
                labels_of_length, pieces = noun_groups[n_noun]
                noun_scores[example, labels_of_length] = _mean_piece_log_prob(rows[n_verb:], pieces)
    return verb_scores, noun_scores


def top_labels(scores: np.ndarray, labels: LabelSet, k: int = 5) -> list[dict[str, Any]]:
    """The `k` best of `labels` by `scores` (L,) mean log-probabilities, best first: {label, prob, log_prob}, prob
    the softmax over all L candidates."""
    scores = np.asarray(scores, dtype=np.float64)
    exp = np.exp(scores - scores.max())
    probs = exp / exp.sum()
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"label": labels.names[i], "prob": float(probs[i]), "log_prob": float(scores[i])} for i in order]


def _mean_piece_log_prob(rows: np.ndarray, pieces: np.ndarray) -> np.ndarray:
    """(L,) mean over j of rows[j, pieces[:, j]], for `rows` (n, text_vocab) the log-probs at a slot's n masks and
    `pieces` (L, n) the piece ids of L labels."""
    n = pieces.shape[1]
    per_piece = rows[np.arange(n)[None, :], pieces]  # (L, n)
    return per_piece.mean(axis=1, dtype=np.float64)
