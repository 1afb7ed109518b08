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

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from videobert.model.modeling import IGNORE_INDEX
from videobert.model.tokenization import VideoBertTokenizer
from videobert.model.visual_input import encode_visual_batch
from videobert.tasks.metrics import top_k_accuracy
from videobert.utils.errors import ConfigError

logger = logging.getLogger(__name__)

TEMPLATE = "now let me show you how to [MASK] the [MASK]"
SLOTS = ("verb", "noun")
METHODS = ("language_prior", "videobert")
TOP_K = (1, 5)


@dataclass(frozen=True)
class LabelSet:
    """The candidates of one template slot: distinct labels, sorted, and the WordPiece ids of each."""

    names: tuple[str, ...]
    pieces: tuple[tuple[int, ...], ...]

    @classmethod
    def from_values(cls, values: Iterable[str | None], text_tokenizer: PreTrainedTokenizerBase) -> "LabelSet":
        """The distinct non-empty `values` (surrounding whitespace removed), tokenized with `text_tokenizer`."""
        names = sorted({v.strip() for v in values if v is not None and v.strip()})
        if not names:
            raise ValueError("no labels: every value is missing or empty")
        pieces = tuple(tuple(text_tokenizer.encode(name, add_special_tokens=False)) for name in names)
        for name, ids in zip(names, pieces):
            if not ids:
                raise ValueError(f"label {name!r} has no WordPiece pieces")
            if text_tokenizer.unk_token_id in ids:
                # Still a candidate, but one the model can only predict through [UNK]: worth a word to the user.
                logger.warning("label %r contains %s for the text tokenizer", name, text_tokenizer.unk_token)
        return cls(tuple(names), pieces)

    def __len__(self) -> int:
        return len(self.names)

    def index(self, values: Sequence[str | None]) -> np.ndarray:
        """(len(values),) index of each value in `names`, -1 for a missing or empty value."""
        position = {name: i for i, name in enumerate(self.names)}
        out = np.full(len(values), -1, dtype=np.int64)
        for row, value in enumerate(values):
            if value is None or not value.strip():
                continue
            if value.strip() not in position:
                raise ValueError(f"label {value!r} is not among the {len(self.names)} candidates")
            out[row] = position[value.strip()]
        return out

    def groups(self) -> dict[int, tuple[np.ndarray, torch.Tensor]]:
        """Piece count n -> (label indices (L_n,), their piece ids (L_n, n))."""
        by_length: dict[int, list[int]] = {}
        for i, ids in enumerate(self.pieces):
            by_length.setdefault(len(ids), []).append(i)
        return {
            n: (np.asarray(rows), torch.tensor([self.pieces[i] for i in rows], dtype=torch.long))
            for n, rows in sorted(by_length.items())
        }


def split_template(template: str, mask_token: str) -> tuple[str, str, str]:
    """The text before the verb slot, between the slots and after the noun slot; `ConfigError` unless the template
    has exactly two `mask_token`s."""
    parts = template.split(mask_token)
    if len(parts) != 3:
        raise ConfigError(
            f"the template must contain exactly two {mask_token} (verb, then noun), found {len(parts) - 1} in "
            f"{template!r}"
        )
    return parts[0], parts[1], parts[2]


def fill_template(template: str, mask_token: str, verb_masks: int, noun_masks: int) -> str:
    """`template` with `verb_masks` mask tokens in the verb slot and `noun_masks` in the noun slot."""
    before, between, after = split_template(template, mask_token)
    return before + " ".join([mask_token] * verb_masks) + between + " ".join([mask_token] * noun_masks) + after


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
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    config = tokenizer.config
    verb_groups, noun_groups = verbs.groups(), nouns.groups()
    layouts = sorted({(n, 1) for n in verb_groups} | {(1, m) for m in noun_groups})
    texts = {layout: fill_template(template, config.mask_token, *layout) for layout in layouts}
    jobs = [(example, layout) for example in range(len(visual_tokens)) for layout in layouts]
    verb_scores = np.full((len(visual_tokens), len(verbs)), np.nan)
    noun_scores = np.full((len(visual_tokens), len(nouns)), np.nan)
    device = model_device(model)

    for start in tqdm(range(0, len(jobs), batch_size), desc="zero-shot", leave=False, disable=None):
        chunk = jobs[start : start + batch_size]
        chunk_texts = [texts[layout] for _, layout in chunk]
        batch = encode_batch(tokenizer, chunk_texts, [visual_tokens[example] for example, _ in chunk], device)
        masked = batch["input_ids"] == config.mask_token_id  # (batch, seq)
        counts = masked.sum(dim=1).tolist()
        if counts != [sum(layout) for _, layout in chunk]:
            raise ConfigError(
                f"the template {template!r} does not keep its {config.mask_token} slots once encoded; is it longer "
                f"than the model's {config.max_position_embeddings} positions?"
            )
        # Labels mark the positions to score: the model then projects only those onto the vocabulary.
        labels = torch.where(masked, batch["input_ids"], IGNORE_INDEX)  # (batch, seq)
        logits = model(**batch, labels=labels).prediction_logits  # (num_masked, vocab), row-major
        log_probs = logits[:, : config.text_vocab_size].float().log_softmax(dim=-1)  # (num_masked, text_vocab)
        for (example, (n_verb, n_noun)), rows in zip(chunk, log_probs.split(counts)):
            # rows: (n_verb + n_noun, text_vocab), the verb slot's masks first.
            if n_noun == 1 and n_verb in verb_groups:
                labels_of_length, pieces = verb_groups[n_verb]
                verb_scores[example, labels_of_length] = _mean_piece_log_prob(rows[:n_verb], pieces)
            if n_verb == 1 and n_noun in noun_groups:
                labels_of_length, pieces = noun_groups[n_noun]
                noun_scores[example, labels_of_length] = _mean_piece_log_prob(rows[n_verb:], pieces)
    return verb_scores, noun_scores


def _mean_piece_log_prob(rows: torch.Tensor, pieces: torch.Tensor) -> np.ndarray:
    """(L,) mean over j of rows[j, pieces[:, j]], for `rows` (n, text_vocab) the log-probs at a slot's n masks and
    `pieces` (L, n) the piece ids of L labels."""
    n = pieces.shape[1]
    per_piece = rows[torch.arange(n, device=rows.device)[None, :], pieces.to(rows.device)]  # (L, n)
    return per_piece.mean(dim=1).double().cpu().numpy()


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
