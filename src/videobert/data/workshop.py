"""Workshop: a second generated world, unlike MiniCook in every visual respect, for checking that a default holds.

MiniCook's look is constant: grey counters, still camera, even light, nothing in view but the step. Defaults tuned
on it alone may rely on that. Workshop keeps the contract (8 verbs, each a distinct motion; 10 nouns, each a
distinct shape and colour; ASR-style narration; exact annotations) and randomises everything else:

- each video has its own background: any colour, saturated included, with a texture (stripes, checks, noise,
  gradient or blobs) at its own scale;
- the light drifts: overall brightness and colour balance change slowly within a video;
- the camera shakes a little every frame and slowly zooms and pans;
- 1-3 distractor objects of random shape and colour drift about and are never named;
- the object's size and the speed of its motion vary from step to step.

Planning, narration timing, ASR noise, splits and writing are MiniCook's (`videobert.data.synth`); this module
brings the words, the shapes and the renderer.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from videobert.data.realcam import REALCAM
from videobert.data.synth import (
    MINICOOK,
    Narration,
    VideoPlan,
    World,
    _Canvas,
    _Noun,
    _to_uint8,
    _video_rngs,
    blocks,
)

VERBS: tuple[str, ...] = ("push", "lift", "spin", "shake", "drop", "throw", "squash", "flip")
NOUNS: tuple[str, ...] = ("ball", "box", "cup", "key", "book", "ring", "star", "bottle", "brush", "shoe")

# (main, accent) RGB in [0, 1]; the main colour covers most of the object. Backgrounds may take any colour, so
# shape, not colour alone, has to tell the nouns apart.
NOUN_COLOURS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "ball": ((0.90, 0.10, 0.10), (1.00, 1.00, 1.00)),
    "box": ((0.80, 0.55, 0.25), (0.95, 0.90, 0.70)),
    "cup": ((0.15, 0.35, 0.90), (0.90, 0.95, 1.00)),
    "key": ((0.95, 0.80, 0.15), (0.55, 0.45, 0.05)),
    "book": ((0.10, 0.60, 0.25), (0.97, 0.97, 0.90)),
    "ring": ((0.78, 0.82, 0.88), (0.85, 0.05, 0.30)),
    "star": ((0.90, 0.20, 0.75), (1.00, 0.85, 0.95)),
    "bottle": ((0.05, 0.55, 0.55), (0.95, 0.92, 0.80)),
    "brush": ((0.50, 0.25, 0.85), (0.98, 0.98, 0.98)),
    "shoe": ((0.12, 0.10, 0.10), (0.96, 0.96, 0.96)),
}

RECIPE_NEXT: dict[str, tuple[str, ...]] = {
    "push": ("lift", "spin"),
    "lift": ("shake", "drop"),
    "spin": ("flip", "push"),
    "shake": ("drop", "throw"),
    "drop": ("squash", "lift"),
    "throw": ("push", "spin"),
    "squash": ("flip", "throw"),
    "flip": ("lift", "shake"),
}

NARRATION = Narration(
    ing={"push": "pushing", "lift": "lifting", "spin": "spinning", "shake": "shaking", "drop": "dropping",
         "throw": "throwing", "squash": "squashing", "flip": "flipping"},
    how={"push": "along the bench", "lift": "up high", "spin": "round and round", "shake": "really hard",
         "drop": "onto the floor", "throw": "over to the side", "squash": "down flat", "flip": "right over"},
    phrases=(
        "first i {verb} the {noun} {how}",
        "watch me {verb} it",
        "let's {verb} the {noun}",
        "right so now you {verb} the {noun}",
        "try to {verb} the {noun} {how}",
        "simply {verb} the {noun} like so",
        "here i am {ing} the {noun}",
        "after that {verb} the {noun}",
    ),
    follow_ups=("keep {ing} it", "that's how you {verb} it", "always {verb} it {how}", "not too hard"),
    intros=("hey folks welcome to the workshop", "hello again and welcome to the shed",
            "today a quick demo of some basic moves"),
    outros=("that's all for today", "see you in the next one", "hit like if this helped"),
    fillers=(
        "mind your fingers", "this is an old trick", "the light in here is terrible", "i bought this at a flea market",
        "my neighbour showed me this", "you don't need special tools", "ignore the mess on the bench",
        "questions go in the comments", "this one is a bit worn", "the camera is a bit shaky sorry",
    ),
    misheard={"push": "bush", "lift": "left", "spin": "pin", "shake": "shape", "drop": "drought",
              "throw": "through", "squash": "squish", "flip": "flap", "the": "a", "ball": "bowl", "cup": "cop",
              "ring": "wing", "brush": "rush", "shoe": "show", "bottle": "bottles", "star": "stars"},
)


# ----------------------------------------------------------------------------------------------- shapes
# As in MiniCook: object coordinates (u, v), centred, in units of the object's size; -> (body, accent) masks.

def _ball(u, v):
    body = u * u + v * v < 1
    return body, body & (np.abs(v - 0.35 * np.sin(3 * u)) < 0.14)


def _box(u, v):
    body = (np.abs(u) < 0.9) & (np.abs(v) < 0.8)
    return body, body & ((np.abs(u) < 0.13) | (v < -0.62))


def _cup(u, v):
    body = (v > -0.85) & (v < 0.85) & (np.abs(u) < 0.62 - 0.14 * v)  # wider at the rim
    r = np.sqrt((u - 0.62) ** 2 + v * v)
    handle = (r > 0.2) & (r < 0.42) & (u > 0.55)
    return body | handle, body & (v < -0.65)


def _key(u, v):
    r = np.sqrt((u + 0.8) ** 2 + v * v)
    head = (r < 0.5) & (r > 0.2)
    shaft = (np.abs(v) < 0.12) & (u > -0.35) & (u < 1.25)
    teeth = (v > 0.05) & (v < 0.38) & (((u > 0.65) & (u < 0.8)) | ((u > 0.95) & (u < 1.12)))
    return head | shaft | teeth, teeth


def _book(u, v):
    body = (np.abs(u) < 0.72) & (np.abs(v) < 1.0)
    return body, body & (u > 0.52) & (np.abs(v) < 0.9)


def _ring(u, v):
    r = np.sqrt(u * u + v * v)
    gem = u * u + (v + 0.95) ** 2 < 0.08
    return ((r > 0.6) & (r < 1.0)) | gem, gem


def _star(u, v):
    r, a = np.sqrt(u * u + v * v), np.arctan2(v, u)
    body = r < 0.5 + 0.65 * ((np.cos(5 * a) + 1) / 2) ** 3
    return body, r < 0.22


def _bottle(u, v):
    body = (np.abs(u) < 0.48) & (v > -0.35) & (v < 1.1)
    shoulder = (u / 0.48) ** 2 + ((v + 0.35) / 0.35) ** 2 < 1
    neck = (np.abs(u) < 0.17) & (v > -1.15) & (v < -0.35)
    label = body & (v > 0.1) & (v < 0.65)
    cap = neck & (v < -0.95)
    return body | shoulder | neck, label | cap


def _brush(u, v):
    handle = (np.abs(v) < 0.13) & (u > -1.35) & (u < 0.25)
    head = (np.abs(v) < 0.3) & (u >= 0.25) & (u < 1.15)
    bristles = (v > 0.3) & (v < 0.75) & (u > 0.3) & (u < 1.1) & (np.sin(u * 30) > -0.3)
    return handle | head | bristles, bristles


def _shoe(u, v):
    upper = (((u + 0.35) / 0.8) ** 2 + ((v - 0.25) / 0.75) ** 2 < 1) & (v < 0.3)
    toe = (((u - 0.55) / 0.7) ** 2 + ((v - 0.3) / 0.32) ** 2 < 1) & (v < 0.3)
    sole = (u > -1.15) & (u < 1.25) & (v >= 0.3) & (v < 0.55)
    laces = upper & (np.abs(u - 0.05) < 0.25) & (np.sin(v * 25) > 0.4) & (v > -0.3)
    return upper | toe | sole, sole | laces


SHAPES = {"ball": _ball, "box": _box, "cup": _cup, "key": _key, "book": _book, "ring": _ring, "star": _star,
          "bottle": _bottle, "brush": _brush, "shoe": _shoe}


# ------------------------------------------------------------------------------------------------ verbs
# Each verb draws one step onto a canvas already holding the scene. ``s`` is the object's size in pixels this step,
# ``speed`` scales how fast the motion goes (both drawn per step).

def _push(c: _Canvas, noun: _Noun, cx, cy, s, speed, rng: np.random.Generator) -> None:
    """The object slides sideways without turning, eases to a stop, and rests."""
    direction = rng.choice((-1.0, 1.0))
    reach = rng.uniform(0.35, 0.5) * c.width
    q = np.clip(c.p * speed, 0, 1)
    x = cx - direction * reach / 2 + direction * reach * (1 - (1 - q) ** 2)
    noun.draw(c, x, cy, s, rng.uniform(-0.2, 0.2))


def _lift(c: _Canvas, noun: _Noun, cx, cy, s, speed, rng: np.random.Generator) -> None:
    """The object rises from low in the frame, then hangs there, swaying slightly."""
    q = np.clip(c.p * speed / 0.6, 0, 1)
    rise = rng.uniform(0.35, 0.45) * c.height
    y = cy + rise / 2 - rise * q * q * (3 - 2 * q)
    sway = 0.08 * np.sin(2 * np.pi * 0.8 * c.t) * q
    noun.draw(c, cx, y, s, rng.uniform(-0.2, 0.2) + sway)


def _spin(c: _Canvas, noun: _Noun, cx, cy, s, speed, rng: np.random.Generator) -> None:
    """The object turns in place about its centre."""
    turns = rng.choice((-1.0, 1.0)) * rng.uniform(0.6, 1.0) * speed
    noun.draw(c, cx, cy, s, rng.uniform(0, 2 * np.pi) + 2 * np.pi * turns * c.t)


def _shake(c: _Canvas, noun: _Noun, cx, cy, s, speed, rng: np.random.Generator) -> None:
    """The object oscillates fast and small, along a random direction, with a little wobble."""
    a = rng.uniform(0, np.pi)
    wave = np.sin(2 * np.pi * rng.uniform(5.0, 7.0) * speed * c.t)
    amp = 0.22 * s
    noun.draw(c, cx + amp * np.cos(a) * wave, cy + amp * np.sin(a) * wave, s, rng.uniform(-0.3, 0.3) + 0.2 * wave)


def _drop(c: _Canvas, noun: _Noun, cx, cy, s, speed, rng: np.random.Generator) -> None:
    """The object falls in from above the frame, hits the floor and bounces, each bounce lower."""
    floor = 0.78 * c.height - s
    top = -1.5 * s
    fall = rng.uniform(0.45, 0.6) / speed  # seconds from the top to the floor
    g = 2 * (floor - top) / fall**2
    t = c.t
    y = np.where(t < fall, top + 0.5 * g * t * t, floor)
    # Each bounce is an arc leaving the floor with half the speed the last one landed with.
    start, up = fall, 0.5 * g * fall
    for _ in range(4):
        dt = t - start
        y = np.where((dt >= 0) & (dt < 2 * up / g), floor - up * dt + 0.5 * g * dt * dt, y)
        start, up = start + 2 * up / g, 0.5 * up
    noun.draw(c, cx, y, s, rng.uniform(-0.3, 0.3))


def _throw(c: _Canvas, noun: _Noun, cx, cy, s, speed, rng: np.random.Generator) -> None:
    """The object flies in a parabolic arc from one side to the other, tumbling, and lands."""
    direction = rng.choice((-1.0, 1.0))
    q = np.clip(c.p * speed * rng.uniform(1.1, 1.3), 0, 1)
    span = rng.uniform(0.6, 0.7) * c.width
    base = 0.75 * c.height - s
    x = c.width / 2 - direction * span / 2 + direction * span * q
    y = base - rng.uniform(0.4, 0.5) * c.height * 4 * q * (1 - q)
    noun.draw(c, x, y, s, rng.uniform(0, 2 * np.pi) + direction * 2 * np.pi * q)


def _squash(c: _Canvas, noun: _Noun, cx, cy, s, speed, rng: np.random.Generator) -> None:
    """The object is pressed flat against the floor and springs back, once or twice; a press plate comes down."""
    presses = int(rng.integers(1, 3))
    q = np.sin(np.pi * np.clip(c.p * speed, 0, 1) * presses) ** 2  # 0 -> 1 -> 0 per press
    squeeze = 1 - 0.6 * q
    bottom = cy + s
    noun.draw(c, cx, bottom - s * squeeze, s, 0.0, stretch=(1 + 0.45 * q, squeeze))
    plate = bottom - 2 * s * squeeze - 0.5
    c.paint(c.rect(cx - 1.4 * s, plate - max(1.5, 0.2 * s), cx + 1.4 * s, plate), (0.25, 0.25, 0.28))


def _flip(c: _Canvas, noun: _Noun, cx, cy, s, speed, rng: np.random.Generator) -> None:
    """The object turns over about its vertical axis: its width goes through zero, the back is darker."""
    turns = int(rng.integers(1, 3))
    across = np.cos(np.pi * turns * np.clip(c.p * speed, 0, 1))
    width = np.where(across >= 0, 1.0, -1.0) * np.maximum(np.abs(across), 0.04)  # never exactly edge-on
    noun.draw(c, cx, cy, s, rng.uniform(-0.15, 0.15), stretch=(width, 1.0),
              shade=np.where(across >= 0, 1.0, 0.55).astype(np.float32))


_VERB_DRAW = {"push": _push, "lift": _lift, "spin": _spin, "shake": _shake, "drop": _drop, "throw": _throw,
              "squash": _squash, "flip": _flip}


# ------------------------------------------------------------------------------------------------ scene

def _colour(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    """A random RGB colour of the given saturation and value ranges, any hue."""
    h, sat, val = rng.uniform(0, 6), rng.uniform(*saturation), rng.uniform(*value)
    rgb = np.clip(np.abs((h + np.array((0.0, 4.0, 2.0))) % 6 - 3) - 1, 0, 1)  # the hue's fully saturated colour
    return (val * (1 - sat + sat * rgb)).astype(np.float32)


def _background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Any colour, with a texture (stripes, checks, noise, gradient or blobs) in a second colour at a random
    scale: (H, W, 3) float32."""
    base = _colour(rng, (0.0, 0.9), (0.25, 0.9))
    other = _colour(rng, (0.0, 0.9), (0.15, 0.95))
    contrast = rng.uniform(0.25, 0.6)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width)
    a = rng.uniform(0, np.pi)
    along = x * np.cos(a) + y * np.sin(a)
    f = rng.uniform(2, 10)  # periods across the frame
    kind = int(rng.integers(5))
    if kind == 0:  # stripes
        mix = (np.sin(2 * np.pi * f * along) > 0).astype(np.float32)
    elif kind == 1:  # checks
        across = -x * np.sin(a) + y * np.cos(a)
        mix = ((np.floor(f * along) + np.floor(f * across)) % 2).astype(np.float32)
    elif kind == 2:  # noise: a coarse random grid, blown up to the frame
        cells = int(np.ceil(f))
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        mix = grid[(y * cells).astype(int), (x * cells).astype(int)]
    elif kind == 3:  # gradient
        mix = along - along.min()
        mix = mix / max(float(mix.max()), 1e-6)
    else:  # blobs
        n = int(rng.integers(3, 9))
        cx, cy, r = rng.random(n), rng.random(n), rng.uniform(0.3, 1.0, n) / f * 2
        mix = np.zeros_like(x)
        for i in range(n):
            mix = np.maximum(mix, ((x - cx[i]) ** 2 + (y - cy[i]) ** 2 < r[i] ** 2).astype(np.float32))
    mix = contrast * mix[..., None]
    return np.clip(base * (1 - mix) + other * mix, 0, 1).astype(np.float32)


class _Distractors:
    """1-3 unnamed objects (disc, square or bar, any colour) drifting slowly and bouncing off the frame's edges."""

    def __init__(self, height: int, width: int, rng: np.random.Generator):
        n = int(rng.integers(1, 4))
        self.height, self.width = height, width
        self.kinds = rng.integers(0, 3, n)
        self.colours = [_colour(rng, (0.2, 1.0), (0.2, 1.0)) for _ in range(n)]
        self.sizes = rng.uniform(0.04, 0.08, n) * min(height, width)
        self.start = rng.random((n, 2)) * (width, height)
        self.velocity = rng.normal(0, 0.06, (n, 2)) * (width, height)  # pixels a second

    def draw(self, c: _Canvas, t0: float) -> None:
        """Draw them on the frames of ``c``, which begin ``t0`` seconds into the video."""
        t = c.t + t0
        for kind, colour, r, start, velocity in zip(self.kinds, self.colours, self.sizes, self.start, self.velocity):
            # Reflecting at the edges: position along a triangle wave of period 2 * extent.
            x, y = (extent - np.abs((p + v * t) % (2 * extent) - extent)
                    for p, v, extent in ((start[0], velocity[0], self.width), (start[1], velocity[1], self.height)))
            if kind == 0:
                mask = c.disc(x, y, r)
            elif kind == 1:
                mask = c.rect(x - r, y - r, x + r, y + r)
            else:
                mask = c.rect(x - 1.8 * r, y - 0.4 * r, x + 1.8 * r, y + 0.4 * r)
            c.paint(mask, colour)


class _Look:
    """Per-video light and camera: slow brightness and colour drift, slow zoom and pan, per-frame shake."""

    def __init__(self, duration: float, height: int, width: int, rng: np.random.Generator):
        self.height, self.width, self.duration = height, width, duration
        self.brightness = (rng.uniform(0.08, 0.18), rng.uniform(3.0, 8.0), rng.uniform(0, 2 * np.pi))
        self.tint = (rng.uniform(0.03, 0.08, 3), rng.uniform(4.0, 10.0, 3), rng.uniform(0, 2 * np.pi, 3))
        self.zoom = rng.uniform(1.0, 1.2, 2)  # at the start and at the end
        self.pan = rng.uniform(-1, 1, (2, 2))  # (start, end) x (x, y), as fractions of the room zoom leaves
        self.shake = rng.uniform(0.4, 1.0)  # pixels, standard deviation

    def gain(self, t: np.ndarray) -> np.ndarray:
        """(T, 3) factors on each colour channel at video times ``t`` (T,): brightness times colour balance."""
        amp, period, phase = self.brightness
        amp3, period3, phase3 = self.tint
        brightness = 1 + amp * np.sin(2 * np.pi * t[:, None] / period + phase)
        return (brightness * (1 + amp3 * np.sin(2 * np.pi * t[:, None] / period3 + phase3))).astype(np.float32)

    def camera(self, frames: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``frames`` (T, H, W, 3) as the camera sees them at video times ``t`` (T,), zoomed, panned and shaken."""
        q = (t / max(self.duration, 1e-6))[:, None]  # (T, 1)
        zoom = self.zoom[0] + (self.zoom[1] - self.zoom[0]) * q
        pan = self.pan[0] + (self.pan[1] - self.pan[0]) * q  # (T, 2)
        centre = np.array((self.width, self.height), np.float32) / 2
        # Zooming in by z leaves (1 - 1/z) of the half-frame to pan over without showing past the scene's edge.
        look_at = centre + pan * (1 - 1 / zoom) * centre + rng.normal(0, self.shake, (len(t), 2))
        sx = look_at[:, :1] + (np.arange(self.width) - centre[0] + 0.5) / zoom - 0.5  # (T, W) source columns
        sy = look_at[:, 1:] + (np.arange(self.height) - centre[1] + 0.5) / zoom - 0.5  # (T, H) source rows
        # No rotation, so the bilinear resample is separable: rows, then (transposed) columns. Selecting whole
        # rows copies contiguous memory, several times faster than gathering single pixels.
        frames = _resample_rows(frames, sy)
        frames = _resample_rows(np.ascontiguousarray(frames.transpose(0, 2, 1, 3)), sx)
        # Contiguous again: quantising and encoding a transposed view costs more than this copy.
        return np.ascontiguousarray(frames.transpose(0, 2, 1, 3))


def _resample_rows(frames: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``frames`` (T, H, W, 3) between rows, at row positions ``at`` (T, n), clamped to the
    edge: (T, n, W, 3)."""
    size = frames.shape[1]
    at = np.clip(at, 0, size - 1)
    lo = np.minimum(at.astype(int), size - 2)
    w = (at - lo).astype(np.float32)[:, :, None, None]
    t = np.arange(len(frames))[:, None]
    a, b = frames[t, lo], frames[t, lo + 1]
    return a + (b - a) * w


def render_step(verb: str, noun: str, c: _Canvas, rng: np.random.Generator) -> None:
    """Draw one Workshop step, ``verb`` applied to ``noun``, on ``c``: placement, size, speed and colour jitter
    are drawn from ``rng``."""
    look = _Noun.sample(noun, c.unit, rng, NOUN_COLOURS, SHAPES)
    size = look.size * rng.uniform(0.7, 1.3)
    speed = rng.uniform(0.75, 1.35)
    cx = c.width * (0.5 + rng.uniform(-0.1, 0.1))
    cy = c.height * (0.5 + rng.uniform(-0.08, 0.08))
    _VERB_DRAW[verb](c, look, cx, cy, size, speed, rng)


def render_video(plan: VideoPlan, seed: int, index: int, height: int, width: int) -> Iterator[np.ndarray]:
    """The frames of a planned Workshop video in blocks of (T, H, W, 3) uint8, one block per step or idle gap."""
    _, rng = _video_rngs(seed, index)
    background = _background(height, width, rng)
    distractors = _Distractors(height, width, rng)
    look = _Look(plan.duration, height, width, rng)
    for start, end, step in blocks(plan):
        canvas = _Canvas.blank(background, end - start, plan.fps)
        distractors.draw(canvas, start / plan.fps)
        if step is not None:
            render_step(step.verb, step.noun, canvas, rng)
        t = canvas.t[:, 0, 0] + start / plan.fps
        yield _to_uint8(look.camera(canvas.frames, t, rng), rng, gain=look.gain(t)[:, None, None, :])


WORKSHOP = World("workshop", "Workshop", 1, VERBS, NOUNS, NOUN_COLOURS, RECIPE_NEXT, NARRATION, render_video)

# Every world `videobert synth --world` can generate, by name. It lives here, after the worlds it gathers, because
# each world's module builds on `videobert.data.synth`.
WORLDS: dict[str, World] = {w.name: w for w in (MINICOOK, WORKSHOP, REALCAM)}
