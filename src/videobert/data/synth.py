"""MiniCook: a generated corpus of narrated cooking videos whose step labels are known exactly.

Real instructional corpora are large and their labels noisy, so nothing in the pipeline can be shown to *work*
on them quickly. MiniCook is small enough to generate in seconds and is built so that a step can be recovered
from the pixels: each verb is a distinct motion (a knife sweeping down, a stream falling into a bowl, a spoon
circling, ...) and each noun a distinct colour and shape. The narration imitates ASR: a step is described near,
not exactly at, the time it happens, in varied words, mixed with chatter and recognition errors.

Everything is a pure function of ``seed`` and the video index, so video ``i`` is identical whether 5 or 500
videos are generated, and a re-run recreates a missing file with the same content.

MiniCook is one `World`; another (`videobert.data.workshop`) reuses the planning, narration and writing here with
its own words and renderer, so that no choice in the toolkit is tuned on one world's look alone.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np

from videobert.data.transcripts import Cue
from videobert.utils.errors import ConfigError
from videobert.utils.io import atomic_open, atomic_path, read_json, write_json
from videobert.utils.stage import StageReport

# Every word is a single token of the BERT WordPiece vocabulary, so "now let me show you how to [MASK] the
# [MASK]" can be filled with exactly one verb and one noun.
VERBS: tuple[str, ...] = ("cut", "pour", "stir", "peel", "fry", "add", "roll", "wash")
NOUNS: tuple[str, ...] = ("tomato", "carrot", "potato", "onion", "egg", "bread", "cheese", "apple", "lemon", "fish")

TEMPLATE = "now let me show you how to {verb} the {noun}"

# With `recipes`, a video's steps follow a recipe instead of being drawn independently: after a step with verb v the
# next verb is one of RECIPE_NEXT[v] (equally likely; only the corpus's verbs count, and a verb with none of its
# successors in the corpus is followed by any verb), and the next step keeps the noun with probability RECIPE_SAME_NOUN.
# Forecasting the next step is then possible from the steps so far, as in real recipes; without `recipes` it is not.
RECIPE_NEXT: dict[str, tuple[str, ...]] = {
    "wash": ("peel", "cut"),
    "peel": ("cut", "roll"),
    "cut": ("fry", "add"),
    "add": ("stir", "pour"),
    "fry": ("add", "stir"),
    "stir": ("pour", "roll"),
    "pour": ("stir", "wash"),
    "roll": ("cut", "fry"),
}
RECIPE_SAME_NOUN = 0.7

# (main, accent) RGB in [0, 1]. The main colour covers most of the object and is what tells nouns apart; the
# background is kept grey enough (see _background) that none of these occurs in it.
NOUN_COLOURS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "tomato": ((0.88, 0.12, 0.08), (0.20, 0.55, 0.12)),
    "carrot": ((0.96, 0.45, 0.05), (0.25, 0.60, 0.15)),
    "potato": ((0.62, 0.43, 0.22), (0.35, 0.22, 0.10)),
    "onion": ((0.55, 0.18, 0.50), (0.88, 0.75, 0.88)),
    "egg": ((0.98, 0.95, 0.84), (0.86, 0.82, 0.70)),
    "bread": ((0.93, 0.78, 0.50), (0.60, 0.35, 0.12)),
    "cheese": ((1.00, 0.72, 0.12), (0.80, 0.50, 0.05)),
    "apple": ((0.45, 0.78, 0.20), (0.35, 0.22, 0.08)),
    "lemon": ((0.95, 0.93, 0.20), (1.00, 1.00, 0.70)),
    "fish": ((0.42, 0.56, 0.78), (0.12, 0.16, 0.30)),
}

SPLITS: tuple[str, ...] = ("train", "val", "test")

# Independent random streams: per-video planning and rendering, and the corpus-level split.
_STREAM_VIDEO, _STREAM_SPLIT = 1, 2

@dataclass(frozen=True)
class Narration:
    """A world's narrator: how each verb is said, the sentences that name a step, the chatter between steps,
    and the words speech recognition mishears."""

    ing: dict[str, str]  # verb -> its -ing form
    how: dict[str, str]  # verb -> a phrase saying how it is done
    phrases: tuple[str, ...]  # sentences naming a step, filled with verb, noun, how, ing
    follow_ups: tuple[str, ...]  # said after a step's sentence, about the same step
    intros: tuple[str, ...]
    outros: tuple[str, ...]
    fillers: tuple[str, ...]
    misheard: dict[str, str]  # word -> what ASR makes of it


_ING = {"cut": "cutting", "pour": "pouring", "stir": "stirring", "peel": "peeling",
        "fry": "frying", "add": "adding", "roll": "rolling", "wash": "washing"}
_HOW = {"cut": "into pieces", "pour": "into the bowl", "stir": "in circles", "peel": "all the way around",
        "fry": "in the pan", "add": "to the bowl", "roll": "across the table", "wash": "under the water"}
_PHRASES = (
    "next we {verb} the {noun} {how}",
    "go ahead and {verb} it",
    "time to {verb} the {noun}",
    "okay now i'm going to {verb} the {noun}",
    "you want to {verb} the {noun} {how}",
    "just {verb} the {noun} like this",
    "so here i'm {ing} the {noun}",
    "and then we {verb} the {noun}",
)
_FOLLOW_UPS = ("keep {ing} it for a bit", "see how i {verb} it", "make sure you {verb} it {how}", "nice and easy")
_INTROS = ("hi everyone welcome back to my kitchen", "hello and welcome to another cooking video",
           "today we are making something really simple")
_OUTROS = ("thanks for watching see you next time", "and that's it enjoy your meal", "don't forget to subscribe")
_FILLERS = (
    "don't forget to subscribe", "this is my grandmother's recipe", "it smells so good already",
    "i love this part", "you can find the full recipe below", "my kids love this one",
    "let me know in the comments what you think", "i got these at the market this morning",
    "be careful this is hot", "the music is from a friend of mine", "this only takes a minute",
)
# Recognition errors of the kind ASR makes: near-homophones and plurals.
_MISHEARD = {"cut": "cup", "pour": "poor", "stir": "star", "peel": "pill", "fry": "fly", "add": "had",
             "roll": "role", "wash": "watch", "the": "a", "tomato": "tomatoes", "onion": "onions",
             "apple": "apples", "egg": "eggs", "fish": "dish", "bread": "bed"}
_NARRATION = Narration(_ING, _HOW, _PHRASES, _FOLLOW_UPS, _INTROS, _OUTROS, _FILLERS, _MISHEARD)

# Props, so a verb's setting also looks the same across videos (a dark pan means frying).
_BOWL_RIM, _BOWL_INSIDE = (0.80, 0.80, 0.82), (0.58, 0.58, 0.61)
_STEEL, _HANDLE = (0.70, 0.72, 0.77), (0.18, 0.10, 0.06)
_PAN, _PAN_RIM = (0.15, 0.15, 0.17), (0.32, 0.32, 0.35)
_WATER, _SIZZLE = (0.30, 0.55, 1.00), (1.00, 0.93, 0.65)
_PEELED, _BROWNED = np.array((1.0, 0.95, 0.80), np.float32), np.array((0.45, 0.25, 0.08), np.float32)


# ----------------------------------------------------------------------------------------------- shapes
# Each noun is drawn in its own coordinates (u, v): centred, rotated, in units of the object's size. A shape
# returns (body, accent) boolean masks; the accent is painted in the accent colour over the body.

def _tomato(u, v):
    calyx = u * u + (v + 0.8) ** 2 < 0.07
    return (u * u + v * v < 1) | calyx, calyx


def _carrot(u, v):
    root = (np.abs(u) < 1.3) & (np.abs(v) < 0.6 * (1.3 - u) / 2.6)  # wide at u = -1.3, pointed at u = 1.3
    leaves = (u < -1.3) & (u > -1.9) & (np.abs(v) < 0.35) & (np.sin(v * 14) > -0.2)
    return root | leaves, leaves


def _potato(u, v):
    body = (u / 1.25) ** 2 + (v / 0.85) ** 2 < 1
    eyes = ((u + 0.5) ** 2 + (v + 0.2) ** 2 < 0.012) | ((u - 0.4) ** 2 + (v - 0.3) ** 2 < 0.012) | (
        (u - 0.1) ** 2 + (v + 0.45) ** 2 < 0.01)
    return body, eyes & body


def _onion(u, v):
    r = np.sqrt(u * u + v * v)
    tip = (v < -0.9) & (v > -1.3) & (np.abs(u) < 0.25 * (v + 1.3) / 0.4)
    return (r < 1) | tip, (r < 1) & (np.sin(r * 4 * np.pi) > 0.3)


def _egg(u, v):
    body = (u / (0.72 * (1 + 0.18 * v))) ** 2 + v * v < 1  # narrower at the top
    return body, body & (u + 0.6 * v > 0.55)


def _bread(u, v):
    body = ((np.abs(u) < 0.95) & (v > -0.45) & (v < 0.95)) | ((np.abs(u) - 0.45) ** 2 + (v + 0.45) ** 2 < 0.27)
    crumb = ((np.abs(u) < 0.8) & (v > -0.45) & (v < 0.8)) | ((np.abs(u) - 0.45) ** 2 + (v + 0.45) ** 2 < 0.14)
    return body, body & ~crumb


def _cheese(u, v):
    body = (v < 0.45) & (u < 0.75) & (v > 0.45 - 1.3 * (u + 1.45) / 2.2)  # a wedge, centred on its centroid
    holes = ((u - 0.35) ** 2 + (v - 0.1) ** 2 < 0.026) | (u * u + (v - 0.3) ** 2 < 0.01) | (
        (u - 0.5) ** 2 + (v + 0.4) ** 2 < 0.015) | ((u + 0.5) ** 2 + (v - 0.3) ** 2 < 0.008)
    return body, body & holes


def _apple(u, v):
    body = (u * u + (v * 1.05) ** 2 < 1) & ~(u * u + (v + 1.0) ** 2 < 0.06)  # dimple at the stem
    stem = (np.abs(u - 0.05) < 0.07) & (v > -1.35) & (v < -0.8)
    leaf = ((u - 0.3) / 0.3) ** 2 + ((v + 1.1) / 0.13) ** 2 < 1
    return body | stem | leaf, stem | leaf


def _lemon(u, v):
    body = (u / 1.05) ** 2 + (v / 0.78) ** 2 < 1
    tips = (np.abs(u) < 1.35) & (np.abs(v) < 0.2 * (1.35 - np.abs(u)) / 0.35)
    return body | tips, body & ((u + 0.35) ** 2 + (v + 0.3) ** 2 < 0.05)


def _fish(u, v):
    body = (u / 1.05) ** 2 + (v / 0.48) ** 2 < 1
    tail = (u > 0.85) & (u < 1.55) & (np.abs(v) < 0.6 * (u - 0.85) / 0.7)
    eye = (u + 0.7) ** 2 + (v + 0.1) ** 2 < 0.01
    stripes = body & (np.sin(u * 12) > 0.75) & (u > -0.5)
    return body | tail, eye | stripes


_SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "tomato": _tomato, "carrot": _carrot, "potato": _potato, "onion": _onion, "egg": _egg,
    "bread": _bread, "cheese": _cheese, "apple": _apple, "lemon": _lemon, "fish": _fish,
}


# ---------------------------------------------------------------------------------------------- drawing

@dataclass
class _Canvas:
    """The frames of one step being drawn, and the coordinates every primitive needs."""

    frames: np.ndarray  # (T, H, W, 3) float32 in [0, 1]
    xs: np.ndarray  # (1, 1, W) pixel column
    ys: np.ndarray  # (1, H, 1) pixel row
    t: np.ndarray  # (T, 1, 1) seconds since the step started
    p: np.ndarray  # (T, 1, 1) progress through the step, 0 -> 1
    fps: int

    @classmethod
    def blank(cls, background: np.ndarray, n_frames: int, fps: int) -> "_Canvas":
        """``n_frames`` frames of ``background`` ((H, W, 3) float), to draw one block of a video on."""
        height, width = background.shape[:2]
        t = (np.arange(n_frames, dtype=np.float32) / fps).reshape(-1, 1, 1)
        return cls(
            frames=np.repeat(background[None], n_frames, axis=0),  # (T, H, W, 3)
            xs=np.arange(width, dtype=np.float32).reshape(1, 1, -1),
            ys=np.arange(height, dtype=np.float32).reshape(1, -1, 1),
            t=t,
            p=t / max(float(t[-1, 0, 0]), 1e-6),
            fps=fps,
        )

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]

    @property
    def unit(self) -> int:
        return min(self.height, self.width)

    @property
    def seconds(self) -> float:
        return len(self.t) / self.fps

    def paint(self, mask: np.ndarray, colour) -> None:
        """Set the pixels where ``mask`` (broadcastable to (T, H, W)) holds to ``colour``: (3,), or one colour a
        frame (T, 1, 1, 3)."""
        mask = np.broadcast_to(mask, self.frames.shape[:3])
        colour = np.asarray(colour, np.float32)
        # Boolean indexing touches only the painted pixels, several times faster than a masked copy.
        self.frames[mask] = colour if colour.ndim == 1 else np.broadcast_to(colour, self.frames.shape)[mask]

    def disc(self, cx, cy, r) -> np.ndarray:
        return (self.xs - cx) ** 2 + (self.ys - cy) ** 2 < r * r

    def ellipse(self, cx, cy, rx, ry) -> np.ndarray:
        return ((self.xs - cx) / rx) ** 2 + ((self.ys - cy) / ry) ** 2 < 1

    def rect(self, x0, y0, x1, y1) -> np.ndarray:
        return (self.xs >= x0) & (self.xs < x1) & (self.ys >= y0) & (self.ys < y1)

    def segment(self, x0, y0, x1, y1, half_width) -> np.ndarray:
        """Pixels within ``half_width`` of the segment (x0, y0)-(x1, y1): a stick, a handle."""
        dx, dy = x1 - x0, y1 - y0
        along = np.clip(((self.xs - x0) * dx + (self.ys - y0) * dy) / (dx * dx + dy * dy + 1e-6), 0, 1)
        return (self.xs - x0 - along * dx) ** 2 + (self.ys - y0 - along * dy) ** 2 < half_width * half_width


@dataclass(frozen=True)
class _Noun:
    """One appearance of a noun: its shape and this clip's jittered colours and size."""

    name: str
    main: np.ndarray  # (3,)
    accent: np.ndarray  # (3,)
    size: float  # pixels from the centre to the edge of the body, before per-verb scaling
    shape: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]  # (u, v) -> (body, accent) masks

    @classmethod
    def sample(cls, name: str, unit: int, rng: np.random.Generator, colours=None, shapes=None) -> "_Noun":
        """This clip's look of ``name``, from a world's ``colours`` and ``shapes`` tables (MiniCook's when None)."""
        colours, shapes = colours or NOUN_COLOURS, shapes or _SHAPES
        brightness = rng.uniform(0.93, 1.05)

        def jitter(colour: tuple[float, float, float]) -> np.ndarray:
            return np.clip((np.asarray(colour) + rng.uniform(-0.04, 0.04, 3)) * brightness, 0, 1).astype(np.float32)

        main, accent = colours[name]
        return cls(name, jitter(main), jitter(accent), 0.15 * unit * rng.uniform(0.85, 1.15), shapes[name])

    def draw(self, c: _Canvas, cx, cy, scale, angle=0.0, *, peel=None, brown=None, cuts=(), stretch=None,
             shade=None) -> None:
        """Paint the noun centred at (cx, cy), ``scale`` px per object unit, rotated by ``angle``.

        ``peel`` (T, 1, 1) in [0, 1]: the fraction of the outline, swept by angle, whose skin is off.
        ``brown`` (T, 1, 1): how far the colour has moved towards fried brown.
        ``cuts``: (x offset from cx, gap (T, 1, 1)) pairs; the object is split at each vertical line and the
        pieces pushed apart by the gap, so a cut leaves visible slices.
        ``stretch``: (along u, along v) factors of the object's own axes, each a number or (T, 1, 1): squeezed,
        or turned edge-on (a factor through 0 mirrors the object).
        ``shade`` (T, 1, 1): a factor on both colours, so the side turned away from the light looks darker."""
        dx, dy = c.xs - cx, c.ys - cy
        keep = np.ones((1, 1, 1), bool)
        shift = 0.0
        for at, gap in cuts:
            keep = keep & (np.abs(dx - at) >= gap / 2)
            shift = shift + np.sign(dx - at) * gap / 2
        dx = dx - shift
        cos, sin = np.cos(angle), np.sin(angle)
        u, v = (dx * cos + dy * sin) / scale, (dy * cos - dx * sin) / scale
        if stretch is not None:
            u, v = u / stretch[0], v / stretch[1]
        body, accent = self.shape(u, v)
        body = body & keep
        peeled = None if peel is None else (np.arctan2(v, u) + np.pi) / (2 * np.pi) < peel
        for region, colour in ((body & ~accent, self.main), (body & accent, self.accent)):
            if brown is not None:
                colour = colour * (1 - brown[..., None]) + _BROWNED * brown[..., None]  # (T, 1, 1, 3)
            if shade is not None:
                colour = colour * shade[..., None]
            if peeled is None:
                c.paint(region, colour)
            else:
                c.paint(region & ~peeled, colour)
                c.paint(region & peeled, 0.4 * colour + 0.6 * _PEELED)


def _to_screen(cx, cy, scale, angle, u, v):
    """Inverse of the object transform in :meth:`_Noun.draw`: where object point (u, v) lands on screen."""
    cos, sin = np.cos(angle), np.sin(angle)
    return cx + scale * (u * cos - v * sin), cy + scale * (u * sin + v * cos)


# ------------------------------------------------------------------------------------------------ verbs
# Each verb draws one step onto a canvas already holding the background. (cx, cy) is a jittered stage centre.

def _cut(c: _Canvas, noun: _Noun, cx, cy, rng: np.random.Generator) -> None:
    """A knife sweeps down through the object 2-3 times; after each stroke the object falls apart there."""
    s = noun.size
    strokes = int(rng.integers(2, 4))
    at = (np.linspace(-0.5, 0.5, strokes) + rng.uniform(-0.1, 0.1, strokes))[rng.permutation(strokes)] * s
    gap = 0.3 * s
    cuts = [(at[j], gap * np.clip((c.p * strokes - j - 0.35) / 0.3, 0, 1)) for j in range(strokes)]
    noun.draw(c, cx, cy, s, rng.uniform(-0.3, 0.3), cuts=cuts)
    stroke = np.minimum(c.p * strokes, strokes - 1e-6)
    k, q = np.floor(stroke).astype(int), stroke % 1.0
    depth = np.where(q < 0.55, q / 0.55, (1 - q) / 0.45)  # down fast, back up
    tip = cy - 1.8 * s + depth * 3.0 * s
    kx = cx + at[k]
    half = max(1.0, 0.1 * s)
    c.paint(c.rect(kx - half, tip - 1.4 * s, kx + half, tip), _STEEL)
    c.paint(c.rect(kx - 1.6 * half, tip - 2.3 * s, kx + 1.6 * half, tip - 1.4 * s), _HANDLE)


def _pour(c: _Canvas, noun: _Noun, cx, cy, rng: np.random.Generator) -> None:
    """The object tips over at the top; a stream of its colour falls into a bowl that fills up."""
    s = 0.75 * noun.size
    side = rng.choice((-1.0, 1.0))
    ox, oy = cx, 0.22 * c.height
    tilt = side * rng.uniform(0.6, 0.9) * np.clip(c.p / 0.2, 0, 1)
    sx = ox + side * 0.6 * s
    bx, by, bw, bh = sx + rng.uniform(-0.05, 0.05) * c.width, 0.7 * c.height, 0.28 * c.width, 0.2 * c.height
    fill = 0.1 + 0.8 * np.clip((c.p - 0.15) / 0.8, 0, 1)
    level = by + bh * (1 - fill)
    c.paint(c.ellipse(bx, by, bw, bh) & (c.ys >= by), _BOWL_RIM)
    inside = c.ellipse(bx, by, bw - 2, bh - 2) & (c.ys >= by)
    c.paint(inside, _BOWL_INSIDE)
    c.paint(inside & (c.ys >= level), noun.main)
    wobble = 0.7 * np.sin(c.ys * 0.5 - c.t * 25)  # the stream ripples downwards
    flowing = (c.p > 0.15) & (c.p < 0.95)
    c.paint(flowing & (np.abs(c.xs - sx - wobble) < max(1.0, 0.08 * s)) & (c.ys > oy) & (c.ys < level), noun.main)
    noun.draw(c, ox, oy, s, tilt)


def _stir(c: _Canvas, noun: _Noun, cx, cy, rng: np.random.Generator) -> None:
    """Seen from above: pieces of the object circle inside a bowl, pushed round by a spoon."""
    rb = 0.36 * c.unit * rng.uniform(0.92, 1.05)
    c.paint(c.disc(cx, cy, rb), _BOWL_RIM)
    c.paint(c.disc(cx, cy, 0.84 * rb), _BOWL_INSIDE)
    phi = rng.uniform(0, 2 * np.pi) + rng.choice((-1.0, 1.0)) * 2 * np.pi * rng.uniform(0.6, 1.0) * c.t
    for k in range(3):
        a = phi + 2 * np.pi * k / 3
        noun.draw(c, cx + 0.45 * rb * np.cos(a), cy + 0.45 * rb * np.sin(a), 0.3 * rb, a)
    tx, ty = cx + 0.25 * rb * np.cos(phi + 1.0), cy + 0.25 * rb * np.sin(phi + 1.0)
    handle = rng.uniform(-0.6, 0.6) - np.pi / 2
    c.paint(c.segment(tx, ty, tx + 1.3 * rb * np.cos(handle), ty + 1.3 * rb * np.sin(handle), max(1.0, 0.05 * rb)), _STEEL)
    c.paint(c.ellipse(tx, ty, 0.16 * rb, 0.12 * rb), _STEEL)


def _peel(c: _Canvas, noun: _Noun, cx, cy, rng: np.random.Generator) -> None:
    """A peeler travels once round the object; the skin behind it turns pale and strips of skin fall off."""
    s = 1.15 * noun.size
    angle = rng.uniform(0, 2 * np.pi) + rng.choice((-0.3, 0.3)) * c.p
    done = 1.05 * c.p
    noun.draw(c, cx, cy, s, angle, peel=done)
    a = 2 * np.pi * done - np.pi  # the polar angle where peeled meets unpeeled, as in _Noun.draw
    px, py = _to_screen(cx, cy, s, angle, 1.05 * np.cos(a), 1.05 * np.sin(a))
    ox, oy = _to_screen(cx, cy, s, angle, 2.0 * np.cos(a), 2.0 * np.sin(a))
    c.paint(c.segment(px, py, ox, oy, max(1.0, 0.08 * s)), (0.30, 0.30, 0.34))
    c.paint(c.disc(px, py, max(1.5, 0.15 * s)), _STEEL)
    # A strip leaves the peeler every 0.25 s and falls under gravity.
    g = 3.0 * c.height
    for t0 in np.arange(0.0, c.seconds, 0.25):
        k = min(int(round(t0 * c.fps)), len(c.t) - 1)
        age = c.t - t0
        y = py[k] + 0.5 * g * np.maximum(age, 0) ** 2
        x = px[k] + 0.3 * s * age
        c.paint((age >= 0) & c.rect(x - 0.15 * s, y, x + 0.15 * s, y + max(1.0, 0.15 * s)), noun.main)


def _fry(c: _Canvas, noun: _Noun, cx, cy, rng: np.random.Generator) -> None:
    """The object sits in a dark pan, jittering as it sizzles, and browns; oil spits bright specks."""
    rp = 0.34 * c.unit * rng.uniform(0.95, 1.05)
    side = rng.choice((-1.0, 1.0))
    c.paint(c.segment(cx + side * 0.9 * rp, cy, cx + side * 1.9 * rp, cy + rng.uniform(-0.2, 0.2) * rp,
                      0.07 * c.unit), (0.12, 0.10, 0.10))
    c.paint(c.disc(cx, cy, rp), _PAN_RIM)
    c.paint(c.disc(cx, cy, 0.9 * rp), _PAN)
    n = len(c.t)
    jx, jy = (rng.normal(0, 0.07 * noun.size, (n, 1, 1)).astype(np.float32) for _ in range(2))
    spin = rng.uniform(0, 2 * np.pi) + rng.normal(0, 0.05, (n, 1, 1))
    noun.draw(c, cx + jx, cy + jy, 0.95 * noun.size, spin, brown=0.45 * c.p)
    specks = 8
    r, a = 0.85 * rp * np.sqrt(rng.random((n, specks))), rng.uniform(0, 2 * np.pi, (n, specks))
    fy = np.clip(np.round(cy + r * np.sin(a)), 0, c.height - 1).astype(int)
    fx = np.clip(np.round(cx + r * np.cos(a)), 0, c.width - 1).astype(int)
    c.frames[np.arange(n)[:, None], fy, fx] = _SIZZLE


def _add(c: _Canvas, noun: _Noun, cx, cy, rng: np.random.Generator) -> None:
    """Two or three of the object drop in from above and land in a bowl."""
    s = 0.8 * noun.size
    bx, by, bw, bh = cx, 0.68 * c.height, 0.3 * c.width, 0.22 * c.height
    c.paint(c.ellipse(bx, by, bw, 0.25 * bh), _BOWL_INSIDE)
    drops = int(rng.integers(2, 4))
    rest = by - 0.15 * s
    fall = 0.5  # seconds from above the frame to the bowl
    g = 2 * (rest + 1.5 * s) / fall**2
    for k in range(drops):
        t0 = (k + rng.uniform(0, 0.3)) / drops * 0.85 * c.seconds
        age = c.t - t0
        y = np.where(age < 0, -10 * s, np.minimum(-1.5 * s + 0.5 * g * np.maximum(age, 0) ** 2, rest))
        spin = rng.uniform(0, 2 * np.pi) + 4 * np.clip(age, 0, fall)
        noun.draw(c, bx + rng.uniform(-0.45, 0.45) * bw, y, s, spin)
    c.paint(c.ellipse(bx, by, bw, bh) & (c.ys >= by), _BOWL_RIM)  # the bowl's front hides what landed


def _roll(c: _Canvas, noun: _Noun, cx, cy, rng: np.random.Generator) -> None:
    """The object rolls across the frame (or out and back), turning as it goes."""
    s = noun.size
    direction = rng.choice((-1.0, 1.0))
    reach = rng.uniform(0.5, 0.62) * c.width
    travel = reach * (np.sin(np.pi * c.p) if rng.random() < 0.5 else c.p)
    x = c.width / 2 - direction * reach / 2 + direction * travel
    noun.draw(c, x, cy, s, rng.uniform(0, 2 * np.pi) + direction * travel / s)


def _wash(c: _Canvas, noun: _Noun, cx, cy, rng: np.random.Generator) -> None:
    """Under a tap: streaks of water fall over the object while it is shaken from side to side."""
    s = noun.size
    h, w = c.height, c.width
    side = rng.choice((-1.0, 1.0))
    c.paint(c.rect(min(cx, cx - side * w), 0.04 * h, max(cx, cx - side * w), 0.1 * h), _STEEL)
    c.paint(c.rect(cx - 0.04 * w, 0.04 * h, cx + 0.04 * w, 0.17 * h), _STEEL)
    wave = np.sin(2 * np.pi * rng.uniform(2.0, 3.0) * c.t)
    noun.draw(c, cx + 0.18 * s * wave, rng.uniform(0.55, 0.65) * h, s, rng.uniform(0, 2 * np.pi) + 0.15 * wave)
    top, length = 0.17 * h, 0.07 * h
    for x, phase, speed in zip(cx + rng.uniform(-1.1, 1.1, 16) * s, rng.random(16), rng.uniform(1.2, 1.6, 16) * h):
        y = top + (phase * (h - top) + speed * c.t) % (h - top)
        c.paint((np.abs(c.xs - x) < max(1.0, 0.012 * w)) & (c.ys >= y) & (c.ys < y + length), _WATER)


_VERB_DRAW: dict[str, Callable[..., None]] = {
    "cut": _cut, "pour": _pour, "stir": _stir, "peel": _peel,
    "fry": _fry, "add": _add, "roll": _roll, "wash": _wash,
}


def _background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A counter top: a greyish colour with a faint pattern (gradient, stripes, checks or grain), (H, W, 3).

    Grey on purpose: the saturated colours are left to the nouns, so colour says what the object is."""
    base = rng.uniform(0.3, 0.62) + rng.uniform(-0.05, 0.05, 3)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width)
    a = rng.uniform(0, np.pi)
    along = x * np.cos(a) + y * np.sin(a)
    f = rng.uniform(3, 7)
    kind = int(rng.integers(4))
    if kind == 0:
        pattern = 0.16 * (along - 0.5)
    elif kind == 1:
        pattern = 0.05 * np.sign(np.sin(2 * np.pi * f * along))
    elif kind == 2:
        pattern = 0.05 * np.sign(np.sin(2 * np.pi * f * x) * np.sin(2 * np.pi * f * y))
    else:
        pattern = 0.04 * np.sin(2 * np.pi * f * (along + 0.05 * np.sin(2 * np.pi * 3 * x)))
    return np.clip(base + pattern[..., None], 0, 1).astype(np.float32)


def _to_uint8(frames: np.ndarray, rng: np.random.Generator, gain: np.ndarray | None = None) -> np.ndarray:
    """Quantise, adding camera noise so no two clips are pixel-identical even where nothing moves. Uniform
    integer noise (standard deviation 2.5-5 grey levels) costs a quarter of what Gaussian noise does.
    ``gain`` (broadcastable to ``frames``): lighting applied on the way, saving a pass over the frames."""
    k = int(rng.integers(4, 9))
    noise = rng.integers(-k, k + 1, frames.shape, dtype=np.int8)
    return np.clip(frames * (255 if gain is None else 255 * gain) + 0.5 + noise, 0, 255).astype(np.uint8)


def render_step(
    verb: str,
    noun: str,
    n_frames: int,
    height: int,
    width: int,
    rng: np.random.Generator,
    fps: int = 20,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """Draw one step, ``verb`` applied to ``noun``: (n_frames, height, width, 3) uint8 RGB frames at ``fps``.

    Placement, size, colour, speed and noise are drawn from ``rng``; ``background`` ((H, W, 3) float in
    [0, 1]) is the scene the step happens in, a fresh one from ``rng`` when None."""
    if verb not in _VERB_DRAW:
        raise ConfigError(f"unknown verb {verb!r}; MiniCook verbs are {', '.join(VERBS)}")
    if noun not in _SHAPES:
        raise ConfigError(f"unknown noun {noun!r}; MiniCook nouns are {', '.join(NOUNS)}")
    if n_frames < 1:
        raise ConfigError(f"a step needs at least one frame, got n_frames={n_frames}")
    if background is None:
        background = _background(height, width, rng)
    canvas = _Canvas.blank(background, n_frames, fps)
    cx = width * (0.5 + rng.uniform(-0.1, 0.1))
    cy = height * (0.5 + rng.uniform(-0.08, 0.08))
    _VERB_DRAW[verb](canvas, _Noun.sample(noun, canvas.unit, rng), cx, cy, rng)
    return _to_uint8(canvas.frames, rng)


# --------------------------------------------------------------------------------------- video planning

@dataclass(frozen=True)
class Step:
    """One annotated step: ``verb`` applied to ``noun`` on frames [start_frame, end_frame)."""

    verb: str
    noun: str
    start_frame: int
    end_frame: int

    @property
    def caption(self) -> str:
        return f"{self.verb} the {self.noun}"


@dataclass(frozen=True)
class VideoPlan:
    """Everything about one video except its pixels: the step timeline and the narration."""

    name: str
    fps: int
    num_frames: int
    steps: tuple[Step, ...]
    cues: tuple[Cue, ...]

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def _video_rngs(seed: int, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(plan, render) generators of video ``index``: planning never depends on rendering, so the annotations
    and narration of a video can be rebuilt without drawing it."""
    plan, render = np.random.SeedSequence((seed, _STREAM_VIDEO, index)).spawn(2)
    return np.random.default_rng(plan), np.random.default_rng(render)


def _asr_noise(text: str, misheard: dict[str, str], rng: np.random.Generator) -> str:
    """Now and then drop a word, hesitate, or mishear a word, as speech recognition does."""
    words = text.split()
    roll = rng.random()
    if roll < 0.08 and len(words) > 3:
        del words[int(rng.integers(len(words)))]
    elif roll < 0.16:
        words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(("uh", "um"))))
    elif roll < 0.26:
        candidates = [i for i, word in enumerate(words) if word in misheard]
        if candidates:
            i = candidates[int(rng.integers(len(candidates)))]
            words[i] = misheard[words[i]]
    return " ".join(words)


def _step_sentences(step: Step, say: Narration, rng: np.random.Generator) -> list[str]:
    fill = {"verb": step.verb, "noun": step.noun, "how": say.how[step.verb], "ing": say.ing[step.verb]}
    first = TEMPLATE if rng.random() < 0.4 else str(rng.choice(say.phrases))
    sentences = [first.format(**fill)]
    if rng.random() < 0.35:
        sentences.append(str(rng.choice(say.follow_ups)).format(**fill))
    return sentences


def _narrate(
    steps: tuple[Step, ...], fps: int, duration: float, say: Narration, rng: np.random.Generator
) -> tuple[Cue, ...]:
    """ASR-style cues, one speaker: each step said within about a second of when it starts, plus chatter.

    The sentence naming a step is placed first and keeps its time; follow-ups and chatter are said only
    where they fit between those, so talk never drifts away from the picture."""
    words_per_second = rng.uniform(2.8, 3.6)

    def length(text: str) -> float:
        return len(text.split()) / words_per_second + rng.uniform(0.2, 0.5)

    cues: list[Cue] = []
    extras: list[tuple[float, str]] = []  # (when the speaker would like to say it, what)
    if rng.random() < 0.7:
        extras.append((rng.uniform(0.0, 0.3), str(rng.choice(say.intros))))
    free = 0.0
    for step in steps:
        first, *rest = _step_sentences(step, say, rng)
        text = _asr_noise(first, say.misheard, rng)
        start = max(step.start_frame / fps + rng.uniform(-1.0, 1.0), free, 0.0)
        end = min(start + length(text), duration)
        if end - start >= 0.5:
            cues.append(Cue(round(start, 3), round(end, 3), text))
            free = end + 0.05
        extras += [(free, sentence) for sentence in rest]
        if rng.random() < 0.25:
            extras.append((step.end_frame / fps + rng.uniform(-1.5, 0.0), str(rng.choice(say.fillers))))
    if rng.random() < 0.5:
        extras.append((duration - rng.uniform(1.5, 2.5), str(rng.choice(say.outros))))
    for at, sentence in extras:
        text = _asr_noise(sentence, say.misheard, rng)
        taken = [(c.start - 0.05, c.end + 0.05) for c in cues]
        start = max([at, 0.0] + [e for s, e in taken if s <= at < e])
        end = start + length(text)
        if end <= duration and not any(s < end and start < e for s, e in taken):
            cues.append(Cue(round(start, 3), round(end, 3), text))
    return tuple(sorted(cues, key=lambda c: c.start))


def plan_video(
    index: int,
    seed: int,
    fps: int = 20,
    min_steps: int = 3,
    max_steps: int = 6,
    verbs: tuple[str, ...] | None = None,
    nouns: tuple[str, ...] | None = None,
    recipes: bool = False,
    world: World | None = None,
) -> VideoPlan:
    """The timeline and narration of video ``index`` of the ``world`` (MiniCook when None) corpus generated with
    ``seed``; its steps draw from ``verbs`` and ``nouns`` (all of the world's when None), independently or, with
    ``recipes``, each from the step before (the world's `recipe_next`)."""
    world = world or MINICOOK
    verbs, nouns = verbs or world.verbs, nouns or world.nouns
    rng, _ = _video_rngs(seed, index)

    def frames(seconds: float) -> int:
        return max(1, int(round(seconds * fps)))

    cursor = frames(rng.uniform(0.5, 1.5))  # a moment of empty counter before the first step
    steps: list[Step] = []
    for k in range(int(rng.integers(min_steps, max_steps + 1))):
        if k:
            cursor += frames(rng.uniform(0.3, 1.0)) if rng.random() < 0.6 else 0
        if recipes and steps:
            verb, noun = _recipe_step(steps[-1], verbs, nouns, world.recipe_next, rng)
        else:
            verb, noun = str(rng.choice(verbs)), str(rng.choice(nouns))
        length = frames(rng.uniform(2.0, 4.0))
        steps.append(Step(verb, noun, cursor, cursor + length))
        cursor += length
    num_frames = cursor + frames(rng.uniform(0.5, 1.0))
    cues = _narrate(tuple(steps), fps, num_frames / fps, world.narration, rng)
    return VideoPlan(world.video_name(index), fps, num_frames, tuple(steps), cues)


def _recipe_step(
    last: Step,
    verbs: tuple[str, ...],
    nouns: tuple[str, ...],
    recipe_next: dict[str, tuple[str, ...]],
    rng: np.random.Generator,
) -> tuple[str, str]:
    """(verb, noun) of the step after ``last`` in a recipe corpus (``recipe_next``, `RECIPE_SAME_NOUN`)."""
    following = [v for v in recipe_next.get(last.verb, ()) if v in verbs] or list(verbs)
    verb = str(rng.choice(following))
    noun = last.noun if rng.random() < RECIPE_SAME_NOUN else str(rng.choice(nouns))
    return verb, noun


def blocks(plan: VideoPlan) -> Iterator[tuple[int, int, Step | None]]:
    """(start frame, end frame, step or None while idle) of each block of ``plan``, in order, covering it."""
    cursor = 0
    for step in plan.steps:
        if step.start_frame > cursor:
            yield cursor, step.start_frame, None
        yield step.start_frame, step.end_frame, step
        cursor = step.end_frame
    if plan.num_frames > cursor:
        yield cursor, plan.num_frames, None


def render_video(plan: VideoPlan, seed: int, index: int, height: int, width: int) -> Iterator[np.ndarray]:
    """The frames of a planned MiniCook video in blocks of (T, H, W, 3) uint8: idle counter, a step, idle, ..."""
    _, rng = _video_rngs(seed, index)
    background = _background(height, width, rng)
    for start, end, step in blocks(plan):
        if step is None:
            yield _to_uint8(np.repeat(background[None], end - start, axis=0), rng)
        else:
            yield render_step(step.verb, step.noun, end - start, height, width, rng, fps=plan.fps,
                              background=background)


@dataclass(frozen=True)
class World:
    """What a generated corpus shows and says: its steps' words, how each is drawn, and how it is narrated.

    Planning (step timeline, recipes, narration timing and ASR noise), splits and writing are shared by all
    worlds; a world brings its vocabulary, its narrator and its renderer."""

    name: str  # also the prefix of its video files
    title: str  # how messages name its corpora
    version: int  # bumped whenever this world's output changes, so an older corpus is never topped up
    verbs: tuple[str, ...]  # each a single BERT WordPiece token, so the template can be filled
    nouns: tuple[str, ...]
    noun_colours: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]]
    recipe_next: dict[str, tuple[str, ...]]  # with `recipes`, each verb's possible successors
    narration: Narration
    # (plan, seed, index, height, width) -> blocks of (T, H, W, 3) uint8 frames covering the plan
    render: Callable[[VideoPlan, int, int, int, int], Iterator[np.ndarray]]
    # A world shown through real footage: (source folder, height, width) -> the world of that footage, with its
    # nouns, renderer, sources and scenes. None for worlds that draw their own scenes.
    from_source: Callable[[Path, int, int], "World"] | None = None
    sources: dict[str, int] = field(default_factory=dict)  # footage file -> size in bytes, part of a corpus's identity
    scenes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # noun -> the footage files showing it

    def video_name(self, index: int) -> str:
        return f"{self.name}_{index:04d}"

    def is_video_file(self, filename: str) -> bool:
        return re.fullmatch(rf"{self.name}_\d{{4,}}\.(mp4|srt)", filename) is not None


MINICOOK = World("minicook", "MiniCook", 1, VERBS, NOUNS, NOUN_COLOURS, RECIPE_NEXT, _NARRATION, render_video)


def assign_splits(videos: int, seed: int) -> list[str]:
    """Split of each video: about 70/15/15 % train/val/test, at random but fixed by ``seed``; with few videos,
    test and then val still get one each (2 videos: train + test, 3 or more: all three)."""
    n_test = max(1, round(0.15 * videos)) if videos >= 2 else 0
    n_val = max(1, round(0.15 * videos)) if videos >= 3 else 0
    order = np.random.default_rng(np.random.SeedSequence((seed, _STREAM_SPLIT))).permutation(videos)
    splits = ["train"] * videos
    for i in order[:n_test]:
        splits[i] = "test"
    for i in order[n_test:n_test + n_val]:
        splits[i] = "val"
    return splits


# ---------------------------------------------------------------------------------------------- writing

def _srt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def write_srt(path: Path, cues: tuple[Cue, ...]) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        for i, cue in enumerate(cues, 1):
            fh.write(f"{i}\n{_srt_time(cue.start)} --> {_srt_time(cue.end)}\n{cue.text}\n\n")


def write_video(path: Path, blocks: Iterator[np.ndarray], fps: int, height: int, width: int) -> None:
    """Encode frame blocks as H.264 (yuv420p) MP4; the file appears only once complete."""
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            # Frames this small gain nothing from threads, and a single thread leaves the cores to others.
            stream.codec_context.thread_count = 1
            # Without cpu-independent, x264's SIMD paths make the first frames differ from run to run (measured:
            # a few percent of encodes), which would break "same seed, same pixels".
            stream.options = {"crf": "20", "preset": "veryfast", "x264-params": "cpu-independent=1"}
            index = 0
            for block in blocks:
                for array in block:
                    frame = av.VideoFrame.from_ndarray(array, format="rgb24")
                    frame.pts, frame.time_base = index, Fraction(1, fps)
                    container.mux(stream.encode(frame))
                    index += 1
            container.mux(stream.encode())


def _check_out(out: Path, identity: dict, overwrite: bool) -> None:
    """Refuse to write into a directory holding anything but an unfinished run of this very corpus."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a directory")
    if overwrite or not out.exists() or not any(out.iterdir()):
        return
    config = out / "synth.json"
    if not config.is_file():
        raise ConfigError(f"{out} is not empty and holds no generated corpus; choose a new or empty directory, "
                          "or pass overwrite to write the corpus into it anyway")
    previous = read_json(config).get("parameters", {})
    if previous != identity:
        # Over the keys of both: the optional ones (verbs, nouns, recipes, world) are recorded only when set.
        keys = [*identity, *(k for k in previous if k not in identity)]
        changed = ", ".join(
            f"{k}: {previous.get(k)!r} -> {identity.get(k)!r}" for k in keys if previous.get(k) != identity.get(k)
        )
        raise ConfigError(f"{out} holds a corpus generated with other parameters ({changed}); "
                          "choose another directory, or pass overwrite to replace it")


def _remove_stale(videos_dir: Path, keep: set[str]) -> None:
    """After an overwrite, drop videos of the previous corpus (of any world) that the new one does not have."""
    from videobert.data.workshop import WORLDS

    if videos_dir.is_dir():
        for path in videos_dir.iterdir():
            if any(w.is_video_file(path.name) for w in WORLDS.values()) and path.name not in keep:
                path.unlink()


def synth(
    out: Path,
    videos: int = 40,
    seed: int = 0,
    width: int = 96,
    height: int = 96,
    fps: int = 20,
    min_steps: int = 3,
    max_steps: int = 6,
    verbs: int = len(VERBS),
    nouns: int | None = None,
    recipes: bool = False,
    world: str = "minicook",
    source: Path | None = None,
    overwrite: bool = False,
) -> StageReport:
    """Generate a corpus of narrated videos with exact step annotations: MiniCook (cooking) or another world.

    Each video shows min_steps to max_steps steps; a step is one of 8 verbs (each a distinct motion) applied to one
    of 10 nouns (each a distinct colour and shape), drawn independently or, with `recipes`, from the step before;
    narrated ASR-style in an .srt file next to the video. Also writes annotations.jsonl (one step a line, with its
    split) and synth.json (parameters and word lists).
    Re-running with the same parameters only writes what is missing.

    Args:
        out: Directory to write the corpus to; must be new or empty, or hold an unfinished run of the same corpus.
        videos: Number of videos to generate.
        seed: Random seed; video i depends only on the seed and i, not on how many videos are generated.
        width: Frame width in pixels (even, at least 32).
        height: Frame height in pixels (even, at least 32).
        fps: Frames per second.
        min_steps: Fewest steps in a video.
        max_steps: Most steps in a video.
        verbs: Use only the first this many of the 8 verbs (a smaller, easier corpus for quick experiments).
        nouns: Use only the first this many nouns (MiniCook and Workshop have 10, RealCam one per source scene;
            all when not given).
        recipes: Steps follow recipes (each step's verb from a fixed list of successors of the step before, and
            mostly the same object) instead of being drawn independently, so that the next step can be forecast.
        world: What the videos show: minicook (cooking on plain counters) or workshop (other verbs, objects and
            words; random coloured, textured backgrounds, changing light, a moving camera and distractor objects)
            or realcam (camera moves over real footage from `source`: pan, tilt, zoom, pull, hold, shake, spin,
            sweep; one noun per source scene).
        source: Folder of real videos (searched at any depth; at least 2 readable) that realcam films; only for
            realcam. The files' names and sizes are part of the corpus's identity.
        overwrite: Write into a non-empty directory, replacing an earlier generated corpus there.
    """
    from videobert.data.workshop import WORLDS

    if world not in WORLDS:
        raise ConfigError(f"unknown world {world!r}; choose one of {', '.join(WORLDS)}")
    spec = WORLDS[world]
    if spec.from_source is None and source is not None:
        raise ConfigError(f"source is only for worlds shown through real footage (realcam); {world} draws its own")
    if spec.from_source is not None and source is None:
        raise ConfigError(f"world {world} films real footage: pass source, a folder of videos")
    if videos < 1:
        raise ConfigError(f"videos must be at least 1, got {videos}")
    if min(width, height) < 32 or width % 2 or height % 2:
        raise ConfigError(f"width and height must be even and at least 32 (H.264 yuv420p), got {width}x{height}")
    if not 1 <= fps <= 120:
        raise ConfigError(f"fps must be between 1 and 120, got {fps}")
    if spec.from_source is not None:
        spec = spec.from_source(Path(source), height, width)
    nouns = len(spec.nouns) if nouns is None else nouns
    if not 1 <= verbs <= len(spec.verbs) or not 1 <= nouns <= len(spec.nouns):
        raise ConfigError(f"verbs must be in 1..{len(spec.verbs)} and nouns in 1..{len(spec.nouns)}, "
                          f"got {verbs} and {nouns}")
    used_verbs, used_nouns = spec.verbs[:verbs], spec.nouns[:nouns]
    if not 1 <= min_steps <= max_steps:
        raise ConfigError(f"need 1 <= min_steps <= max_steps, got min_steps={min_steps}, max_steps={max_steps}")
    out = Path(out)
    identity = {"generator": "minicook", "version": spec.version, "videos": videos, "seed": seed, "width": width,
                "height": height, "fps": fps, "min_steps": min_steps, "max_steps": max_steps}
    if (verbs, nouns) != (len(spec.verbs), len(spec.nouns)):  # only when reduced: full corpora keep their identity
        identity |= {"verbs": verbs, "nouns": nouns}
    if recipes:  # likewise recorded only when on
        identity |= {"recipes": True}
    if spec is not MINICOOK:  # and the world only when not the original one
        identity |= {"world": world}
    if spec.sources:
        identity |= {"sources": spec.sources}
    _check_out(out, identity, overwrite)
    began = time.perf_counter()
    splits = assign_splits(videos, seed)
    # The config goes first: a run cut short is then recognisable as this corpus and can be resumed.
    write_json(out / "synth.json", {
        "parameters": identity, "verbs": list(used_verbs), "nouns": list(used_nouns), "template": TEMPLATE,
        "noun_colours": {k: [list(c) for c in v] for k, v in spec.noun_colours.items()},
        "splits": {s: splits.count(s) for s in SPLITS},
        **({"scenes": {n: list(spec.scenes[n]) for n in used_nouns}} if spec.scenes else {}),
        **({"recipe_next": {v: [n for n in spec.recipe_next[v] if n in used_verbs] for v in used_verbs},
            "recipe_same_noun": RECIPE_SAME_NOUN} if recipes else {}),
    })
    videos_dir = out / "videos"
    rows: list[dict] = []
    done = skipped = 0
    seconds = 0.0
    for i in range(videos):
        plan = plan_video(i, seed, fps, min_steps, max_steps, used_verbs, used_nouns, recipes, spec)
        mp4, srt = videos_dir / f"{plan.name}.mp4", videos_dir / f"{plan.name}.srt"
        if overwrite or not (mp4.is_file() and srt.is_file()):
            write_video(mp4, spec.render(plan, seed, i, height, width), fps, height, width)
            write_srt(srt, plan.cues)
            done += 1
        else:
            skipped += 1
        seconds += plan.duration
        rows += [{"video": f"videos/{plan.name}.mp4", "start": round(s.start_frame / fps, 3),
                  "end": round(s.end_frame / fps, 3), "verb": s.verb, "noun": s.noun, "caption": s.caption,
                  "split": splits[i]} for s in plan.steps]
    if overwrite:
        _remove_stale(videos_dir, {f"{spec.video_name(i)}.{ext}" for i in range(videos) for ext in ("mp4", "srt")})
    with atomic_open(out / "annotations.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in rows)
    return StageReport(
        stage="synth",
        done=done,
        skipped=skipped,
        outputs={"corpus": str(out), "annotations": str(out / "annotations.jsonl"), "config": str(out / "synth.json")},
        stats={"videos": videos, "steps": len(rows), "duration_s": round(seconds, 2),
               "mean_steps_per_video": round(len(rows) / videos, 2),
               **{f"{s}_videos": splits.count(s) for s in SPLITS},
               "seconds": round(time.perf_counter() - began, 2)},
    )
