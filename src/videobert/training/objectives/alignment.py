"""Linguistic–visual alignment: the pooled [CLS] state says whether the text and the video of a text–video example
belong together (BERT's next-sentence head). The stream draws the pairs (`training.data`: another video's visual
sentence with probability ``negative_prob``); the loss is the model's mean cross-entropy over the labelled pairs."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from videobert.model.configuration import ALIGNED
from videobert.model.modeling import IGNORE_INDEX
from videobert.training.objectives.base import Objective, Sums


class Alignment(Objective):
    name = "alignment"
    weight_field = "alignment_weight"
    # The accuracy is reported per class; the meter's `alignment_accuracy` is their mean (balanced): held-out pairs
    # can lack negatives (a split of one video has no other video to draw them from), and a head that always
    # answers "aligned" would then score 1.0. Without pairs of both kinds it is left out.
    metrics = ("alignment_loss", "alignment_accuracy_aligned", "alignment_accuracy_not_aligned")

    def step(
        self, outputs: Any, batch: dict[str, torch.Tensor], regime: torch.Tensor, train: bool
    ) -> tuple[torch.Tensor, Sums]:
        labels = batch["alignment_labels"]  # (batch,)
        paired = labels != IGNORE_INDEX
        logits = outputs.alignment_logits[paired].detach().float()  # (pairs, 2)
        count = paired.sum()
        hits = logits.argmax(-1) == labels[paired]  # (pairs,)
        aligned = labels[paired] == ALIGNED  # (pairs,)
        return outputs.alignment_loss, {
            "alignment_loss": (F.cross_entropy(logits, labels[paired], reduction="sum").double(), count),
            "alignment_accuracy_aligned": ((hits & aligned).sum(), aligned.sum()),
            "alignment_accuracy_not_aligned": ((hits & ~aligned).sum(), (~aligned).sum()),
        }
