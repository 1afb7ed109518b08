"""ClipDecoder throughput against raw PyAV decoding of the same files, in one run.

    .venv/bin/python benchmarks/decode.py                        # 20 generated 10 s videos, 320x240 H.264
    .venv/bin/python benchmarks/decode.py --corpus DIR           # the videos under DIR instead
    .venv/bin/python benchmarks/decode.py --size 112 --size 224  # other clip sizes (default: 32, 112)

* raw: ``container.decode(stream)`` of every frame with FFmpeg's frame/slice threads (``thread_type =
  "AUTO"``) and no pixel conversion: the floor that any decoder of these files pays.
* ClipDecoder: ``ClipDecoder(fps=20, clip_frames=30, size=(s, s)).clips(path)``, i.e. decode, pick the
  frames on screen at 20 fps, scale and convert them to RGB in swscale, stack them into (30, s, s, 3) clips.

Both decode the same files one after the other in this process, file by file and alternating (raw, then
ClipDecoder, on each file) so page cache and clock changes hit both alike; each file's best of ``--repeat``
is kept. Clips/s for raw decoding counts the clips ClipDecoder cuts from the same files, so the ratio is
raw time / ClipDecoder time. Target: ClipDecoder >= 0.8 x raw.

The generated corpus: videos at 20, 25 and 30 fps in turn, textured background and a dozen coloured shapes
moving and turning, light sensor noise, H.264 (libx264, crf 23, yuv420p, default GOP) -- so the codec
has motion to predict and residuals to code, as in real footage.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from videobert.data.video import VIDEO_EXTENSIONS, ClipDecoder

FPS, CLIP_FRAMES = 20.0, 30


def make_video(path: Path, seconds: float, fps: int, seed: int, width: int = 320, height: int = 240) -> Path:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    background = (90 + 40 * np.sin(x / 23.0 + rng.uniform(0, 6)) * np.cos(y / 31.0))[..., None] + rng.uniform(-20, 20, 3)
    background = np.clip(background, 0, 255).astype(np.uint8)  # (H, W, 3)
    n = 12
    pos = rng.uniform((0, 0), (width, height), (n, 2))
    vel = rng.uniform(-4, 4, (n, 2))
    half = rng.integers(4, 20, n)
    colour = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    # Each shape's mask in its own bounding box: a disc or a 2:1 bar.
    masks = [((np.mgrid[-h:h, -h:h] ** 2).sum(axis=0) < h * h) if k % 2 else (np.abs(np.mgrid[-h:h, -h:h][0]) < h / 2)
             for k, h in enumerate(half)]
    noise = rng.integers(-3, 4, (8, height, width, 3), dtype=np.int16)  # sensor noise, cycled
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for t in range(int(seconds * fps)):
            frame = background.copy()
            for k in range(n):
                h = half[k]
                cx, cy = ((pos[k] + t * vel[k]) % (width - 2 * h, height - 2 * h)).astype(int)
                box = frame[cy : cy + 2 * h, cx : cx + 2 * h]
                box[masks[k]] = colour[k]
            rgb = np.clip(frame + noise[t % len(noise)], 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_corpus(directory: Path, videos: int = 20, seconds: float = 10.0) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return [make_video(directory / f"bench_{i:03d}.mp4", seconds, (20, 25, 30)[i % 3], seed=i) for i in range(videos)]


def find_videos(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


def raw_decode(path: Path) -> int:
    """Decode every frame of the first video stream, threaded, without converting any. -> frames."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def clip_decode(path: Path, size: int) -> int:
    """-> clips."""
    return sum(1 for _ in ClipDecoder(fps=FPS, clip_frames=CLIP_FRAMES, size=(size, size)).clips(path))


def timed(fn, *args) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{platform.system()} {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, PyAV {av.__version__}"


def corpus_from_args(args: argparse.Namespace, tmp: str) -> tuple[list[Path], str]:
    if args.corpus:
        return find_videos(Path(args.corpus)), str(args.corpus)
    t0 = time.perf_counter()
    paths = make_corpus(Path(tmp), args.videos, args.seconds)
    print(f"generated {len(paths)} videos of {args.seconds:g} s, 320x240 H.264, in {time.perf_counter() - t0:.1f} s")
    return paths, f"{len(paths)} x {args.seconds:g} s 320x240 H.264 (generated)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", help="folder of videos (default: generate a corpus in a temp dir)")
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, action="append", help="clip side in px (repeatable; default 32 and 112)")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    sizes = args.size or [32, 112]

    with tempfile.TemporaryDirectory(prefix="videobert-bench-") as tmp:
        paths, corpus = corpus_from_args(args, tmp)
        raw_s = {p: float("inf") for p in paths}
        clip_s = {(p, s): float("inf") for p in paths for s in sizes}
        clips = {s: 0 for s in sizes}
        frames = 0
        for rep in range(args.repeat):
            for p in paths:
                seconds, n = timed(raw_decode, p)
                raw_s[p] = min(raw_s[p], seconds)
                frames += n if rep == 0 else 0
                for s in sizes:
                    seconds, n = timed(clip_decode, p, s)
                    clip_s[p, s] = min(clip_s[p, s], seconds)
                    clips[s] += n if rep == 0 else 0

    raw_total = sum(raw_s.values())
    print(f"\nraw decode: {frames} frames in {raw_total:.2f} s = {frames / raw_total:.0f} frames/s\n")
    print("| date | machine | corpus | clip size | raw decode clips/s | ClipDecoder clips/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for s in sizes:
        total = sum(clip_s[p, s] for p in paths)
        print(f"| {datetime.date.today()} | {machine()} | {corpus} | {s}x{s} | {clips[s] / raw_total:.1f} "
              f"| {clips[s] / total:.1f} | {raw_total / total:.2f} |")
    print(f"\ncommand: python benchmarks/decode.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
