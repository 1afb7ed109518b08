"""The `predict` stage: a pretrained model directory and a new video (with or without subtitles) -> what the model
sees and says about it, as JSON and as tables on the terminal.

Visual words
    The video is cut into clips and embedded exactly as the model's visual vocabulary was fitted: the backbone and
    the clip sampling (fps, frames per clip, frame size) come from the vocabulary's `FeatureSource`
    (`MODEL/visual_vocab/config.json`; a model without it, from before vocabularies recorded it, is refused with a
    `ConfigError` that says how to add it). Features pass through float16 as in the feature store, so a video that
    is also in a work directory made with the same backbone and vocabulary gets exactly its tokens.parquet words.

Zero-shot verb and noun per window
    The clips are grouped into consecutive, non-overlapping windows of `window` clips (the last one may be shorter,
    so every clip is in exactly one window; 3 clips of 1.5 s = 4.5 s). Each window's visual words fill the
    zero-shot template as in `tasks.zeroshot` (`template_scores`: mean log-probability of a label's WordPieces in
    its slot) and the candidate labels are ranked. ``prob`` is the softmax of those scores over the candidates: the
    model's preference among the labels it was offered, summing to 1 over all of them (the top 5 sum to at most 1).
    ``log_prob`` is the score itself. The language prior (the template without video) is reported once, for
    comparison. Candidates: ``--verbs`` / ``--nouns`` (comma-separated), else the labels of a work directory's
    segments.parquet (``--work``).

Sentence alignment
    With subtitles (given, or the video's same-stem .srt / .vtt / .json sidecar, found as `ingest` finds them),
    each sentence is paired with its visual sentence: the words of the clips whose midpoint lies in its time window,
    or of the clips overlapping it when none does (`training.data.visual_sentence`, the pretraining rule), and
    scored ``P(aligned)`` by the alignment head (`tasks.retrieval.alignment_similarity`). As a control, the same
    sentence is scored against the visual sentence of another part of the video: of the m sentences that have
    video, sentence p is paired with the window of sentence (p + m // 2) mod m, half the video away. A model that
    uses the video should score its own window above the control; sentences without any clip are listed unscored.

Output (OUT, default ``<video stem>.predict.json`` in the current directory, written atomically)::

    video, model, duration, feature_source, window_clips, template,
    clips:     [{clip, start, end, token, word}]                 word: the token as the model reads it, "[V17]"
    windows:   [{window, start, end, first_clip, clips, words, verb: [{label, prob, log_prob}] x5, noun: ..., caption}]
    language_prior: {verb: [...], noun: [...]},  labels: {verb: [candidates], noun: [candidates]}
    subtitles, sentences: [{sentence, start, end, text, clips, p_aligned, control_p_aligned, control_sentence}],
    alignment: {sentences, scored, mean_p_aligned, mean_control_p_aligned, own_above_control}
    captioner: the --captioner directory or null

Captions
    With ``--captioner DIR`` (a caption checkpoint written by ``videobert finetune --task caption``),
    `tasks.caption.caption_segments` gives one caption per window (``caption`` of each window).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from videobert.data.transcripts import TRANSCRIPT_EXTENSIONS, load_transcript
from videobert.data.video import probe
from videobert.features.words import require_feature_source, visual_words
from videobert.model import VideoBertForPreTraining, require_tokenizer
from videobert.model.modeling import VISUAL_VOCAB_DIR
from videobert.model.visual_input import visual_item
from videobert.tokenizer.hkmeans import FeatureSource
from videobert.tasks.retrieval import alignment_similarity
from videobert.tasks.template import TEMPLATE, LabelSet, split_template, top_labels
from videobert.tasks.zeroshot import template_scores
from videobert.training.data import VideoRecord, visual_sentence
from videobert.utils.device import resolve_device
from videobert.utils.errors import ConfigError, InputError
from videobert.utils.io import write_json
from videobert.utils.stage import StageReport

logger = logging.getLogger(__name__)

STAGE = "predict"
SLOTS = ("verb", "noun")


def predict(
    model: Path,
    video: Path,
    *,
    subtitles: Path | None = None,
    work: Path | None = None,
    verbs: str = "",
    nouns: str = "",
    template: str = TEMPLATE,
    window: int = 3,
    captioner: Path | None = None,
    out: Path | None = None,
    batch_size: int = 64,
    device: str = "auto",
) -> StageReport:
    """Run a pretrained VideoBERT on a new video: its visual words per clip, the zero-shot verb and noun of each
    window of clips (top 5), and, with subtitles, how well each sentence aligns with its part of the video.

    Writes the predictions as JSON and prints them as tables. The video is embedded with the backbone and clip
    sampling recorded in the model's visual vocabulary.

    Args:
        model: Model directory written by `videobert pretrain` (with visual_vocab/; a model over clip features
            alone embeds the video as its config.json's feature_source says).
        video: Video file to run on (anything PyAV decodes).
        subtitles: Timed transcript (.srt, .vtt or .json); default: the video's same-stem sidecar when there is one.
        work: Work directory whose segments.parquet gives the candidate verbs and nouns not given by --verbs/--nouns.
        verbs: Candidate verbs, comma-separated (e.g. "cut,peel,stir").
        nouns: Candidate nouns (objects), comma-separated.
        template: Zero-shot sentence with two [MASK]s, the verb's first and the noun's second.
        window: Clips per zero-shot window; windows do not overlap and the last may be shorter.
        captioner: Caption checkpoint directory (`videobert finetune --task caption`); captions each window.
        out: JSON output file (default: VIDEO_STEM.predict.json in the current directory).
        batch_size: Clips per backbone call and sequences per model forward pass.
        device: auto (CUDA when available), cuda or cpu; for the backbone and the model.
    """
    if window < 1:
        raise ConfigError(f"window must be at least 1, got {window}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    video, model = Path(video), Path(model)
    torch_device = torch.device(resolve_device(device))
    if not model.is_dir():  # from_pretrained would take a missing path for a Hub id and go online
        raise InputError(model, "model directory not found")
    network = VideoBertForPreTraining.from_pretrained(model)
    require_tokenizer(network, model)
    source = _feature_source(network, model)
    split_template(template, network.config.mask_token)  # a bad template fails before any decoding
    labels = {slot: _labels(slot, given, work, network) for slot, given in (("verb", verbs), ("noun", nouns))}
    info = probe(video, verify=False)  # a corrupt file or one without a video stream fails here, naming it
    subtitles = Path(subtitles) if subtitles is not None else find_subtitles(video)
    if subtitles is not None and not subtitles.is_file():
        raise InputError(subtitles, "subtitles file not found")
    # Parsed before decoding, so that a bad subtitle file fails fast.
    cues = load_transcript(subtitles, info.duration).sentences if subtitles is not None else []

    starts, ends, tokens, features = visual_words(network.visual_tokenizer, source, video, batch_size, device)
    if not len(features):
        raise InputError(video, f"shorter than one clip ({source.clip_frames / source.fps:g} s): no visual words")
    config = network.config
    tokens = None if tokens is None else tokens.astype(np.int64)
    # What the model reads per clip: its visual word, its clip feature, or both (`model.visual_input`).
    visual = visual_item(config.reads_words, config.reads_features, tokens, features)
    record = VideoRecord(str(video), np.asarray(starts), np.asarray(ends), visual)
    words = [None] * len(features)
    if tokens is not None:
        words = network.tokenizer.convert_ids_to_tokens([config.visual_token_to_id(int(t)) for t in tokens])
    clips = [
        {"clip": i, "start": s, "end": e, "token": None if tokens is None else int(tokens[i]), "word": w}
        for i, (s, e, w) in enumerate(zip(starts, ends, words))
    ]

    bounds = range(0, len(features), window)
    window_tokens = [None if tokens is None else tokens[a : a + window] for a in bounds]
    network.eval().to(torch_device)
    with torch.inference_mode():
        video_scores = template_scores(
            network, network.tokenizer, [visual[a : a + window] for a in bounds], labels["verb"], labels["noun"],
            template, batch_size,
        )  # fmt: skip
        prior_scores = template_scores(
            network, network.tokenizer, [None], labels["verb"], labels["noun"], template, batch_size
        )
        sentences = _sentence_alignment(network, record, cues, batch_size)
    captions = _captions(captioner, window_tokens, [features[a : a + window] for a in bounds], device)

    windows = []
    for i, a in enumerate(bounds):
        b = min(a + window, len(features))
        row: dict[str, Any] = {
            "window": i, "start": starts[a], "end": ends[b - 1], "first_clip": a, "clips": b - a,
            "words": words[a:b],
        }  # fmt: skip
        for slot, scores in zip(SLOTS, video_scores):
            row[slot] = top_labels(scores[i], labels[slot])
        row["caption"] = captions[i] if captions is not None else None
        windows.append(row)
    result: dict[str, Any] = {
        "video": str(video),
        "model": str(model),
        "duration": info.duration,
        "feature_source": source.to_meta(),
        "window_clips": window,
        "template": template,
        "labels": {slot: list(labels[slot].names) for slot in SLOTS},
        "language_prior": {slot: top_labels(scores[0], labels[slot]) for slot, scores in zip(SLOTS, prior_scores)},
        "clips": clips,
        "windows": windows,
        "subtitles": str(subtitles) if subtitles is not None else None,
        "sentences": sentences,
        "alignment": alignment_summary(sentences),
        "captioner": str(captioner) if captioner is not None else None,
    }
    out = Path(out) if out is not None else Path.cwd() / f"{video.stem}.predict.json"
    write_json(out, result)
    _print_tables(result)

    stats: dict[str, Any] = {"clips": len(clips), "windows": len(windows), "sentences": len(sentences)}
    stats.update({f"alignment.{key}": value for key, value in result["alignment"].items() if value is not None})
    if captioner is not None:
        stats["captions"] = "written"
    return StageReport(STAGE, done=1, outputs={"predictions": str(out)}, stats=stats)


def find_subtitles(video: Path) -> Path | None:
    """The video's same-stem transcript sidecar, as `ingest` picks it: .srt before .vtt before .json, the
    extension compared case-insensitively; None when there is none."""
    if not video.parent.is_dir():
        return None
    by_ext = {
        p.suffix.lower(): p for p in sorted(video.parent.iterdir()) if p.stem == video.stem and p.is_file()
    }
    return next((by_ext[ext] for ext in TRANSCRIPT_EXTENSIONS if ext in by_ext), None)


def alignment_summary(sentences: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts and means over the scored sentences; `own_above_control` is the share of sentences with a control
    whose own window scores higher than the control (None where nothing is scored or controlled)."""
    scored = [s for s in sentences if s["p_aligned"] is not None]
    controlled = [s for s in scored if s["control_p_aligned"] is not None]
    return {
        "sentences": len(sentences),
        "scored": len(scored),
        "mean_p_aligned": float(np.mean([s["p_aligned"] for s in scored])) if scored else None,
        "mean_control_p_aligned": (
            float(np.mean([s["control_p_aligned"] for s in controlled])) if controlled else None
        ),
        "own_above_control": (
            float(np.mean([s["p_aligned"] > s["control_p_aligned"] for s in controlled])) if controlled else None
        ),
    }


def _feature_source(network: VideoBertForPreTraining, model: Path) -> FeatureSource:
    """The model's record of how its visual vocabulary's features (or, for a model over clip features alone, its
    features) were made, or a `ConfigError` saying how to get one."""
    if network.visual_tokenizer is None and network.config.visual_input == "features":
        if network.config.feature_source is None:
            raise ConfigError(
                f"{model}/config.json has no feature_source (how its clip features were made); add one with the "
                "contents of the training work directory's features/meta.json"
            )
        return FeatureSource.from_meta(network.config.feature_source)
    return require_feature_source(network.visual_tokenizer, model / VISUAL_VOCAB_DIR)


def _labels(slot: str, given: str, work: Path | None, network: VideoBertForPreTraining) -> LabelSet:
    """A slot's candidate labels: the comma-separated `given`, else the work directory's segment labels."""
    values = [v for v in given.split(",") if v.strip()]
    source = f"--{slot}s"
    if not values and work is not None:
        from videobert.data.ingest import load_segments

        values = load_segments(work)[slot].to_pylist()
        source = f"{work}/segments.parquet"
    if not any(v is not None and v.strip() for v in values):
        raise ConfigError(
            f"no candidate {slot}s: pass --{slot}s (comma-separated) or --work with a work directory whose "
            f"segments.parquet has {slot} labels"
        )
    try:
        return LabelSet.from_values(values, network.tokenizer.text_tokenizer)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def _sentence_alignment(
    network: VideoBertForPreTraining, record: VideoRecord, cues: Sequence[Any], batch_size: int
) -> list[dict[str, Any]]:
    """One row per subtitle sentence: its clips, P(aligned) with its visual sentence and with the control window
    (module docstring); unscored (None) without a clip."""
    visual = [visual_sentence(record, cue.start, cue.end) for cue in cues]
    with_video = [i for i, v in enumerate(visual) if len(v)]
    m = len(with_video)
    rows = []
    for i, cue in enumerate(cues):
        rows.append({
            "sentence": i, "start": cue.start, "end": cue.end, "text": cue.text, "clips": len(visual[i]),
            "p_aligned": None, "control_p_aligned": None, "control_sentence": None,
        })  # fmt: skip
    for p, i in enumerate(with_video):
        control = with_video[(p + m // 2) % m] if m >= 2 else None
        pair = [visual[i]] + ([visual[control]] if control is not None else [])
        log_odds = alignment_similarity(network, network.tokenizer, [cues[i].text], pair, batch_size)[0]  # (1|2,)
        p_aligned = torch.sigmoid(torch.from_numpy(log_odds)).tolist()  # softmax over (aligned, not) = sigmoid
        rows[i]["p_aligned"] = p_aligned[0]
        if control is not None:
            rows[i]["control_p_aligned"] = p_aligned[1]
            rows[i]["control_sentence"] = control
    return rows


def _captions(
    captioner: Path | None, window_tokens: Sequence[np.ndarray], window_features: Sequence[np.ndarray], device: str
) -> list[str] | None:
    """One caption per window from the caption checkpoint `captioner` (`tasks.caption.caption_segments`), fed the
    window's visual words, clip features or both, as its encoder reads them; None without a captioner."""
    if captioner is None:
        return None
    # The decoder stack loads only when captions are asked for.
    from videobert.model.captioning import VideoBertForCaptioning
    from videobert.tasks.caption import caption_segments, resolve_checkpoint, visual_input

    network = VideoBertForCaptioning.from_pretrained(resolve_checkpoint(Path(captioner)))
    config = network.config
    if config.reads_words and window_tokens[0] is None:
        raise ConfigError(
            f"{captioner}: the captioner reads visual words, but the model reads clip features alone and has none"
        )
    if config.reads_features and config.feature_dim != window_features[0].shape[1]:
        raise ConfigError(
            f"{captioner}: the captioner reads {config.feature_dim}-d clip features, the model's backbone gives "
            f"{window_features[0].shape[1]}-d ones"
        )
    visual = [visual_input(config, w, f) for w, f in zip(window_tokens, window_features)]
    captions = list(caption_segments(network, visual, device=device))
    if len(captions) != len(window_tokens):
        raise ConfigError(f"the captioner returned {len(captions)} captions for {len(window_tokens)} windows")
    return captions


def _print_tables(result: dict[str, Any]) -> None:
    """The windows (time, visual words, top verbs and nouns) and, with subtitles, the sentence alignment."""
    from rich.console import Console
    from rich.table import Table

    def ranked(rows: list[dict[str, Any]], n: int = 3) -> str:
        return ", ".join(f"{r['label']} {r['prob']:.2f}" for r in rows[:n])

    console = Console()
    prior = result["language_prior"]
    table = Table(
        title=f"{result['video']}: {len(result['clips'])} clips, zero-shot per {result['window_clips']} clips "
        f"(language prior: {ranked(prior['verb'], 1)} / {ranked(prior['noun'], 1)})"
    )
    for header in ("time (s)", "visual words", "verb (p)", "noun (p)"):
        table.add_column(header)
    captions = any(w["caption"] is not None for w in result["windows"])
    if captions:
        table.add_column("caption")
    for w in result["windows"]:
        # A model over clip features alone has no visual words: its clips show as their count.
        shown = " ".join(w["words"]) if w["words"][0] is not None else f"{w['clips']} clip features"
        cells = [f"{w['start']:.1f}-{w['end']:.1f}", shown, ranked(w["verb"]), ranked(w["noun"])]
        table.add_row(*cells, *([w["caption"] or ""] if captions else []))
    console.print(table)
    if result["sentences"]:
        summary = result["alignment"]
        title = f"sentence alignment ({result['subtitles']})"
        if summary["own_above_control"] is not None:
            title += f": own window above control for {100 * summary['own_above_control']:.0f} % of sentences"
        table = Table(title=title)
        for header in ("time (s)", "sentence", "clips", "P(aligned)", "control"):
            table.add_column(header, justify="right" if header in ("clips", "P(aligned)", "control") else "left")
        for s in result["sentences"]:
            score = "-" if s["p_aligned"] is None else f"{s['p_aligned']:.2f}"
            control = "-" if s["control_p_aligned"] is None else f"{s['control_p_aligned']:.2f}"
            table.add_row(f"{s['start']:.1f}-{s['end']:.1f}", s["text"], str(s["clips"]), score, control)
        console.print(table)
