"""Masked clips (CBT): a model that reads continuous clip features predicts a masked clip by noise-contrastive
estimation. The collator has put [MASK] at every chosen clip position (`training.data.MaskingCollator`); this objective
adds each clip position's feature (``visual_features``, read from the feature store) and, at the masked ones, the
clip's store row as its identity (``feature_labels``). The model scores the output at a masked position against the
clip's own feature and those of the batch's other masked clips (`modeling.info_nce`); with ``nce_memory`` > 0 the
masked clips of recent training batches join as extra negatives. Metrics: the loss and the top-1 accuracy (the own
clip ranked first among the candidates), the held-out masked-position accuracy of the benchmarks.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from videobert.features.store import FeatureStore
from videobert.model.configuration import VideoBertConfig
from videobert.model.modeling import IGNORE_INDEX
from videobert.model.tokenization import VISUAL_TYPE
from videobert.training.objectives.base import Objective, Sums


class MaskedClips(Objective):
    name = "masked_clips"
    weight_field = "nce_weight"
    metrics = ("nce_loss", "nce_accuracy")

    def __init__(self, weight: float, config: VideoBertConfig, features: FeatureStore, memory: int = 0):
        super().__init__(weight)
        self.config = config
        self.features = features
        self.memory_size = memory
        self.memory: tuple[torch.Tensor, torch.Tensor] | None = None  # recent masked clips: (raw features, rows)

    def collate(self, batch: dict[str, torch.Tensor], examples: Sequence[Any]) -> None:
        """``visual_features`` (batch, seq, feature_dim) and ``feature_labels`` (batch, seq); the masked clips' word
        labels become -100 unless the model also reads visual words (visual_input both)."""
        input_ids = batch["input_ids"].numpy()
        visual = np.zeros(input_ids.shape, dtype=bool)  # (batch, seq) every clip position, masked or not
        feature_rows = np.full(input_ids.shape, -1, dtype=np.int64)
        for row, example in enumerate(examples):
            positions = np.flatnonzero(np.asarray(example.token_type_ids) == VISUAL_TYPE)[:-1]  # not the last [SEP]
            if example.visual_rows is None or not len(positions):
                continue
            visual[row, positions] = True
            feature_rows[row, positions] = example.visual_rows[: len(positions)]  # the tokenizer may cut the tail
        masked = torch.from_numpy(visual & (input_ids == self.config.mask_token_id))  # (batch, seq)
        features = np.zeros((*input_ids.shape, self.features.dim), dtype=np.float32)
        features[visual] = self.features.gather(feature_rows[visual])
        if not self.config.reads_words:
            batch["labels"][masked] = IGNORE_INDEX  # the placeholder word is not a target
        batch["visual_features"] = torch.from_numpy(features)
        batch["feature_labels"] = torch.where(masked, torch.from_numpy(feature_rows), IGNORE_INDEX)

    def model_inputs(self, train: bool) -> dict[str, Any]:
        return {"nce_memory": self.memory} if train and self.memory is not None else {}

    def step(
        self, outputs: Any, batch: dict[str, torch.Tensor], regime: torch.Tensor, train: bool
    ) -> tuple[torch.Tensor, Sums]:
        logits = outputs.nce_logits.detach().float()  # (masked clips, candidates); row i's own clip is column i
        own = torch.arange(logits.shape[0], device=logits.device)
        count = torch.tensor(logits.shape[0], device=logits.device)
        if len(logits):
            sums = {"nce_loss": (F.cross_entropy(logits, own, reduction="sum").double(), count),
                    "nce_accuracy": ((logits.argmax(-1) == own).sum(), count)}  # fmt: skip
        else:
            zero = torch.zeros((), dtype=torch.float64, device=logits.device)
            sums = {"nce_loss": (zero, count), "nce_accuracy": (zero, count)}
        if train and self.memory_size:
            self._remember(batch)
        return outputs.nce_loss, sums

    def _remember(self, batch: dict[str, torch.Tensor]) -> None:
        """Keep the batch's masked clips (raw features and rows) as negatives, the newest `memory_size` of them."""
        masked = batch["feature_labels"] != IGNORE_INDEX  # (batch, seq)
        features, rows = batch["visual_features"][masked].detach(), batch["feature_labels"][masked]
        if self.memory is not None:
            features, rows = torch.cat([features, self.memory[0]]), torch.cat([rows, self.memory[1]])
        self.memory = (features[: self.memory_size], rows[: self.memory_size])
