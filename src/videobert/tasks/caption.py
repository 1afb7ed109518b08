"""Video captioning (VideoBERT §4.3, Table 3): train `VideoBertForCaptioning` on annotated segments and score it.

Generic core (captioning is one use of it, open-ended video QA another)
    `Seq2SeqExamples(texts, visual, targets)`: per example an encoder text prefix or None, the visual input (visual
    word ids `(clips,)`, or clip features `(clips, feature_dim)` for an encoder in mode `features`, or both as a
    structured array with fields `word` and `feature` (`words_and_features`) for the modes that read both, as
    `visual_input` builds it; or None for text alone) and the target text. `train_seq2seq` trains a
    `VideoBertForCaptioning` on them (teacher forcing, early stopping on the val loss, best epoch restored); `generate_texts` decodes with `generate` (greedy or beam search,
    length penalty, no-repeat n-grams). Captioning: texts = the checkpoint's `caption_prefix` (the paper's template
    with `with_template`, else None), targets = captions. QA: texts = questions, targets = answers.

Examples
    The annotated segments with a caption whose window holds at least one clip (the clips of `segment_clip_index`,
    as in `evaluate` and `finetune`); their visual words are `segment_visual_tokens`, their features the same clips'
    rows of the feature store. Splits train / val / test come from segments.parquet.

Recipe (`finetune_caption`): setup -> optional BART text-infilling of the new model on the narration of the
training videos (`denoise_steps`) -> train on train, val loss after every epoch, best epoch kept -> generate on test
-> score (`tasks.caption_metrics`) -> save. A plain loop rather than Seq2SeqTrainer: an epoch is a dozen steps on
CPU, and the loop is the one every fine-tuning stage uses (`tasks.supervised.fit`, early stopping on the val loss)
with `finetune`'s augmentation (`augment`). Outputs in OUT::

    metrics.json      encoder mode, options, examples per split, per-epoch losses, best epoch, test scores, timings
    captions.jsonl    one test segment a line: video, start, end, reference, generated
    model/            the caption checkpoint (`VideoBertForCaptioning.save_pretrained`, self-contained)

`caption_comparison` trains the encoders of `model.captioning` (pretrained, random, features, pretrained+features,
random+features) with the same decoder, data and budget and writes the paper-style Table 3 of them.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from videobert.data.ingest import load_manifest, load_segments, load_sentences
from videobert.features.store import FeatureStore
from videobert.model import visual_tokenizer_from_work_dir
from videobert.model.captioning import (
    ENCODER_MODES,
    FEATURE_MODES,
    VideoBertCaptioningConfig,
    VideoBertForCaptioning,
)
from videobert.model.visual_input import (  # noqa: F401  (words_and_features: part of this module's API)
    clip_features_of,
    encode_visual_batch,
    visual_item,
    words_and_features,
)
from videobert.tasks.caption_metrics import CaptionScorer, format_table3, print_table3
from videobert.tasks.evaluate import segment_clip_features, segment_visual_tokens
from videobert.tasks.finetune import augment, few_shot_rows
from videobert.tasks.supervised import fit
from videobert.tasks.zeroshot import TEMPLATE
from videobert.tokenizer.stages import tokens_metadata
from videobert.utils.device import resolve_device
from videobert.utils.errors import ConfigError, InputError
from videobert.utils.io import atomic_open, write_json
from videobert.utils.stage import StageReport
from videobert.workdir import WorkDir

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CAPTIONS_FILE = "captions.jsonl"
CHECKPOINT_DIR = "model"
SPLITS = ("train", "val", "test")
METHOD_NAMES = {"pretrained": "VideoBERT (pretrained)", "random": "random encoder", "features": "clip features",
                "pretrained+features": "VideoBERT + clip features", "random+features": "random encoder + clip features"}
# caption_comparison's most epochs per encoder (early stopping on the val loss usually ends a run sooner).
COMPARISON_EPOCHS = 10


# ---------------------------------------------------------------------------------------------- generic core


@dataclass
class Seq2SeqExamples:
    """Encoder text prefixes (or None), visual inputs (or None) and target texts, one entry per example."""

    texts: list[str | None]
    visual: list[np.ndarray | None]
    targets: list[str]

    def __post_init__(self) -> None:
        if not len(self.texts) == len(self.visual) == len(self.targets):
            raise ValueError(
                f"got {len(self.texts)} texts, {len(self.visual)} visual inputs and {len(self.targets)} targets"
            )
        if any(t is None and v is None for t, v in zip(self.texts, self.visual)):
            raise ValueError("every example needs a text, a visual input or both")

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, rows: np.ndarray | list[int]) -> "Seq2SeqExamples":
        return Seq2SeqExamples(
            [self.texts[i] for i in rows], [self.visual[i] for i in rows], [self.targets[i] for i in rows]
        )


def encoder_inputs(
    model: VideoBertForCaptioning, texts: list[str | None], visual: list[np.ndarray | None], device: torch.device
) -> dict[str, torch.Tensor]:
    """The encoder's (batch, seq) inputs for (text, visual) pairs on `device`; in the modes that read features also
    `visual_features` (batch, seq, feature_dim), each clip's feature at its visual position. `visual` holds what the
    mode reads (module docstring)."""
    config = model.config
    batch = encode_visual_batch(
        model.tokenizer, texts, visual, config.reads_words, config.reads_features, config.feature_dim
    )  # fmt: skip
    return {key: value.to(device) for key, value in batch.items()}


def target_labels(model: VideoBertForCaptioning, targets: list[str], device: torch.device) -> torch.Tensor:
    """(batch, length) labels `target [SEP]` in WordPiece ids, -100 at padding; a target longer than the decoder's
    position table is cut (and then has no `[SEP]`)."""
    room = model.config.decoder.max_position_embeddings
    pieces = model.tokenizer.text_tokenizer(list(targets), add_special_tokens=False)["input_ids"]
    rows = [(ids + [model.config.eos_token_id])[:room] for ids in pieces]
    width = max(len(r) for r in rows)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        labels[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return labels.to(device)


def seq2seq_loss(
    model: VideoBertForCaptioning, examples: Seq2SeqExamples, *, batch_size: int, device: str | torch.device = "cpu"
) -> float:
    """Mean teacher-forced cross-entropy per target token over `examples`, in eval mode."""
    device = _device(device)
    model.eval()
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            chunk = examples.subset(range(start, min(start + batch_size, len(examples))))
            labels = target_labels(model, chunk.targets, device)
            loss = model(**encoder_inputs(model, chunk.texts, chunk.visual, device), labels=labels).loss
            n = int((labels != -100).sum())
            total, tokens = total + loss.item() * n, tokens + n
    return total / max(tokens, 1)


def train_seq2seq(
    model: VideoBertForCaptioning,
    train: Seq2SeqExamples,
    val: Seq2SeqExamples,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    device: str | torch.device = "cpu",
    patience: int = 3,
    stride: int = 1,
    token_dropout: float = 0.0,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
) -> list[dict[str, float]]:
    """Train every parameter of `model` on `train` with AdamW and teacher forcing; after each epoch score `val`,
    stop after `patience` epochs without a lower val loss and restore the best epoch's weights.

    `stride` and `token_dropout` augment the visual inputs as in `finetune.augment`. Returns one row per epoch:
    epoch, train_loss (mean over steps), val_loss (per target token).
    """
    if len(train) == 0 or len(val) == 0:
        raise ConfigError(f"train_seq2seq needs training and validation examples, got {len(train)} and {len(val)}")
    torch_device = _device(device)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model.to(torch_device)

    def batch_loss(rows: np.ndarray) -> torch.Tensor:
        chunk = train.subset(rows)
        visual = [None if v is None else augment(v, stride, token_dropout, rng) for v in chunk.visual]
        return model(
            **encoder_inputs(model, chunk.texts, visual, torch_device),
            labels=target_labels(model, chunk.targets, torch_device),
        ).loss

    history, _ = fit(
        model, len(train), batch_loss, lambda: seq2seq_loss(model, val, batch_size=batch_size, device=torch_device),
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, patience=patience, rng=rng,
        weight_decay=weight_decay, max_grad_norm=max_grad_norm,
    )  # fmt: skip
    return history


def generate_texts(
    model: VideoBertForCaptioning,
    examples: Seq2SeqExamples | tuple[list[str | None], list[np.ndarray | None]],
    *,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    max_new_tokens: int | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> list[str]:
    """Decode one text per example (`Seq2SeqExamples`, or `(texts, visual)`) with `model.generate`: greedy for
    `num_beams=1`, else beam search with `length_penalty` (exponent on the length, > 1 favours longer texts) and
    `no_repeat_ngram_size` (0: no constraint). `max_new_tokens` defaults to what the decoder's position table holds.
    """
    texts, visual = (examples.texts, examples.visual) if isinstance(examples, Seq2SeqExamples) else examples
    room = model.config.decoder.max_position_embeddings - 1  # position 0 holds the start token
    max_new_tokens = room if max_new_tokens is None else max_new_tokens
    if not 1 <= max_new_tokens <= room:
        raise ConfigError(f"max_new_tokens must be in [1, {room}] for this decoder, got {max_new_tokens}")
    if num_beams < 1 or no_repeat_ngram_size < 0 or batch_size < 1:
        raise ConfigError("num_beams and batch_size must be at least 1 and no_repeat_ngram_size at least 0")
    torch_device = _device(device)
    model.eval().to(torch_device)
    decoded: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            stop = min(start + batch_size, len(texts))
            ids = model.generate(
                **encoder_inputs(model, list(texts[start:stop]), list(visual[start:stop]), torch_device),
                num_beams=num_beams,
                length_penalty=length_penalty,
                no_repeat_ngram_size=no_repeat_ngram_size,
                max_new_tokens=max_new_tokens,
                do_sample=False,
            )  # (batch, length)
            text = model.tokenizer.text_tokenizer.batch_decode(ids, skip_special_tokens=True)
            decoded += [" ".join(t.split()) for t in text]
    return decoded


def _adamw(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    # The fused kernel updates all tensors in one pass: on CPU ~10x faster than the default for-each update, which
    # matters here because the two vocabulary-sized embeddings hold most of the parameters.
    return torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay, fused=True)


def _device(device: str | torch.device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(resolve_device(device))


# ---------------------------------------------------------------------------------------------- denoising


def text_infilling(text: str, mask_token: str, rng: np.random.Generator, ratio: float = 0.3, mean_span: float = 3.0) -> str:
    """BART's text infilling on words: spans with Poisson(`mean_span`) lengths, each replaced by one `mask_token`,
    until at least `ratio` of the words (one at least) are covered; a span of length 0 inserts a mask."""
    words = text.split()
    n = len(words)
    masked = np.zeros(n, dtype=bool)
    inserts: set[int] = set()
    # Terminates: a span of length >= 1 always covers a word, and the goal is at most n words.
    while masked.sum() < min(n, max(1, round(ratio * n))):
        length = min(int(rng.poisson(mean_span)), n)
        start = int(rng.integers(0, n - length + 1))
        if length == 0:
            inserts.add(start)
        masked[start : start + length] = True
    out: list[str] = []
    for i in range(n + 1):
        if i in inserts:
            out.append(mask_token)
        if i == n:
            break
        if not masked[i]:
            out.append(words[i])
        elif i == 0 or not masked[i - 1]:
            out.append(mask_token)  # one mask for the whole span
    return " ".join(out) or mask_token


def denoise(
    model: VideoBertForCaptioning,
    sentences: list[str],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    device: str | torch.device = "cpu",
) -> list[float]:
    """BART-style denoising before captioning: `steps` AdamW steps reconstructing each sentence from its
    `text_infilling` corruption given as the encoder's text alone (`[CLS] corrupted [SEP]`), so the decoder learns
    the narration's language before it sees a caption. Returns the loss of each step."""
    if not sentences:
        raise ConfigError("denoising needs at least one sentence")
    torch_device = _device(device)
    rng = np.random.default_rng(seed)
    model.to(torch_device).train()
    mask = model.config.encoder.mask_token
    optimizer = _adamw(model, learning_rate, 0.01)
    losses = []
    for _ in range(steps):
        chosen = [sentences[i] for i in rng.integers(0, len(sentences), size=batch_size)]
        corrupted = [text_infilling(s, mask, rng) for s in chosen]
        loss = model(
            **encoder_inputs(model, corrupted, [None] * len(chosen), torch_device),
            labels=target_labels(model, chosen, torch_device),
        ).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    return losses


# ---------------------------------------------------------------------------------------------- data


@dataclass
class CaptionSplit:
    """The examples of one split and their segments' rows (video, start, end, caption, ...), row for row."""

    examples: Seq2SeqExamples
    segments: pa.Table


def load_caption_examples(
    work: Path, config: VideoBertCaptioningConfig, splits: tuple[str, ...] = SPLITS
) -> dict[str, CaptionSplit]:
    """Split name -> the captioned segments with video of that split (module docstring), with the visual input of
    `config`'s encoder (`visual_input`) and `config.caption_prefix` as text. The work directory's vocabulary must be
    the model's (checked by hash)."""
    wd = WorkDir(work)
    segments = load_segments(work)
    captions = segments["caption"].to_pylist()
    segments = segments.filter(pa.array([c is not None and bool(c.strip()) for c in captions]))
    words = features = [None] * segments.num_rows  # only what the encoder reads is loaded
    if config.reads_words:
        visual_tokenizer = visual_tokenizer_from_work_dir(work, config.encoder)
        tokens_path = wd.require(wd.tokens, "tokenize")
        if tokens_metadata(tokens_path).get("vocab_hash") != visual_tokenizer.content_hash:
            raise ConfigError(f"{tokens_path} was made with another vocabulary than {wd.vocab}; run `videobert tokenize`")
        words = segment_visual_tokens(tokens_path, segments)
    if config.reads_features:
        features = segment_clip_features(work, segments)
    visual = [visual_input(config, w, f) for w, f in zip(words, features)]
    has_video = np.array([len(v) > 0 for v in visual], dtype=bool)
    segments = segments.filter(pa.array(has_video))
    visual = [v for v, keep in zip(visual, has_video) if keep]
    everything = Seq2SeqExamples(
        [config.caption_prefix] * segments.num_rows, visual, [c.strip() for c in segments["caption"].to_pylist()]
    )
    split_of = np.array(segments["split"].to_pylist(), dtype=object)
    out = {}
    for split in splits:
        rows = np.flatnonzero(split_of == split)
        if len(rows) == 0:
            raise InputError(wd.segments, f"no captioned segment with video in split {split!r}")
        out[split] = CaptionSplit(everything.subset(rows), segments.take(pa.array(rows)))
    return out


def visual_input(
    config: VideoBertCaptioningConfig, words: np.ndarray | None, features: np.ndarray | None
) -> np.ndarray:
    """One segment's visual input as `config`'s encoder reads it: its `(clips,)` visual words, its `(clips,
    feature_dim)` clip features, or both (`words_and_features`: indexing and slicing keep the two together, so the
    augmentations of `finetune.augment` apply unchanged); what the encoder does not read may be None."""
    return visual_item(config.reads_words, config.reads_features, words, features)


def training_sentences(work: Path) -> list[str]:
    """Narration sentences of the videos in the manifest's train split (what denoising may read without seeing the
    language of held-out videos)."""
    manifest = load_manifest(work)
    train_videos = pc.filter(manifest["video"], pc.equal(manifest["split"], "train"))
    sentences = load_sentences(work)
    sentences = sentences.filter(pc.is_in(sentences["video"], value_set=train_videos))
    return [s for s in sentences["text"].to_pylist() if s and s.strip()]


# ---------------------------------------------------------------------------------------------- stages


@dataclass
class CaptionOptions:
    """How `finetune_caption` builds, trains and decodes a captioner (every field is a `finetune_caption` option)."""

    encoder: str = "pretrained"
    """pretrained, random or features (`model.captioning`)."""
    epochs: int = 30
    """Most passes over the training split."""
    batch_size: int = 32
    """Segments per optimisation step."""
    learning_rate: float = 5e-4
    """AdamW learning rate, shared by encoder and decoder."""
    patience: int = 3
    """Stop after this many epochs without a lower val loss."""
    few_shot: int = 0
    """Train on at most this many segments per distinct caption (seeded, the same segments for every encoder); 0
    uses all."""
    decoder_layers: int = 2
    """BART decoder layers (width, heads and feed-forward follow the encoder)."""
    with_template: bool = False
    """Encode `TEMPLATE [>] visual tokens` instead of the visual tokens alone."""
    denoise_steps: int = 0
    """Steps of text-infilling denoising on the training videos' narration before captioning."""
    stride: int = 1
    """Training augmentation: random visual subsampling stride in [1, stride]."""
    token_dropout: float = 0.0
    """Training augmentation: drop each visual input with this probability."""
    num_beams: int = 4
    """Beam width at test time (1: greedy)."""
    length_penalty: float = 1.0
    """Beam search length penalty exponent."""
    no_repeat_ngram_size: int = 0
    """Forbid repeating n-grams of this size when decoding (0: off)."""
    max_caption_length: int = 32
    """Decoder positions: longest caption in WordPiece tokens, start and end included."""
    seed: int = 0
    """Seed of initialisation, shuffling, augmentation and denoising."""

    def __post_init__(self) -> None:
        if self.encoder not in ENCODER_MODES:
            raise ConfigError(f"unknown encoder {self.encoder!r}; choose one of {', '.join(ENCODER_MODES)}")
        for name, low in (("epochs", 1), ("batch_size", 1), ("patience", 1), ("few_shot", 0), ("decoder_layers", 1),
                          ("denoise_steps", 0), ("stride", 1), ("num_beams", 1), ("no_repeat_ngram_size", 0),
                          ("max_caption_length", 3)):  # fmt: skip
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be at least {low}, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0.0 <= self.token_dropout < 1.0:
            raise ConfigError(f"token_dropout must be in [0, 1), got {self.token_dropout}")

    def decoding(self) -> dict[str, Any]:
        return {"num_beams": self.num_beams, "length_penalty": self.length_penalty,
                "no_repeat_ngram_size": self.no_repeat_ngram_size}  # fmt: skip


def finetune_caption(
    model: Path,
    work: Path,
    out: Path,
    *,
    encoder: str = CaptionOptions.encoder,
    epochs: int = CaptionOptions.epochs,
    batch_size: int = CaptionOptions.batch_size,
    learning_rate: float = CaptionOptions.learning_rate,
    patience: int = CaptionOptions.patience,
    few_shot: int = CaptionOptions.few_shot,
    decoder_layers: int = CaptionOptions.decoder_layers,
    with_template: bool = CaptionOptions.with_template,
    denoise_steps: int = CaptionOptions.denoise_steps,
    stride: int = CaptionOptions.stride,
    token_dropout: float = CaptionOptions.token_dropout,
    num_beams: int = CaptionOptions.num_beams,
    length_penalty: float = CaptionOptions.length_penalty,
    no_repeat_ngram_size: int = CaptionOptions.no_repeat_ngram_size,
    max_caption_length: int = CaptionOptions.max_caption_length,
    seed: int = CaptionOptions.seed,
    device: str = "auto",
) -> StageReport:
    """Train a captioner (VideoBERT encoder + BART decoder) on the annotated segments and score it on test.

    Args:
        model: Model directory written by `videobert pretrain` (encoder random or features: only its architecture
            and vocabulary are used).
        work: Work directory; reads segments.parquet (caption, split), tokens.parquet and vocab/ (or, for
            encoder features, features/ and clips.parquet), and with denoising sentences.parquet and the manifest.
        out: Folder for metrics.json, captions.jsonl and the checkpoint (OUT/model).
        encoder: pretrained (MODEL's encoder), random (same architecture, random weights) or features (random
            encoder over projected continuous clip features instead of visual words).
        epochs: Most passes over the training split.
        batch_size: Segments per optimisation step.
        learning_rate: AdamW learning rate of encoder and decoder.
        patience: Stop after this many epochs without a lower val loss.
        few_shot: Train on at most this many segments per distinct caption; 0 uses all.
        decoder_layers: Number of BART decoder layers (width and heads follow the encoder).
        with_template: Encode the paper's template sentence before the visual tokens.
        denoise_steps: Steps of BART text-infilling on the training videos' narration before captioning (0: none).
        stride: Training augmentation: subsample each segment's visual input with a random stride in [1, stride].
        token_dropout: Training augmentation: drop each visual token with this probability (one is always kept).
        num_beams: Beam width when captioning the test split (1: greedy).
        length_penalty: Beam search length penalty (exponent on the caption length; > 1 favours longer captions).
        no_repeat_ngram_size: Never repeat an n-gram of this size in a caption (0: no constraint).
        max_caption_length: Longest caption in WordPiece tokens (start and end included).
        seed: Seed of initialisation, shuffling and augmentation.
        device: auto (CUDA when available), cuda or cpu.
    """
    options = CaptionOptions(
        encoder=encoder, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, patience=patience,
        few_shot=few_shot, decoder_layers=decoder_layers, with_template=with_template, denoise_steps=denoise_steps, stride=stride,
        token_dropout=token_dropout, num_beams=num_beams, length_penalty=length_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size, max_caption_length=max_caption_length, seed=seed,
    )  # fmt: skip
    torch_device = torch.device(resolve_device(device))
    with CaptionScorer() as scorer:
        metrics = _caption_run(Path(model), Path(work), Path(out), options, scorer, torch_device)
    print_table3({METHOD_NAMES[encoder]: metrics["test"]}, f"Captioning, split test: {metrics['examples']['test']} segments")
    return StageReport(
        "finetune",
        done=metrics["examples"]["test"],
        outputs={"metrics": str(Path(out) / METRICS_FILE), "captions": str(Path(out) / CAPTIONS_FILE),
                 "checkpoint": str(Path(out) / CHECKPOINT_DIR)},  # fmt: skip
        stats={"best_epoch": metrics["best_epoch"], **{k: v for k, v in metrics["test"].items() if v is not None}},
    )


def _caption_run(
    model_dir: Path, work: Path, out: Path, options: CaptionOptions, scorer: CaptionScorer, device: torch.device
) -> dict[str, Any]:
    """setup -> denoise -> train -> caption test -> score -> save (module docstring); returns metrics.json."""
    started = time.perf_counter()
    torch.manual_seed(options.seed)
    feature_dim = FeatureStore(work).dim if options.encoder in FEATURE_MODES else None
    network = VideoBertForCaptioning.from_videobert(
        model_dir, encoder_mode=options.encoder, feature_dim=feature_dim,
        caption_prefix=TEMPLATE if options.with_template else None, decoder_layers=options.decoder_layers,
        max_caption_length=options.max_caption_length,
    )  # fmt: skip
    splits = load_caption_examples(work, network.config)
    if options.few_shot:
        train = splits["train"]
        captions = np.unique(train.examples.targets, return_inverse=True)[1][:, None]  # (examples, 1) caption ids
        rows = few_shot_rows(captions, options.few_shot, np.random.default_rng(options.seed))
        splits["train"] = CaptionSplit(train.examples.subset(rows), train.segments.take(pa.array(rows)))
    # A features encoder starts from the training clips' statistics; a VideoBERT pretrained over clip features keeps
    # the ones it was trained with, unless its weights are re-drawn (mode random).
    if options.encoder in FEATURE_MODES or (network.config.encoder.reads_features and options.encoder == "random"):
        clips = np.concatenate([clip_features_of(v) for v in splits["train"].examples.visual])  # (clips, feature_dim)
        network.encoder.set_feature_statistics(torch.from_numpy(clips.mean(axis=0)), torch.from_numpy(clips.std(axis=0)))
    denoise_losses: list[float] = []
    if options.denoise_steps:
        denoise_losses = denoise(
            network, training_sentences(work), steps=options.denoise_steps, batch_size=options.batch_size,
            learning_rate=options.learning_rate, seed=options.seed, device=device,
        )  # fmt: skip
    history = train_seq2seq(
        network, splits["train"].examples, splits["val"].examples, epochs=options.epochs,
        batch_size=options.batch_size, learning_rate=options.learning_rate, seed=options.seed, device=device,
        patience=options.patience, stride=options.stride, token_dropout=options.token_dropout,
    )  # fmt: skip
    trained = time.perf_counter()
    test = splits["test"]
    generated = generate_texts(network, test.examples, **options.decoding(), device=device)
    decoded = time.perf_counter()
    scores = scorer.score({i: [t] for i, t in enumerate(test.examples.targets)}, dict(enumerate(generated)))
    network.save_pretrained(out / CHECKPOINT_DIR)
    write_captions(out / CAPTIONS_FILE, test.segments, test.examples.targets, generated)
    best_epoch = min(history, key=lambda row: row["val_loss"])["epoch"]
    metrics: dict[str, Any] = {
        "task": "caption", "model": str(model_dir), "work": str(work), "options": asdict(options),
        "caption_prefix": network.config.caption_prefix, "metric_tokenizer": scorer.tokenizer,
        "parameters": sum(p.numel() for p in network.parameters()),
        "examples": {split: len(s.examples) for split, s in splits.items()},
        "denoise_loss_first_last": [denoise_losses[0], denoise_losses[-1]] if denoise_losses else None,
        "epochs_run": len(history), "best_epoch": best_epoch, "history": history, "test": scores,
        "seconds": {"train": trained - started, "generate": decoded - trained, "total": time.perf_counter() - started},
    }  # fmt: skip
    write_json(out / METRICS_FILE, metrics)
    return metrics


def write_captions(path: Path, segments: pa.Table, references: list[str], generated: list[str]) -> None:
    """captions.jsonl: one segment a line with its video, start, end, reference and generated caption."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        for row, reference, caption in zip(segments.select(["video", "start", "end"]).to_pylist(), references, generated):
            fh.write(json.dumps({**row, "reference": reference, "generated": caption}, ensure_ascii=False) + "\n")


def evaluate_caption(
    checkpoint: Path,
    work: Path,
    split: str = "test",
    num_beams: int = 4,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    batch_size: int = 64,
    out: Path | None = None,
    device: str = "auto",
) -> StageReport:
    """Caption the annotated segments of one split with a caption checkpoint and score them (paper's Table 3).

    Args:
        checkpoint: Caption checkpoint: OUT/model of `videobert finetune --task caption`, or OUT itself.
        work: Work directory; reads segments.parquet, tokens.parquet and vocab/ (the checkpoint's vocabulary), or
            features/ and clips.parquet for a checkpoint with encoder features.
        split: Annotation split whose segments are captioned.
        num_beams: Beam width (1: greedy).
        length_penalty: Beam search length penalty (exponent on the caption length; > 1 favours longer captions).
        no_repeat_ngram_size: Never repeat an n-gram of this size in a caption (0: no constraint).
        batch_size: Segments per generate call.
        out: Folder for metrics.json and captions.jsonl (default CHECKPOINT/eval/caption-SPLIT).
        device: auto (CUDA when available), cuda or cpu.
    """
    checkpoint = resolve_checkpoint(checkpoint)
    torch_device = torch.device(resolve_device(device))
    network = VideoBertForCaptioning.from_pretrained(checkpoint)
    if network.tokenizer is None:
        raise ConfigError(f"{checkpoint}: no tokenizer files; not a checkpoint written by `videobert finetune --task caption`")
    examples = load_caption_examples(work, network.config, splits=(split,))[split]
    decoding = {"num_beams": num_beams, "length_penalty": length_penalty, "no_repeat_ngram_size": no_repeat_ngram_size}
    with CaptionScorer() as scorer:  # METEOR's Java process loads while the model captions
        generated = generate_texts(network, examples.examples, **decoding, batch_size=batch_size, device=torch_device)
        scores = scorer.score({i: [t] for i, t in enumerate(examples.examples.targets)}, dict(enumerate(generated)))
    out = Path(out) if out is not None else checkpoint / "eval" / f"caption-{split}"
    metrics = {
        "task": "caption", "split": split, "checkpoint": str(checkpoint), "work": str(work),
        "encoder": network.config.encoder_mode, "evaluated": len(generated), "decoding": decoding,
        "metric_tokenizer": scorer.tokenizer, "scores": scores,
    }  # fmt: skip
    write_json(out / METRICS_FILE, metrics)
    write_captions(out / CAPTIONS_FILE, examples.segments, examples.examples.targets, generated)
    print_table3({METHOD_NAMES[network.config.encoder_mode]: scores}, f"Captioning, split {split}: {len(generated)} segments")
    return StageReport(
        "evaluate",
        done=len(generated),
        outputs={"metrics": str(out / METRICS_FILE), "captions": str(out / CAPTIONS_FILE)},
        stats={k: v for k, v in scores.items() if v is not None},
    )


def resolve_checkpoint(path: Path) -> Path:
    """A caption checkpoint directory: `path` itself, or `path/model` when `path` is a finetune output folder."""
    path = Path(path)
    if not (path / "config.json").is_file() and (path / CHECKPOINT_DIR / "config.json").is_file():
        return path / CHECKPOINT_DIR
    return path


def caption_segments(
    checkpoint_or_model: str | os.PathLike | VideoBertForCaptioning,
    visual: list[np.ndarray],
    *,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    batch_size: int = 64,
    device: str = "auto",
) -> list[str]:
    """One caption per segment from its visual words (or, for a checkpoint with encoder features, its clip
    features), with the checkpoint's own text prefix; `checkpoint_or_model` is a caption checkpoint directory (as
    in `evaluate_caption`) or a loaded model."""
    if isinstance(checkpoint_or_model, VideoBertForCaptioning):
        network = checkpoint_or_model
    else:
        network = VideoBertForCaptioning.from_pretrained(resolve_checkpoint(Path(checkpoint_or_model)))
    if any(len(v) == 0 for v in visual):
        raise ConfigError("every segment needs at least one clip to caption")
    return generate_texts(
        network, ([network.config.caption_prefix] * len(visual), list(visual)), num_beams=num_beams,
        length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size, batch_size=batch_size,
        device=device,
    )  # fmt: skip


def caption_comparison(
    model: Path,
    work: Path,
    out: Path,
    *,
    epochs: int = COMPARISON_EPOCHS,
    batch_size: int = CaptionOptions.batch_size,
    learning_rate: float = CaptionOptions.learning_rate,
    few_shot: int = CaptionOptions.few_shot,
    decoder_layers: int = CaptionOptions.decoder_layers,
    with_template: bool = CaptionOptions.with_template,
    denoise_steps: int = CaptionOptions.denoise_steps,
    num_beams: int = CaptionOptions.num_beams,
    seed: int = CaptionOptions.seed,
    device: str = "auto",
) -> StageReport:
    """The paper's Table 3 on one corpus: the same decoder, data and budget with (a) the pretrained VideoBERT
    encoder, (b) a randomly initialised one, (c) a random one over continuous clip features, (d) the paper's
    "VideoBERT + S3D": (a) and (c) side by side, and (e) its control, (b) and (c) side by side, so that (d) against
    (e) is what pretraining adds to the features.

    Args:
        model: Model directory written by `videobert pretrain`.
        work: Work directory (as for `finetune_caption`, features included).
        out: Folder for OUT/ENCODER/ (each run's `finetune_caption` outputs), comparison.json and table3.md.
        epochs: Most passes over the training split, per encoder (the default fits the demo's time budget).
        batch_size: Segments per optimisation step.
        learning_rate: AdamW learning rate.
        few_shot: Train on at most this many segments per distinct caption (the same ones for every encoder); 0
            uses all.
        decoder_layers: Number of BART decoder layers.
        with_template: Encode the paper's template sentence before the visual tokens.
        denoise_steps: Steps of text-infilling denoising before captioning, per encoder.
        num_beams: Beam width at test time.
        seed: Seed shared by the runs.
        device: auto (CUDA when available), cuda or cpu.
    """
    base = CaptionOptions(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, few_shot=few_shot,
        decoder_layers=decoder_layers, with_template=with_template, denoise_steps=denoise_steps, num_beams=num_beams, seed=seed,
    )  # fmt: skip
    torch_device = torch.device(resolve_device(device))
    out = Path(out)
    started = time.perf_counter()
    runs = {}
    with CaptionScorer() as scorer:
        for mode in ENCODER_MODES:
            runs[mode] = _caption_run(Path(model), Path(work), out / mode, replace(base, encoder=mode), scorer, torch_device)
    seconds = time.perf_counter() - started
    rows = {METHOD_NAMES[mode]: run["test"] for mode, run in runs.items()}
    table = format_table3(rows)
    with atomic_open(out / "table3.md", "w", encoding="utf-8") as fh:
        fh.write(table + "\n")
    comparison = {
        "model": str(model), "work": str(work), "options": asdict(base), "seconds": seconds,
        "examples": runs["pretrained"]["examples"],
        "methods": {mode: {"test": run["test"], "best_epoch": run["best_epoch"], "epochs_run": run["epochs_run"],
                           "seconds": run["seconds"]} for mode, run in runs.items()},
    }  # fmt: skip
    write_json(out / "comparison.json", comparison)
    print_table3(rows, f"Captioning, split test: {runs['pretrained']['examples']['test']} segments, {seconds:.0f} s")
    return StageReport(
        "caption-comparison",
        done=len(runs),
        outputs={"comparison": str(out / "comparison.json"), "table": str(out / "table3.md")},
        stats={"seconds": seconds, **{f"{mode}_cider": run["test"]["cider"] for mode, run in runs.items()}},
    )
