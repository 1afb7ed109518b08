"""A video -> its clips' features -> visual words, exactly as a vocabulary's features were made (`FeatureSource`).

Shared by `predict` and the torch-free ONNX runtime (`serving`); the `pixels` backbone on the CPU needs no torch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from videobert.data.video import ClipDecoder
from videobert.features.backbones import get_backbone
from videobert.tokenizer.hkmeans import CONFIG_FILE, FeatureSource, VisualTokenizer
from videobert.utils.errors import ConfigError


def visual_words(
    visual_tokenizer: VisualTokenizer | None, source: FeatureSource, video: Path, batch_size: int, device: str
) -> tuple[list[float], list[float], np.ndarray | None, np.ndarray]:
    """Clip starts, clip ends (seconds), the (clips,) int32 visual words (None without a `visual_tokenizer`: a model
    over clip features alone) and the (clips, D) float32 clip features of `video`, made with the backbone and clip
    sampling of `source` and `visual_tokenizer`."""
    backbone = get_backbone(source.backbone, device)
    if backbone.dim != source.dim or tuple(backbone.clip_size) != source.size:
        raise ConfigError(
            f"backbone {source.backbone!r} now gives {backbone.dim}-d features of {backbone.clip_size} frames, the "
            f"model's vocabulary was fitted on {source.dim}-d features of {source.size} frames"
        )
    decoder = ClipDecoder(fps=source.fps, clip_frames=source.clip_frames, size=source.size)
    starts: list[float] = []
    ends: list[float] = []
    features: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    for clip in decoder.clips(video):
        starts.append(clip.start)
        ends.append(clip.end)
        batch.append(clip.frames)
        if len(batch) == batch_size:
            features.append(backbone(np.stack(batch)))  # (B, T, H, W, 3) -> (B, D)
            batch = []
    if batch:
        features.append(backbone(np.stack(batch)))
    if not features:
        return starts, ends, None if visual_tokenizer is None else np.zeros(0, np.int32), np.zeros((0, source.dim), np.float32)
    # The feature store keeps float16; rounding the same way gives the same words as `extract` + `tokenize`.
    stacked = np.concatenate(features).astype(np.float16)  # (clips, D)
    if visual_tokenizer is None:
        return starts, ends, None, stacked.astype(np.float32)
    # A vocabulary that centres videos takes the mean of this video's clips, as `tokenize` takes each video's.
    means = np.broadcast_to(stacked.astype(np.float32).mean(axis=0), stacked.shape) if visual_tokenizer.centres_videos else None
    return starts, ends, visual_tokenizer.encode(stacked, means=means), stacked.astype(np.float32)


def require_feature_source(visual_tokenizer: VisualTokenizer | None, vocab_dir: Path) -> FeatureSource:
    """The record of how the features of the vocabulary in `vocab_dir` were made, or a `ConfigError` saying how to
    get one."""
    if visual_tokenizer is None:
        raise ConfigError(f"{vocab_dir.parent}: no {vocab_dir.name}/; the model cannot turn a video into visual words")
    if visual_tokenizer.feature_source is None:
        raise ConfigError(
            f"{vocab_dir / CONFIG_FILE} does not record how the vocabulary's features were made (backbone, clip "
            "sampling); the model predates that record. Run `videobert vocab` on its work directory (which adds the "
            "record without changing the vocabulary) and copy WORK/vocab/config.json over this file, or add to it a "
            '"feature_source" entry with the contents of WORK/features/meta.json'
        )
    return visual_tokenizer.feature_source
