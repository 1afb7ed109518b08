"""Next-step forecasting: from the visual tokens of the steps so far, predict the next step's visual tokens and its
verb and noun (the paper's long-range forecasting).

Examples (`build_forecast`)
    The steps of a video are its annotated segments with a verb, a noun and at least one clip (a step the model
    cannot see can neither be context nor be scored), ordered by start time. Every video of the split with at least
    two steps gives one example per step t >= 1 (0-based): the context is the visual tokens of the steps before t
    (all of them, or the last `context_steps`), concatenated in time order (the clips between steps are left out),
    and optionally cut to its last `max_context_tokens` tokens, since the most recent clips say most about what
    comes next; the target is step t's verb, noun and visual tokens. Steps follow each other within one video only.

Zero-shot forecasting (`evaluate_forecast`), as in the paper
    ``[CLS] [>] context tokens [MASK] x m [SEP]``, the masks typed as visual tokens: the masked-token head's
    distribution over the visual words at the j-th mask predicts the j-th token of the next step (scored for the
    targets that have a j-th token: top-1 / top-5 over all such positions). The context keeps its end when it has
    to be cut to fit the model's positions. The verb and noun of the next step are then read by the zero-shot
    template (`tasks.zeroshot.template_scores`) filled over the m argmax-predicted tokens: the model is asked
    what the step it imagined shows. (Filling the template over the context instead would name the current step.)

Fine-tuned forecasting (`finetune_forecast`)
    `VideoBertForSegmentClassification` with verb and noun heads over ``[CLS] [>] context tokens [SEP]``, trained with
    the recipe of `tasks.finetune` (split train, early stopping on the val loss, test top-1 / top-5), saved with
    `tasks.peft_methods.save_finetuned` (method full), so `load_finetuned(OUT)` reloads it.

Baselines, so the numbers mean something: ``frequency_prior`` ranks the labels (visual words) by how often they are
the next step's in the training examples, whatever the context; ``last_step_prior`` ranks the next verb (noun) by
how often it followed the last context step's verb (noun) in training, ties broken by the frequency prior; the
``language_prior`` is the template without video. Ties count against the gold label (`tasks.metrics`). In the default
generated MiniCook corpus the steps of a video are drawn independently, so no method can beat the priors there
beyond noise: the next step is not predictable from the past by construction. `videobert synth --recipes` (and
`videobert demo --recipes`) generates steps that follow recipes (`data.synth.RECIPE_NEXT`): there the last-step
prior, which reads the annotations, is the bar a model reading only the visual tokens has to reach.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from videobert.data.ingest import load_segments
from videobert.model.configuration import require_visual_words
from videobert.model import VideoBertConfig, VideoBertForPreTraining, VideoBertTokenizer
from videobert.model.classification import TARGETS, VideoBertForSegmentClassification
from videobert.model.modeling import IGNORE_INDEX, require_tokenizer
from videobert.tasks.evaluate import segment_visual_tokens
from videobert.tasks.finetune import Examples, evaluate_examples
from videobert.tasks.metrics import top_k_accuracy
from videobert.tasks.peft_methods import MethodOptions, save_finetuned
from videobert.tasks.supervised import (
    check_training_options,
    checked_tokens,
    fit,
    freeze_word_embeddings,
    print_table,
)
from videobert.tasks.zeroshot import TEMPLATE, LabelSet, encode_batch, model_device, template_scores
from videobert.utils.device import resolve_device
from videobert.utils.errors import ConfigError, InputError
from videobert.utils.io import write_json
from videobert.utils.stage import StageReport, flatten
from videobert.workdir import WorkDir

METRICS_FILE = "metrics.json"
TOP_K = (1, 5)
# `finetune_forecast` when not given (None, as `videobert finetune` passes them): the learning rate of
# `tasks.finetune`, and more epochs (early stopping ends the run): on a recipe corpus (`synth --recipes`) 5 epochs
# left the forecaster at the frequency prior, 30 reached the last-step prior (BENCHMARKS.md, "Forecasting").
DEFAULT_EPOCHS = 30
DEFAULT_LEARNING_RATE = 5e-5
SLOTS = TARGETS  # verb, noun


@dataclass
class ForecastExamples:
    """One example per (video, step t >= 1): the context before step t and step t as the target."""

    videos: list[str] = field(default_factory=list)
    """Video id of each example."""
    steps: list[int] = field(default_factory=list)
    """Position t of the target step among its video's steps (0-based)."""
    context: list[np.ndarray] = field(default_factory=list)
    """Visual words of the context steps, in time order."""
    target: list[np.ndarray] = field(default_factory=list)
    """Visual words of the target step."""
    verbs: list[str] = field(default_factory=list)
    """Verb of the target step."""
    nouns: list[str] = field(default_factory=list)
    """Noun of the target step."""
    last_verbs: list[str] = field(default_factory=list)
    """Verb of step t - 1, the last step of the context."""
    last_nouns: list[str] = field(default_factory=list)
    """Noun of step t - 1."""

    def __len__(self) -> int:
        return len(self.videos)

    def labels(self, slot: str) -> list[str]:
        """The target step's labels of `slot` (verb or noun)."""
        return self.verbs if slot == "verb" else self.nouns

    def last_labels(self, slot: str) -> list[str]:
        return self.last_verbs if slot == "verb" else self.last_nouns


def build_forecast(
    segments: pa.Table,
    tokens: Path,
    split: str,
    context_steps: int = 0,
    max_context_tokens: int = 0,
) -> ForecastExamples:
    """The forecasting examples of `split` (module docstring), in video order, then step order.

    Args:
        segments: Rows of segments.parquet (video, start, end, verb, noun, split).
        tokens: tokens.parquet of the same work directory.
        split: Annotation split whose videos give examples.
        context_steps: Steps before the target in the context; 0 takes every earlier step.
        max_context_tokens: Keep only the last this many context tokens; 0 keeps them all.
    """
    if context_steps < 0 or max_context_tokens < 0:
        raise ConfigError(
            f"context_steps and max_context_tokens must be at least 0, got {context_steps} and {max_context_tokens}"
        )
    in_split = segments.filter(pc.equal(segments["split"], split))
    verbs, nouns = in_split["verb"].to_pylist(), in_split["noun"].to_pylist()
    labelled = [bool(v and v.strip() and n and n.strip()) for v, n in zip(verbs, nouns)]
    steps = in_split.filter(pa.array(labelled, pa.bool_())).sort_by(
        [("video", "ascending"), ("start", "ascending"), ("end", "ascending")]
    )
    visual = segment_visual_tokens(Path(tokens), steps) if steps.num_rows else []
    seen = [i for i, v in enumerate(visual) if len(v)]
    rows = steps.take(pa.array(seen, pa.int64())).select(["video", "verb", "noun"]).to_pylist()
    visual = [visual[i] for i in seen]
    by_video: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_video.setdefault(row["video"], []).append(i)

    examples = ForecastExamples()
    for video, members in by_video.items():
        for t in range(1, len(members)):
            first = max(0, t - context_steps) if context_steps else 0
            context = np.concatenate([visual[i] for i in members[first:t]])
            if max_context_tokens:
                context = context[-max_context_tokens:]
            target, last = rows[members[t]], rows[members[t - 1]]
            examples.videos.append(video)
            examples.steps.append(t)
            examples.context.append(context)
            examples.target.append(visual[members[t]])
            examples.verbs.append(target["verb"].strip())
            examples.nouns.append(target["noun"].strip())
            examples.last_verbs.append(last["verb"].strip())
            examples.last_nouns.append(last["noun"].strip())
    return examples


def context_budget(config: VideoBertConfig, num_masks: int = 0) -> int:
    """How many context tokens fit a video-only input ``[CLS] [>] context [MASK] x num_masks [SEP]``."""
    budget = config.max_position_embeddings - 3 - num_masks
    if budget < 1:
        raise ConfigError(f"{num_masks} masks leave no room for context in {config.max_position_embeddings} positions")
    return budget


# ---------------------------------------------------------------------------------------------- zero-shot


def next_token_log_probs(
    model: Any,
    tokenizer: VideoBertTokenizer,
    contexts: Sequence[np.ndarray],
    num_masks: int,
    batch_size: int = 64,
) -> np.ndarray:
    """(examples, num_masks, visual_vocab) log-probabilities over the visual words at each of the `num_masks` masks
    after the context (module docstring); contexts longer than `context_budget` keep their end.

    `model` is called like `VideoBertForPreTraining`; it runs as it is (the caller chooses eval mode and gradients).
    """
    if num_masks < 1:
        raise ConfigError(f"num_masks must be at least 1, got {num_masks}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    config = tokenizer.config
    budget = context_budget(config, num_masks)
    out = []
    for start in range(0, len(contexts), batch_size):
        # Visual word 0 holds the place of each mask, so the tokenizer lays out ids and token types (visual) as
        # for real tokens; the placeholders are then replaced by [MASK].
        held = [
            np.concatenate([context[-budget:], np.zeros(num_masks, dtype=np.int64)])
            for context in contexts[start : start + batch_size]
        ]
        batch = encode_batch(tokenizer, None, held, model_device(model))
        ends = batch["attention_mask"].sum(dim=1) - 1  # (batch,) position of each [SEP]
        positions = ends[:, None] - torch.arange(num_masks, 0, -1, device=ends.device)  # (batch, num_masks)
        rows = torch.arange(len(held), device=ends.device)[:, None].expand_as(positions)  # (batch, num_masks)
        batch["input_ids"][rows, positions] = config.mask_token_id
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        labels[rows, positions] = config.mask_token_id  # marks the positions to score; the value is not used
        logits = model(**batch, labels=labels).prediction_logits  # (batch * num_masks, vocab), row-major
        visual_logits = logits[:, config.visual_token_offset :].float()  # (batch * num_masks, visual_vocab)
        log_probs = visual_logits.log_softmax(dim=-1).view(len(held), num_masks, -1)  # (batch, masks, visual)
        out.append(log_probs.cpu().numpy())
    return np.concatenate(out)


def token_accuracy(scores: np.ndarray, targets: Sequence[np.ndarray], ks: Sequence[int] = TOP_K) -> dict[str, float]:
    """top-k accuracy over every (example i, position j) with j < min(num_masks, len(targets[i])): how often the
    target's j-th visual word ranks within the top k of `scores[i, j]` (examples, num_masks, visual_vocab)."""
    pairs = [(i, j) for i, target in enumerate(targets) for j in range(min(scores.shape[1], len(target)))]
    rows = np.stack([scores[i, j] for i, j in pairs])  # (pairs, visual_vocab)
    gold = np.array([targets[i][j] for i, j in pairs], dtype=np.int64)
    return {f"top{k}": value for k, value in top_k_accuracy(rows, gold, ks).items()}


def token_prior(train: ForecastExamples, num_masks: int, visual_vocab_size: int, examples: int) -> np.ndarray:
    """(examples, num_masks, visual_vocab) scores of the frequency prior: how often each visual word is among the
    first `num_masks` tokens of a training target, the same at every mask."""
    counts = np.bincount(
        np.concatenate([t[:num_masks] for t in train.target] or [np.zeros(0, np.int64)]).astype(np.int64),
        minlength=visual_vocab_size,
    ).astype(float)
    return np.broadcast_to(counts, (examples, num_masks, visual_vocab_size))


def label_priors(
    train: ForecastExamples, examples: ForecastExamples, labels: dict[str, LabelSet]
) -> dict[str, dict[str, np.ndarray]]:
    """method -> slot -> (examples, labels) scores of ``frequency_prior`` and ``last_step_prior`` (module
    docstring), learnt from `train`."""
    out: dict[str, dict[str, np.ndarray]] = {"frequency_prior": {}, "last_step_prior": {}}
    for slot in SLOTS:
        names = labels[slot].names
        frequency = Counter(train.labels(slot))
        following = Counter(zip(train.last_labels(slot), train.labels(slot)))
        row = np.array([frequency[name] for name in names], dtype=float)
        out["frequency_prior"][slot] = np.repeat(row[None, :], len(examples), axis=0)
        # Counts are integers and the frequency term is below 1: it only orders labels that followed as often.
        tie_break = row / (row.sum() + 1)
        out["last_step_prior"][slot] = np.stack([
            np.array([following[(last, name)] for name in names], dtype=float) + tie_break
            for last in examples.last_labels(slot)
        ]) if len(examples) else np.zeros((0, len(names)))  # fmt: skip
    return out


def label_accuracy(
    scores: dict[str, np.ndarray], examples: ForecastExamples, labels: dict[str, LabelSet]
) -> dict[str, float]:
    """{verb_top1, verb_top5, noun_top1, noun_top5} of slot -> (examples, labels) scores."""
    result = {}
    for slot in SLOTS:
        accuracy = top_k_accuracy(scores[slot], labels[slot].index(examples.labels(slot)), TOP_K)
        result.update({f"{slot}_top{k}": value for k, value in accuracy.items()})
    return result


def _label_sets(segments: pa.Table, tokenizer: VideoBertTokenizer) -> dict[str, LabelSet]:
    # Labels of every split, so the candidates do not depend on the split evaluated (as in `evaluate`).
    return {slot: LabelSet.from_values(segments[slot].to_pylist(), tokenizer.text_tokenizer) for slot in SLOTS}


def _examples(
    work: Path, tokens_path: Path, split: str, context_steps: int, max_context_tokens: int
) -> ForecastExamples:
    wd = WorkDir(work)
    examples = build_forecast(load_segments(work), tokens_path, split, context_steps, max_context_tokens)
    if not len(examples):
        raise InputError(
            wd.segments,
            f"no forecasting example in split {split!r}: it needs videos with two or more labelled steps with clips",
        )
    return examples


def evaluate_forecast(
    model: Path,
    work: Path,
    *,
    split: str = "test",
    num_masks: int = 2,
    context_steps: int = 0,
    max_context_tokens: int = 0,
    template: str = TEMPLATE,
    batch_size: int = 64,
    out: Path | None = None,
    device: str = "auto",
) -> StageReport:
    """Zero-shot next-step forecasting with a pretrained VideoBERT: masked visual tokens after the context predict
    the next step's first tokens, and the template filled over the predicted tokens names its verb and noun;
    writes metrics.json with top-1 / top-5 next to frequency, last-step and language priors.

    Args:
        model: Model directory written by `videobert pretrain`.
        work: Work directory; reads segments.parquet, tokens.parquet and vocab/.
        split: Annotation split whose videos are forecast.
        num_masks: Masked visual tokens after the context: how many tokens of the next step are predicted.
        context_steps: Steps before the target in the context; 0 takes every earlier step of the video.
        max_context_tokens: Keep only the last this many context tokens; 0 keeps what fits the model.
        template: Zero-shot sentence with two [MASK]s, the verb's first and the noun's second.
        batch_size: Sequences per forward pass.
        out: Folder for metrics.json (default MODEL/eval/forecast-SPLIT).
        device: auto (CUDA when available), cuda or cpu.
    """
    torch_device = torch.device(resolve_device(device))
    began = time.perf_counter()
    network = VideoBertForPreTraining.from_pretrained(model)
    require_visual_words(network.config, model, "forecasting")
    tokenizer = require_tokenizer(network, model)
    tokens_path = checked_tokens(work, network.config)
    examples = _examples(work, tokens_path, split, context_steps, max_context_tokens)
    train = _examples(work, tokens_path, "train", context_steps, max_context_tokens)
    labels = _label_sets(load_segments(work), tokenizer)

    network.eval().to(torch_device)
    with torch.inference_mode():
        log_probs = next_token_log_probs(network, tokenizer, examples.context, num_masks, batch_size)
        predicted = list(log_probs.argmax(axis=-1))  # (examples,) arrays of num_masks visual words
        video_verbs, video_nouns = template_scores(
            network, tokenizer, predicted, labels["verb"], labels["noun"], template, batch_size
        )
        prior_verbs, prior_nouns = template_scores(
            network, tokenizer, [None], labels["verb"], labels["noun"], template, batch_size
        )
    n = len(examples)
    label_scores = {
        **label_priors(train, examples, labels),
        "language_prior": {"verb": np.repeat(prior_verbs, n, axis=0), "noun": np.repeat(prior_nouns, n, axis=0)},
        "videobert": {"verb": video_verbs, "noun": video_nouns},
    }
    prior_tokens = token_prior(train, num_masks, network.config.visual_vocab_size, n)
    metrics: dict[str, Any] = {
        "task": "forecast", "split": split, "model": str(model), "work": str(work), "examples": n,
        "num_masks": num_masks, "context_steps": context_steps, "max_context_tokens": max_context_tokens,
        "template": template, "verb_labels": len(labels["verb"]), "noun_labels": len(labels["noun"]),
        "tokens": {
            "frequency_prior": token_accuracy(prior_tokens, examples.target),
            "videobert": token_accuracy(log_probs, examples.target),
        },
        "labels": {method: label_accuracy(scores, examples, labels) for method, scores in label_scores.items()},
        "seconds": round(time.perf_counter() - began, 2),
    }  # fmt: skip
    out = Path(out) if out is not None else Path(model) / "eval" / f"forecast-{split}"
    write_json(out / METRICS_FILE, metrics)
    _print_forecast(f"VideoBERT zero-shot forecasting (%), split {split}: {n} examples", metrics)
    return StageReport(
        "evaluate",
        done=n,
        outputs={"metrics": str(out / METRICS_FILE)},
        stats=flatten({"tokens": metrics["tokens"], "labels": metrics["labels"]}),
    )


# ---------------------------------------------------------------------------------------------- fine-tuned


def classification_examples(
    examples: ForecastExamples, labels: dict[str, LabelSet], budget: int, targets: Sequence[str]
) -> Examples:
    """`tasks.finetune.Examples` of the forecasting examples: the context (its last `budget` tokens) as the visual
    input, no text, and the next step's label index for each of `targets` (the classifier's order)."""
    label_rows = np.stack([labels[slot].index(examples.labels(slot)) for slot in targets], axis=1)  # (examples, 2)
    return Examples([c[-budget:] for c in examples.context], [None] * len(examples), label_rows)


def finetune_forecast(
    model: Path,
    work: Path,
    out: Path,
    *,
    epochs: int | None = None,
    batch_size: int = 32,
    learning_rate: float | None = None,
    context_steps: int = 0,
    max_context_tokens: int = 0,
    patience: int = 2,
    seed: int = 0,
    device: str = "auto",
) -> StageReport:
    """Fine-tune VideoBERT to forecast the next step's verb and noun from the visual tokens of the steps before it
    (encoder and heads; the word embeddings stay frozen); writes metrics.json (test top-1 / top-5 next to the
    frequency and last-step priors) and the checkpoint.

    Trains on split train, stops early on the val loss and evaluates the best epoch on test. The checkpoint
    (finetune.json, OUT/model) reloads with `videobert.tasks.peft_methods.load_finetuned(OUT)`.

    Args:
        model: Model directory written by `videobert pretrain`.
        work: Work directory; reads segments.parquet, tokens.parquet and vocab/.
        out: Folder for metrics.json and the checkpoint.
        epochs: Most passes over the training examples (default 30; early stopping usually ends sooner).
        batch_size: Examples per optimisation step.
        learning_rate: AdamW learning rate (default 5e-5).
        context_steps: Steps before the target in the context; 0 takes every earlier step of the video.
        max_context_tokens: Keep only the last this many context tokens; 0 keeps what fits the model.
        patience: Stop after this many epochs without a lower val loss.
        seed: Seed of initialisation and shuffling.
        device: auto (CUDA when available), cuda or cpu.
    """
    epochs = DEFAULT_EPOCHS if epochs is None else epochs
    learning_rate = DEFAULT_LEARNING_RATE if learning_rate is None else learning_rate
    check_training_options(epochs=epochs, batch_size=batch_size, patience=patience, learning_rate=learning_rate)
    torch_device = torch.device(resolve_device(device))
    began = time.perf_counter()
    out = Path(out)

    # ---- setup
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = VideoBertConfig.from_pretrained(model)
    require_visual_words(config, model, "forecasting")
    tokens_path = checked_tokens(work, config)
    splits = {
        split: _examples(work, tokens_path, split, context_steps, max_context_tokens)
        for split in ("train", "val", "test")
    }
    segments = load_segments(work)
    # The label names of `LabelSet` (sorted distinct labels of every split), which the heads' outputs follow.
    names = {slot: sorted({v.strip() for v in segments[slot].to_pylist() if v and v.strip()}) for slot in SLOTS}
    network = VideoBertForSegmentClassification.from_pretrained(model, classification_labels=names)
    tokenizer = require_tokenizer(network, model)
    labels = _label_sets(segments, tokenizer)
    budget = context_budget(config)
    data = {
        split: classification_examples(examples, labels, budget, network.targets) for split, examples in splits.items()
    }
    freeze_word_embeddings(network)
    network.to(torch_device)

    # ---- train
    def batch_loss(rows: np.ndarray) -> torch.Tensor:
        chunk = data["train"].subset(rows)
        batch = encode_batch(tokenizer, chunk.texts, chunk.visual, torch_device)
        return network(**batch, labels=torch.from_numpy(chunk.labels).to(torch_device)).loss

    history, best_epoch = fit(
        network,
        len(data["train"]),
        batch_loss,
        lambda: evaluate_examples(network, tokenizer, data["val"], batch_size, budget + 3, torch_device)[0],
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, patience=patience, rng=rng,
    )  # fmt: skip

    # ---- evaluate, save
    _, scores = evaluate_examples(network, tokenizer, data["test"], batch_size, budget + 3, torch_device)
    label_scores = {**label_priors(splits["train"], splits["test"], labels), "finetuned": scores}
    checkpoint = save_finetuned(network, MethodOptions("full"), model, out)
    metrics: dict[str, Any] = {
        "task": "forecast", "model": str(model), "work": str(work), "context_steps": context_steps,
        "max_context_tokens": max_context_tokens, "seed": seed, "learning_rate": learning_rate,
        "examples": {split: len(examples) for split, examples in splits.items()},
        "verb_labels": len(labels["verb"]), "noun_labels": len(labels["noun"]),
        "epochs_run": len(history), "best_epoch": best_epoch, "history": history,
        "labels": {method: label_accuracy(s, splits["test"], labels) for method, s in label_scores.items()},
        "seconds": round(time.perf_counter() - began, 2),
    }  # fmt: skip
    write_json(out / METRICS_FILE, metrics)
    _print_forecast(f"VideoBERT fine-tuned forecasting (%), split test: {len(splits['test'])} examples", metrics)
    return StageReport(
        "finetune",
        done=len(splits["test"]),
        outputs={"metrics": str(out / METRICS_FILE), "checkpoint": str(checkpoint)},
        stats={"best_epoch": best_epoch, **flatten({"test": metrics["labels"]["finetuned"]})},
    )


def _print_forecast(title: str, metrics: dict[str, Any]) -> None:
    columns = ["verb_top1", "verb_top5", "noun_top1", "noun_top5"]
    headers = [c.replace("_top", " top-") for c in columns]
    tokens = metrics.get("tokens")
    if tokens is not None:
        headers += ["next tokens top-1", "next tokens top-5"]
    rows = []
    for method, row in metrics["labels"].items():
        values = [row[c] for c in columns]
        if tokens is not None:
            values += [tokens[method][k] if method in tokens else None for k in ("top1", "top5")]
        rows.append((method.replace("_", " "), values))
    print_table(title, headers, rows)
