"""Masked words and masked visual words: BERT's masked-token prediction over the joint vocabulary, one head for both
(`VideoBertForPreTraining.cls.predictions`). The collator masks both modalities (`training.data.MaskingCollator`:
15 %, 80/10/10, per-example seeds); the two objectives split the masked positions by modality.

Both losses are divided by the number of masked tokens of the batch, words and visual words together, so that with
weights 1 their sum is the paper's single masked-token loss (the mean cross-entropy over every masked position).
Metrics: the mean cross-entropy per regime (text, video) and, in text–video examples, per side.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from videobert.model.modeling import IGNORE_INDEX
from videobert.training.data import TEXT, TEXT_VIDEO, VIDEO
from videobert.training.objectives.base import Objective, Sums


class _MaskedTokens(Objective):
    """The positions of one modality; `visual` says which, `buckets` maps a regime to the metric of its positions."""

    visual: bool
    buckets: dict[int, str]

    def __init__(self, weight: float, visual_token_offset: int):
        super().__init__(weight)
        self.visual_token_offset = visual_token_offset

    def step(
        self, outputs: Any, batch: dict[str, torch.Tensor], regime: torch.Tensor, train: bool
    ) -> tuple[torch.Tensor, Sums]:
        labels = batch["labels"]  # (batch, seq)
        masked = labels != IGNORE_INDEX  # (batch, seq)
        targets = labels[masked]  # (num_masked,)
        # prediction_logits holds only the masked rows, aligned with labels[masked] (the model's docstring).
        mine = (targets >= self.visual_token_offset) == self.visual  # (num_masked,)
        losses = F.cross_entropy(outputs.prediction_logits[mine].float(), targets[mine], reduction="none")
        loss = losses.sum() / masked.sum().clamp(min=1)
        of_regime = regime[:, None].expand_as(labels)[masked][mine]  # (num_mine,) regime of each position
        sums = {}
        for value, metric in self.buckets.items():
            hit = of_regime == value
            sums[metric] = (losses[hit].detach().double().sum(), hit.sum())
        return loss, sums


class MaskedWords(_MaskedTokens):
    name = "masked_words"
    weight_field = "masked_words_weight"
    metrics = ("mlm_loss_text", "mlm_loss_text_video_words")
    visual = False
    buckets = {TEXT: "mlm_loss_text", TEXT_VIDEO: "mlm_loss_text_video_words"}


class MaskedVisualWords(_MaskedTokens):
    name = "masked_visual_words"
    weight_field = "masked_visual_words_weight"
    metrics = ("mlm_loss_video", "mlm_loss_text_video_visual")
    visual = True
    buckets = {VIDEO: "mlm_loss_video", TEXT_VIDEO: "mlm_loss_text_video_visual"}
