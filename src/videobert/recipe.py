"""What `videobert run` does to a corpus: a :class:`Recipe` (every choice, recorded in OUT/recipe.json), chosen from
a :class:`CorpusSurvey` of the corpus (headers and annotations only, before any work) and a time budget.

How the choices are made, and why:

* clip length: about four clips per annotated step (median step length / 4, 0.5-1.5 s at 20 fps), so that few
  clips straddle a step boundary (BENCHMARKS.md, "clip length"); without annotations the paper's 1.5 s, or 0.75 s
  for short videos (under a minute), whose scenes change quickly;
* visual vocabulary: as many words as keep at least :data:`MIN_CLIPS_PER_WORD` clips each (a word seen a handful of
  times is noise to k-means and to BERT), in a tree of at most the paper's 12 branches a level (the demo's 12 x 12
  for its 2,500 clips, 7 x 7 for 900);
* model and steps: a 2-layer 256-wide BERT from scratch for budgets under half an hour (the demo's), a 4-layer
  384-wide one beyond, trained for the steps that fit in :data:`PRETRAIN_SHARE` of the budget at the measured CPU
  speed (`--steps` fixes them instead);
* evaluations: zero-shot classification when segments have verbs and nouns (given, or taken from their captions; then
  the candidates are the training split's, the paper's YouCook2 protocol), retrieval when they have captions;
  always the pretraining curves, the alignment accuracy on held-out videos and the visual words with their clips;
* held-out videos: when the annotations name no split, a fifth of the videos is held out (val) by a hash of their
  name, so that alignment and the evaluations are measured on videos pretraining never saw;
* speech: PocketSphinx for the videos that have audio and no transcript.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videobert.utils.errors import ConfigError, InputError

FPS = 20  # the rate clips are cut at (videobert.data.video)
MIN_CLIPS_PER_WORD = 15
BRANCHING = 12
ENCODER_STEPS = 1000  # clip encoder steps of a recipe (BENCHMARKS.md, "Visual words on other worlds")
PRETRAIN_SHARE = 0.6
# Optimizer steps per second on 2 CPU cores, batch 32, by model (README "What `make demo` shows": 3,000 steps of
# 2x256 in 206 s). The 4x384 rate is the 2x256 one scaled by the compute per token (layers x width^2), unmeasured.
STEPS_PER_SECOND = {"scratch:2x256": 14.5, "scratch:4x384": 14.5 * (2 * 256**2) / (4 * 384**2)}
LARGE_MODEL_MINUTES = 30.0
HOLDOUT = 0.2

# The demo's pretraining recipe (pipeline.py explains each value).
DEMO_PRETRAIN: dict[str, Any] = dict(init="scratch:2x256", text_vocab=1000, learning_rate=1e-3, content_word_weight=8.0,
                                     text_weight=0.1, video_weight=0.1, text_video_weight=0.8, negative_prob=0.25)
EVALUATIONS = ("zeroshot", "retrieval", "finetune", "forecast", "captioning")
# Stages whose keyword arguments a recipe may set (`options`), by the function that runs them.
STAGE_FUNCTIONS = {
    "transcribe": "videobert.speech.transcribe:transcribe",
    "ingest": "videobert.data.ingest:ingest",
    "extract": "videobert.features.extract:extract",
    "vocab": "videobert.tokenizer.stages:vocab",
    "tokenize": "videobert.tokenizer.stages:tokenize",
    "pretrain": "videobert.training.pretrain:pretrain",
    "evaluate": "videobert.tasks.evaluate:evaluate",
    "finetune": "videobert.tasks.finetune:finetune",
    "captioning": "videobert.tasks.caption:caption_comparison",
    "train_encoder": "videobert.training.encoder:train_encoder",
}


@dataclass(frozen=True)
class Recipe:
    """Every choice of a `videobert run`; OUT/recipe.json holds one and `--recipe` reads one back."""

    seed: int = 0
    """Seed of every stochastic stage."""
    asr: str = ""
    """Speech engine for videos with audio and no transcript (`videobert transcribe --asr`); empty: none."""
    holdout: float = 0.0
    """Fraction of the videos without a split held out as val (`videobert ingest --holdout`)."""
    train_encoder: bool = False
    """Train a clip encoder on the corpus's training videos first (`videobert train-encoder`) and extract features
    with it instead of `backbone`."""
    encoder_steps: int = ENCODER_STEPS
    """Training steps of the clip encoder."""
    backbone: str = "pixels"
    """Clip feature backbone (`videobert extract --backbone`)."""
    clip_frames: int = 15
    """Frames per clip at 20 fps."""
    k: int = BRANCHING
    """Branching factor of the visual vocabulary tree."""
    depth: int = 2
    """Depth of the vocabulary tree (k**depth visual words)."""
    pretrain_steps: int = 3000
    """Pretraining optimizer steps."""
    pretrain: dict[str, Any] = field(default_factory=lambda: dict(DEMO_PRETRAIN))
    """Keyword arguments of `videobert pretrain` (model, vocabulary, learning rate, regime weights)."""
    eval_split: str = "test"
    """Split whose segments the evaluations score."""
    evaluations: tuple[str, ...] = ("zeroshot", "retrieval")
    """Which of zeroshot, retrieval, finetune, forecast, captioning run (each only where the annotations allow)."""
    zeroshot_labels_from: str = "all"
    """Zero-shot candidates: every split's labels (all) or one split's (`videobert evaluate --labels-from`)."""
    finetune_epochs: int = 8
    """Most epochs of each fine-tuning run."""
    caption_epochs: int = 40
    """Most epochs of each captioning run."""
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Further keyword arguments per stage ({"pretrain": {"batch_size": 16}}); they win over the choices above."""
    notes: tuple[str, ...] = ()
    """Why each choice was made, for the reader of recipe.json."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "evaluations", tuple(self.evaluations))
        object.__setattr__(self, "notes", tuple(self.notes))
        unknown = [e for e in self.evaluations if e not in EVALUATIONS]
        if unknown:
            raise ConfigError(f"unknown evaluation(s) {', '.join(unknown)}; choose from {', '.join(EVALUATIONS)}")
        if self.clip_frames < 2:
            raise ConfigError(f"clip_frames must be at least 2 (motion needs two frames), got {self.clip_frames}")
        if self.k < 2 or self.depth < 1:
            raise ConfigError(f"the vocabulary needs k >= 2 and depth >= 1, got k={self.k}, depth={self.depth}")
        if self.encoder_steps < 1:
            raise ConfigError(f"encoder_steps must be at least 1, got {self.encoder_steps}")
        if self.pretrain_steps < 1:
            raise ConfigError(f"pretrain_steps must be at least 1, got {self.pretrain_steps}")
        if not 0 <= self.holdout < 1:
            raise ConfigError(f"holdout must be in [0, 1), got {self.holdout}")
        for stage, kwargs in {"pretrain": self.pretrain, **self.options}.items():
            check_stage_options(stage, kwargs)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "recipe") -> "Recipe":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            fields = ", ".join(sorted(names))
            raise ConfigError(f"{source}: unknown recipe field(s) {', '.join(unknown)}; fields: {fields}")
        return cls(**data)

    def stage_options(self, stage: str) -> dict[str, Any]:
        return dict(self.options.get(stage, {}))

    def describe(self) -> list[str]:
        """The recipe as lines a person reads before the run starts."""
        candidates = self.zeroshot_labels_from
        lines = [
            f"clips: {self.clip_frames} frames at {FPS} fps ({self.clip_frames / FPS:g} s); features: "
            + (f"a clip encoder trained on this corpus ({self.encoder_steps} steps)" if self.train_encoder
               else self.backbone),
            f"visual words: {self.k}^{self.depth} = {self.k ** self.depth}",
            f"pretraining: {self.pretrain.get('init', 'minilm')}, {self.pretrain_steps} steps",
            f"speech recognition: {self.asr or 'none'}; held-out videos: "
            + (f"{self.holdout:.0%} of those without a split" if self.holdout else "the annotations' splits"),
            f"evaluations on split {self.eval_split}: {', '.join(self.evaluations) or 'none (no annotations)'}"
            + (f" (zero-shot candidates from split {candidates})" if candidates != "all" else ""),
        ]
        lines += [f"option {stage}.{key} = {value!r}"
                  for stage, kwargs in self.options.items() for key, value in kwargs.items()]  # fmt: skip
        return lines + [f"why: {note}" for note in self.notes]


def check_stage_options(stage: str, kwargs: dict[str, Any]) -> None:
    """Raise a ConfigError for a stage a recipe cannot set or a keyword its function does not take."""
    if stage not in STAGE_FUNCTIONS:
        raise ConfigError(f"options for unknown stage {stage!r}; stages: {', '.join(STAGE_FUNCTIONS)}")
    if not isinstance(kwargs, dict):
        raise ConfigError(f"options for {stage} must be an object of keyword arguments, got {kwargs!r}")
    from videobert.cli import _load

    params = inspect.signature(_load(STAGE_FUNCTIONS[stage])).parameters
    unknown = [key for key in kwargs if key not in params]
    if unknown:
        valid = ", ".join(p for p in params if params[p].default is not inspect.Parameter.empty)
        raise ConfigError(f"{stage} has no option {', '.join(unknown)}; its options: {valid}")


def parse_option(text: str) -> tuple[str, str, Any]:
    """``"pretrain.learning_rate=1e-4"`` -> ("pretrain", "learning_rate", 0.0001): the value as JSON when it
    parses (numbers, true/false, lists), else as a string; dashes in the key read as underscores."""
    key, sep, raw = text.partition("=")
    stage, dot, name = key.strip().lstrip("-").partition(".")
    if not (sep and dot and stage and name):
        raise ConfigError(f"option {text!r} must read STAGE.NAME=VALUE, e.g. pretrain.learning_rate=1e-4")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return stage, name.replace("-", "_"), value


@dataclass(frozen=True)
class CorpusSurvey:
    """What a corpus holds, from file headers and annotations (no decoding)."""

    videos: int
    seconds: float
    median_video_seconds: float
    with_transcript: int
    needs_asr: int
    """Videos with an audio stream and no transcript."""
    segments: int
    labelled: int
    """Segments with a verb and a noun, given or taken from the caption."""
    labels_from_captions: int
    captioned: int
    median_segment_seconds: float
    splits: dict[str, int]
    """Videos per split named by the annotations."""

    def describe(self) -> str:
        return (f"{self.videos} videos, {self.seconds / 60:.1f} min; {self.with_transcript} with a transcript, "
                f"{self.needs_asr} with speech to recognise; {self.segments} annotated segments "
                f"({self.labelled} with verb and noun, {self.captioned} with captions)")  # fmt: skip


def survey(corpus: Path) -> CorpusSurvey:
    """Survey a corpus folder: its videos' headers (a file that cannot be read is left to ingest to report) and
    its annotations."""
    from videobert.data.annotations import load_annotations
    from videobert.data.ingest import scan_corpus
    from videobert.data.video import probe

    corpus = Path(corpus)
    if not corpus.is_dir():
        raise InputError(corpus, "corpus folder does not exist" if not corpus.exists() else "corpus is not a folder")
    videos, _ = scan_corpus(corpus)  # unreadable entries are left to ingest to report
    durations: dict[str, float | None] = {}
    audio: dict[str, bool] = {}
    for v in videos:
        try:
            info = probe(v.path, verify=False)
        except Exception:  # ingest reports the file; the survey only needs the readable ones
            durations[v.video] = None
            continue
        durations[v.video], audio[v.video] = info.duration, info.num_audio_streams > 0
    readable = [d for d in durations.values() if d is not None]
    annotations = load_annotations(corpus, durations)
    rows = annotations.rows()
    splits: dict[str, int] = {}
    for split in annotations.splits.values():
        splits[split] = splits.get(split, 0) + 1
    return CorpusSurvey(
        videos=len(readable),
        seconds=float(sum(readable)),
        median_video_seconds=float(statistics.median(readable)) if readable else 0.0,
        with_transcript=sum(v.transcript is not None for v in videos),
        needs_asr=sum(v.transcript is None and audio.get(v.video, False) for v in videos),
        segments=len(rows),
        labelled=sum(bool(r["verb"]) and bool(r["noun"]) for r in rows),
        labels_from_captions=annotations.labels_from_captions,
        captioned=sum(bool(r["caption"]) for r in rows),
        median_segment_seconds=float(statistics.median(r["end"] - r["start"] for r in rows)) if rows else 0.0,
        splits=splits,
    )


def vocabulary_shape(clips: int) -> tuple[int, int]:
    """(k, depth) with the most words k**depth that keeps at least MIN_CLIPS_PER_WORD clips a word, with k at most
    the paper's 12 and at least half that in a tree of several levels (a deep tree of 2- to 5-way splits inherits
    every early split's mistakes); ties go to the shallower tree."""
    most = max(2, clips // MIN_CLIPS_PER_WORD)
    best = (min(BRANCHING, most), 1)
    for depth in range(2, 5):
        k = min(BRANCHING, int(round(most ** (1 / depth), 9)))
        if k >= BRANCHING // 2 and k**depth > best[0] ** best[1]:
            best = (k, depth)
    return best


def choose_recipe(found: CorpusSurvey, budget_minutes: float = 10.0, steps: int = 0, seed: int = 0) -> Recipe:
    """The recipe for a surveyed corpus (module docstring)."""
    if budget_minutes <= 0:
        raise ConfigError(f"budget_minutes must be positive, got {budget_minutes}")
    if steps < 0:
        raise ConfigError(f"steps must be >= 0, got {steps}")
    if found.videos == 0:
        raise ConfigError("the corpus has no readable video")
    notes = []
    if found.segments:
        clip_frames = min(30, max(10, round(found.median_segment_seconds / 4 * FPS)))
        notes.append(f"clips of {clip_frames / FPS:g} s: about four per annotated step (median "
                     f"{found.median_segment_seconds:.1f} s)")
    else:
        clip_frames = 30 if found.median_video_seconds >= 60 else 15
        notes.append(f"clips of {clip_frames / FPS:g} s: no annotated steps; videos of median "
                     f"{found.median_video_seconds:.0f} s")
    clips = int(found.seconds * FPS / clip_frames)
    k, depth = vocabulary_shape(clips)
    notes.append(f"{k ** depth} visual words: about {clips} clips, at least {MIN_CLIPS_PER_WORD} a word")

    init = "scratch:4x384" if budget_minutes >= LARGE_MODEL_MINUTES else "scratch:2x256"
    if steps == 0:
        steps = max(100, int(budget_minutes * 60 * PRETRAIN_SHARE * STEPS_PER_SECOND[init]) // 100 * 100)
        notes.append(f"{init} for {steps} steps: {PRETRAIN_SHARE:.0%} of {budget_minutes:g} min at about "
                     f"{STEPS_PER_SECOND[init]:.1f} steps/s on 2 CPU cores")
    pretrain = dict(DEMO_PRETRAIN, init=init)
    # A clip encoder learnt from the corpus's own narrated videos gave better visual words than the weight-free
    # descriptor on the two worlds it was not tuned on and matched it on the one it was (README, "Visual words on
    # footage the toolkit was not tuned on"); its narration contrast needs transcripts (given or recognised).
    narrated = found.with_transcript + found.needs_asr
    train_encoder = narrated * 2 >= found.videos
    notes.append(f"clip features from an encoder trained on this corpus ({ENCODER_STEPS} steps): {narrated} of "
                 f"{found.videos} videos have narration" if train_encoder else
                 f"clip features from the pixels descriptor: only {narrated} of {found.videos} videos have narration "
                 "to train a clip encoder on")  # fmt: skip

    holdout = 0.0 if found.splits else HOLDOUT
    eval_split = "test" if found.splits.get("test") else "val"
    evaluations = []
    if found.labelled:
        evaluations.append("zeroshot")
    if found.captioned:
        evaluations.append("retrieval")
    labels_from = "train" if found.labels_from_captions and found.splits.get("train") else "all"
    if labels_from == "train":
        notes.append("verbs and nouns taken from the captions; zero-shot candidates from the training split's")
    if found.needs_asr:
        notes.append(f"{found.needs_asr} videos have audio and no transcript: speech recognition with pocketsphinx")
    return Recipe(
        seed=seed, asr="pocketsphinx" if found.needs_asr else "", holdout=holdout, train_encoder=train_encoder,
        clip_frames=clip_frames, k=k,
        depth=depth, pretrain_steps=steps, pretrain=pretrain, eval_split=eval_split, evaluations=tuple(evaluations),
        zeroshot_labels_from=labels_from, notes=tuple(notes),
    )  # fmt: skip


def apply_overrides(recipe: Recipe, recipe_file: Path | None, options: list[str]) -> Recipe:
    """The recipe with a recipe file's fields (a whole OUT/recipe.json or some of its fields) and then the
    ``STAGE.NAME=VALUE`` options on top."""
    if recipe_file is not None:
        path = Path(recipe_file)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(path, "recipe file does not exist") from None
        except json.JSONDecodeError as exc:
            raise InputError(path, f"not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
        if not isinstance(data, dict):
            raise InputError(path, "a recipe file must hold a JSON object of recipe fields")
        recipe = Recipe.from_json({**recipe.to_json(), **data}, source=str(path))
    merged = {stage: dict(kwargs) for stage, kwargs in recipe.options.items()}
    for text in options:
        stage, name, value = parse_option(text)
        merged.setdefault(stage, {})[name] = value
    return dataclasses.replace(recipe, options=merged)
