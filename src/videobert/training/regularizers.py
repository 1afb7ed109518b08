"""What a fine-tuning loop adds to its loss to keep earlier knowledge or to resist perturbations, as small pieces
that a task's `batch_loss` composes (the loop itself, `tasks.supervised.fit`, is unchanged by them):

    ReservoirBuffer     experience replay: a uniform sample of every example seen so far (Vitter's algorithm R)
    fisher_diagonal     the diagonal empirical Fisher information of a model's loss on some data
    EWCPenalty          elastic weight consolidation (Kirkpatrick et al., 2017): a Fisher-weighted pull towards the
                        weights each earlier stage ended with
    distillation_loss   learning without forgetting (Li and Hoiem, 2017): the old model's softened outputs as targets
    EmbeddingAttack     FGM (Miyato et al., 2017) and PGD (Madry et al., 2018) perturbations of the input embeddings
    layerwise_parameter_groups   layer-wise learning-rate decay (Clark et al., 2020; Howard and Ruder, 2018)
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Iterator, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videobert.utils.errors import ConfigError

T = TypeVar("T")
ATTACKS = ("none", "fgm", "pgd")


class ReservoirBuffer(Generic[T]):
    """At most `capacity` items, at every moment a uniform random sample without replacement of all items offered
    so far (algorithm R): the n-th item offered replaces a random slot with probability capacity / n."""

    def __init__(self, capacity: int, rng: np.random.Generator):
        if capacity < 1:
            raise ConfigError(f"the replay buffer needs a capacity of at least 1, got {capacity}")
        self.capacity = capacity
        self.items: list[T] = []
        self.seen = 0
        self._rng = rng

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: T) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
            return
        slot = int(self._rng.integers(0, self.seen))
        if slot < self.capacity:
            self.items[slot] = item

    def sample(self, n: int) -> list[T]:
        """`n` items drawn without replacement (all of them when the buffer holds fewer)."""
        rows = self._rng.choice(len(self.items), size=min(n, len(self.items)), replace=False)
        return [self.items[i] for i in rows]


def fisher_diagonal(model: nn.Module, losses: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Parameter name -> mean over `losses` of the squared gradient of each loss, for the trainable parameters.

    With one loss per example (the negative log-likelihood of its label) this is the diagonal of the empirical
    Fisher information; larger batches per loss give a cheaper, coarser estimate. `losses` is consumed lazily, so
    each loss's graph is freed before the next is built.
    """
    parameters = {name: p for name, p in model.named_parameters() if p.requires_grad}
    fisher = {name: torch.zeros_like(p) for name, p in parameters.items()}
    count = 0
    for loss in losses:
        grads = torch.autograd.grad(loss, list(parameters.values()), allow_unused=True)
        for name, grad in zip(parameters, grads):
            if grad is not None:
                fisher[name] += grad.detach() ** 2
        count += 1
    if count == 0:
        raise ConfigError("the Fisher information needs at least one example")
    return {name: value / count for name, value in fisher.items()}


@dataclass
class _Anchor:
    weights: dict[str, torch.Tensor]
    fisher: dict[str, torch.Tensor]


class EWCPenalty:
    """`strength / 2 * sum over anchors, parameters i of F_i (theta_i - theta*_i)^2`: one anchor (the weights
    theta* a stage ended with and its Fisher F) per earlier stage, as in the original paper's multi-task form."""

    def __init__(self, strength: float):
        if strength < 0:
            raise ConfigError(f"the EWC strength must be at least 0, got {strength}")
        self.strength = strength
        self.anchors: list[_Anchor] = []

    def consolidate(self, model: nn.Module, fisher: dict[str, torch.Tensor]) -> None:
        """Anchor the current weights of `model` with the importance `fisher` (from `fisher_diagonal`)."""
        weights = {name: p.detach().clone() for name, p in model.named_parameters() if name in fisher}
        self.anchors.append(_Anchor(weights, {name: f.detach().clone() for name, f in fisher.items()}))

    def __call__(self, model: nn.Module) -> torch.Tensor:
        parameters = dict(model.named_parameters())
        total = torch.zeros((), device=next(model.parameters()).device)
        for anchor in self.anchors:
            for name, weight in anchor.weights.items():
                total = total + (anchor.fisher[name] * (parameters[name] - weight) ** 2).sum()
        return self.strength / 2 * total


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """`T^2 KL(softmax(teacher / T) || softmax(student / T))`, averaged over the batch: zero exactly when the two
    agree. Scaling by T^2 keeps its gradients the size of a cross-entropy's whatever the temperature (Hinton et al.,
    2015). Logits are (batch, classes)."""
    if temperature <= 0:
        raise ConfigError(f"the distillation temperature must be positive, got {temperature}")
    teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature**2


@dataclass
class EmbeddingAttack:
    """An L2-bounded perturbation of the input embeddings (the output of the model's input embedding table, before
    position and type embeddings are added) that raises the loss: `fgm` takes one step of size `eps` along the
    gradient; `pgd` takes `steps` steps of `eps / steps * 2.5` (Madry et al.'s step rule), each projected back into
    the ball of radius `eps`. Norms are per example, over its whole (sequence, hidden) block."""

    method: str = "fgm"
    """fgm or pgd."""
    eps: float = 1.0
    """Radius of the perturbation (L2 norm per example)."""
    steps: int = 3
    """pgd: gradient steps."""
    fixed_ids: tuple[int, ...] = ()
    """Token ids whose embeddings are never perturbed: the special tokens that mark the input's layout ([CLS],
    [SEP], [>], padding), so that the attack changes what the input shows, not where the classifier reads it."""

    def __post_init__(self) -> None:
        if self.method not in ATTACKS[1:]:
            raise ConfigError(f"unknown attack {self.method!r}; choose fgm or pgd")
        if self.eps <= 0:
            raise ConfigError(f"the attack radius eps must be positive, got {self.eps}")
        if self.steps < 1:
            raise ConfigError(f"the attack needs at least 1 step, got {self.steps}")

    def perturbation(self, model: nn.Module, loss_of: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The perturbation (batch, seq, hidden) for the batch that `loss_of` scores; leaves no gradient on the
        model's parameters."""
        steps, size = (1, self.eps) if self.method == "fgm" else (self.steps, 2.5 * self.eps / self.steps)
        delta = None  # zero, in the embedding's shape, at the first step
        for _ in range(steps):
            with perturbed_embeddings(model, delta) as added:
                loss = loss_of()
            (grad,) = torch.autograd.grad(loss, added["delta"])
            if self.fixed_ids:
                fixed = torch.isin(added["ids"], torch.tensor(self.fixed_ids, device=grad.device))  # (batch, seq)
                grad = grad.masked_fill(fixed.unsqueeze(-1), 0.0)
            with torch.no_grad():
                delta = _project(added["delta"] + size * _unit(grad), self.eps)
        return delta


@contextmanager
def perturbed_embeddings(model: nn.Module, delta: torch.Tensor | None) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, the model's input embedding table returns its output plus `delta` (None: plus zeros); the
    yielded dict holds, under "delta", the tensor added last as a leaf that requires grad, so that the gradient of
    a loss with respect to the perturbation can be taken, and under "ids" the token ids it embedded."""
    added: dict[str, torch.Tensor] = {}

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        leaf = torch.zeros_like(output) if delta is None else delta.detach().to(output.dtype)
        added["ids"] = inputs[0]
        added["delta"] = leaf.requires_grad_(True)
        return output + leaf

    handle = model.get_input_embeddings().register_forward_hook(hook)
    try:
        yield added
    finally:
        handle.remove()


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Each example's block divided by its L2 norm (zero stays zero)."""
    norms = x.flatten(1).norm(dim=1).clamp_min(1e-12)  # (batch,)
    return x / norms.view(-1, *[1] * (x.dim() - 1))


def _project(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Each example's block scaled back into the L2 ball of radius `eps`."""
    norms = x.flatten(1).norm(dim=1)  # (batch,)
    scale = (eps / norms.clamp_min(1e-12)).clamp(max=1.0)
    return x * scale.view(-1, *[1] * (x.dim() - 1))


_LAYER = re.compile(r"\.encoder\.layer\.(\d+)\.")


def layerwise_parameter_groups(
    model: nn.Module, learning_rate: float, decay: float, num_layers: int
) -> list[dict[str, Any]]:
    """AdamW parameter groups of the trainable parameters with learning rates that shrink by `decay` per layer
    from the top: the head (and anything outside the encoder) at `learning_rate`, encoder layer i at
    `learning_rate * decay ** (num_layers - i)`, the embeddings at `learning_rate * decay ** (num_layers + 1)`.
    Lower layers hold the most general features, so they move least. `decay` 1 is one group at `learning_rate`."""
    if not 0 < decay <= 1:
        raise ConfigError(f"the layer-wise learning-rate decay must be in (0, 1], got {decay}")
    groups: dict[int, list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        layer = _LAYER.search(name)
        depth = num_layers - int(layer.group(1)) if layer else num_layers + 1 if ".embeddings." in name else 0
        groups.setdefault(depth, []).append(parameter)
    return [{"params": params, "lr": learning_rate * decay**depth} for depth, params in sorted(groups.items())]
