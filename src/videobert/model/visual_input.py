"""The visual input of a VideoBERT sequence: visual words, continuous clip features, or both (`visual_input`).

A visual position of `[CLS] text [>] visual [SEP]` is embedded as

    words      the visual word's row of the joint embedding table (VideoBERT)
    features   the clip's feature, standardised with the training split's statistics, then LayerNorm and a linear
               projection to the hidden size (`ClipFeatureInput`) (CBT: no quantisation)
    both       the sum of the two (the "VideoBERT + S3D" input)

after which BERT's position and token-type terms and its embedding LayerNorm apply as to any token. In the modes that
read features the input ids still mark the visual positions (a visual word, or the placeholder `[V0]` when the model
reads features alone), and `visual_features` (batch, seq, feature_dim) holds each position's clip feature. A masked
visual position holds `[MASK]`: it is not a visual id, so it reads the mask embedding and nothing of its own clip.

Host-side, one visual item per example is what the mode reads: visual words `(clips,)` int, clip features
`(clips, feature_dim)` float, or both as a structured array with fields `word` and `feature` (`words_and_features`);
`encode_visual_batch` turns a batch of them into model inputs.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from videobert.model.tokenization import VideoBertTokenizer


class ClipFeatureInput(nn.Module):
    """Clip features -> hidden-size embeddings: standardise (fixed per-dimension statistics, saved with the model),
    LayerNorm, linear. `standardise` alone gives the targets of the noise-contrastive loss."""

    def __init__(self, feature_dim: int, hidden_size: int, eps: float = 1e-12):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))
        self.norm = nn.LayerNorm(feature_dim, eps=eps)
        self.projection = nn.Linear(feature_dim, hidden_size)

    def set_statistics(self, mean: Any, std: Any) -> None:
        """Per-dimension mean and std (feature_dim,) of the training clips; a std of 0 counts as 1."""
        std = torch.as_tensor(std, dtype=self.feature_std.dtype)
        with torch.no_grad():
            self.feature_mean.copy_(torch.as_tensor(mean, dtype=self.feature_mean.dtype))
            self.feature_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        return (features.to(self.feature_mean.dtype) - self.feature_mean) / self.feature_std

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(..., feature_dim) -> (..., hidden)."""
        return self.projection(self.norm(self.standardise(features)))


def visual_embeddings(
    word_embeddings: nn.Embedding,
    clip_input: ClipFeatureInput,
    input_ids: torch.LongTensor,
    visual_features: torch.Tensor,
    visual_input: str,
    is_visual: torch.Tensor,
) -> torch.Tensor:
    """(batch, seq, hidden) input embeddings of a model that reads features: the word embedding everywhere, replaced
    (`features`) or joined by a sum (`both`) by the projected clip feature at the visual positions `is_visual`
    (batch, seq). `visual_features` is (batch, seq, feature_dim)."""
    embeddings = word_embeddings(input_ids)  # (batch, seq, hidden)
    projected = clip_input(visual_features).to(embeddings.dtype)  # (batch, seq, hidden)
    visual = is_visual.unsqueeze(-1)  # (batch, seq, 1)
    if visual_input == "features":
        return torch.where(visual, projected, embeddings)
    return embeddings + projected * visual


def words_and_features(words: np.ndarray, features: np.ndarray) -> np.ndarray:
    """The visual item of the modes that read both: one record per clip with fields `word` (int64) and `feature`
    (float32, (feature_dim,))."""
    if len(words) != len(features):
        raise ValueError(f"{len(words)} visual words but {len(features)} clip features")
    features = np.asarray(features, dtype=np.float32)
    out = np.empty(len(words), dtype=[("word", np.int64), ("feature", np.float32, (features.shape[1],))])
    out["word"], out["feature"] = words, features
    return out


def clip_features_of(visual: np.ndarray) -> np.ndarray:
    """The `(clips, feature_dim)` clip features of a visual item that has them (plain or `words_and_features`)."""
    return visual["feature"] if visual.dtype.names else visual


def visual_item(reads_words: bool, reads_features: bool, words: Any, features: Any) -> Any:
    """The visual item of a model reading words, features or both; what it does not read may be None."""
    if reads_words and reads_features:
        return words_and_features(words, features)
    return features if reads_features else words


def encode_visual_batch(
    tokenizer: VideoBertTokenizer,
    texts: Sequence[str | None] | None,
    visual: Sequence[Any] | None,
    reads_words: bool,
    reads_features: bool,
    feature_dim: int | None = None,
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """`tokenizer.batch_encode` for visual items of the given kind (module docstring); with features also
    `visual_features` (batch, seq, feature_dim): each kept clip's feature at its visual position, 0 elsewhere."""
    if not reads_features or visual is None:
        batch = tokenizer.batch_encode(texts, visual, max_length)
        if reads_features:
            batch["visual_features"] = torch.zeros(*batch["input_ids"].shape, feature_dim)
        return batch
    if reads_words:
        words = [None if v is None else v["word"] for v in visual]
    else:
        # Placeholder words hold the visual positions; the model replaces their embeddings by the projected features.
        words = [None if v is None else np.zeros(len(v), dtype=np.int64) for v in visual]
    batch = tokenizer.batch_encode(texts, words, max_length)
    is_visual = tokenizer.config.is_visual(batch["input_ids"])  # (batch, seq)
    features = torch.zeros(*batch["input_ids"].shape, feature_dim)  # (batch, seq, feature_dim)
    for row, item in enumerate(visual):
        if item is not None:
            kept = int(is_visual[row].sum())  # the tokenizer may have cut the visual side to fit
            features[row, is_visual[row]] = torch.as_tensor(np.asarray(clip_features_of(item)[:kept], np.float32))
    batch["visual_features"] = features
    return batch
