"""`onnx-predict`: `predict` on the files of an export directory alone (onnxruntime; no PyTorch is imported).

A new video -> its visual words per clip (the backbone and clip sampling of the exported visual vocabulary) -> the
zero-shot verb and noun of each window of clips (top 5) and the language prior, exactly as `tasks.predict`
computes them (the same template scoring, `tasks.template`), in the same JSON layout. Sentence alignment and
captions need the PyTorch `predict`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from videobert.data.video import probe
from videobert.features.words import require_feature_source, visual_words
from videobert.serving.runtime import VISUAL_VOCAB_DIR, OnnxVideoBert
from videobert.tasks.template import SLOTS, TEMPLATE, LabelSet, split_template, top_labels
from videobert.utils.errors import ConfigError, InputError
from videobert.utils.io import write_json
from videobert.utils.stage import StageReport

STAGE = "onnx-predict"


def predict_video(
    runner: OnnxVideoBert,
    video: Path,
    labels: dict[str, LabelSet],
    window: int = 3,
    template: str = TEMPLATE,
    batch_size: int = 64,
) -> dict[str, Any]:
    """The predictions for `video` (module docstring) as a JSON-ready dict: video, duration, feature_source,
    window_clips, template, labels, language_prior, clips and windows (the layout of `tasks.predict`)."""
    if window < 1:
        raise ConfigError(f"window must be at least 1, got {window}")
    split_template(template, runner.mask_token)  # a bad template fails before any decoding
    source = require_feature_source(runner.visual_tokenizer, runner.directory / VISUAL_VOCAB_DIR)
    info = probe(video, verify=False)  # a corrupt file or one without a video stream fails here, naming it
    starts, ends, tokens, _ = visual_words(runner.visual_tokenizer, source, video, batch_size, "cpu")
    if not len(tokens):
        raise InputError(video, f"shorter than one clip ({source.clip_frames / source.fps:g} s): no visual words")
    words = [f"[V{int(t)}]" for t in tokens]
    bounds = range(0, len(tokens), window)
    window_tokens = [tokens[a : a + window].tolist() for a in bounds]
    video_scores = runner.template_scores(window_tokens, labels["verb"], labels["noun"], template, batch_size)
    prior_scores = runner.template_scores([None], labels["verb"], labels["noun"], template, batch_size)
    windows = []
    for i, a in enumerate(bounds):
        b = min(a + window, len(tokens))
        row: dict[str, Any] = {
            "window": i, "start": starts[a], "end": ends[b - 1], "first_clip": a, "clips": b - a, "words": words[a:b],
        }  # fmt: skip
        for slot, scores in zip(SLOTS, video_scores):
            row[slot] = top_labels(scores[i], labels[slot])
        row["caption"] = None
        windows.append(row)
    return {
        "video": str(video),
        "duration": info.duration,
        "feature_source": source.to_meta(),
        "window_clips": window,
        "template": template,
        "labels": {slot: list(labels[slot].names) for slot in SLOTS},
        "language_prior": {slot: top_labels(scores[0], labels[slot]) for slot, scores in zip(SLOTS, prior_scores)},
        "clips": [
            {"clip": i, "start": s, "end": e, "token": int(t), "word": w}
            for i, (s, e, t, w) in enumerate(zip(starts, ends, tokens, words))
        ],
        "windows": windows,
    }


def onnx_predict(
    export: Path,
    video: Path,
    *,
    verbs: str = "",
    nouns: str = "",
    template: str = TEMPLATE,
    window: int = 3,
    precision: str = "fp32",
    out: Path | None = None,
    batch_size: int = 64,
) -> StageReport:
    """Run an exported VideoBERT (ONNX, no PyTorch needed) on a new video: its visual words per clip and the
    zero-shot verb and noun of each window of clips (top 5), as `videobert predict` computes them.

    Args:
        export: Export directory written by `videobert export`.
        video: Video file to run on (anything PyAV decodes).
        verbs: Candidate verbs, comma-separated; default: the labels recorded at export (--work).
        nouns: Candidate nouns (objects), comma-separated; default: the labels recorded at export.
        template: Zero-shot sentence with two [MASK]s, the verb's first and the noun's second.
        window: Clips per zero-shot window; windows do not overlap and the last may be shorter.
        precision: fp32, or int8 when the export was quantised.
        out: JSON output file (default: VIDEO_STEM.predict.json in the current directory).
        batch_size: Clips per backbone call and sequences per graph run.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    video = Path(video)
    runner = OnnxVideoBert(export, precision=precision)
    labels = runner.label_sets(verbs.split(","), nouns.split(","))
    result = {"model": str(export), "precision": precision, **predict_video(runner, video, labels, window, template, batch_size)}
    out = Path(out) if out is not None else Path.cwd() / f"{video.stem}.predict.json"
    write_json(out, result)
    top = [f"{w['start']:.1f}-{w['end']:.1f} s: {w['verb'][0]['label']} the {w['noun'][0]['label']}" for w in result["windows"]]
    return StageReport(
        STAGE, done=1, outputs={"predictions": str(out)},
        stats={"clips": len(result["clips"]), "windows": len(result["windows"]), "top-1": "; ".join(top[:4])},
    )  # fmt: skip
