"""RealCam: a generated world shown through real footage, to check that visual words learned on drawn worlds
transfer to real pixels.

A step is a camera move (the verb) over a real scene (the noun): the frame is a window onto a source video, and the
window pans, tilts, zooms, shakes or turns while the scene plays underneath it from a random moment. The labels are
exact because the camera is ours; the pixels are real.

Nouns come from the source folder: each video is a scene, named by a single word. Well-known clips get a word for
what they show (``chaplin`` -> tramp); any other file gets the next unused word of a fixed list, in sorted order, so
the same folder always gives the same nouns. Files named by the same word (two cuts of one film, several speakers
of one data set) are one scene, and a step of it shows one of them.

Planning, narration timing, ASR noise, splits and writing are MiniCook's (`videobert.data.synth`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Iterator

import numpy as np

from videobert.data.synth import Narration, VideoPlan, World, _video_rngs, blocks
from videobert.data.video import VIDEO_EXTENSIONS, decode_frames, probe
from videobert.utils.errors import ConfigError, InputError

VERBS: tuple[str, ...] = ("pan", "tilt", "zoom", "pull", "hold", "shake", "spin", "sweep")

# (word in the file's path, the noun) for clips of the common test and demo sets; the first match wins.
KNOWN_SCENES: tuple[tuple[str, str], ...] = (
    ("bunny", "bunny"), ("bike", "bikes"), ("chaplin", "tramp"), ("carphone", "car"), ("green_screen", "man"),
    ("nasa", "rocket"), ("loaf", "bread"), ("dough", "dough"), ("sauce", "sauce"), ("grid_", "face"),
)
# Words for any other scene, handed out in order. Each is a single lowercase word.
SPARE_WORDS: tuple[str, ...] = (
    "forest", "river", "street", "garden", "beach", "city", "field", "market", "station", "harbour", "mountain",
    "park", "road", "lake", "bridge", "tower", "house", "train", "boat", "dog", "horse", "bird", "tree", "sky",
)

RECIPE_NEXT: dict[str, tuple[str, ...]] = {
    "hold": ("zoom", "pan"),
    "zoom": ("hold", "spin"),
    "pull": ("pan", "sweep"),
    "pan": ("tilt", "hold"),
    "tilt": ("pan", "shake"),
    "shake": ("hold", "pull"),
    "spin": ("pull", "hold"),
    "sweep": ("zoom", "tilt"),
}

NARRATION = Narration(
    ing={"pan": "panning", "tilt": "tilting", "zoom": "zooming", "pull": "pulling", "hold": "holding",
         "shake": "shaking", "spin": "spinning", "sweep": "sweeping"},
    how={"pan": "from side to side", "tilt": "up and down", "zoom": "in close", "pull": "back out",
         "hold": "really still", "shake": "by hand", "spin": "round slowly", "sweep": "across the corner"},
    phrases=(
        "watch me {verb} across the {noun}",
        "now we {verb} the {noun} {how}",
        "let's {verb} over the {noun}",
        "here i {verb} the camera on the {noun}",
        "try to {verb} the {noun} {how}",
        "okay i'm {ing} on the {noun}",
        "and then {verb} the {noun}",
        "see how i {verb} the {noun}",
    ),
    follow_ups=("keep {ing} a bit", "that's how you {verb} it", "always {verb} {how}", "nice and smooth"),
    intros=("hi everyone today some camera moves", "welcome back to the camera channel",
            "let's practise a few shots"),
    outros=("that's all for today", "thanks for watching", "go out and film something"),
    fillers=(
        "this lens is a bit soft", "the light was great that day", "i shot this on an old camera",
        "you don't need a tripod", "mind the horizon", "ignore the noise in the corner",
        "questions go in the comments", "this took a few takes",
    ),
    misheard={"pan": "pen", "tilt": "till", "zoom": "room", "pull": "pool", "hold": "old", "shake": "shape",
              "spin": "pin", "sweep": "sweet", "the": "a", "bikes": "bike", "car": "cart", "face": "base",
              "man": "men", "bread": "bed"},
)

# Source frames kept per video: the first CACHE_SECONDS at CACHE_FPS, the short side CACHE_SCALE times the output's
# long side, so a window zoomed in two-fold still has a source pixel for every output pixel.
CACHE_SECONDS, CACHE_FPS, CACHE_SCALE = 20.0, 10, 2.0
_IDLE = 16  # grey level of the frames between steps: the camera is off


@dataclass(frozen=True)
class Scene:
    """A noun of a RealCam corpus: its word and the source files (relative to the source folder) showing it."""

    noun: str
    files: tuple[str, ...]


def source_files(folder: Path) -> dict[str, int]:
    """The videos under ``folder`` (any depth), relative posix path -> size in bytes, in sorted order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"source folder {folder} does not exist or is not a directory")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    if not files:
        raise ConfigError(f"source folder {folder} holds no video files ({' '.join(sorted(VIDEO_EXTENSIONS))})")
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in files}


def scenes(names: list[str]) -> tuple[Scene, ...]:
    """Group source files (sorted relative paths) into named scenes, in order of each scene's first file."""
    by_noun: dict[str, list[str]] = {}
    spare = iter(SPARE_WORDS)
    for name in names:
        lower = name.lower()
        noun = next((word for key, word in KNOWN_SCENES if key in lower), None)
        if noun is None:
            noun = next((w for w in spare if w not in by_noun), None)
            if noun is None:
                raise ConfigError(f"more source scenes than RealCam has words for ({len(SPARE_WORDS)} besides the "
                                  "known clips); use a folder with fewer videos")
        by_noun.setdefault(noun, []).append(name)
    return tuple(Scene(noun, tuple(files)) for noun, files in by_noun.items())


class Footage:
    """The source videos' frames, decoded once each on first use: (N, H, W, 3) uint8 at `CACHE_FPS`."""

    def __init__(self, folder: Path, height: int, width: int):
        self.folder, self.short_side = folder, int(round(CACHE_SCALE * max(height, width)))
        self.frames = cache(self._decode)

    def _decode(self, name: str) -> np.ndarray:
        path = self.folder / name
        info = probe(path, verify=False)
        scale = self.short_side / min(info.width, info.height)
        size = (max(2, round(info.height * scale)), max(2, round(info.width * scale)))
        frames = [f.array for f in decode_frames(path, fps=CACHE_FPS, size=size, end=CACHE_SECONDS, threads=1)]
        if not frames:
            raise InputError(path, "no frame decodes in the first seconds")
        return np.stack(frames)


def _readable(folder: Path, names: list[str]) -> tuple[list[str], list[str]]:
    """(readable, unreadable) among ``names``: a file is readable when its header and first frame decode."""
    good, bad = [], []
    for name in names:
        try:
            probe(folder / name, verify=False)
            good.append(name)
        except InputError as exc:
            bad.append(f"{name}: {exc}")
    return good, bad


# ----------------------------------------------------------------------------------------------- camera

@dataclass(frozen=True)
class CameraPath:
    """Where the camera looks on each frame of a step, in source pixels: window centre (cx, cy), source pixels per
    output pixel (scale) and rotation (angle, radians); each (T,)."""

    cx: np.ndarray
    cy: np.ndarray
    scale: np.ndarray
    angle: np.ndarray


def camera_path(verb: str, n_frames: int, fps: int, source: tuple[int, int], out: tuple[int, int],
                rng: np.random.Generator) -> CameraPath:
    """The camera's move ``verb`` over ``n_frames`` frames, for a source frame of ``source`` = (height, width)
    seen at ``out`` = (height, width). The window stays inside the source frame throughout."""
    if verb not in VERBS:
        raise ConfigError(f"unknown verb {verb!r}; RealCam verbs are {', '.join(VERBS)}")
    (sh, sw), (oh, ow) = source, out
    t = np.arange(n_frames, dtype=np.float64) / fps
    p = t / max(t[-1], 1e-6)
    full = min(sw / ow, sh / oh)  # the largest window of the output's shape
    angle = np.zeros(n_frames)
    jitter = np.zeros((2, n_frames))
    if verb == "zoom":
        scale = full / rng.uniform(1.0, 1.15) * rng.uniform(0.45, 0.55) ** p
    elif verb == "pull":
        scale = full / rng.uniform(1.0, 1.15) * rng.uniform(0.45, 0.55) ** (1 - p)
    elif verb == "spin":
        # Small enough that the window, turned any way, stays inside the frame.
        scale = np.full(n_frames, min(sw, sh) / np.hypot(ow, oh) * rng.uniform(0.85, 0.95))
        angle = rng.uniform(0, 2 * np.pi) + rng.choice((-1.0, 1.0)) * rng.uniform(0.5, 0.8) * t
    else:
        scale = np.full(n_frames, full / rng.uniform(1.5, 1.9))
        if verb == "shake":  # hand-held: a jolt every frame, a few percent of the window
            jitter = rng.normal(0, 0.03 * ow * scale[0], (2, n_frames))
            angle = rng.normal(0, 0.01, n_frames)
    # Half the extent of the window along x and y, turned as far as it turns in the step, and so how far its
    # centre may move: a spinning camera keeps its place.
    cos, sin = np.abs(np.cos(angle)), np.abs(np.sin(angle))
    half_x = scale * (ow * cos + oh * sin).max() / 2
    half_y = scale * (ow * sin + oh * cos).max() / 2
    lo_x, hi_x = half_x, np.maximum(sw - half_x, half_x)
    lo_y, hi_y = half_y, np.maximum(sh - half_y, half_y)
    fx, fy = rng.uniform(0.2, 0.8, 2)  # where in the room left by the window it looks, as a fraction
    if verb in ("pan", "sweep"):
        fx = 0.05 + 0.9 * (p if rng.random() < 0.5 else 1 - p)
    if verb in ("tilt", "sweep"):
        fy = 0.05 + 0.9 * (p if rng.random() < 0.5 else 1 - p)
    cx = np.clip(lo_x + fx * (hi_x - lo_x) + jitter[0], lo_x, hi_x)
    cy = np.clip(lo_y + fy * (hi_y - lo_y) + jitter[1], lo_y, hi_y)
    return CameraPath(cx, cy, scale, angle)


def film(frames: np.ndarray, at: np.ndarray, path: CameraPath, height: int, width: int) -> np.ndarray:
    """Output frames (T, height, width, 3) uint8: frame k shows source frame ``at[k]`` of ``frames`` (N, H, W, 3)
    through the camera ``path``, resampled bilinearly (edges clamped)."""
    sh, sw = frames.shape[1:3]
    u = (np.arange(width) - width / 2 + 0.5)[None, None, :]
    v = (np.arange(height) - height / 2 + 0.5)[None, :, None]
    cos, sin = (f(path.angle)[:, None, None] for f in (np.cos, np.sin))
    s = path.scale[:, None, None]
    # Output pixel centres into source pixel indices (a source pixel's centre is at index + 0.5).
    x = np.clip(path.cx[:, None, None] + s * (u * cos - v * sin) - 0.5, 0, sw - 1)
    y = np.clip(path.cy[:, None, None] + s * (u * sin + v * cos) - 0.5, 0, sh - 1)
    x0, y0 = np.minimum(x.astype(np.intp), sw - 2), np.minimum(y.astype(np.intp), sh - 2)
    wx, wy = (x - x0).astype(np.float32)[..., None], (y - y0).astype(np.float32)[..., None]
    k = np.asarray(at)[:, None, None]
    top = frames[k, y0, x0] * (1 - wx) + frames[k, y0, x0 + 1] * wx
    bottom = frames[k, y0 + 1, x0] * (1 - wx) + frames[k, y0 + 1, x0 + 1] * wx
    return np.clip(top * (1 - wy) + bottom * wy + 0.5, 0, 255).astype(np.uint8)


def source_frames(n_source: int, n_frames: int, fps: int, rng: np.random.Generator) -> np.ndarray:
    """Which cached source frame each of ``n_frames`` output frames shows: the scene plays on from a random moment,
    and a source shorter than the step plays back and forth instead of jumping."""
    length = n_frames / fps * CACHE_FPS
    start = rng.uniform(0, max(n_source - length, 0))
    k = np.floor(start + np.arange(n_frames) * CACHE_FPS / fps).astype(int)
    if n_source == 1:
        return np.zeros(n_frames, int)
    period = 2 * (n_source - 1)
    k = k % period
    return np.where(k < n_source, k, period - k)


def render_step(verb: str, frames: np.ndarray, n_frames: int, height: int, width: int,
                rng: np.random.Generator, fps: int = 20) -> np.ndarray:
    """One step: the camera move ``verb`` over source ``frames`` (N, H, W, 3) uint8 as (n_frames, height, width, 3)
    uint8; start time and the move's parameters are drawn from ``rng``."""
    at = source_frames(len(frames), n_frames, fps, rng)
    return film(frames, at, camera_path(verb, n_frames, fps, frames.shape[1:3], (height, width), rng), height, width)


# ------------------------------------------------------------------------------------------------ world

def _footage_world(folder: Path, height: int, width: int) -> World:
    """RealCam over the videos in ``folder``: its nouns are the folder's scenes."""
    files = source_files(folder)
    readable, unreadable = _readable(folder, list(files))
    if len(readable) < 2:
        skipped = f"; unreadable: {'; '.join(unreadable)}" if unreadable else ""
        raise ConfigError(f"source folder {folder} needs at least 2 readable videos, found {len(readable)}{skipped}")
    found = scenes(readable)
    footage = Footage(folder, height, width)
    files_of = {scene.noun: scene.files for scene in found}

    def render(plan: VideoPlan, seed: int, index: int, out_h: int, out_w: int) -> Iterator[np.ndarray]:
        _, rng = _video_rngs(seed, index)
        for start, end, step in blocks(plan):
            if step is None:
                yield np.full((end - start, out_h, out_w, 3), _IDLE, np.uint8)
            else:
                source = footage.frames(str(rng.choice(files_of[step.noun])))
                yield render_step(step.verb, source, end - start, out_h, out_w, rng, plan.fps)

    return dataclasses.replace(REALCAM, nouns=tuple(files_of), render=render, sources=files, scenes=files_of)


def _no_footage(plan: VideoPlan, seed: int, index: int, height: int, width: int) -> Iterator[np.ndarray]:
    raise ConfigError("RealCam renders real footage: build the world from a source folder first")


REALCAM = World("realcam", "RealCam", 1, VERBS, (), {}, RECIPE_NEXT, NARRATION, _no_footage,
                from_source=_footage_world)
