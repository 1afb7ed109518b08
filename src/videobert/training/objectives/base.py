"""What a pretraining objective is: one unit that may add its inputs and targets to a collated batch, turns the
model's outputs into its loss, and reports running sums from which its metrics are means.

The trainer sums ``weight x loss`` over the objectives of a run (`videobert.training.objectives.build_objectives`);
every objective's loss enters the sum in every step, weight 0 included, so each head takes part in every step and
DDP needs no unused-parameter search. Metrics are means: an objective reports, per metric, a (sum, count) pair for
the batch; `ObjectiveMeter` accumulates them on the device and reduces them over processes.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

# A metric's (sum, count) over one batch.
Sums = dict[str, tuple[torch.Tensor, torch.Tensor]]


class Objective(ABC):
    """One pretraining objective (module docstring). Subclasses set `name`, `weight_field` (the `PretrainConfig`
    field holding its weight) and `metrics` (the names of the means it reports), and implement `step`."""

    name: ClassVar[str]
    weight_field: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def collate(self, batch: dict[str, torch.Tensor], examples: Sequence[Any]) -> None:
        """Add this objective's model inputs and targets to a collated (masked, padded) batch, in place."""

    def model_inputs(self, train: bool) -> dict[str, Any]:
        """Extra keyword arguments of the model's forward in a training (`train`) or evaluation step."""
        return {}

    @abstractmethod
    def step(
        self, outputs: Any, batch: dict[str, torch.Tensor], regime: torch.Tensor, train: bool
    ) -> tuple[torch.Tensor, Sums]:
        """(loss, metric sums) of one batch; `regime` (batch,) is each example's regime, `train` says whether this
        is a training step (an objective with state, such as a memory of negatives, updates it only then)."""
