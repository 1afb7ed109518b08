"""The ``ingest`` stage: corpus folder -> ``manifest.parquet``, ``sentences.parquet``, ``segments.parquet``.

Every video found below the corpus root is probed (with ``verify``, fully decoded) in worker processes;
its same-stem transcript is split into sentences and its annotations become segments. A bad file is one
line in ``errors.jsonl`` and never stops the batch.

Re-running is cheap and gives identical tables: a video whose size and modification time match its
manifest row is not probed again. While probing, the manifest is checkpointed every
``_CHECKPOINT_SECONDS``, marked incomplete, so an interrupted run resumes where it stopped and
:func:`load_manifest` refuses to hand the partial table to a later stage.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator, Iterator

import pyarrow as pa
from tqdm import tqdm

from videobert.data.annotations import load_annotations
from videobert.data.schema import MANIFEST, SEGMENTS, SENTENCES
from videobert.data.transcripts import MAX_SENTENCE_CHARS, TRANSCRIPT_EXTENSIONS, load_transcript
from videobert.data.video import VIDEO_EXTENSIONS, VideoInfo, probe
from videobert.utils.errors import ConfigError, ErrorLog, InputError
from videobert.utils.io import read_parquet, write_parquet
from videobert.utils.lock import locked
from videobert.utils.stage import StageReport
from videobert.workdir import WorkDir

STAGE = "ingest"
_CHECKPOINT_SECONDS = 30.0
# Marks a transcript path that is relative to the work directory (recognised speech), not to the corpus.
RECOGNISED_PREFIX = "work:"

# Manifest file metadata. "verified": rows were probed with full decoding, so a verifying run may reuse
# them; "complete": written at the end of a run, not by a checkpoint.
_VERIFIED = b"videobert.ingest.verified"
_COMPLETE = b"videobert.ingest.complete"

# Manifest columns that come from probing the file (the rest are re-derived on every run).
_PROBED = ("duration", "fps", "width", "height", "num_frames", "rotation", "codec", "container",
           "num_audio_streams", "num_subtitle_streams")


@dataclass(frozen=True)
class CorpusVideo:
    video: str  # id: POSIX path relative to the corpus root
    path: Path
    transcript: str | None  # same-stem sidecar, relative to the corpus root
    size_bytes: int
    mtime: float


@dataclass(frozen=True)
class ProbeOutcome:
    """What a worker sends back. The problem travels as text: InputError does not survive pickling."""

    video: str
    info: VideoInfo | None
    problem: str | None


def scan_corpus(corpus: Path) -> tuple[list[CorpusVideo], list[tuple[str, str]]]:
    """Every video below ``corpus`` (by extension, case-insensitive), sorted by id, with its sidecar; and
    ``(id, problem)`` for each video file that cannot be opened (a broken symbolic link, a link loop).

    Hidden files and folders are skipped: macOS ``._name.mp4`` resource forks and ``.git`` are not videos. A file
    that is a symbolic link is followed wherever it points, inside the corpus or not (a corpus assembled from links
    to where the footage is stored is common); linked folders are not descended into, so a folder loop cannot
    make the scan run forever."""
    found = []
    problems = []
    for folder, dirs, files in os.walk(corpus):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        visible = [f for f in files if not f.startswith(".")]
        by_stem_ext = {(Path(f).stem, Path(f).suffix.lower()): f for f in visible}
        for name in visible:
            path = Path(folder) / name
            if path.suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            rel = path.relative_to(corpus)
            sidecars = [by_stem_ext[(path.stem, ext)] for ext in TRANSCRIPT_EXTENSIONS if (path.stem, ext) in by_stem_ext]
            sidecar = sidecars[0] if sidecars else None
            try:
                st = path.stat()
            except OSError as error:  # a dangling link, or links pointing at each other (ELOOP)
                problems.append((rel.as_posix(), f"cannot open ({error.strerror})"))
                continue
            found.append(CorpusVideo(
                video=rel.as_posix(),
                path=path,
                transcript=(rel.parent / sidecar).as_posix() if sidecar else None,
                size_bytes=st.st_size,
                mtime=st.st_mtime,
            ))
    return sorted(found, key=lambda v: v.video), sorted(problems)


def _probe_one(video: str, path: str, verify: bool) -> ProbeOutcome:
    try:
        return ProbeOutcome(video, probe(path, verify=verify), None)
    except InputError as exc:
        return ProbeOutcome(video, None, exc.problem)
    except Exception as exc:  # FFmpeg bindings can raise anything on hostile input; one file must not stop the batch
        return ProbeOutcome(video, None, f"unreadable video ({type(exc).__name__}: {exc})")


def _probe_all(todo: list[CorpusVideo], verify: bool, jobs: int) -> Iterator[ProbeOutcome]:
    """Probe outcomes in completion order; ``jobs == 1`` probes in this process."""
    if not todo:
        return
    if jobs == 1:
        for v in todo:
            yield _probe_one(v.video, str(v.path), verify)
        return
    crashed = yield from _probe_in_pool(todo, verify, jobs)
    # A dead worker breaks the whole pool, so every unfinished file failed with it. Probe those one per
    # pool: a file that kills its own worker again is the culprit, the others come back normally.
    for v in crashed:
        if (yield from _probe_in_pool([v], verify, 1)):
            yield ProbeOutcome(v.video, None, "the decoder crashed on this file (its worker process died)")


def _probe_in_pool(
    todo: list[CorpusVideo], verify: bool, jobs: int
) -> Generator[ProbeOutcome, None, list[CorpusVideo]]:
    """Yield outcomes from a pool of ``jobs`` workers; return the videos lost to a dead worker."""
    crashed = []
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(todo)))
    try:
        futures = {pool.submit(_probe_one, v.video, str(v.path), verify): v for v in todo}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except BrokenProcessPool:
                crashed.append(futures[future])
                continue
            yield outcome
    finally:
        # Interrupted (Ctrl-C, or the caller stopped iterating): do not sit through the queued files.
        pool.shutdown(cancel_futures=True)
    return crashed


def _manifest_row(
    v: CorpusVideo, probed: dict[str, Any], transcript: str | None = None, split: str | None = None
) -> dict[str, Any]:
    return {
        "video": v.video,
        "path": str(v.path.resolve()),
        **{k: probed[k] for k in _PROBED},
        "size_bytes": v.size_bytes,
        "mtime": v.mtime,
        "transcript": transcript,
        "split": split,
    }


def _write_manifest(wd: WorkDir, rows: list[dict[str, Any]], verify: bool, complete: bool) -> None:
    schema = MANIFEST.with_metadata({_VERIFIED: b"1" if verify else b"0", _COMPLETE: b"1" if complete else b"0"})
    write_parquet(wd.manifest, pa.Table.from_pylist(sorted(rows, key=lambda r: r["video"]), schema=schema))


def _reusable_rows(wd: WorkDir, verify: bool) -> dict[str, dict[str, Any]]:
    """Rows of the previous manifest (finished or checkpointed) this run may keep without probing."""
    if not wd.manifest.exists():
        return {}
    table = read_parquet(wd.manifest)
    if verify and (table.schema.metadata or {}).get(_VERIFIED) != b"1":
        return {}  # earlier rows were only header-probed; this run promises decoded, verified files
    return {r["video"]: r for r in table.to_pylist()}


@locked("work")
def ingest(
    corpus: Path, work: Path, verify: bool = True, jobs: int = 2, asr: str = "", holdout: float = 0.0
) -> StageReport:
    """Scan a corpus folder: probe every video, split transcripts into sentences, read annotations.

    A video without a transcript of its own takes the one `videobert transcribe` recognised from its speech
    (WORK/transcripts/), when there is one.

    Args:
        corpus: Folder with the videos (any depth, any container FFmpeg reads), optional same-stem
            .srt/.vtt/.json transcripts next to them, and an optional annotations.jsonl or YouCook2 JSON
            at its root.
        work: Work directory; manifest.parquet, sentences.parquet, segments.parquet and errors.jsonl are
            written there.
        verify: Decode every frame to catch truncated or corrupt files and count frames exactly; with
            --no-verify only headers are read (faster, less safe).
        jobs: Worker processes that probe videos in parallel; 1 probes in this process.
        asr: Recognise speech first (`videobert transcribe --asr ASR`) for the videos with audio and no
            transcript, e.g. pocketsphinx; empty: use only the transcripts already there.
        holdout: Fraction of the videos that the annotations put in no split to hold out as split val, as much of
            the narrated ones as of the others (at least one of each kind), chosen by a hash of the video id, so the
            same videos every run and on every machine.
    """
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise InputError(corpus, "corpus folder does not exist" if not corpus.exists() else "corpus is not a folder")
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}")
    if not 0 <= holdout < 1:
        raise ConfigError(f"holdout must be in [0, 1), got {holdout}")
    asr_failed = 0
    if asr:
        from videobert.speech.transcribe import transcribe

        asr_failed = transcribe(corpus, work, asr=asr).failed
    wd = WorkDir(work).ensure()
    log = ErrorLog(wd.errors, stage=STAGE)
    log.clear_stage()

    videos, unreadable = scan_corpus(corpus)
    for video, problem in unreadable:
        log.record(video, InputError(corpus / video, problem))
    previous = _reusable_rows(wd, verify)
    probed: dict[str, dict[str, Any]] = {}
    todo = []
    for v in videos:
        row = previous.get(v.video)
        if row is not None and (row["size_bytes"], row["mtime"]) == (v.size_bytes, v.mtime):
            probed[v.video] = row
        else:
            todo.append(v)
    skipped = len(probed)

    by_id = {v.video: v for v in videos}
    last_checkpoint = time.monotonic()
    with tqdm(total=len(videos), initial=skipped, desc=STAGE, unit="video") as bar:
        for outcome in _probe_all(todo, verify, jobs):
            bar.update()
            v = by_id[outcome.video]
            if outcome.info is None:
                log.record(v.video, InputError(v.path, outcome.problem))
                continue
            probed[v.video] = {k: getattr(outcome.info, k) for k in _PROBED}
            if time.monotonic() - last_checkpoint >= _CHECKPOINT_SECONDS:
                _write_manifest(wd, [_manifest_row(by_id[k], r) for k, r in probed.items()], verify, complete=False)
                last_checkpoint = time.monotonic()

    sentence_rows = []
    transcripts: dict[str, str] = {}
    clipped = dropped = cut = 0
    for v in videos:
        if v.video not in probed:
            continue
        if v.transcript is not None:
            path, source = corpus / v.transcript, v.transcript
        elif wd.transcript_of(v.video).is_file():
            path = wd.transcript_of(v.video)
            source = RECOGNISED_PREFIX + path.relative_to(wd.root).as_posix()
        else:
            continue
        try:
            transcript = load_transcript(path, duration=probed[v.video]["duration"])
        except InputError as exc:
            log.record(source, exc)
            continue
        transcripts[v.video] = source
        clipped += transcript.clipped
        dropped += transcript.dropped
        cut += transcript.cut
        if transcript.cut:
            print(f"[{STAGE}] warning: {v.transcript}: {transcript.cut} sentence(s) longer than "
                  f"{MAX_SENTENCE_CHARS} characters cut into pieces", file=sys.stderr)  # fmt: skip
        sentence_rows += [
            {"video": v.video, "index": k, "start": s.start, "end": s.end, "text": s.text, "source": source}
            for k, s in enumerate(transcript.sentences)
        ]

    durations = {v.video: probed[v.video]["duration"] if v.video in probed else None for v in videos}
    annotations = load_annotations(corpus, durations)
    for p in annotations.problems:
        log.record(p.item, InputError(p.item, p.problem))
    splits = dict(annotations.splits)
    narrated = {r["video"] for r in sentence_rows}
    splits.update(held_out([v for v in probed if v not in splits], holdout, narrated=narrated))
    segment_rows = [r if r["split"] is not None else {**r, "split": splits.get(r["video"])} for r in annotations.rows()]

    manifest_rows = [_manifest_row(by_id[k], r, transcripts.get(k), splits.get(k)) for k, r in probed.items()]
    write_parquet(wd.sentences, sentence_rows, schema=SENTENCES)
    write_parquet(wd.segments, segment_rows, schema=SEGMENTS)
    # Last, so a finished manifest implies finished sentences and segments.
    _write_manifest(wd, manifest_rows, verify, complete=True)

    return StageReport(
        stage=STAGE,
        done=len(probed) - skipped,
        skipped=skipped,
        failed=log.count + asr_failed,
        outputs={"manifest": str(wd.manifest), "sentences": str(wd.sentences), "segments": str(wd.segments)},
        stats={
            "videos": len(manifest_rows),
            "hours": sum(r["duration"] for r in manifest_rows) / 3600,
            "sentences": len(sentence_rows),
            "videos_with_transcript": len(transcripts),
            "sentences_clipped": clipped,
            "sentences_dropped": dropped,
            "sentences_cut": cut,
            "segments": len(segment_rows),
            "segments_clipped": annotations.clipped,
            "segment_labels_from_captions": annotations.labels_from_captions,
        },
    )


def held_out(videos: list[str], fraction: float, narrated: set[str] = frozenset()) -> dict[str, str]:
    """``{video: "val"}`` for a ``fraction`` of the narrated ``videos`` and the same fraction of the others (at least
    one of a group of two or more when above 0), so that alignment is measured on held-out narrated videos in a
    corpus that mixes narrated and silent footage. The videos whose id hashes lowest are chosen, so the choice does
    not depend on the order or the machine."""
    if fraction <= 0:
        return {}
    out = {}
    for group in ([v for v in videos if v in narrated], [v for v in videos if v not in narrated]):
        if len(group) >= 2:
            ranked = sorted(group, key=lambda v: hashlib.sha256(v.encode("utf-8")).hexdigest())
            out.update({v: "val" for v in ranked[: max(1, round(fraction * len(group)))]})
    return out


def load_manifest(work: str | os.PathLike) -> pa.Table:
    """The manifest of a finished ingest (schema MANIFEST, sorted by video)."""
    wd = WorkDir(work)
    table = read_parquet(wd.require(wd.manifest, STAGE))
    if (table.schema.metadata or {}).get(_COMPLETE) != b"1":
        raise InputError(wd.manifest, "written by an interrupted ingest; run `videobert ingest ...` again to finish it")
    return table.replace_schema_metadata(None)


def load_sentences(work: str | os.PathLike) -> pa.Table:
    """Sentences of every transcript (schema SENTENCES, sorted by video then index)."""
    wd = WorkDir(work)
    return read_parquet(wd.require(wd.sentences, STAGE))


def load_segments(work: str | os.PathLike) -> pa.Table:
    """Annotated segments (schema SEGMENTS, sorted by video then index)."""
    wd = WorkDir(work)
    return read_parquet(wd.require(wd.segments, STAGE))
