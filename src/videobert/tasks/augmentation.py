"""Training augmentations of a segment's inputs beyond the temporal ones of `tasks.finetune.augment` (stride and
token dropout): a visual word swapped for a neighbour in the vocabulary tree, and the narration dropped whole or
word by word. Each returns a new view and leaves its input alone; a rate of 0 returns the input unchanged."""
from __future__ import annotations

import numpy as np

from videobert.tokenizer.hkmeans import VisualTokenizer
from videobert.utils.errors import ConfigError


class VisualNeighbours:
    """For each visual word, its siblings in the hierarchical k-means tree (the other reachable leaves under the
    same parent node): the words whose clips the quantiser separated last, so the nearest stand-ins for it."""

    def __init__(self, visual_tokenizer: VisualTokenizer):
        k = visual_tokenizer.config.k
        reachable = visual_tokenizer.reachable()  # (k**depth,) bool, by leaf id
        self.siblings: list[np.ndarray] = []
        for token in range(len(reachable)):
            first = token - token % k  # leaves under one parent have consecutive ids
            family = np.arange(first, first + k)
            self.siblings.append(family[reachable[first : first + k] & (family != token)])

    def substitute(self, visual: np.ndarray, probability: float, rng: np.random.Generator) -> np.ndarray:
        """`visual` with each word replaced, with `probability`, by one of its siblings drawn uniformly (a word
        without a sibling stays)."""
        if not 0.0 <= probability < 1.0:
            raise ConfigError(f"word_substitution must be in [0, 1), got {probability}")
        out = np.array(visual, copy=True)
        for i in np.flatnonzero(rng.random(len(out)) < probability):
            family = self.siblings[int(out[i])]
            if len(family):
                out[i] = family[rng.integers(0, len(family))]
        return out


def drop_narration(
    text: str | None, narration_dropout: float, word_dropout: float, rng: np.random.Generator
) -> str | None:
    """The narration dropped whole with probability `narration_dropout` (the model then sees the video alone, as
    for an unnarrated segment), otherwise each of its words dropped with probability `word_dropout` (one is always
    kept)."""
    for name, rate in (("narration_dropout", narration_dropout), ("word_dropout", word_dropout)):
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {rate}")
    if text is None or (narration_dropout > 0 and rng.random() < narration_dropout):
        return None
    words = text.split()
    if word_dropout == 0 or not words:
        return text
    keep = rng.random(len(words)) >= word_dropout
    keep[rng.integers(0, len(words))] = True
    return " ".join(w for w, kept in zip(words, keep) if kept)
