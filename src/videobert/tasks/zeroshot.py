"""Zero-shot action classification by filling a template (VideoBERT §4.2, Table 1).

An annotated segment's visual tokens (or, for a model that reads them, its clip features: `model.visual_input`) follow
the template as in pretraining,
``[CLS] now let me show you how to [MASK] the [MASK] [>] visual tokens [SEP]``; the first `[MASK]` is the verb
slot, the second the noun (object) slot, and each slot's labels are ranked by the masked-token head's
log-probabilities. The *language prior* baseline scores the same template without video, ``[CLS] template [SEP]``:
what the text alone predicts, which is the same for every segment.

Labels that WordPiece splits into several pieces
    A label of n pieces (``"potato"`` -> ``pot ##ato``) is scored in an input whose slot holds n `[MASK]`s (the
    other slot keeps the template's single `[MASK]`), by the **mean** log-probability of its pieces, piece j read
    at the slot's j-th `[MASK]` (log-softmax over the text vocabulary: a slot holds a word, never a visual word).
    Mean, not sum: every piece adds a negative term, so with the sum a two-piece label would lose to any one-piece
    label that fits as well per piece, and the labels the tokenizer happens to split would almost never rank first;
    the mean compares labels of different lengths per piece. For one-piece labels the mean is the log-probability
    itself, so on a one-piece vocabulary the ranking is the paper's (arg)max at each `[MASK]`.

    The input of a label depends only on its number of pieces, not on which pieces they are, so all labels of one
    length are scored from one forward pass: each example needs one input per distinct (verb masks, noun masks)
    layout, ``(n, 1)`` for every verb length n and ``(1, m)`` for every noun length m, and a one-piece vocabulary
    needs just ``(1, 1)``, one pass per segment that reads both slots, as in the paper. The inputs of all segments
    and layouts go through the model in batches of `batch_size`.

Label vocabulary
    The candidates of a slot are the distinct labels of the annotations (`LabelSet`); `videobert evaluate` takes
    them from every split, so that they do not depend on which split is evaluated.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from videobert.model.modeling import IGNORE_INDEX
from videobert.model.tokenization import VideoBertTokenizer
from videobert.model.visual_input import encode_visual_batch
from videobert.tasks.metrics import top_k_accuracy
from videobert.tasks.template import SLOTS, TEMPLATE, LabelSet, fill_template, score_template, split_template

METHODS = ("language_prior", "videobert")
TOP_K = (1, 5)

__all__ = ["TEMPLATE", "SLOTS", "LabelSet", "fill_template", "split_template", "template_scores", "zero_shot"]


def model_device(model: Any) -> torch.device:
    """Where the model's weights are (CPU for a stand-in without a `device`)."""
    return getattr(model, "device", torch.device("cpu"))


def encode_batch(
    tokenizer: VideoBertTokenizer,
    texts: Sequence[str | None] | None,
    visual_tokens: Sequence[Any] | None,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """The pairs encoded on `device` for the model of `tokenizer.config`: (batch, seq) input ids, token types and
    attention mask, and for a model that reads clip features their `visual_features`. A visual item is what the model
    reads (`videobert.model.visual_input`): visual words, clip features, or both."""
    config = tokenizer.config
    batch = encode_visual_batch(
        tokenizer, texts, visual_tokens, config.reads_words, config.reads_features, config.feature_dim
    )  # fmt: skip
    return {key: value.to(device) for key, value in batch.items()}


def template_scores(
    model: Any,
    tokenizer: VideoBertTokenizer,
    visual_tokens: Sequence[Sequence[int] | None],
    verbs: LabelSet,
    nouns: LabelSet,
    template: str = TEMPLATE,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """(examples, verbs) and (examples, nouns) label scores: the mean log-probability of a label's pieces in its
    slot (module docstring). An example is the visual tokens of a segment, or `None` for the template without video.

    `model` is called like `VideoBertForPreTraining` (input ids, attention mask, token types, `labels`) and returns
    `prediction_logits` of the labelled positions, (num_labelled, vocab) in row-major order; it runs as it is
    (the caller chooses eval mode and gradient handling).
    """
    config = tokenizer.config
    device = model_device(model)

    def encode(texts: Sequence[str | None], visual: Sequence[Any]) -> dict[str, np.ndarray]:
        if not config.reads_features:  # visual words alone: the layout the ONNX runtime shares
            return tokenizer.joint.batch_encode(texts, visual)
        batch = encode_visual_batch(
            tokenizer, texts, visual, config.reads_words, config.reads_features, config.feature_dim
        )  # fmt: skip
        return {key: value.numpy() for key, value in batch.items()}

    def masked_log_probs(batch: dict[str, np.ndarray], masked: np.ndarray) -> np.ndarray:
        inputs = {key: torch.from_numpy(value).to(device) for key, value in batch.items()}
        # Labels mark the positions to score: the model then projects only those onto the vocabulary.
        labels = torch.where(torch.from_numpy(masked).to(device), inputs["input_ids"], IGNORE_INDEX)  # (batch, seq)
        logits = model(**inputs, labels=labels).prediction_logits  # (num_masked, vocab), row-major
        return logits[:, : config.text_vocab_size].float().log_softmax(dim=-1).cpu().numpy()  # (num_masked, text_vocab)

    return score_template(
        encode, masked_log_probs, config.mask_token, config.mask_token_id, config.max_position_embeddings,
        visual_tokens, verbs, nouns, template, batch_size,
    )  # fmt: skip


def zero_shot(
    model: Any,
    tokenizer: VideoBertTokenizer,
    visual_tokens: Sequence[Sequence[int]],
    verbs: Sequence[str | None],
    nouns: Sequence[str | None],
    verb_labels: LabelSet,
    noun_labels: LabelSet,
    template: str = TEMPLATE,
    batch_size: int = 64,
) -> dict[str, dict[str, float]]:
    """Table 1 of the paper: method -> {verb_top1, verb_top5, noun_top1, noun_top5}, accuracies in [0, 1].

    Example i is `visual_tokens[i]` with gold labels `verbs[i]` and `nouns[i]` (a missing label leaves the example
    out of that slot's accuracies). Methods: ``language_prior`` (the template alone) and ``videobert`` (the
    template followed by the example's visual tokens). Ties count against the gold label (`tasks.metrics`).
    """
    if not len(visual_tokens) == len(verbs) == len(nouns):
        raise ValueError(f"got {len(visual_tokens)} examples, {len(verbs)} verbs and {len(nouns)} nouns")
    gold = {"verb": verb_labels.index(verbs), "noun": noun_labels.index(nouns)}
    for slot, indices in gold.items():
        if not (indices >= 0).any():
            raise ValueError(f"no example has a {slot} label")
    prior_verbs, prior_nouns = template_scores(model, tokenizer, [None], verb_labels, noun_labels, template, batch_size)
    video_verbs, video_nouns = template_scores(
        model, tokenizer, visual_tokens, verb_labels, noun_labels, template, batch_size
    )
    n = len(visual_tokens)
    scores = {
        # The prior does not depend on the segment: one row, (1, labels), shared by all of them.
        "language_prior": {"verb": np.repeat(prior_verbs, n, axis=0), "noun": np.repeat(prior_nouns, n, axis=0)},
        "videobert": {"verb": video_verbs, "noun": video_nouns},
    }
    results: dict[str, dict[str, float]] = {}
    for method in METHODS:
        results[method] = {}
        for slot in SLOTS:
            labelled = gold[slot] >= 0
            accuracy = top_k_accuracy(scores[method][slot][labelled], gold[slot][labelled], TOP_K)
            results[method].update({f"{slot}_top{k}": value for k, value in accuracy.items()})
    return results
