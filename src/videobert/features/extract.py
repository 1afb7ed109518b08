"""Stage ``extract``: cut every video of the manifest into clips and embed each clip with a backbone.

Reads ``WORK/manifest.parquet`` (``video`` id and ``path``), writes ``WORK/features/`` shards and
``WORK/clips.parquet`` through :class:`~videobert.features.store.ShardWriter` (whole videos per shard,
committed atomically; a re-run skips the videos already in a committed shard).

Decoding runs in worker processes, overlapped with the backbone in this process. Worker ``w`` decodes the
videos ``w, w + W, w + 2W, ...`` of the to-do list in order and streams their clips, a few at a time,
through its own bounded queue; this process reads the queues in manifest order. So memory holds at most
``workers * (prefetch + 1)`` chunks of clips plus one batch, whatever the corpus or a video's length, and
a worker ahead of the others waits instead of piling up clips. Clips of consecutive videos share
backbone batches.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import shutil
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from videobert.data.video import ClipDecoder, available_cores, clip_windows
from videobert.features.backbones import Backbone, get_backbone
from videobert.features.store import ShardWriter
from videobert.utils.errors import ConfigError, ErrorLog, InputError
from videobert.utils.io import read_parquet, read_parquet_schema
from videobert.utils.lock import locked
from videobert.utils.stage import StageReport
from videobert.workdir import WorkDir

# A chunk (one queue message) holds at most this many bytes of clips, so a large input size (224x224
# for a Hugging Face model) does not make single messages huge.
_CHUNK_BYTES = 64 << 20
# Chunks a worker may have waiting in its queue before it blocks.
_PREFETCH = 2
# Seconds between liveness checks while waiting on a queue.
_POLL_S = 1.0

# Queue messages, all tuples starting with (kind, video index):
#   ("clips", i, starts, ends, frames)  frames: (n, T, H, W, 3) uint8, clips in order
#   ("end", i)                          the video decoded completely
#   ("error", i, kind, message)         the video failed; its clips so far are void
Message = tuple


def _video_messages(index: int, path: str, decoder: ClipDecoder, chunk: int) -> Iterator[Message]:
    """Decode one video into ``clips`` chunks followed by ``end``, or ``error`` at the first failure."""
    starts: list[float] = []
    ends: list[float] = []
    frames: list[np.ndarray] = []
    try:
        for clip in decoder.clips(path):
            starts.append(clip.start)
            ends.append(clip.end)
            frames.append(clip.frames)
            if len(frames) == chunk:
                yield ("clips", index, starts, ends, np.stack(frames))  # (n, T, H, W, 3)
                starts, ends, frames = [], [], []
        if frames:
            yield ("clips", index, starts, ends, np.stack(frames))
    except Exception as exc:  # one bad video must not stop the batch: report it and go on
        yield ("error", index, type(exc).__name__, getattr(exc, "problem", None) or str(exc))
        return
    yield ("end", index)


def _decode_worker(tasks: list[tuple[int, str]], decoder: ClipDecoder, chunk: int, out: mp.Queue) -> None:
    """Worker process: decode ``tasks`` in order into ``out``. Exits if the parent dies (killed), instead of
    blocking forever on a full queue nobody reads."""
    # Ctrl-C reaches the whole process group; the parent handles it and terminates the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = mp.parent_process()
    for index, path in tasks:
        for message in _video_messages(index, path, decoder, chunk):
            while True:
                try:
                    out.put(message, timeout=_POLL_S)
                    break
                except queue.Full:
                    if parent is not None and not parent.is_alive():
                        os._exit(1)


def _process_context() -> mp.context.BaseContext:
    """Where decoder processes come from. On Linux, fork, as PyTorch's DataLoader does: it starts in
    milliseconds and, unlike spawn/forkserver, does not re-run the caller's ``__main__``, so
    ``videobert.extract()`` works from a plain script or a notebook. The children only decode with PyAV and
    never touch torch, CUDA or OpenMP state they inherit. Elsewhere (macOS, where forking a process with
    system frameworks loaded is unsafe; Windows, which cannot fork) a forkserver or spawn is used, and the
    caller's script needs the usual ``if __name__ == "__main__":`` guard."""
    if sys.platform.startswith("linux"):
        return mp.get_context("fork")
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def _decoder_threads(workers: int) -> int:
    """FFmpeg threads per decoder process: the cores shared out among the workers (0: FFmpeg's choice when
    decoding in this process). Each worker's frame conversion runs in a thread of its own besides."""
    return max(1, available_cores() // workers - 1) if workers else 0


class _DecoderPool:
    """``workers`` decoder processes over ``tasks`` (index, path), read back in task order."""

    def __init__(self, tasks: list[tuple[int, str]], decoder: ClipDecoder, chunk: int, workers: int):
        self.tasks, self.decoder, self.chunk, self.workers = tasks, decoder, chunk, workers
        self.ctx = _process_context()
        self.procs: list[mp.process.BaseProcess | None] = [None] * workers
        self.queues: list[mp.Queue | None] = [None] * workers

    def _start(self, w: int, after: int = -1) -> None:
        """(Re)start worker ``w`` on its share of the tasks whose position is after ``after``."""
        mine = [t for pos, t in enumerate(self.tasks) if pos % self.workers == w and pos > after]
        if not mine:
            self.procs[w] = None
            return
        q = self.ctx.Queue(maxsize=_PREFETCH)
        p = self.ctx.Process(target=_decode_worker, args=(mine, self.decoder, self.chunk, q), daemon=True,
                             name=f"videobert-decode-{w}")
        p.start()
        self.procs[w], self.queues[w] = p, q

    def __iter__(self) -> Iterator[Message]:
        try:
            for w in range(self.workers):
                self._start(w)
            for pos, (index, _) in enumerate(self.tasks):
                w = pos % self.workers
                while True:
                    message = self._get(w, pos, index)
                    yield message
                    if message[0] != "clips":
                        break
        finally:
            self.close()

    def _get(self, w: int, pos: int, index: int) -> Message:
        q, p = self.queues[w], self.procs[w]
        while True:
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                if p.is_alive():
                    continue
            try:  # it may have exited right after its last put
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                code = p.exitcode
                # A crash inside FFmpeg takes the process with it: blame the video it was on, restart the
                # worker on the videos after it.
                q.close()
                self._start(w, after=pos)
                return ("error", index, "DecoderCrash", f"the decoder process died (exit code {code}) on this video")

    def close(self) -> None:
        for p in self.procs:
            if p is not None and p.is_alive():
                p.terminate()
        for p in self.procs:
            if p is not None:
                p.join()
        for q in self.queues:
            if q is not None:
                q.close()


def _messages(tasks: list[tuple[int, str]], decoder: ClipDecoder, chunk: int, workers: int) -> Iterator[Message]:
    if workers == 0:
        for index, path in tasks:
            yield from _video_messages(index, path, decoder, chunk)
    elif tasks:
        yield from _DecoderPool(tasks, decoder, chunk, workers)


@dataclass
class _Video:
    """A video whose clips are on their way through the backbone."""

    index: int
    video: str
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    feats: list[np.ndarray] = field(default_factory=list)
    computed: int = 0
    ended: bool = False


class _Batcher:
    """Groups clips of consecutive videos into backbone batches and hands each video's features to the
    writer, in manifest order, once all of them are computed."""

    def __init__(self, backbone: Backbone, batch_size: int, writer: ShardWriter, progress: tqdm):
        self.backbone, self.batch_size, self.writer, self.progress = backbone, batch_size, writer, progress
        self.open: deque[_Video] = deque()  # manifest order
        self.buffer: deque[tuple[_Video, np.ndarray]] = deque()  # clips not yet embedded
        self.buffered = 0
        self.clips = 0
        self.videos = 0
        self.zero_clip_videos = 0

    def begin(self, index: int, video: str) -> _Video:
        v = _Video(index, video)
        self.open.append(v)
        return v

    def add(self, v: _Video, starts: list[float], ends: list[float], frames: np.ndarray) -> None:
        v.starts += starts
        v.ends += ends
        self.buffer.append((v, frames))
        self.buffered += len(frames)
        while self.buffered >= self.batch_size:
            self._run(self.batch_size)

    def end(self, v: _Video) -> None:
        v.ended = True
        self._commit_ready()

    def drop(self, v: _Video) -> None:
        """Forget a failed video: it is the newest open one, so its clips are at the buffer's tail."""
        while self.buffer and self.buffer[-1][0] is v:
            self.buffered -= len(self.buffer.pop()[1])
        self.open.remove(v)
        self._commit_ready()

    def finish(self) -> None:
        if self.buffered:
            self._run(self.buffered)
        self._commit_ready()

    def _run(self, n: int) -> None:
        parts: list[tuple[_Video, np.ndarray]] = []
        taken = 0
        while taken < n:
            v, frames = self.buffer.popleft()
            if taken + len(frames) > n:  # split a chunk across two batches
                keep = n - taken
                self.buffer.appendleft((v, frames[keep:]))
                frames = frames[:keep]
            parts.append((v, frames))
            taken += len(frames)
        self.buffered -= n
        feats = self.backbone(np.concatenate([f for _, f in parts]))  # (n, T, H, W, 3) -> (n, D)
        row = 0
        for v, frames in parts:
            v.feats.append(feats[row : row + len(frames)])
            v.computed += len(frames)
            row += len(frames)
        self.progress.update(n)
        self._commit_ready()

    def _commit_ready(self) -> None:
        while self.open and self.open[0].ended and self.open[0].computed == len(self.open[0].starts):
            v = self.open.popleft()
            if v.starts:
                self.writer.add_video(v.video, v.starts, v.ends, np.concatenate(v.feats))
                self.clips += len(v.starts)
            else:
                self.zero_clip_videos += 1
            self.videos += 1


def _read_manifest(path: Path) -> list[dict]:
    names = read_parquet_schema(path).names
    missing = {"video", "path"} - set(names)
    if missing:
        raise InputError(path, f"manifest lacks column(s) {', '.join(sorted(missing))}; re-run `videobert ingest`")
    columns = ["video", "path"] + (["duration"] if "duration" in names else [])
    # One entry per id (the first), so a duplicated row can never put a video into two shards.
    rows, seen = [], set()
    for row in read_parquet(path, columns=columns).to_pylist():
        if row["video"] not in seen:
            seen.add(row["video"])
            rows.append(row)
    return rows


@locked("work")
def extract(
    work: Path,
    backbone: str = "pixels",
    fps: float = 20.0,
    clip_frames: int = 30,
    batch_size: int = 32,
    workers: int = 2,
    shard_clips: int = 4096,
    device: str = "auto",
    overwrite: bool = False,
) -> StageReport:
    """Cut every video of the manifest into fixed-length clips and embed each clip with a backbone.

    Writes WORK/features/ (float16 shards and meta.json) and WORK/clips.parquet. Resumable: videos already in
    a committed shard are skipped. A video that cannot be decoded is recorded in WORK/errors.jsonl and the
    others go on; a video shorter than one clip yields no clip (counted in the report, not an error).

    Args:
        work: Work directory holding manifest.parquet (from `videobert ingest`).
        backbone: Clip encoder: "pixels" (weight-free colour, shape and motion descriptor; runs anywhere),
            "hf:<model dir or hub id>" (a Hugging Face video model such as VideoMAE, TimeSformer, ViViT,
            X-CLIP), "hf-image:<model dir or hub id>" (an image encoder such as CLIP, ViT, DINOv2,
            mean-pooled over frames) or "encoder:<directory>" (a clip encoder trained on this corpus by
            `videobert train-encoder`).
        fps: Frame rate clips are sampled at (paper: 20).
        clip_frames: Frames per clip; clips are non-overlapping and last clip_frames / fps seconds (paper: 30).
        batch_size: Clips per backbone call.
        workers: Decoder processes running alongside the backbone; 0 decodes in this process.
        shard_clips: Clips per feature shard; a shard is committed (and survives an interruption) once full.
        device: Where a Hugging Face backbone runs: "auto" (the GPU when there is one), "cpu", "cuda" or
            "cuda:N". The pixels backbone always runs on the CPU.
        overwrite: Delete existing features and clips.parquet first (needed to change backbone or sampling).
    """
    for name, value, low in (("clip_frames", clip_frames, 1), ("batch_size", batch_size, 1),
                             ("workers", workers, 0), ("shard_clips", shard_clips, 1)):
        if value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value}")
    if not fps > 0:
        raise ConfigError(f"fps must be positive, got {fps}")
    wd = WorkDir(work)
    manifest = _read_manifest(wd.require(wd.manifest, "ingest"))
    model = get_backbone(backbone, device)
    meta = {"backbone": model.name, "dim": model.dim, "fps": fps, "clip_frames": clip_frames,
            "size": list(model.clip_size)}

    if overwrite:
        shutil.rmtree(wd.features, ignore_errors=True)
        wd.clips.unlink(missing_ok=True)
    writer = ShardWriter(work, meta, shard_clips=shard_clips)
    errors = ErrorLog(wd.errors, stage="extract")
    errors.clear_stage()
    done = writer.done_videos()
    todo = [r for r in manifest if r["video"] not in done]
    tasks = [(i, r["path"]) for i, r in enumerate(todo)]
    procs = min(workers, len(tasks))
    decoder = ClipDecoder(fps=fps, clip_frames=clip_frames, size=model.clip_size, threads=_decoder_threads(procs))
    estimate = sum(len(clip_windows(r["duration"], clip_frames, fps)) for r in todo if r.get("duration"))

    clip_bytes = clip_frames * model.clip_size[0] * model.clip_size[1] * 3
    chunk = max(1, min(batch_size, _CHUNK_BYTES // clip_bytes))
    t0 = time.perf_counter()
    with tqdm(total=estimate or None, unit="clip", desc="extract", disable=None, smoothing=0.1) as progress:
        batcher = _Batcher(model, batch_size, writer, progress)
        current: _Video | None = None
        # closing(): the decoder processes are stopped however the loop ends (an error, Ctrl-C).
        with contextlib.closing(_messages(tasks, decoder, chunk, procs)) as messages:
            for message in messages:
                kind, index = message[0], message[1]
                if current is None or current.index != index:
                    current = batcher.begin(index, todo[index]["video"])
                if kind == "clips":
                    batcher.add(current, *message[2:])
                elif kind == "end":
                    batcher.end(current)
                else:
                    batcher.drop(current)
                    problem = message[3] if message[2] == "InputError" else f"{message[2]}: {message[3]}"
                    errors.record(todo[index]["video"], InputError(todo[index]["path"], problem))
                progress.set_postfix(videos=f"{batcher.videos}/{len(todo)}", failed=errors.count, refresh=False)
        batcher.finish()
    table = writer.close()
    seconds = time.perf_counter() - t0

    return StageReport(
        stage="extract",
        done=batcher.videos,
        skipped=len(done),
        failed=errors.count,
        outputs={"features": str(wd.features), "clips": str(wd.clips)},
        stats={
            "backbone": model.name,
            "dim": model.dim,
            "device": model.device,
            "clips extracted": batcher.clips,
            "clips in store": table.num_rows,
            "videos shorter than one clip (0 clips)": batcher.zero_clip_videos,
            "seconds": seconds,
            "clips/s": batcher.clips / seconds if seconds > 0 else 0.0,
        },
    )
