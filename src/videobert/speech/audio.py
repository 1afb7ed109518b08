"""A video's audio track as 16 kHz mono samples, the rate both speech engines expect, and the windows long
audio is recognised in."""
from __future__ import annotations

import os

import av
import numpy as np

from videobert.utils.errors import InputError

SAMPLE_RATE = 16_000
# Below this RMS (about -70 dBFS) a track carries no speech: digital silence or a muted microphone's noise floor.
SILENCE_RMS = 3e-4


def decode_audio(path: str | os.PathLike, stream_index: int = 0) -> np.ndarray:
    """The first audio stream of ``path`` as float32 samples in [-1, 1] at 16 kHz, mono (FFmpeg's resampler
    mixes the channels down). Raises :class:`InputError` when the file has no audio stream or it cannot be
    decoded."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise InputError(path, f"cannot open ({exc})") from None
    with container:
        if len(container.streams.audio) <= stream_index:
            raise InputError(path, "no audio stream: nothing to transcribe")
        stream = container.streams.audio[stream_index]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks = []
        try:
            for frame in container.decode(stream):
                chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]  # flush the resampler
        except av.FFmpegError as exc:
            raise InputError(path, f"audio stream cannot be decoded ({exc})") from None
    if not chunks:
        raise InputError(path, "audio stream holds no samples")
    return np.concatenate(chunks).astype(np.float32, copy=False)


def has_audio(path: str | os.PathLike) -> bool:
    """Whether the file has an audio stream (False also for a file FFmpeg cannot open: decoding reports that)."""
    try:
        with av.open(str(path)) as container:
            return len(container.streams.audio) > 0
    except (av.FFmpegError, OSError):
        return False


def is_silent(samples: np.ndarray) -> bool:
    """Whether a track is too quiet to hold speech (RMS below :data:`SILENCE_RMS`)."""
    return samples.size == 0 or float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) < SILENCE_RMS


def audio_windows(num_samples: int, window_s: float, overlap_s: float) -> list[tuple[int, int, float, float]]:
    """Windows ``(first sample, end sample, keep from s, keep until s)`` covering ``num_samples`` at 16 kHz.

    Consecutive windows share ``overlap_s`` seconds so that no word is only ever seen cut in half; a word
    recognised in two windows is kept by the one whose keep-span holds its midpoint: the spans split each
    overlap in its middle and together tile the whole track. One window when the track fits in it."""
    total = num_samples / SAMPLE_RATE
    if window_s <= 0 or total <= window_s:
        return [(0, num_samples, 0.0, total)]
    if not 0 <= overlap_s < window_s:
        raise ValueError(f"overlap ({overlap_s} s) must be >= 0 and shorter than the window ({window_s} s)")
    hop = window_s - overlap_s
    starts = [0.0]
    while starts[-1] + window_s < total:
        starts.append(starts[-1] + hop)
    out = []
    for k, t0 in enumerate(starts):
        t1 = min(t0 + window_s, total)
        keep_from = 0.0 if k == 0 else t0 + overlap_s / 2
        keep_until = total if k == len(starts) - 1 else starts[k + 1] + overlap_s / 2
        out.append((round(t0 * SAMPLE_RATE), min(num_samples, round(t1 * SAMPLE_RATE)), keep_from, keep_until))
    return out
