"""Pretraining examples for VideoBERT: the three regimes of the paper, streamed from the work directory, and the
masking collator.

Sources: ``tokens.parquet`` (video, clip, start, end, token) and ``sentences.parquet`` (video, index, start, end,
text), restricted to the videos of one split of ``manifest.parquet``. A model that reads continuous clip features
(``visual_input`` features or both, `videobert.model.visual_input`) takes its clips from ``clips.parquet`` and
``features/`` instead (features) or as well (both): a clip of a visual sentence is then its visual word (the
placeholder 0 for features alone) and its row in the feature store, carried together as a ``(clips, 2)`` array
through the same units, augmentations and negatives.

Visual sentence
    The visual sentence of a time window ``[start, end)`` (a sentence, or a run of neighbouring sentences) is the
    visual tokens of the clips whose midpoint ``(clip.start + clip.end) / 2`` lies in the window, in clip order.
    Midpoints give every clip to at most one of a video's non-overlapping sentences, so no clip is counted twice.
    A sentence shorter than a clip may contain no midpoint; its visual sentence is then the clips that overlap the
    window (``clip.start < end and start < clip.end``), so that no narrated moment is left without video.

Units and regimes
    A narrated video is cut into *units*: runs of neighbouring sentences (training: 1 to ``max_concat`` sentences,
    uniformly, the paper's "random concatenation of neighbouring sentences"; evaluation: one sentence each) with
    the visual sentence of their joint window. Each training unit becomes one example, its regime drawn with the
    configured weights::

        text         [CLS] text [SEP]                    masked-word prediction
        video        [CLS] [>] visual [SEP]               masked visual-token prediction
        text_video   [CLS] text [>] visual [SEP]          both, plus alignment: with probability
                                                          ``negative_prob`` the visual part is the visual
                                                          sentence of *another video* (label NOT_ALIGNED)

    A unit whose visual sentence is empty (the narration runs past the last clip) is text-only. A video without
    speech gives video-only examples of ``video_only_length`` (16) visual tokens: consecutive windows of its clips
    (a video shorter than one window gives one shorter example). Visual parts of training examples are subsampled
    with a random stride in ``1..max_stride`` and a random phase (the paper's augmentation), the stride capped so
    that at least two tokens remain. Evaluation examples are not augmented, and every evaluation unit is used in
    every regime, text–video both with its own and with another video's visual sentence, so that the per-regime
    losses and the alignment accuracy (on balanced pairs) are measured on the same held-out units each time.

Streaming
    `PretrainStream` is an `IterableDataset` that never holds more than one chunk of videos (``chunk_videos``
    videos' clip and sentence rows, read with a row-range filter so Parquet skips the other row groups) plus a
    bounded shuffle buffer (``shuffle_buffer`` examples) and a bounded pool of recent visual sentences for the
    negatives. Only per-video bookkeeping (the ids of the split's videos) grows with the corpus. Videos are
    partitioned over ``world_size * num_workers`` shards (every rank and every DataLoader worker reads its own
    videos). The stream yields whole batches: a random half of the buffer, sorted by length and cut into batches,
    in random order, so a batch holds sequences of similar length and is padded only to its own longest one.

Masking (`MaskingCollator`)
    In each example the maskable text positions (WordPiece ids other than [CLS], [SEP], [MASK], [PAD]) and the
    visual positions are masked separately at ``mask_prob`` (15 %): the number of masked positions of a side is
    ``mask_prob * n`` rounded at random (so its expectation is exact), chosen without replacement. A chosen position
    becomes [MASK] (80 %), a random id of the same modality (10 %: a WordPiece id that is not a bracketed special
    or ``[unused]`` token; a visual word the vocabulary can produce) or stays (10 %). [CLS], [SEP], [>] and padding
    are never masked. A model that reads clip features sees nothing of a masked clip: every chosen visual position
    becomes [MASK] (no random or kept 10 %, which would show the clip's own feature), and its feature is the target
    of the noise-contrastive loss (`training.objectives.masked_clips`). Optionally (``content_word_weight`` > 1), a
    text position holding a content word (not a stopword, not punctuation) is that many times more likely to be
    chosen than a function word, at the same 15 % rate: narration is mostly function words and chatter, and
    zero-shot classification asks the model for verbs and nouns (DESIGN.md §6). Each example carries its own
    masking seed, so masks do not depend on which process collates, in which order, or after a resume.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import IterableDataset, get_worker_info

from videobert.data.ingest import load_manifest
from videobert.model.configuration import ALIGNED, NOT_ALIGNED
from videobert.model.modeling import IGNORE_INDEX
from videobert.model.tokenization import TEXT_TYPE, VideoBertTokenizer
from videobert.tokenizer.hkmeans import VisualTokenizer
from videobert.utils.errors import ConfigError, InputError
from videobert.utils.io import open_parquet, read_parquet
from videobert.workdir import WorkDir

if TYPE_CHECKING:
    from videobert.training.objectives import Objective

# Regimes, in the order of `PretrainDataConfig.regime_weights`.
TEXT, VIDEO, TEXT_VIDEO = 0, 1, 2
REGIMES = ("text", "video", "text_video")

TRAIN_SPLITS = ("train", None)  # videos without an annotated split train
EVAL_SPLIT = "val"

# Visual sentences kept for drawing negatives: enough to span many videos, small enough to be negligible memory.
NEGATIVE_POOL = 1024

# Function words and narration fillers; every other alphabetic or numeric WordPiece is a content word.
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing don down during each even few for from further get gets
    getting go goes going gonna got had has have having he her here hers herself him himself his how i if in into
    is it its itself just let lets like me more most my myself no nor not now of off ok okay on once only or other
    our ours ourselves out over own really right same she should so some such than that the their theirs them
    themselves then there these they this those through to too um uh under until up us very was we well were what
    when where which while who whom why will with would yeah you your yours yourself yourselves""".split()
)


@dataclass
class PretrainDataConfig:
    """How pretraining examples are built, batched and masked."""

    batch_size: int = 32
    """Sequences per batch (per device)."""
    max_length: int = 128
    """Longest sequence, special tokens included; longer ones are cut, the longer modality first."""
    text_weight: float = 0.25
    """Relative frequency of the text-only regime for a narrated unit."""
    video_weight: float = 0.25
    """Relative frequency of the video-only regime for a narrated unit; 0 also keeps videos without speech out of
    training."""
    text_video_weight: float = 0.5
    """Relative frequency of the text–video regime. The default gives it half the units because it carries both
    cross-modal masked prediction and the alignment objective."""
    negative_prob: float = 0.5
    """Probability that a text–video example pairs the text with another video's visual sentence (paper: 50 %)."""
    mask_prob: float = 0.15
    """Fraction of the maskable positions of each modality that are predicted (BERT: 15 %)."""
    content_word_weight: float = 1.0
    """How many times more likely a content word is to be masked than a function word; 1 masks uniformly."""
    max_concat: int = 3
    """Most neighbouring sentences concatenated into one training unit; 1 disables the augmentation."""
    max_stride: int = 5
    """Largest stride of the random visual-token subsampling (paper: 1 to 5); 1 disables it."""
    video_only_length: int = 16
    """Visual tokens per video-only example of a video without speech (paper: 16)."""
    shuffle_buffer: int = 2048
    """Examples held for shuffling and length bucketing; at least two batches."""
    chunk_videos: int = 64
    """Videos whose clip and sentence rows are read from Parquet at once."""
    seed: int = 0
    """Seeds the order, the augmentations, the regimes, the negatives and the masks."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_concat", "max_stride", "video_only_length", "shuffle_buffer", "chunk_videos"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_length < 4:
            raise ConfigError(f"max_length must be at least 4 ([CLS] x [>] y [SEP]), got {self.max_length}")
        weights = self.regime_weights
        if min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError(f"regime weights must be non-negative with a positive sum, got {weights}")
        for name in ("negative_prob", "mask_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.content_word_weight < 1.0:
            raise ConfigError(f"content_word_weight must be at least 1, got {self.content_word_weight}")
        if self.shuffle_buffer < 2 * self.batch_size:
            raise ConfigError(
                f"shuffle_buffer ({self.shuffle_buffer}) must hold at least two batches of {self.batch_size}"
            )
        if self.seed < 0:
            raise ConfigError(f"seed must be non-negative, got {self.seed}")

    @property
    def regime_weights(self) -> tuple[float, float, float]:
        """(text, video, text_video) weights, in regime order."""
        return (self.text_weight, self.video_weight, self.text_video_weight)


@dataclass
class PretrainExample:
    """One sequence before masking."""

    input_ids: list[int]
    """Joint-vocabulary ids, [CLS] ... [SEP] (layouts in `videobert.model.tokenization`)."""
    token_type_ids: list[int]
    """0 for [CLS], text and [>]; 1 for the visual part and the closing [SEP]."""
    regime: int
    """TEXT, VIDEO or TEXT_VIDEO."""
    alignment_label: int = IGNORE_INDEX
    """ALIGNED or NOT_ALIGNED for text–video pairs, -100 otherwise."""
    seed: int = 0
    """Seed of this example's mask."""
    visual_rows: list[int] | None = None
    """Feature-store rows of the visual part's clips, in order (models that read clip features); None otherwise."""

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class VideoRecord:
    """The clips and sentences of one video, in time order."""

    video: str
    clip_start: np.ndarray  # (clips,) float64 seconds
    clip_end: np.ndarray  # (clips,) float64 seconds
    tokens: np.ndarray  # (clips,) int64 visual words, or (clips, 2) visual word and feature-store row
    sentences: list[tuple[float, float, str]] = field(default_factory=list)  # (start, end, text) by index


@dataclass
class Unit:
    """A run of neighbouring sentences and its visual sentence."""

    video: str
    text: str
    visual: np.ndarray  # (n,) int64 visual words, or (n, 2) visual word and feature-store row


def visual_sentence(record: VideoRecord, start: float, end: float) -> np.ndarray:
    """Visual words of the clips whose midpoint lies in ``[start, end)``; when there is none, of the clips that
    overlap the window (module docstring)."""
    midpoint = (record.clip_start + record.clip_end) / 2
    inside = (midpoint >= start) & (midpoint < end)
    if not inside.any():
        inside = (record.clip_start < end) & (record.clip_end > start)
    return record.tokens[inside]


def sentence_units(record: VideoRecord, rng: np.random.Generator | None, max_concat: int) -> list[Unit]:
    """Cut the video's sentences into runs of 1..``max_concat`` neighbours (sizes drawn uniformly with ``rng``;
    ``rng=None`` keeps one sentence per unit), each with the visual sentence of its joint window."""
    units = []
    i = 0
    while i < len(record.sentences):
        size = 1 if rng is None else int(rng.integers(1, max_concat + 1))
        run = record.sentences[i : i + size]
        start, end = run[0][0], run[-1][1]
        units.append(Unit(record.video, " ".join(text for _, _, text in run), visual_sentence(record, start, end)))
        i += size
    return units


def subsample(tokens: np.ndarray, rng: np.random.Generator, max_stride: int) -> np.ndarray:
    """``tokens[phase::stride]`` with a stride drawn uniformly from 1..``max_stride``, capped so that at least two
    tokens remain, and a phase drawn from ``[0, stride)``."""
    stride = int(rng.integers(1, max(1, min(max_stride, len(tokens) // 2)) + 1))
    return tokens[int(rng.integers(stride)) :: stride]


def video_only_windows(
    tokens: np.ndarray, length: int, rng: np.random.Generator | None, max_stride: int
) -> list[np.ndarray]:
    """Video-only sequences of a video without speech: after subsampling (training, ``rng`` given), consecutive
    windows of ``length`` tokens; a trailing partial window is dropped unless it is the only one."""
    if rng is not None:
        # Cap the stride so a video long enough for one full window keeps one.
        tokens = subsample(tokens, rng, min(max_stride, max(1, len(tokens) // length)))
    if len(tokens) <= length:
        return [tokens] if len(tokens) else []
    return [tokens[i : i + length] for i in range(0, len(tokens) - length + 1, length)]


class ShuffleBuckets:
    """A bounded shuffle buffer that releases batches of similar-length examples.

    When it holds ``capacity`` examples it releases a random half of them (rounded down to whole batches), sorted
    by length, cut into batches, in random order; the rest wait for later examples. It never holds more than
    ``capacity`` examples.
    """

    def __init__(self, capacity: int, batch_size: int, rng: np.random.Generator):
        if capacity < 2 * batch_size:
            raise ConfigError(f"capacity ({capacity}) must hold at least two batches of {batch_size}")
        self.capacity = capacity
        self.batch_size = batch_size
        self.rng = rng
        self.items: list[PretrainExample] = []

    def __len__(self) -> int:
        return len(self.items)

    def push(self, example: PretrainExample) -> Iterator[list[PretrainExample]]:
        self.items.append(example)
        if len(self.items) >= self.capacity:
            half = self.capacity // 2
            yield from self._release(half - half % self.batch_size)

    def flush(self) -> Iterator[list[PretrainExample]]:
        """Release everything, the last batch possibly short."""
        yield from self._release(len(self.items))

    def _release(self, n: int) -> Iterator[list[PretrainExample]]:
        order = self.rng.permutation(len(self.items))
        chosen = sorted((self.items[i] for i in order[:n]), key=len)
        self.items = [self.items[i] for i in order[n:]]
        batches = [chosen[i : i + self.batch_size] for i in range(0, len(chosen), self.batch_size)]
        for j in self.rng.permutation(len(batches)):
            yield batches[j]


@dataclass(frozen=True)
class PretrainCorpus:
    """The tables of a work directory and the videos of the training and evaluation splits."""

    tokens: Path | None
    """tokens.parquet; None when the model reads clip features alone."""
    sentences: Path
    train_videos: tuple[str, ...]
    """Videos of split train or without a split that have visual tokens (clips), sorted."""
    eval_videos: tuple[str, ...]
    """Videos of split val that have visual tokens (clips), sorted."""
    clips: Path | None = None
    """clips.parquet, when the model reads clip features."""
    visual_input: str = "words"
    """What the visual positions read: words, features or both (`videobert.model.visual_input`)."""

    @property
    def visual_source(self) -> Path:
        """The table the visual sentences come from (for messages)."""
        return self.tokens if self.tokens is not None else self.clips

    @classmethod
    def from_work_dir(cls, work: str | Path, visual_input: str = "words") -> "PretrainCorpus":
        wd = WorkDir(work)
        tokens = wd.require(wd.tokens, "tokenize") if visual_input != "features" else None
        clips = wd.require(wd.clips, "extract") if visual_input != "words" else None
        if clips is not None:
            wd.require(wd.features / "meta.json", "extract")
        sentences = wd.require(wd.sentences, "ingest")
        manifest = load_manifest(work).select(["video", "split"]).to_pylist()
        source = tokens if tokens is not None else clips
        present = _distinct_videos(source)
        train = tuple(sorted(r["video"] for r in manifest if r["split"] in TRAIN_SPLITS and r["video"] in present))
        held_out = tuple(sorted(r["video"] for r in manifest if r["split"] == EVAL_SPLIT and r["video"] in present))
        if not train:
            what = "visual tokens" if tokens is not None else "clips"
            raise InputError(source, f"has no {what} of a training video (split train or no split)")
        return cls(tokens, sentences, train, held_out, clips, visual_input)


class PretrainStream(IterableDataset):
    """Batches (lists of `PretrainExample`) of one split, for a `DataLoader` with ``batch_size=None`` and a
    `MaskingCollator` (module docstring).

    ``train=True``: endless, epoch after epoch, augmented, one regime per unit, shuffled. ``train=False``: one
    deterministic pass over the videos, every regime of every unit, not augmented. ``rank`` / ``world_size`` are the
    process's place in distributed training; DataLoader workers split a rank's videos further.
    """

    def __init__(
        self,
        corpus: PretrainCorpus,
        videos: Sequence[str],
        tokenizer: VideoBertTokenizer,
        config: PretrainDataConfig,
        train: bool,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside world_size {world_size}")
        self.corpus = corpus
        self.videos = tuple(sorted(videos))
        self.tokenizer = tokenizer
        self.config = config
        self.train = train
        self.rank = rank
        self.world_size = world_size
        self._shard_offsets: dict[str, int] | None = None  # feature shard -> its first global row, read on first use

    def shard(self) -> tuple[int, int]:
        """(index, count) of the video shard this process (and DataLoader worker) reads."""
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        return self.rank * workers + worker, self.world_size * workers

    def shard_videos(self) -> tuple[str, ...]:
        index, count = self.shard()
        return self.videos[index::count]

    def __iter__(self) -> Iterator[list[PretrainExample]]:
        index, count = self.shard()
        videos = self.shard_videos()
        if self.train and not videos:
            raise ConfigError(
                f"{len(self.videos)} training videos cannot feed {count} data shards (ranks x DataLoader workers); "
                "use fewer workers or processes"
            )
        buckets = ShuffleBuckets(self.config.shuffle_buffer, self.config.batch_size, self._rng(index, count, -1))
        negatives: deque[tuple[str, np.ndarray]] = deque(maxlen=NEGATIVE_POOL)
        epoch = 0
        while True:
            rng = self._rng(index, count, epoch)
            emitted = 0
            for example in self._examples(videos, rng, negatives):
                emitted += 1
                yield from buckets.push(example)
            if not self.train:
                yield from buckets.flush()
                return
            if emitted == 0:
                raise InputError(
                    self.corpus.visual_source, f"the training videos of shard {index}/{count} give no example"
                )
            epoch += 1

    def _rng(self, index: int, count: int, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, int(self.train), index, count, epoch + 1])

    def _examples(
        self, videos: Sequence[str], rng: np.random.Generator, negatives: deque[tuple[str, np.ndarray]]
    ) -> Iterator[PretrainExample]:
        size = self.config.chunk_videos
        chunks = [videos[i : i + size] for i in range(0, len(videos), size)]
        order = rng.permutation(len(chunks)) if self.train else range(len(chunks))
        for c in order:
            records = self.read_chunk(chunks[c])
            if self.train:
                records = [records[i] for i in rng.permutation(len(records))]
            units = {
                r.video: sentence_units(r, rng if self.train else None, self.config.max_concat) for r in records
            }
            # The chunk's own visual sentences join the pool first, so negatives can come from its other videos.
            negatives.extend((u.video, u.visual) for us in units.values() for u in us if len(u.visual))
            for record in records:
                if record.sentences:
                    for unit in units[record.video]:
                        yield from self._unit_examples(unit, rng, negatives)
                elif self.config.video_weight > 0 or not self.train:
                    length, stride = self.config.video_only_length, self.config.max_stride
                    for window in video_only_windows(record.tokens, length, rng if self.train else None, stride):
                        yield self._example(None, window, VIDEO, rng)

    def _unit_examples(
        self, unit: Unit, rng: np.random.Generator, negatives: deque[tuple[str, np.ndarray]]
    ) -> Iterator[PretrainExample]:
        if not len(unit.visual):
            yield self._example(unit.text, None, TEXT, rng)
            return
        if not self.train:
            yield self._example(unit.text, None, TEXT, rng)
            yield self._example(None, unit.visual, VIDEO, rng)
            yield self._example(unit.text, unit.visual, TEXT_VIDEO, rng, ALIGNED)
            other = _negative(unit.video, negatives, rng)
            if other is not None:
                yield self._example(unit.text, other, TEXT_VIDEO, rng, NOT_ALIGNED)
            return
        weights = np.asarray(self.config.regime_weights)
        regime = int(rng.choice(len(REGIMES), p=weights / weights.sum()))
        if regime == TEXT:
            yield self._example(unit.text, None, TEXT, rng)
        elif regime == VIDEO:
            yield self._example(None, subsample(unit.visual, rng, self.config.max_stride), VIDEO, rng)
        else:
            # Without another video to draw from (a one-video shard) the pair stays aligned.
            other = _negative(unit.video, negatives, rng) if rng.random() < self.config.negative_prob else None
            visual, label = (unit.visual, ALIGNED) if other is None else (other, NOT_ALIGNED)
            yield self._example(unit.text, subsample(visual, rng, self.config.max_stride), TEXT_VIDEO, rng, label)

    def _example(
        self,
        text: str | None,
        visual: np.ndarray | None,
        regime: int,
        rng: np.random.Generator,
        alignment_label: int = IGNORE_INDEX,
    ) -> PretrainExample:
        rows = None
        if visual is not None and visual.ndim == 2:  # (clips, 2): visual word, feature-store row
            visual, rows = visual[:, 0], visual[:, 1].tolist()
        encoded = self.tokenizer.encode(text, None if visual is None else visual.tolist(), self.config.max_length)
        return PretrainExample(
            encoded["input_ids"], encoded["token_type_ids"], regime, alignment_label, int(rng.integers(2**63 - 1)),
            rows,
        )

    def read_chunk(self, videos: Sequence[str]) -> list[VideoRecord]:
        """The records of ``videos`` (sorted ids), in that order; videos without clips are left out."""
        tokens = self._read_clips(videos)
        sentences = _read_rows(self.corpus.sentences, ["video", "index", "start", "end", "text"], videos)
        sentences = sentences.sort_by([("video", "ascending"), ("index", "ascending")])
        by_video: dict[str, list[tuple[float, float, str]]] = {}
        for video, start, end, text in zip(*(sentences[c].to_pylist() for c in ("video", "start", "end", "text"))):
            by_video.setdefault(video, []).append((start, end, text))
        records = []
        for video, rows in _video_slices(tokens):
            records.append(
                VideoRecord(
                    video,
                    rows["start"].to_numpy(),
                    rows["end"].to_numpy(),
                    self._visual(rows),
                    by_video.get(video, []),
                )
            )
        return records

    def _read_clips(self, videos: Sequence[str]) -> pa.Table:
        """The chunk's clips sorted by (video, clip): columns video, clip, start, end, and ``token`` (visual words)
        and/or ``feature_row`` (the clip's row in the feature store), as the corpus's visual input reads them."""
        order = [("video", "ascending"), ("clip", "ascending")]
        corpus = self.corpus
        if corpus.visual_input == "words":
            return _read_rows(corpus.tokens, ["video", "clip", "start", "end", "token"], videos).sort_by(order)
        if self._shard_offsets is None:
            self._shard_offsets = _shard_offsets(corpus.clips)
        clips = _read_rows(corpus.clips, ["video", "clip", "start", "end", "shard", "row"], videos).sort_by(order)
        offsets = np.array([self._shard_offsets[name] for name in clips["shard"].to_pylist()], dtype=np.int64)
        rows = pa.array(offsets + clips["row"].to_numpy().astype(np.int64))
        clips = clips.select(["video", "clip", "start", "end"]).append_column("feature_row", rows)
        if corpus.visual_input == "features":
            return clips
        tokens = _read_rows(corpus.tokens, ["video", "clip", "token"], videos).sort_by(order)
        if not (tokens["video"].equals(clips["video"]) and tokens["clip"].equals(clips["clip"])):
            raise InputError(
                corpus.tokens, f"its clips are not those of {corpus.clips}; run `videobert tokenize` again"
            )
        return clips.append_column("token", tokens["token"])

    def _visual(self, rows: pa.Table) -> np.ndarray:
        """One video's visual sentence material: (clips,) visual words, or (clips, 2) word and feature-store row."""
        if self.corpus.visual_input == "words":
            return rows["token"].to_numpy().astype(np.int64)
        words = rows["token"].to_numpy() if "token" in rows.column_names else np.zeros(rows.num_rows)
        return np.stack([words.astype(np.int64), rows["feature_row"].to_numpy().astype(np.int64)], axis=1)


class MaskingCollator:
    """Mask a batch of `PretrainExample` and pad it to its longest sequence (module docstring).

    Returns int64 tensors ``input_ids``, ``token_type_ids``, ``attention_mask``, ``labels`` (batch, seq),
    ``alignment_labels`` and ``regime`` (batch,), plus what each of ``objectives`` adds (`Objective.collate`; for
    a model that reads clip features, the masked-clips objective adds their features and targets).
    """

    def __init__(
        self,
        tokenizer: VideoBertTokenizer,
        mask_prob: float = 0.15,
        content_word_weight: float = 1.0,
        visual_tokenizer: VisualTokenizer | None = None,
        objectives: Sequence[Objective] = (),
    ):
        config = tokenizer.config
        self.config = config
        self.objectives = tuple(objectives)
        self.mask_prob = mask_prob
        self.unmaskable = np.array(
            [config.cls_token_id, config.sep_token_id, config.mask_token_id, config.pad_token_id,
             config.visual_separator_token_id]
        )  # fmt: skip
        words = tokenizer.text_tokenizer.convert_ids_to_tokens(list(range(len(tokenizer.text_tokenizer))))
        # Bracketed tokens are BERT's specials and its [unusedN] slots: never sensible as a random replacement.
        self.text_candidates = np.array([i for i, w in enumerate(words) if not _is_bracketed(w)], dtype=np.int64)
        visual = (
            np.arange(config.visual_vocab_size)
            if visual_tokenizer is None
            else np.flatnonzero(visual_tokenizer.reachable())
        )
        self.visual_candidates = config.visual_token_to_id(visual.astype(np.int64))
        # Selection weight of every text id; None masks uniformly.
        self.text_weights = None
        if content_word_weight != 1.0:
            self.text_weights = np.ones(config.text_vocab_size)
            self.text_weights[[i for i, w in enumerate(words) if is_content_word(w)]] = content_word_weight

    def __call__(self, examples: Sequence[PretrainExample]) -> dict[str, torch.Tensor]:
        width = max(len(e) for e in examples)
        shape = (len(examples), width)
        input_ids = np.full(shape, self.config.pad_token_id, dtype=np.int64)
        token_type_ids = np.full(shape, TEXT_TYPE, dtype=np.int64)
        attention_mask = np.zeros(shape, dtype=np.int64)
        labels = np.full(shape, IGNORE_INDEX, dtype=np.int64)
        for row, example in enumerate(examples):
            n = len(example)
            ids, row_labels = self.mask(np.asarray(example.input_ids, dtype=np.int64), example.seed)
            input_ids[row, :n], labels[row, :n] = ids, row_labels
            token_type_ids[row, :n] = example.token_type_ids
            attention_mask[row, :n] = 1
        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "token_type_ids": torch.from_numpy(token_type_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "labels": torch.from_numpy(labels),
            "alignment_labels": torch.tensor([e.alignment_label for e in examples], dtype=torch.long),
            "regime": torch.tensor([e.regime for e in examples], dtype=torch.long),
        }
        for objective in self.objectives:
            objective.collate(batch, examples)
        if self.config.reads_features and "visual_features" not in batch:
            raise ConfigError(
                f"a model with visual_input {self.config.visual_input!r} needs the masked-clips objective to collate"
            )
        return batch

    def mask(self, ids: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(masked ids, labels) of one sequence of joint ids; labels are -100 where nothing is predicted."""
        rng = np.random.default_rng(seed)
        ids = ids.copy()
        labels = np.full_like(ids, IGNORE_INDEX)
        maskable = ~np.isin(ids, self.unmaskable)
        text = np.flatnonzero(maskable & self.config.is_text(ids))
        visual = np.flatnonzero(self.config.is_visual(ids))
        text_weights = None if self.text_weights is None else self.text_weights[ids[text]]
        for positions, candidates, weights in (
            (text, self.text_candidates, text_weights),
            (visual, self.visual_candidates, None),
        ):
            count = math.floor(self.mask_prob * len(positions) + rng.random())
            if count == 0:
                continue
            p = None if weights is None else weights / weights.sum()
            chosen = rng.choice(positions, size=count, replace=False, p=p)
            labels[chosen] = ids[chosen]
            if candidates is self.visual_candidates and self.config.reads_features:
                ids[chosen] = self.config.mask_token_id  # a kept or replaced clip would show its own feature
                continue
            action = rng.random(count)
            ids[chosen[action < 0.8]] = self.config.mask_token_id
            replaced = chosen[(action >= 0.8) & (action < 0.9)]
            ids[replaced] = rng.choice(candidates, size=len(replaced))
        return ids, labels


def is_content_word(wordpiece: str) -> bool:
    """Whether a WordPiece token is (part of) a content word: it has a letter or digit and is not a stopword.
    Continuation pieces (``##s``) count as content: stopwords are whole words in a WordPiece vocabulary."""
    return not _is_bracketed(wordpiece) and any(ch.isalnum() for ch in wordpiece) and wordpiece not in STOPWORDS


def _is_bracketed(wordpiece: str) -> bool:
    return wordpiece.startswith("[") and wordpiece.endswith("]")


def _negative(video: str, pool: deque[tuple[str, np.ndarray]], rng: np.random.Generator) -> np.ndarray | None:
    """A visual sentence drawn uniformly from the pool's entries of videos other than ``video``; None when there is
    none. A few rejection draws almost always succeed (the pool spans many videos); the full scan is the fallback."""
    for _ in range(8 if pool else 0):
        owner, visual = pool[int(rng.integers(len(pool)))]
        if owner != video:
            return visual
    others = [visual for owner, visual in pool if owner != video]
    return others[int(rng.integers(len(others)))] if others else None


def _read_rows(path: Path, columns: list[str], videos: Sequence[str]) -> pa.Table:
    """Rows of ``videos`` (sorted) from a Parquet table. The range filter lets Parquet skip row groups whose
    video statistics lie outside the chunk; the membership filter then drops other shards' videos in the range."""
    table = read_parquet(path, columns=columns, filters=[("video", ">=", videos[0]), ("video", "<=", videos[-1])])
    return table.filter(pc.is_in(table["video"], value_set=pa.array(list(videos), pa.string())))


def _video_slices(table: pa.Table) -> Iterator[tuple[str, pa.Table]]:
    """(video, rows) of a table sorted by video."""
    videos = table["video"].to_pylist()
    start = 0
    for i in range(1, len(videos) + 1):
        if i == len(videos) or videos[i] != videos[start]:
            yield videos[start], table.slice(start, i - start)
            start = i


def _shard_offsets(clips: Path) -> dict[str, int]:
    """Feature shard name -> global row of its first clip: clips.parquet lists the shards' clips in shard order, and
    a clip's global row (its position there, `FeatureStore.gather`) is its shard's offset plus its row in the shard."""
    offsets: dict[str, int] = {}
    reader = open_parquet(clips)
    seen = 0
    for group in range(reader.num_row_groups):
        names = reader.read_row_group(group, columns=["shard"]).column("shard").to_pylist()
        for i, name in enumerate(names):
            offsets.setdefault(name, seen + i)
        seen += len(names)
    return offsets


def _distinct_videos(path: Path) -> set[str]:
    """Videos that have rows in a Parquet table, read one row group at a time (only the video column)."""
    found: set[str] = set()
    reader = open_parquet(path)
    for group in range(reader.num_row_groups):
        column = reader.read_row_group(group, columns=["video"]).column("video")
        found.update(pc.unique(column).to_pylist())
    return found

