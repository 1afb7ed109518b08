"""What the supervised stages share: the checked inputs of a work directory, the training loop with early stopping on
the validation loss, and the console table of their metrics.

The loop (`fit`) is the recipe of every fine-tuning stage (classification, captioning, QA, forecasting): train on
split train, evaluate the val loss after every epoch, keep the trained tensors of the best epoch, stop after
`patience` epochs without improvement. It is written once over a function that computes the loss of a batch, so that
tasks whose examples are not single segments (a caption, a question with K candidate answers) train the same way.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from videobert.model import VideoBertConfig, visual_tokenizer_from_work_dir
from videobert.tasks.peft_methods import restore_state, trained_state
from videobert.tokenizer.stages import tokens_metadata
from videobert.utils.errors import ConfigError
from videobert.workdir import WorkDir

logger = logging.getLogger(__name__)


def checked_tokens(work: str | Path, config: VideoBertConfig) -> Path:
    """Path of WORK's tokens.parquet after checking that vocab/ is the model's visual vocabulary and that the tokens
    were made with it (`ConfigError` otherwise: the same ids would mean different clips)."""
    wd = WorkDir(work)
    visual_tokenizer = visual_tokenizer_from_work_dir(work, config)
    tokens_path = wd.require(wd.tokens, "tokenize")
    if tokens_metadata(tokens_path).get("vocab_hash") != visual_tokenizer.content_hash:
        raise ConfigError(f"{tokens_path} was made with another vocabulary than {wd.vocab}; run `videobert tokenize`")
    return tokens_path


def check_training_options(**options: float) -> None:
    """`ConfigError` unless epochs, batch_size and patience are at least 1 and learning_rate is positive (those of
    them that are given)."""
    for name in ("epochs", "batch_size", "patience"):
        if name in options and options[name] < 1:
            raise ConfigError(f"{name} must be at least 1, got {options[name]}")
    if "learning_rate" in options and options["learning_rate"] <= 0:
        raise ConfigError(f"learning_rate must be positive, got {options['learning_rate']}")


def freeze_word_embeddings(model: nn.Module) -> None:
    """Stop training the joint vocabulary's embedding table (and the masked-token decoder tied to it).

    It is most of a small VideoBERT's parameters (30k WordPieces + the visual words, times the hidden size), while a
    downstream task's examples touch a few hundred of its rows; AdamW would still update and weight-decay every row
    at every step, which costs most of the step time on CPU and drifts rows the task never saw.
    """
    model.get_input_embeddings().weight.requires_grad = False


def should_stop(val_losses: list[float], patience: int) -> bool:
    """Whether the last `patience` epochs all failed to lower the best val loss of the epochs before them (a tie
    is no improvement)."""
    return len(val_losses) - 1 - int(np.argmin(val_losses)) >= patience


def fit(
    model: nn.Module,
    train_size: int,
    batch_loss: Callable[[np.ndarray], torch.Tensor],
    val_loss: Callable[[], float],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    patience: int,
    rng: np.random.Generator,
    weight_decay: float = 0.01,
    max_grad_norm: float = 0.0,
    parameter_groups: list[dict[str, Any]] | None = None,
) -> tuple[list[dict[str, float]], int]:
    """Train `model` with AdamW on its trainable parameters and leave it with the tensors of the epoch of lowest
    `val_loss`; returns the per-epoch history (epoch, train_loss, val_loss) and the best epoch.

    `batch_loss(rows)` is the loss of the training examples `rows` (indices below `train_size`), computed with the
    model in train mode; `val_loss()` runs the model as it needs (it is called in eval mode and may switch).
    `max_grad_norm` > 0 clips the gradient norm of each step. `parameter_groups` (AdamW groups of the trainable
    parameters with their own learning rates, e.g. `training.regularizers.layerwise_parameter_groups`) replaces the
    single group at `learning_rate`.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    # The fused kernel updates all tensors in one pass, several times faster on CPU than the per-tensor default.
    optimizer = torch.optim.AdamW(parameter_groups or trainable, lr=learning_rate, weight_decay=weight_decay,
                                  fused=True)  # fmt: skip
    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state = math.inf, 0, trained_state(model)
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(train_size)
        losses = []
        for start in range(0, train_size, batch_size):
            loss = batch_loss(order[start : start + batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        epoch_val = val_loss()
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": epoch_val})
        logger.info("epoch %d: train loss %.4f, val loss %.4f", epoch, history[-1]["train_loss"], epoch_val)
        if epoch_val < best_loss:
            best_loss, best_epoch, best_state = epoch_val, epoch, trained_state(model)
        if should_stop([row["val_loss"] for row in history], patience):
            break
    restore_state(model, best_state)
    model.eval()
    return history, best_epoch


def print_table(title: str, columns: Sequence[str], rows: Sequence[tuple[str, Sequence[Any]]]) -> None:
    """A console table: a first column of row names, then one column per entry of `columns`; floats are fractions
    shown as percentages, None as a dash."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("method", no_wrap=True)
    for header in columns:
        table.add_column(header, justify="right")
    for name, values in rows:
        cells = ("-" if v is None else f"{100 * v:.1f}" if isinstance(v, float) else str(v) for v in values)
        table.add_row(name, *cells)
    Console().print(table)
