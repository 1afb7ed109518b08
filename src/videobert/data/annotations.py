"""Labelled segments from the corpus root (DESIGN.md §2) -> rows of :data:`videobert.data.schema.SEGMENTS`.

Two formats are read, and may be combined:

* ``annotations.jsonl``: one segment a line, ``{"video": <path relative to the corpus>, "start", "end",
  "verb", "noun", "caption", "split"}``; all but video/start/end optional.
* YouCook2-style JSON: any ``*.json`` at the corpus root with a top-level ``"database"`` key,
  ``{"database": {<youtube id>: {"subset": "training", "annotations": [{"segment": [s, e],
  "sentence": ...}]}}}``, matched to videos by file stem. A root ``.json`` with the stem of a root video is
  that video's transcript, not an annotation file.

Every problem (a malformed line, a video that is not in the corpus or failed to ingest, a segment after the
video's end, contradicting splits) becomes one :class:`AnnotationProblem`; the remaining segments are kept.

A segment with a caption and no verb or noun gets them from its caption (:func:`videobert.data.actions.verb_and_noun`),
as the paper did for YouCook2, so that zero-shot classification and the verb/noun tasks run on caption-only corpora.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from videobert.data.transcripts import finite_number, read_text
from videobert.utils.errors import InputError

ANNOTATIONS_FILE = "annotations.jsonl"

# YouCook2 names its subsets in full; the work directory uses the short names.
SPLITS = {"train": "train", "training": "train", "val": "val", "validation": "val", "test": "test", "testing": "test"}

_TEXT_FIELDS = ("verb", "noun", "caption")
# Enough ids to find the pattern in a long list of videos missing from the corpus.
_MAX_LISTED = 10


@dataclass(frozen=True)
class Segment:
    video: str
    start: float
    end: float
    verb: str | None = None
    noun: str | None = None
    caption: str | None = None
    split: str | None = None
    source: str = ""  # "<file>:<line>" or "<file>:<youtube id>", for messages


@dataclass(frozen=True)
class AnnotationProblem:
    item: str  # what to fix: "annotations.jsonl:7", "<file>:<youtube id>", or a video id
    problem: str


@dataclass(frozen=True)
class SplitClaim:
    video: str
    split: str
    source: str


@dataclass
class Annotations:
    """Segments that passed every check (clipped to their video), the split each video is in, and problems."""

    segments: list[Segment] = field(default_factory=list)
    splits: dict[str, str] = field(default_factory=dict)  # video id -> train | val | test
    problems: list[AnnotationProblem] = field(default_factory=list)
    clipped: int = 0  # segments whose end was moved back to their video's end
    labels_from_captions: int = 0  # segments whose verb or noun was derived from the caption

    def rows(self) -> list[dict[str, Any]]:
        """SEGMENTS rows, sorted by video then time; ``index`` is the order within the video."""
        ordered = sorted(self.segments, key=lambda s: (s.video, s.start, s.end))
        counts: dict[str, int] = defaultdict(int)
        rows = []
        for s in ordered:
            rows.append(
                {"video": s.video, "index": counts[s.video], "start": s.start, "end": s.end, "verb": s.verb,
                 "noun": s.noun, "caption": s.caption, "split": s.split}
            )
            counts[s.video] += 1
        return rows


def _split(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in SPLITS:
        raise ValueError(f"split must be train, val or test, got {value!r}")
    return SPLITS[value.lower()]


def _span(start: Any, end: Any) -> tuple[float, float]:
    if not (finite_number(start) and finite_number(end)):
        raise ValueError(f"start and end must be numbers of seconds, got {start!r} and {end!r}")
    if start < 0:
        raise ValueError(f"start ({start}) is negative")
    if end <= start:
        raise ValueError(f"end ({end}) <= start ({start})")
    return float(start), float(end)


def _jsonl_segment(obj: Any, source: str) -> Segment:
    """One annotations.jsonl line as a Segment; ValueError says what is wrong with it."""
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    missing = [k for k in ("video", "start", "end") if k not in obj]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    if not isinstance(obj["video"], str) or not obj["video"]:
        raise ValueError(f"video must be a path relative to the corpus, got {obj['video']!r}")
    start, end = _span(obj["start"], obj["end"])
    texts = {}
    for key in _TEXT_FIELDS:
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise ValueError(f"{key} must be a string, got {obj[key]!r}")
        texts[key] = obj.get(key)
    video = PurePosixPath(obj["video"].replace("\\", "/")).as_posix()
    return Segment(video, start, end, split=_split(obj.get("split")), source=source, **texts)


def read_jsonl(path: Path, name: str) -> tuple[list[Segment], list[AnnotationProblem]]:
    """Segments of an annotations.jsonl file (``name``: its path relative to the corpus) and its bad lines."""
    segments, problems = [], []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        item = f"{name}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(AnnotationProblem(item, f"line {number}: not valid JSON ({exc.msg}, column {exc.colno})"))
            continue
        try:
            segments.append(_jsonl_segment(obj, item))
        except ValueError as exc:
            problems.append(AnnotationProblem(item, f"line {number}: {exc}"))
    return segments, problems


@dataclass(frozen=True)
class _YouCook2Video:
    youtube_id: str
    split: str | None
    segments: list[tuple[float, float, str | None]]


def _youcook2_entries(name: str, database: Any) -> tuple[list[_YouCook2Video], list[AnnotationProblem]]:
    if not isinstance(database, dict):
        return [], [AnnotationProblem(name, '"database" must be an object of {youtube id: entry}')]
    entries, problems = [], []
    for yid, entry in database.items():
        item = f"{name}:{yid}"
        try:
            if not isinstance(entry, dict):
                raise ValueError("entry must be an object")
            split = _split(entry.get("subset"))
            annotations = entry.get("annotations") or []
            if not isinstance(annotations, list):
                raise ValueError('"annotations" must be a list')
            segments = []
            for k, ann in enumerate(annotations, start=1):
                seg = ann.get("segment") if isinstance(ann, dict) else None
                if not (isinstance(seg, list) and len(seg) == 2):
                    raise ValueError(f'annotation {k}: "segment" must be [start, end]')
                try:
                    start, end = _span(*seg)
                except ValueError as exc:
                    raise ValueError(f"annotation {k}: {exc}") from None
                sentence = ann.get("sentence")  # absent in the test subset, whose captions are withheld
                if sentence is not None and not isinstance(sentence, str):
                    raise ValueError(f'annotation {k}: "sentence" must be a string')
                segments.append((start, end, sentence))
        except ValueError as exc:
            problems.append(AnnotationProblem(item, str(exc)))
            continue
        entries.append(_YouCook2Video(yid, split, segments))
    return entries, problems


def read_youcook2(
    name: str, database: Any, videos: Mapping[str, float | None]
) -> tuple[list[Segment], list[SplitClaim], list[AnnotationProblem]]:
    """Segments and per-video splits of a YouCook2 file (``name``: its file name), matched to corpus
    videos by file stem. The split is claimed per video because test videos come without segments.

    Videos of the file that are not in the corpus are reported together, as one problem: a YouCook2 release
    lists every video of the dataset, and downloaded copies routinely miss some."""
    by_stem: dict[str, list[str]] = defaultdict(list)
    for video in videos:
        by_stem[PurePosixPath(video).stem].append(video)
    entries, problems = _youcook2_entries(name, database)
    segments: list[Segment] = []
    claims: list[SplitClaim] = []
    missing = []
    for entry in entries:
        matches = by_stem.get(entry.youtube_id, [])
        if not matches:
            missing.append(entry.youtube_id)
            continue
        if len(matches) > 1:
            problem = f"several videos have this YouCook2 id as stem: {', '.join(sorted(matches))}"
            problems.append(AnnotationProblem(f"{name}:{entry.youtube_id}", problem))
            continue
        video, source = matches[0], f"{name}:{entry.youtube_id}"
        if entry.split is not None:
            claims.append(SplitClaim(video, entry.split, source))
        segments += [Segment(video, start, end, caption=sentence, split=entry.split, source=source)
                     for start, end, sentence in entry.segments]
    if missing:
        listed = ", ".join(missing[:_MAX_LISTED]) + (", ..." if len(missing) > _MAX_LISTED else "")
        problem = f"{len(missing)} of {len(entries)} annotated videos are not in the corpus: {listed}"
        problems.append(AnnotationProblem(name, problem))
    return segments, claims, problems


def _root_json_files(corpus: Path, videos: Mapping[str, float | None]) -> list[Path]:
    root_stems = {PurePosixPath(v).stem for v in videos if "/" not in v}
    return sorted(
        p for p in corpus.iterdir()
        if p.suffix.lower() == ".json" and p.is_file() and not p.name.startswith(".") and p.stem not in root_stems
    )


def load_annotations(corpus: str | Path, videos: Mapping[str, float | None]) -> Annotations:
    """Read every annotation file at the corpus root and check it against the corpus.

    Args:
        corpus: the corpus folder.
        videos: every video id found in the corpus -> its duration in seconds, or None if it failed to ingest.
    """
    corpus = Path(corpus)
    result = Annotations()
    segments: list[Segment] = []
    claims: list[SplitClaim] = []
    jsonl = corpus / ANNOTATIONS_FILE
    if jsonl.is_file():
        try:
            found, problems = read_jsonl(jsonl, ANNOTATIONS_FILE)
        except InputError as exc:
            found, problems = [], [AnnotationProblem(ANNOTATIONS_FILE, exc.problem)]
        segments += found
        result.problems += problems
    for path in _root_json_files(corpus, videos):
        try:
            data = json.loads(read_text(path))
        except InputError as exc:
            result.problems.append(AnnotationProblem(path.name, exc.problem))
            continue
        except json.JSONDecodeError as exc:
            # A broken JSON at the root is most likely a truncated annotation download: say so.
            problem = f"not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
            hint = "root *.json files are read as YouCook2 annotations"
            result.problems.append(AnnotationProblem(path.name, f"{problem}; {hint}"))
            continue
        if isinstance(data, dict) and "database" in data:
            found, entry_claims, problems = read_youcook2(path.name, data["database"], videos)
            segments += found
            claims += entry_claims
            result.problems += problems
    _check_segments(segments, videos, result)
    _labels_from_captions(result)
    claims += [SplitClaim(s.video, s.split, s.source) for s in segments if s.split is not None]
    _resolve_splits(claims, videos, result)
    return result


def _check_segments(segments: list[Segment], videos: Mapping[str, float | None], result: Annotations) -> None:
    """Keep segments whose video ingested and that start before its end (clipped to it); report the rest."""
    for seg in segments:
        if seg.video not in videos:
            result.problems.append(AnnotationProblem(seg.source, f"video {seg.video!r} is not in the corpus"))
            continue
        duration = videos[seg.video]
        if duration is None:
            problem = f"video {seg.video!r} failed to ingest (see its own error)"
            result.problems.append(AnnotationProblem(seg.source, problem))
            continue
        if seg.start >= duration:
            problem = f"segment [{seg.start:g}, {seg.end:g}] s starts after the end of {seg.video!r} ({duration:g} s)"
            result.problems.append(AnnotationProblem(seg.source, problem))
            continue
        if seg.end > duration:
            seg = replace(seg, end=duration)
            result.clipped += 1
        result.segments.append(seg)


def _labels_from_captions(result: Annotations) -> None:
    """Fill a missing verb or noun from the segment's caption; given labels are never replaced."""
    from videobert.data.actions import verb_and_noun

    for k, seg in enumerate(result.segments):
        if seg.caption and (seg.verb is None or seg.noun is None):
            verb, noun = verb_and_noun(seg.caption)
            result.segments[k] = replace(seg, verb=seg.verb if seg.verb is not None else verb,
                                         noun=seg.noun if seg.noun is not None else noun)  # fmt: skip
            result.labels_from_captions += 1


def _resolve_splits(claims: list[SplitClaim], videos: Mapping[str, float | None], result: Annotations) -> None:
    """One split per ingested video; a video claimed for two splits gets none (train/test leakage) and a problem."""
    seen: dict[str, dict[str, str]] = defaultdict(dict)  # video -> split -> first source claiming it
    for c in claims:
        if videos.get(c.video) is not None:
            seen[c.video].setdefault(c.split, c.source)
    for video, splits in sorted(seen.items()):
        if len(splits) == 1:
            result.splits[video] = next(iter(splits))
        else:
            said = ", ".join(f"{split} ({source})" for split, source in splits.items())
            result.problems.append(AnnotationProblem(video, f"annotations put this video in several splits: {said}"))
