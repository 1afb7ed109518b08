"""Pretraining objectives, one unit each (`base.Objective`): how it adds to a collated batch, its loss, its metrics,
its weight (a `PretrainConfig` field). Adding one is its file plus a line in `build_objectives`.

    masked_words          masked WordPiece prediction (masked_tokens.py)
    masked_visual_words   masked visual-word prediction, models that read visual words (masked_tokens.py)
    alignment             linguistic–visual alignment of text–video pairs (alignment.py)
    masked_clips          noise-contrastive prediction of masked clip features, models that read them (masked_clips.py)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from accelerate.utils import reduce

from videobert.features.store import FeatureStore
from videobert.model.configuration import VideoBertConfig
from videobert.training.objectives.alignment import Alignment
from videobert.training.objectives.base import Objective, Sums
from videobert.training.objectives.masked_clips import MaskedClips
from videobert.training.objectives.masked_tokens import MaskedVisualWords, MaskedWords

# Means over the metrics of several objectives: a regime's masked-token loss over both of its sides.
COMBINED = {"mlm_loss_text_video": ("mlm_loss_text_video_words", "mlm_loss_text_video_visual")}

# Metrics that are the mean of other metrics' means (balanced over classes).
BALANCED: dict[str, tuple[str, ...]] = {
    "alignment_accuracy": ("alignment_accuracy_aligned", "alignment_accuracy_not_aligned"),
}


def build_objectives(
    training: Any, model: VideoBertConfig, features: FeatureStore | None = None
) -> list[Objective]:
    """The objectives of a run with settings `training` (a `PretrainConfig`: the weights, the noise-contrastive
    memory) for a model of config `model`; `features` is the clip feature store of a model that reads them."""
    objectives: list[Objective] = [MaskedWords(training.masked_words_weight, model.visual_token_offset)]
    if model.reads_words:
        objectives.append(MaskedVisualWords(training.masked_visual_words_weight, model.visual_token_offset))
    objectives.append(Alignment(training.alignment_weight))
    if model.reads_features:
        objectives.append(MaskedClips(training.nce_weight, model, features, training.nce_memory))
    return objectives


def objectives_step(
    objectives: Sequence[Objective], outputs: Any, batch: dict[str, torch.Tensor], regime: torch.Tensor, train: bool
) -> tuple[torch.Tensor, Sums]:
    """The weighted sum of the objectives' losses and all their metric sums, for one batch."""
    total, sums = None, {}
    for objective in objectives:
        loss, part = objective.step(outputs, batch, regime, train)
        total = objective.weight * loss if total is None else total + objective.weight * loss
        sums.update(part)
    return total, sums


def model_inputs(objectives: Sequence[Objective], train: bool) -> dict[str, Any]:
    """The extra forward arguments of all objectives."""
    return {key: value for objective in objectives for key, value in objective.model_inputs(train).items()}


class ObjectiveMeter:
    """Running sums, since the last `collect`, of the objectives' metrics and of the real (unpadded) tokens.

    Sums stay on the device (no synchronisation per step); `collect` reduces them over processes.
    """

    def __init__(self, objectives: Sequence[Objective], device: torch.device):
        self.names = [name for objective in objectives for name in objective.metrics]
        self.sums = torch.zeros(2 * len(self.names) + 1, dtype=torch.float64, device=device)
        self.tokens_total = 0.0

    @torch.no_grad()
    def add(self, sums: Sums, attention_mask: torch.Tensor) -> None:
        for i, name in enumerate(self.names):
            total, count = sums[name]
            self.sums[2 * i] += total
            self.sums[2 * i + 1] += count
        self.sums[-1] += attention_mask.sum()

    def collect(self) -> dict[str, float]:
        """Means since the last call, over all processes (a collective: every process must call it), then reset.
        Metrics without a sample (e.g. no text–video pair) are left out."""
        sums = reduce(self.sums.clone(), reduction="sum").tolist()
        self.sums.zero_()
        self.tokens_total += sums[-1]
        totals = {name: (sums[2 * i], sums[2 * i + 1]) for i, name in enumerate(self.names)}
        metrics = {name: total / count for name, (total, count) in totals.items() if count}
        for name, parts in COMBINED.items():
            total = sum(totals[p][0] for p in parts if p in totals)
            count = sum(totals[p][1] for p in parts if p in totals)
            if count:
                metrics[name] = total / count
        for name, parts in BALANCED.items():  # the mean of the parts' means, when every part has a sample
            if all(p in metrics for p in parts):
                metrics[name] = sum(metrics[p] for p in parts) / len(parts)
        return metrics


__all__ = [
    "COMBINED",
    "Alignment",
    "MaskedClips",
    "MaskedVisualWords",
    "MaskedWords",
    "Objective",
    "ObjectiveMeter",
    "build_objectives",
    "model_inputs",
    "objectives_step",
]
