"""The `index` stage: every window of clips of a work directory's videos embedded by an exported VideoBERT, in a
faiss index with its metadata, for text -> video search (`serve`). No PyTorch: the export runs on onnxruntime.

Segments
    Each video's visual words (tokens.parquet) are cut into consecutive, non-overlapping windows of `window` clips
    (the last may be shorter), as `predict` does. A segment's embedding is the video-only pooled embedding of its
    words (`[CLS] [>] words [SEP]`, `serving.runtime`); a text query is embedded alone the same way, so the search is
    `tasks.retrieval`'s ``embedding`` method: cosine similarity, exact (`IndexFlatIP`). Its caption is the annotated
    caption of the segment that overlaps it most, else the narration sentences overlapping it (joined), else empty.
    Its thumbnail is the frame at its middle, a JPEG at most `THUMB_HEIGHT` pixels high.

Layout (INDEX)::

    index.json                  what the index holds and which files are current (written last, atomically)
    segments-<generation>.faiss IndexIDMap2(IndexFlatIP): segment id -> embedding
    segments-<generation>.parquet  one row a segment: id, video, path, start, end, caption, tokens, thumbnail
    thumbs/<id>.jpg

Incremental and atomic
    Re-running adds only the videos the index does not have yet (new videos of the work directory, or of another
    work directory with the same vocabulary): their segments are embedded and appended, the others are not
    recomputed. Every run writes a new generation of the two files and then replaces index.json, so a reader (or a
    server starting) sees the old index or the new one, never a mix; files of older generations are removed after.
    An index is tied to one export (its model hash, precision and window): adding with another one is refused.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from videobert.data.video import decode_frames
from videobert.serving.runtime import OnnxVideoBert
from videobert.tokenizer.stages import tokens_metadata
from videobert.utils.errors import ConfigError, ErrorLog, InputError
from videobert.utils.io import atomic_path, read_json, write_json, write_parquet
from videobert.utils.stage import StageReport
from videobert.workdir import WorkDir

STAGE = "index"
INDEX_FILE = "index.json"
INDEX_FORMAT = "videobert-index/1"
THUMBS_DIR = "thumbs"
THUMB_HEIGHT = 120

SEGMENTS = pa.schema([
    ("id", pa.int64()), ("video", pa.string()), ("path", pa.string()), ("start", pa.float64()),
    ("end", pa.float64()), ("caption", pa.string()), ("tokens", pa.list_(pa.int32())), ("thumbnail", pa.string()),
])  # fmt: skip


@dataclass
class SegmentIndex:
    """A loaded index: the faiss index, its segments (one row per id, in id order) and index.json."""

    directory: Path
    meta: dict[str, Any]
    faiss_index: Any
    segments: pa.Table

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "SegmentIndex":
        import faiss

        directory = Path(directory)
        path = directory / INDEX_FILE
        if not path.is_file():
            raise InputError(directory, f"no {INDEX_FILE}; not an index written by `videobert index`")
        meta = read_json(path)
        if meta.get("format") != INDEX_FORMAT:
            raise InputError(path, f"format {meta.get('format')!r} is not {INDEX_FORMAT!r}")
        segments = pq.read_table(directory / meta["metadata"]).sort_by("id")
        faiss_index = faiss.read_index(str(directory / meta["faiss"]))
        if faiss_index.ntotal != segments.num_rows:
            raise InputError(directory, f"{faiss_index.ntotal} vectors for {segments.num_rows} segments")
        return cls(directory, meta, faiss_index, segments)

    def __len__(self) -> int:
        return self.segments.num_rows

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(queries, k) cosine similarities and segment ids, best first; -1 ids pad when there are fewer segments."""
        return self.faiss_index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def rows(self, ids: np.ndarray) -> list[dict[str, Any]]:
        """The metadata of the segments `ids` (ids are row numbers: ids are given 0, 1, 2, ... in order)."""
        return self.segments.take(pa.array(np.asarray(ids, dtype=np.int64))).to_pylist()


def index(
    model: Path,
    work: Path,
    *,
    out: Path,
    window: int = 3,
    precision: str = "fp32",
    batch_size: int = 64,
    thumbnails: bool = True,
) -> StageReport:
    """Embed every window of clips of a work directory's videos with an exported VideoBERT into a search index (faiss
    + metadata with video, start, end, caption and thumbnail). Re-running adds only new videos.

    Args:
        model: Export directory written by `videobert export`.
        work: Work directory with tokens.parquet (its vocabulary must be the model's).
        out: Index directory (created, or extended when it exists).
        window: Clips per indexed segment; segments do not overlap and the last of a video may be shorter.
        precision: fp32, or int8 when the export was quantised.
        batch_size: Segments per graph run.
        thumbnails: Write a thumbnail of each segment's middle frame.
    """
    if window < 1:
        raise ConfigError(f"window must be at least 1, got {window}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    import faiss

    out, wd = Path(out), WorkDir(work)
    runner = OnnxVideoBert(model, precision=precision)
    tokens_path = wd.require(wd.tokens, "tokenize")
    vocab_hash = runner.visual_tokenizer.content_hash if runner.visual_tokenizer is not None else None
    if tokens_metadata(tokens_path).get("vocab_hash") != vocab_hash:
        raise ConfigError(f"{tokens_path} was made with another visual vocabulary than the model {model}'s")
    wanted = {
        "model_sha256": runner.meta["model_sha256"], "precision": precision, "window": window,
        "dim": runner.hidden_size, "vocab_hash": vocab_hash,
    }  # fmt: skip
    old = SegmentIndex.load(out) if (out / INDEX_FILE).is_file() else None
    if old is not None:
        differs = {key: (old.meta.get(key), value) for key, value in wanted.items() if old.meta.get(key) != value}
        if differs:
            detail = ", ".join(f"{key} {a!r} vs {b!r}" for key, (a, b) in differs.items())
            raise ConfigError(f"{out} was built differently ({detail}); index into a new --out")
    known = set(old.segments["video"].to_pylist()) if old is not None else set()

    manifest = pq.read_table(wd.require(wd.manifest, "ingest"), columns=["video", "path", "height", "width"])
    paths = {r["video"]: r for r in manifest.to_pylist()}
    tokens = pq.read_table(tokens_path, columns=["video", "clip", "start", "end", "token"])
    tokens = tokens.sort_by([("video", "ascending"), ("clip", "ascending")])
    new_videos = sorted(set(tokens["video"].to_pylist()) - known)
    next_id = len(old) if old is not None else 0
    rows = _segment_rows(tokens, new_videos, paths, window, next_id, _captions(wd))

    skipped = len(known & set(tokens["video"].to_pylist()))
    if old is not None and not rows:
        return StageReport(STAGE, skipped=skipped, outputs={"index": str(out)}, stats={"segments": len(old)})
    errors = ErrorLog(out / "errors.jsonl", STAGE)
    errors.clear_stage()
    if thumbnails:
        _write_thumbnails(rows, paths, out / THUMBS_DIR, errors)
    embeddings = runner.embed(visual_tokens=[r["tokens"] for r in rows], batch_size=batch_size)  # (new, hidden)

    faiss_index = old.faiss_index if old is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(runner.hidden_size))
    if rows:
        faiss_index.add_with_ids(embeddings, np.asarray([r["id"] for r in rows], dtype=np.int64))
    segments = pa.Table.from_pylist(rows, schema=SEGMENTS)
    if old is not None:
        segments = pa.concat_tables([old.segments.select(SEGMENTS.names).cast(SEGMENTS), segments])
    generation = (old.meta["generation"] + 1) if old is not None else 1
    meta = {
        "format": INDEX_FORMAT, "generation": generation, "model": str(Path(model).resolve()), **wanted,
        "faiss": f"segments-{generation}.faiss", "metadata": f"segments-{generation}.parquet",
        "segments": segments.num_rows, "videos": len(known) + len(new_videos),
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / meta["faiss"]) as tmp:
        faiss.write_index(faiss_index, str(tmp))
    write_parquet(out / meta["metadata"], segments)
    write_json(out / INDEX_FILE, meta)  # the commit: from here on readers see the new generation
    if old is not None:
        for name in (old.meta["faiss"], old.meta["metadata"]):
            (out / name).unlink(missing_ok=True)
    return StageReport(
        STAGE, done=len(new_videos), skipped=skipped, failed=errors.count,
        outputs={"index": str(out)}, stats={"segments": segments.num_rows, "new segments": len(rows)},
    )  # fmt: skip


def _segment_rows(
    tokens: pa.Table,
    videos: list[str],
    paths: dict[str, dict[str, Any]],
    window: int,
    first_id: int,
    captions: dict[str, list[tuple[float, float, str, bool]]],
) -> list[dict[str, Any]]:
    """The windows of `videos` (module docstring) as SEGMENTS rows, ids from `first_id`."""
    rows: list[dict[str, Any]] = []
    for video in videos:
        mine = tokens.filter(pc.equal(tokens["video"], video))
        starts, ends = mine["start"].to_numpy(), mine["end"].to_numpy()
        words = mine["token"].to_numpy().astype(np.int32)
        for a in range(0, len(words), window):
            b = min(a + window, len(words))
            start, end = float(starts[a]), float(ends[b - 1])
            rows.append({
                "id": first_id + len(rows), "video": video, "path": str(paths.get(video, {}).get("path", "")),
                "start": start, "end": end, "caption": _caption(captions.get(video, []), start, end),
                "tokens": words[a:b].tolist(), "thumbnail": None,
            })  # fmt: skip
    return rows


def _captions(wd: WorkDir) -> dict[str, list[tuple[float, float, str, bool]]]:
    """video -> (start, end, text, annotated) of its annotated captions and narration sentences."""
    out: dict[str, list[tuple[float, float, str, bool]]] = {}
    for path, column, annotated in ((wd.segments, "caption", True), (wd.sentences, "text", False)):
        if path.is_file():
            for r in pq.read_table(path, columns=["video", "start", "end", column]).to_pylist():
                if r[column] and r[column].strip():
                    out.setdefault(r["video"], []).append((r["start"], r["end"], r[column].strip(), annotated))
    return out


def _caption(entries: list[tuple[float, float, str, bool]], start: float, end: float) -> str:
    """The annotated caption overlapping [start, end) most, else the overlapping narration joined, else ''."""
    overlapping = [(min(end, e) - max(start, s), text, annotated) for s, e, text, annotated in entries
                   if min(end, e) > max(start, s)]  # fmt: skip
    annotated = [(overlap, text) for overlap, text, is_annotated in overlapping if is_annotated]
    if annotated:
        return max(annotated)[1]
    return " ".join(text for _, text, is_annotated in overlapping if not is_annotated)


def _write_thumbnails(rows: list[dict[str, Any]], paths: dict[str, dict[str, Any]], directory: Path, errors: ErrorLog) -> None:
    """The middle frame of every segment as thumbs/<id>.jpg (decoded once per video at 2 frames/s); a video that
    fails to decode is recorded and its segments keep no thumbnail."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    by_video: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_video.setdefault(row["video"], []).append(row)
    for video, segments in by_video.items():
        info = paths.get(video)
        if info is None:
            errors.record(video, "not in manifest.parquet; no thumbnails")
            continue
        height = min(THUMB_HEIGHT, int(info["height"]))
        size = (height, max(1, round(int(info["width"]) * height / int(info["height"]))))
        try:
            frames = [(f.time, f.array) for f in decode_frames(info["path"], fps=2.0, size=size)]
        except InputError as exc:
            errors.record(info["path"], exc)
            continue
        if not frames:
            continue
        times = np.asarray([t for t, _ in frames], dtype=np.float64)
        for row in segments:
            middle = (row["start"] + row["end"]) / 2
            frame = frames[int(np.abs(times - middle).argmin())][1]
            name = f"{row['id']}.jpg"
            with atomic_path(directory / name) as tmp:
                Image.fromarray(frame).save(tmp, format="JPEG", quality=80)
            row["thumbnail"] = name
