"""Video decoding on PyAV: probe a file, decode it at a target frame rate and size, cut fixed-length clips.

Time model (the contract every later stage relies on):

* Time 0 is the video stream's start (``stream.start_time``, else the first frame's timestamp).
* A source frame is on screen from its timestamp until the next frame's timestamp.
* Resampling to ``fps`` produces output frame ``j`` at time ``t_j = j / fps``: the source frame on screen at
  ``t_j`` (the latest one whose timestamp is ``<= t_j``). Timestamps are compared as exact fractions, so
  30 fps -> 20 fps picks source frames 0, 1, 3, 4, 6, 7, ... with no rounding drift.
* Output frames exist while ``t_j`` is before the end of the last source frame.
* Clip ``k`` holds output frames ``[k*T, (k+1)*T)`` and spans ``[k*T/fps, (k+1)*T/fps)`` seconds exactly;
  a trailing partial clip is dropped (as in the paper: 30 frames at 20 fps = 1.5 s, non-overlapping).

Scaling and pixel-format conversion happen in FFmpeg's swscale (one ``VideoReformatter`` per video), only
for the frames that are kept; decoding uses FFmpeg's own frame/slice threads (``threads=0``: all cores but
one) and runs in a read-ahead thread, so that it overlaps with the conversion. Rotation metadata (phone
videos) is applied so frames come out upright, and ``size`` is the size of the upright frame.
"""
from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from videobert.utils.errors import InputError

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mkv .webm .avi .mov .mpg .mpeg .gif .flv .wmv .ts .3gp .ogv .mts .m2ts".split()
)


@dataclass(frozen=True)
class VideoInfo:
    """What a probe learns about a video file. ``width``/``height`` are of the upright (displayed) frame."""

    path: str
    duration: float
    fps: float
    width: int
    height: int
    num_frames: int
    rotation: int
    codec: str
    container: str
    num_video_streams: int
    num_audio_streams: int
    num_subtitle_streams: int
    verified: bool = field(default=False)


@dataclass(frozen=True)
class DecodedFrame:
    index: int  # output frame index at the target rate
    time: float  # t_j, seconds from the stream start
    source_time: float  # timestamp of the source frame shown at t_j
    array: np.ndarray  # (H, W, 3) uint8 RGB, upright


@dataclass(frozen=True)
class Clip:
    video: str
    index: int
    start: float
    end: float
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB


def _fraction(x: float | Fraction) -> Fraction:
    return x if isinstance(x, Fraction) else Fraction(x).limit_denominator(1_000_000)


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    try:
        return av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        raise InputError(path, f"corrupt or unreadable video container ({exc.strerror or exc})") from exc


def _video_stream(container: av.container.InputContainer, path: str | os.PathLike, stream_index: int = 0):
    videos = container.streams.video
    if not videos:
        kinds = ", ".join(f"{s.type} {s.codec_context.name}" for s in container.streams) or "none"
        raise InputError(path, f"no video stream (streams found: {kinds})")
    if stream_index >= len(videos):
        raise InputError(path, f"video stream {stream_index} requested, file has {len(videos)}")
    return videos[stream_index]


def _rotation(stream, first_frame: av.VideoFrame | None) -> int:
    """Counter-clockwise degrees (0/90/180/270) that make a decoded frame upright."""
    angle = getattr(first_frame, "rotation", 0) if first_frame is not None else 0
    return int(round((angle or 0) / 90.0)) % 4 * 90


def _stream_fps(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else Fraction(25)


def _header_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def probe(path: str | os.PathLike, verify: bool = True, stream_index: int = 0) -> VideoInfo:
    """Read a video's metadata. With ``verify`` every frame is decoded (no pixel conversion), which gives
    the exact frame count and duration and catches truncated or corrupt files before a long job meets
    them. Raises :class:`InputError` naming the file and the problem."""
    with _open(path) as container:
        stream = _video_stream(container, path, stream_index)
        fps = _stream_fps(stream)
        declared = int(stream.frames or 0)
        tb = stream.time_base
        first = None
        count = 0
        last_t = None
        origin = None
        if verify:
            stream.thread_type = "AUTO"
            try:
                for frame in container.decode(stream):
                    if first is None:
                        first = frame
                        origin = stream.start_time if stream.start_time is not None else frame.pts
                    count += 1
                    if frame.pts is not None and tb is not None:
                        t = (frame.pts - (origin or 0)) * tb
                        last_t = t if last_t is None else max(last_t, t)
            except av.error.FFmpegError as exc:
                raise InputError(path, f"corrupt or truncated video: decoding failed after {count} frames ({exc})") from exc
            if count == 0:
                raise InputError(path, "zero-length video: the video stream has no decodable frame")
            if declared and count < declared * 0.9 and declared - count > 2:
                raise InputError(path, f"truncated video: header declares {declared} frames, only {count} decode")
            duration = float(last_t + 1 / fps) if last_t is not None else float(count / fps)
            # Containers without a frame count (Matroska, WebM) still record a duration: a decoded span far
            # short of it means the file was cut. The slack covers audio tracks that outlast the video.
            header = _header_duration(container, stream)
            if not declared and header and duration < header - max(1.0, 0.1 * header):
                raise InputError(path, f"truncated video: header says {header:.2f}s, frames decode only up to {duration:.2f}s")
        else:
            duration = _header_duration(container, stream) or 0.0
            count = declared or int(round(duration * fps))
            if duration <= 0 and count == 0:
                raise InputError(path, "zero-length video: no duration and no frames in the header")
            try:
                first = next(container.decode(stream))
            except (StopIteration, av.error.FFmpegError) as exc:
                raise InputError(path, f"corrupt video: the first frame does not decode ({exc})") from exc
        rotation = _rotation(stream, first)
        w, h = stream.codec_context.width, stream.codec_context.height
        if rotation in (90, 270):
            w, h = h, w
        return VideoInfo(
            path=str(path),
            duration=duration,
            fps=float(fps),
            width=int(w),
            height=int(h),
            num_frames=int(count),
            rotation=rotation,
            codec=stream.codec_context.name,
            container=container.format.name,
            num_video_streams=len(container.streams.video),
            num_audio_streams=len(container.streams.audio),
            num_subtitle_streams=len(container.streams.subtitles),
            verified=verify,
        )


def _to_array(frame: av.VideoFrame, size: tuple[int, int] | None, rotation: int,
              reformatter: VideoReformatter) -> np.ndarray:
    """Convert (and scale, in swscale) one frame to upright RGB of ``size`` = (height, width).

    ``reformatter`` is reused across the frames of a video: it keeps its swscale context, which
    ``frame.to_ndarray(width=..., height=...)`` would rebuild (filter tables and all) for every frame.
    Area averaging is the right filter for the large downscales clips need (bilinear aliases) and is
    also the faster one here: 0.106 vs 0.121 ms a frame from 320x240 to 32x32."""
    if size is None:
        arr = reformatter.reformat(frame, format="rgb24").to_ndarray()
    else:
        out_h, out_w = size
        # Scale the coded frame to the size it must have *before* rotation.
        cw, ch = (out_h, out_w) if rotation in (90, 270) else (out_w, out_h)
        arr = reformatter.reformat(frame, width=cw, height=ch, format="rgb24", interpolation="AREA").to_ndarray()
    if rotation:
        arr = np.ascontiguousarray(np.rot90(arr, k=rotation // 90))
    return arr


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _decode_threads() -> int:
    """FFmpeg decoding threads when the caller leaves it to us: every core but one, which is left to the
    thread that converts and scales the decoded frames (see :func:`_read_ahead`)."""
    return max(1, available_cores() - 1)


def _read_ahead(container: av.container.InputContainer, stream, depth: int = 8) -> Iterator[av.VideoFrame]:
    """``container.decode(stream)`` run in a background thread up to ``depth`` frames ahead of the consumer.

    Converting a frame (swscale) and the time-model bookkeeping would otherwise stall FFmpeg's frame
    threads, which only decode while they are fed packets; PyAV releases the GIL in both decoding and
    scaling, so the two overlap. Decoding errors are raised in the consumer; closing this generator stops
    the thread before it returns, so the caller may close the container afterwards."""
    frames: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for frame in container.decode(stream):
                frames.put(frame)
                if stop.is_set():
                    return
            frames.put(done)
        except BaseException as exc:  # handed to the consumer, which raises it
            frames.put(exc)

    thread = threading.Thread(target=produce, name="videobert-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = frames.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # drain, so that a put blocked on a full queue returns and sees ``stop``
            try:
                frames.get(timeout=0.01)
            except queue.Empty:
                pass
        thread.join()


def decode_frames(
    path: str | os.PathLike,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    start: float = 0.0,
    end: float | None = None,
    stream_index: int = 0,
    threads: int = 0,
) -> Iterator[DecodedFrame]:
    """Decode ``path`` resampled to ``fps`` (None: the stream's own rate) between ``start`` and ``end``
    seconds. Yields upright RGB frames of ``size`` = (height, width) (None: native size).

    Output frame ``j`` sits at ``t_j = j / fps`` on the absolute time line, so decoding a window gives the
    same frames, with the same indices, as decoding the whole file and slicing it."""
    container = _open(path)
    try:
        stream = _video_stream(container, path, stream_index)
        stream.thread_type = "AUTO"
        stream.thread_count = threads or _decode_threads()
        tb = stream.time_base
        src_fps = _stream_fps(stream)
        rate = _fraction(fps) if fps else src_fps
        start_f, end_f = _fraction(start), (_fraction(end) if end is not None else None)
        origin = stream.start_time
        if start > 0:
            container.seek(int((start_f + (origin or 0) * tb) / tb), stream=stream, backward=True, any_frame=False)
        j = max(0, int(-(-start_f * rate // 1)))  # first output index with t_j >= start
        j_end = int(-(-end_f * rate // 1)) if end_f is not None else None  # first index with t_j >= end
        # Times in the per-frame loop are integers counting 1/den s, with den a common multiple of the
        # denominators of the output period, the time base and the source period: comparisons stay exact
        # but cost nanoseconds, where Fraction arithmetic (~3 us an operation) took a tenth of the decode.
        tb = tb or 1 / src_fps
        den = math.lcm(rate.numerator, tb.denominator, src_fps.numerator)
        per_out = rate.denominator * (den // rate.numerator)  # t_j = j * per_out
        per_tick = tb.numerator * (den // tb.denominator)  # t_src = (pts - origin) * per_tick
        per_src = src_fps.denominator * (den // src_fps.numerator)  # one source frame's duration
        prev = prev_t = None
        prev_arr = None
        rotation = None
        reformatter = VideoReformatter()
        n_src = 0

        def emit_until(limit: int):
            """Yield output frames with t_j < limit (and t_j < end) from ``prev``."""
            nonlocal j, prev_arr
            stop = -(-limit // per_out)  # first j with t_j >= limit
            if j_end is not None:
                stop = min(stop, j_end)
            while j < stop:
                if prev_arr is None:
                    prev_arr = _to_array(prev, size, rotation, reformatter)
                yield DecodedFrame(j, j * per_out / den, prev_t / den, prev_arr)
                j += 1

        try:
            with contextlib.closing(_read_ahead(container, stream)) as decoded:
                for frame in decoded:
                    if origin is None:
                        origin = frame.pts if frame.pts is not None else 0
                    if rotation is None:
                        rotation = _rotation(stream, frame)
                    t_src = n_src * per_src if frame.pts is None else (frame.pts - origin) * per_tick
                    n_src += 1
                    if prev is not None and t_src <= prev_t:
                        continue  # duplicate or out-of-order timestamp: keep the frame already on screen
                    if prev is not None:
                        yield from emit_until(t_src)
                    if j_end is not None and j >= j_end:
                        return
                    prev, prev_t, prev_arr = frame, t_src, None
        except av.error.FFmpegError as exc:
            at = prev_t / den if prev_t is not None else 0.0
            raise InputError(path, f"corrupt or truncated video: decoding failed at t={at:.2f}s ({exc})") from exc
        if prev is None:
            raise InputError(path, "zero-length video: the video stream has no decodable frame")
        yield from emit_until(prev_t + per_src)  # the last frame stays on screen for one source period
    finally:
        container.close()


def clip_windows(duration: float, clip_frames: int = 30, fps: float = 20.0, drop_last: bool = True) -> list[tuple[float, float]]:
    """(start, end) seconds of the non-overlapping clips of a video of ``duration`` seconds."""
    rate = _fraction(fps)
    n_frames = int(_fraction(duration) * rate)  # frames t_j = j/fps with t_j < duration
    if _fraction(duration) * rate > n_frames:
        n_frames += 1
    n = n_frames // clip_frames if drop_last else -(-n_frames // clip_frames)
    return [(float(Fraction(k * clip_frames) / rate), float(Fraction((k + 1) * clip_frames) / rate)) for k in range(n)]


@dataclass(frozen=True)
class ClipDecoder:
    """Cuts a video into fixed-length clips of ``clip_frames`` frames at ``fps``, each ``size`` (h, w).

    The defaults are the paper's: 30 frames at 20 fps (1.5 s), non-overlapping."""

    fps: float = 20.0
    clip_frames: int = 30
    size: tuple[int, int] | None = (112, 112)
    threads: int = 0

    def __post_init__(self):
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.clip_frames < 1:
            raise ValueError(f"clip_frames must be >= 1, got {self.clip_frames}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ValueError(f"size must be (height, width) with positive entries, got {self.size}")

    @property
    def clip_seconds(self) -> float:
        return self.clip_frames / self.fps

    def clips(self, path: str | os.PathLike, start_clip: int = 0, video_id: str | None = None) -> Iterator[Clip]:
        """Yield clips ``start_clip, start_clip+1, ...``; starting later seeks instead of decoding the
        skipped part (the frames are identical either way)."""
        rate = _fraction(self.fps)
        start = Fraction(start_clip * self.clip_frames) / rate
        buf: list[np.ndarray] = []
        k = start_clip
        vid = video_id if video_id is not None else str(path)
        for fr in decode_frames(path, fps=self.fps, size=self.size, start=float(start), threads=self.threads):
            buf.append(fr.array)
            if len(buf) == self.clip_frames:
                # (T, H, W, 3): stacking copies, so a frame repeated by upsampling is not aliased.
                yield Clip(vid, k, float(Fraction(k * self.clip_frames) / rate),
                           float(Fraction((k + 1) * self.clip_frames) / rate), np.stack(buf))
                buf = []
                k += 1
