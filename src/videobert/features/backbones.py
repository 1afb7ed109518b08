"""Clip backbones: one interface that turns a batch of clips into one feature vector per clip.

Every backbone is a :class:`Backbone`: ``backbone(clips)`` maps ``(B, T, H, W, 3)`` uint8 RGB clips, with
``(H, W) == backbone.clip_size``, to ``(B, backbone.dim)`` float32. :func:`get_backbone` builds one from a
name:

* ``pixels`` (default): :class:`PixelsBackbone`, a weight-free appearance + motion descriptor in numpy;
* ``hf:<model dir or hub id>``: :class:`HFVideoBackbone`, a Hugging Face video model (VideoMAE, TimeSformer,
  ViViT, X-CLIP) on the clip's frames subsampled to the model's ``num_frames``;
* ``hf-image:<model dir or hub id>``: :class:`HFImageBackbone`, a Hugging Face image encoder (ViT, DINOv2,
  CLIP, SigLIP) on a few frames of the clip, mean-pooled over them;
* ``encoder:<directory>``: :class:`EncoderBackbone`, a clip encoder trained on the user's own videos by
  ``videobert train-encoder``.

New kinds register with :func:`register_backbone`.
"""
from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import numpy as np

from videobert.utils.device import resolve_device
from videobert.utils.errors import ConfigError, InputError


class Backbone(ABC):
    """Maps clips to vectors. Subclasses set ``name`` (what :func:`get_backbone` was given, recorded in
    ``features/meta.json``), ``dim`` and ``clip_size`` (the (height, width) the decoder must deliver)."""

    name: str
    dim: int
    clip_size: tuple[int, int]
    device: str = "cpu"

    @abstractmethod
    def __call__(self, clips: np.ndarray) -> np.ndarray:
        """``(B, T, H, W, 3)`` uint8 RGB -> ``(B, dim)`` float32."""

    def _check(self, clips: np.ndarray) -> None:
        if clips.ndim != 5 or clips.shape[-1] != 3 or clips.dtype != np.uint8:
            raise ValueError(f"{self.name}: expected (B, T, H, W, 3) uint8 clips, got {clips.shape} {clips.dtype}")
        if tuple(clips.shape[2:4]) != tuple(self.clip_size):
            raise ValueError(f"{self.name}: expected frames of {self.clip_size} (h, w), got {clips.shape[2:4]}")


# ----------------------------------------------------------------------------------------------------------
# pixels: a weight-free descriptor


def _bin_edges(n: int, bins: int) -> np.ndarray:
    """Start index of each of ``bins`` near-equal runs covering ``range(n)``."""
    return np.floor(np.arange(bins) * n / bins).astype(np.intp)


def _area_pool(x: np.ndarray, axis: int, bins: int) -> np.ndarray:
    """Mean over ``bins`` near-equal runs along ``axis`` (box filter + decimation; exact for any size)."""
    n = x.shape[axis]
    edges = _bin_edges(n, bins)
    counts = np.diff(np.append(edges, n)).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = bins
    return np.add.reduceat(x, edges, axis=axis, dtype=np.float32) / counts.reshape(shape)


def _unit(v: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """L2-normalise the rows of (B, D); an all-zero row stays zero."""
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), eps)


def _grouped_orientation_histogram(
    angle: np.ndarray, weight: np.ndarray, group: np.ndarray, groups: int, bins: int, period: float
) -> np.ndarray:
    """Weighted histograms of ``angle`` (radians, periodic with ``period``), one per ``group`` id in
    ``[0, groups)``; all inputs 1-D of one length. Bin ``k`` is centred on ``k * period / bins`` (so with 8
    direction bins, 0 is +x, 2 is +y) and each sample is split linearly between its two nearest centres,
    so a small rotation moves mass smoothly. -> (groups, bins) float32."""
    pos = angle * np.float32(bins / period)
    lo = np.floor(pos)
    frac = pos - lo
    lo = lo.astype(np.intp)
    base = group.astype(np.intp) * bins
    index = np.concatenate([base + lo % bins, base + (lo + 1) % bins])
    mass = np.concatenate([weight * (1 - frac), weight * frac])
    return np.bincount(index, mass, minlength=groups * bins).reshape(groups, bins).astype(np.float32)


def _orientation_histogram(angle: np.ndarray, weight: np.ndarray, bins: int, period: float) -> np.ndarray:
    """:func:`_grouped_orientation_histogram` over the last axis of (..., N) arrays -> (..., bins)."""
    lead = angle.shape[:-1]
    groups = int(np.prod(lead, dtype=np.int64))
    group = np.repeat(np.arange(groups), angle.shape[-1])
    return _grouped_orientation_histogram(angle.ravel(), weight.ravel(), group, groups, bins, period).reshape(*lead, bins)


def _colour_terms(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(hue in radians, saturation, value, chroma weight) of (..., 3) RGB in [0, 1], each (...).

    The chroma weight says how clearly a pixel is coloured: 0 for greyish or near-black pixels (counters,
    steel, shadows), 1 from saturation 0.5 and value 0.2 up, linear in between so that nothing jumps at a
    threshold."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    # Elementwise max/min of the three planes: much faster than a reduction over a length-3 axis.
    mx, mn = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    sat = (mx - mn) / np.maximum(mx, 1e-6)
    hue = np.arctan2(np.sqrt(np.float32(3)) * (g - b), 2 * r - g - b)  # hexagonal projection
    chroma = np.clip((sat - 0.25) / 0.25, 0, 1) * np.clip((mx - 0.05) / 0.15, 0, 1)
    return hue, sat, mx, chroma


class PixelsBackbone(Backbone):
    """A weight-free clip descriptor in two halves, appearance and motion, made of blocks that are each
    L2-normalised and then weighted by a fixed share of the squared norm (:attr:`BLOCKS`), so that no
    block's scale or length decides the distances k-means sees. Everything is computed on the clip
    area-pooled to a 32x32 working grid; with the default 32x32 ``clip_size`` the decoder's scaler does
    that pooling.

    Appearance (what is in the clip; 0.5 of the squared norm):

    * ``colour_layout`` (192 = 8x8 cells x 3; 0.1): the temporal mean frame pooled to 8x8, in an opponent
      colour space (lightness ``(R+G+B)/3``, red-green ``R-G``, yellow-blue ``(R+G)/2-B``) minus the clip's
      mean colour: where things of which colour are, relative to the scene.
    * ``colour_histogram`` (66; 0.3): colours of every fifth frame, position-free. Each pixel counts in
      proportion to its chroma weight (greyish counters and steel count nothing) towards 16 hues
      x 2 saturation levels x 2 brightness levels (all soft-binned), plus near-white and near-black
      colourless pixels; normalised by the coloured mass (at least 1 % of the frame) and square-rooted, so a
      small object's colour weighs as much as a large one's.
    * ``shape`` (10; 0.1): outline of the coloured area of the mean frame: orientation histogram (8 unsigned
      bins) of the chroma-weight gradient, its elongation ``1 - sqrt(minor/major)`` from second moments
      (0 for a disc, near 1 for a stick) and the square root of the coloured fraction of the frame.

    Motion (what moves and how; 0.5). ``dI`` is the difference between consecutive frames, ``|dI|`` its
    mean absolute value over the R, G and B planes (so an object that differs from the background only in
    hue still moves) less one grey level (1/255) of noise, floored at 0:

    * ``motion_layout`` (48 = 3 temporal thirds x 4x4 cells; 0.2): square-rooted mean ``|dI|`` per cell
      and third: where and when something moves.
    * ``motion_direction`` (24 = 3 thirds x 8 directions; 0.15): histogram of the normal-flow direction
      ``-sum_c dI_c * grad(I_c)`` over the colour planes (the direction an edge moves; image y points
      down), weighted by ``|dI|`` where the gradient is strong: down for
      pouring or dropping, left/right for rolling, up and down for chopping, every direction for stirring.
    * ``trajectory`` (16; 0.15): path of the centroid of ``|dI|``: net drift (x, y) from the first to the
      last third, spread (std of x, y), and the magnitude spectrum of the centroid's x and y and of the
      motion energy (relative to its mean) in 4 temporal-frequency bands each: steady vs rhythmic motion
      (chopping, shaking) and its tempo.

    The motion half is scaled by ``e / (e + motion_floor)``, ``e`` the clip's mean ``|dI|``: a static clip
    has an exactly zero motion half, and codec flicker stays small instead of being normalised up to a
    full-strength pattern. A clip with clear motion has norm ~1, a static one ``sqrt(0.5)``.

    The blocks are balanced for distances taken as they are: cluster these features without per-dimension
    standardisation, which would weigh each block by its number of dimensions instead.
    """

    #: (block name, width, share of the squared norm); appearance blocks first, then motion.
    BLOCKS: tuple[tuple[str, int, float], ...] = (
        ("colour_layout", 192, 0.10),
        ("colour_histogram", 66, 0.30),
        ("shape", 10, 0.10),
        ("motion_layout", 48, 0.20),
        ("motion_direction", 24, 0.15),
        ("trajectory", 16, 0.15),
    )
    MOTION = frozenset({"motion_layout", "motion_direction", "trajectory"})
    WORK = 32  # working grid side (px)
    HUES = 16
    CHROMA_FLOOR = 0.01  # fraction of the frame below which the colour histogram fades out
    COLOUR_STRIDE = 5  # the colour histogram looks at every fifth frame: colours change slowly

    def __init__(self, clip_size: tuple[int, int] = (32, 32), motion_floor: float = 0.001):
        self.name = "pixels"
        self.clip_size = (int(clip_size[0]), int(clip_size[1]))
        if min(self.clip_size) < self.WORK:
            raise ConfigError(f"pixels: clip_size must be at least {self.WORK}x{self.WORK}, got {self.clip_size}")
        self.motion_floor = motion_floor
        self.dim = sum(width for _, width, _ in self.BLOCKS)
        self.device = "cpu"

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        return np.concatenate(list(self.blocks(clips).values()), axis=1)

    def blocks(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        """The descriptor's blocks by name, each ``(B, width)`` float32, normalised and weighted."""
        self._check(clips)
        if clips.shape[1] < 2:
            raise ValueError(f"pixels: clips need at least 2 frames for motion, got {clips.shape[1]}")
        if clips.shape[2:4] == (self.WORK, self.WORK):
            x = clips.astype(np.float32) / np.float32(255)  # (B, T, 32, 32, 3) in [0, 1]
        else:
            # (B, T, H, W, 3) uint8 -> (B, T, 32, 32, 3) float32 in [0, 1]
            x = _area_pool(_area_pool(clips, 2, self.WORK), 3, self.WORK) / np.float32(255)
        mean_frame = x.mean(axis=1)  # (B, 32, 32, 3)
        # Motion is measured on all three colour planes: a red object on a grey counter of the same lightness
        # still moves. (B, T, 32, 32, 3) -> (B, T, 3, 32, 32)
        planes = np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3))
        d = np.diff(planes, axis=1)  # (B, T-1, 3, 32, 32)
        # Changes within one grey level are shrunk to zero, so camera and codec noise on a static scene
        # leave (almost) no motion.
        a = np.maximum(np.abs(d).mean(axis=2) - np.float32(1 / 255), 0)  # (B, T-1, 32, 32)
        raw = {
            "colour_layout": self._colour_layout(mean_frame),
            "colour_histogram": self._colour_histogram(x[:, :: self.COLOUR_STRIDE]),
            "shape": self._shape(_colour_terms(mean_frame)[3]),
            "motion_layout": self._motion_layout(a),
            "motion_direction": self._motion_direction(planes, d, a),
            "trajectory": self._trajectory(a),
        }
        energy = a.mean(axis=(1, 2, 3))  # (B,)
        presence = (energy / (energy + self.motion_floor))[:, None]
        out = {}
        for name, _, share in self.BLOCKS:
            block = _unit(raw[name]) * np.float32(math.sqrt(share))
            out[name] = (block * presence if name in self.MOTION else block).astype(np.float32)
        return out

    @staticmethod
    def _colour_layout(mean_frame: np.ndarray) -> np.ndarray:
        cells = _area_pool(_area_pool(mean_frame, 1, 8), 2, 8)  # (B, 32, 32, 3) -> (B, 8, 8, 3)
        r, g, b = cells[..., 0], cells[..., 1], cells[..., 2]
        opp = np.stack([(r + g + b) / 3, r - g, (r + g) / 2 - b], axis=-1)  # (B, 8, 8, 3)
        opp -= opp.mean(axis=(1, 2), keepdims=True)
        return opp.reshape(len(opp), -1)  # (B, 192)

    def _colour_histogram(self, frames: np.ndarray) -> np.ndarray:
        b = frames.shape[0]
        px = frames.reshape(b, -1, 3)  # (B, T', 32, 32, 3) -> (B, N, 3)
        n = px.shape[1]
        hue, sat, value, chroma = _colour_terms(px)  # (B, N) each
        grey = 1 - chroma
        # Colourless objects (an egg, a pan) show as near-white or near-black pixels.
        white = (grey * np.clip((value - 0.85) / 0.1, 0, 1)).sum(axis=1)
        black = (grey * np.clip((0.2 - value) / 0.1, 0, 1)).sum(axis=1)
        # Only coloured pixels (usually a small part of the frame) reach the hue histogram.
        c = chroma > 0
        hue, sat, value, weight = hue[c], sat[c], value[c], chroma[c]
        clip_of = np.broadcast_to(np.arange(b)[:, None], c.shape)[c]
        # Splitting each coloured pixel between two saturation and two brightness levels tells apart
        # objects of one hue (brown potato, pale bread, deep-yellow cheese). Level l of clip i is group
        # 4*i + l, so one grouped histogram gives all four.
        vivid = np.clip((sat - 0.4) / 0.4, 0, 1)
        bright = np.clip((value - 0.35) / 0.5, 0, 1)
        levels = [(1 - vivid) * (1 - bright), (1 - vivid) * bright, vivid * (1 - bright), vivid * bright]
        hues = _grouped_orientation_histogram(
            np.tile(hue, 4),
            np.concatenate([weight * lw for lw in levels]),
            np.concatenate([clip_of * 4 + level for level in range(4)]),
            b * 4,
            self.HUES,
            2 * np.pi,
        ).reshape(b, 4 * self.HUES)  # (B*4, HUES) -> (B, 4*HUES)
        hist = np.concatenate([hues, white[:, None], black[:, None]], axis=1)  # (B, 4*HUES + 2)
        mass = np.maximum(hist.sum(axis=1, keepdims=True), self.CHROMA_FLOOR * n)
        return np.sqrt(hist / mass)

    @staticmethod
    def _gradients(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Central differences over the last two axes, the edge row/column replicated (so one-sided, halved,
        at the border)."""
        gx, gy = np.empty_like(img), np.empty_like(img)
        np.subtract(img[..., :, 2:], img[..., :, :-2], out=gx[..., :, 1:-1])
        np.subtract(img[..., :, 1], img[..., :, 0], out=gx[..., :, 0])
        np.subtract(img[..., :, -1], img[..., :, -2], out=gx[..., :, -1])
        np.subtract(img[..., 2:, :], img[..., :-2, :], out=gy[..., 1:-1, :])
        np.subtract(img[..., 1, :], img[..., 0, :], out=gy[..., 0, :])
        np.subtract(img[..., -1, :], img[..., -2, :], out=gy[..., -1, :])
        gx *= 0.5
        gy *= 0.5
        return gx, gy

    def _shape(self, chroma: np.ndarray) -> np.ndarray:
        b = chroma.shape[0]
        gx, gy = self._gradients(chroma)  # (B, 32, 32) each
        outline = _orientation_histogram(
            np.arctan2(gy, gx).reshape(b, -1), np.hypot(gx, gy).reshape(b, -1), 8, np.pi
        )  # (B, 8)
        w = chroma.reshape(b, -1)  # (B, 32*32)
        mass = np.maximum(w.sum(axis=1), 1e-6)
        side = (np.arange(self.WORK, dtype=np.float32) + 0.5) / self.WORK
        ys, xs = np.repeat(side, self.WORK), np.tile(side, self.WORK)  # pixel centres, row-major
        dx = xs - ((w * xs).sum(axis=1) / mass)[:, None]
        dy = ys - ((w * ys).sum(axis=1) / mass)[:, None]
        cxx, cyy, cxy = ((w * dx * dx).sum(axis=1) / mass, (w * dy * dy).sum(axis=1) / mass,
                         (w * dx * dy).sum(axis=1) / mass)
        # Eigenvalues of the 2x2 covariance [[cxx, cxy], [cxy, cyy]].
        half_gap = np.sqrt(((cxx - cyy) / 2) ** 2 + cxy * cxy)
        major, minor = (cxx + cyy) / 2 + half_gap, np.maximum((cxx + cyy) / 2 - half_gap, 0)
        elongation = np.where(major > 1e-9, 1 - np.sqrt(minor / np.maximum(major, 1e-9)), 0)
        coverage = np.sqrt(w.mean(axis=1))
        return np.concatenate([_unit(np.sqrt(outline)), elongation[:, None], coverage[:, None]], axis=1)  # (B, 10)

    @staticmethod
    def _motion_layout(a: np.ndarray) -> np.ndarray:
        pooled = _area_pool(_area_pool(a, 2, 4), 3, 4)  # (B, T-1, 32, 32) -> (B, T-1, 4, 4)
        pooled = _area_pool(pooled, 1, 3)  # (B, T-1, 4, 4) -> (B, 3, 4, 4)
        return np.sqrt(pooled).reshape(len(a), -1)  # (B, 48)

    def _motion_direction(self, planes: np.ndarray, d: np.ndarray, a: np.ndarray) -> np.ndarray:
        b, steps = a.shape[:2]
        gx, gy = self._gradients((planes[:, 1:] + planes[:, :-1]) / 2)  # (B, T-1, 3, 32, 32) each
        # Normal flow of plane c is -dI_c * grad I_c / |grad I_c|^2; summing the numerators over the planes
        # gives the direction an edge of any colour moves. Only that direction is kept, and only where the
        # gradient is strong enough for it to mean something.
        fx = -np.einsum("btchw,btchw->bthw", d, gx)  # (B, T-1, 32, 32)
        fy = -np.einsum("btchw,btchw->bthw", d, gy)
        strength = np.einsum("btchw,btchw->bthw", gx, gx) + np.einsum("btchw,btchw->bthw", gy, gy)
        # Pixels without change (most of a frame) are left out of the histogram altogether.
        moving = (a > 0) & (strength > 1e-4)
        group = np.broadcast_to(np.arange(b * steps).reshape(b, steps, 1, 1), a.shape)[moving]
        hist = _grouped_orientation_histogram(np.arctan2(fy[moving], fx[moving]), a[moving], group, b * steps, 8, 2 * np.pi)
        return _area_pool(hist.reshape(b, steps, 8), 1, 3).reshape(b, -1)  # (B, T-1, 8) -> (B, 3, 8) -> (B, 24)

    @staticmethod
    def _trajectory(a: np.ndarray) -> np.ndarray:
        b, steps, h, w = a.shape
        energy = a.sum(axis=(2, 3))  # (B, T-1)
        safe = np.maximum(energy, 1e-9)
        ys = (np.arange(h, dtype=np.float32) + 0.5) / h
        xs = (np.arange(w, dtype=np.float32) + 0.5) / w
        cx = (a.sum(axis=2) * xs).sum(axis=-1) / safe  # (B, T-1)
        cy = (a.sum(axis=3) * ys).sum(axis=-1) / safe
        # A step without change has no centroid: hold it at the clip's energy-weighted mean position.
        total = np.maximum(energy.sum(axis=1, keepdims=True), 1e-9)
        still = energy <= 1e-9
        cx = np.where(still, (cx * energy).sum(axis=1, keepdims=True) / total, cx)
        cy = np.where(still, (cy * energy).sum(axis=1, keepdims=True) / total, cy)
        thirds = _area_pool(np.stack([cx, cy], axis=1), 2, 3)  # (B, 2, T-1) -> (B, 2, 3)
        drift = thirds[:, :, -1] - thirds[:, :, 0]  # (B, 2)
        spread = np.stack([cx.std(axis=1), cy.std(axis=1)], axis=1)  # (B, 2)
        series = np.stack([cx, cy, energy / (energy.mean(axis=1, keepdims=True) + 1e-9)], axis=1)  # (B, 3, T-1)
        series = series - series.mean(axis=2, keepdims=True)
        spectrum = np.abs(np.fft.rfft(series, axis=2))[:, :, 1:] / steps  # (B, 3, F), DC left out
        bands = _area_pool(spectrum, 2, 4) if spectrum.shape[2] >= 4 else np.zeros((b, 3, 4), np.float32)
        return np.concatenate([drift, spread, bands.reshape(b, -1)], axis=1)  # (B, 16)


# ----------------------------------------------------------------------------------------------------------
# Hugging Face models

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _model_source(spec: str) -> str:
    """A local directory (checked: exists, has a config and weights) or a hub id left to transformers."""
    path = Path(spec).expanduser()
    looks_local = path.exists() or path.is_absolute() or spec.startswith((".", "~")) or not _HUB_ID.match(spec)
    if not looks_local:
        return spec
    if not path.is_dir():
        raise InputError(path, "model directory does not exist" if not path.exists() else "not a directory")
    if not (path / "config.json").is_file():
        raise InputError(path, "no config.json: not a Hugging Face model directory (save it with save_pretrained)")
    if not any((path / name).is_file() for name in _WEIGHTS):
        raise InputError(path, f"no model weights in the directory (expected one of {', '.join(_WEIGHTS)})")
    return str(path)


def _size_of(spec: Any) -> tuple[int, int] | None:
    """(h, w) from a processor size dict (height/width or shortest_edge)."""
    if spec is None:
        return None
    get = spec.get if isinstance(spec, dict) else lambda k: getattr(spec, k, None)
    if get("height") and get("width"):
        return int(get("height")), int(get("width"))
    if get("shortest_edge"):
        return int(get("shortest_edge")), int(get("shortest_edge"))
    return None


def _load_processor(source: str):
    """The checkpoint's image processor, else its video processor (newer video checkpoints may ship only
    that one; transformers needs torchvision to load it)."""
    import transformers

    try:
        return transformers.AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError, KeyError) as image_exc:
        try:
            return transformers.AutoVideoProcessor.from_pretrained(source)
        except (OSError, ValueError, KeyError, ImportError):
            raise InputError(source, f"no usable image processor (preprocessor_config.json) next to the model "
                                     f"({image_exc})") from image_exc


class _HFBackbone(Backbone):
    """Shared loading and preprocessing of a Hugging Face vision model.

    Input pixels follow the model's own image processor (``AutoImageProcessor``): frames are decoded at
    its input size (``crop_size`` when it centre-crops, else ``size``), the whole frame scaled to it, so
    the processor's resize and crop have nothing left to do; its rescale, offset and normalisation are then
    applied as tensor operations on the model's device (parity with calling the processor is tested).
    Weights are loaded in float32 and run under ``torch.inference_mode``.
    """

    prefix: str

    def __init__(self, spec: str, device: str = "auto"):
        import torch
        import transformers

        self.name = f"{self.prefix}:{spec}"
        self.device = resolve_device(device)
        source = _model_source(spec)
        try:
            self.config = transformers.AutoConfig.from_pretrained(source)
            self.model = transformers.AutoModel.from_pretrained(source, dtype=torch.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(source, f"cannot load a Hugging Face model ({exc})") from exc
        self.processor = _load_processor(source)
        self.model.eval().to(self.device)
        self.clip_size = self._input_size()
        p = self.processor
        scale = float(p.rescale_factor) if getattr(p, "do_rescale", True) else 1.0
        offset = 1.0 if getattr(p, "offset", False) else 0.0
        mean = np.asarray(p.image_mean if getattr(p, "do_normalize", True) else [0, 0, 0], np.float32)
        std = np.asarray(p.image_std if getattr(p, "do_normalize", True) else [1, 1, 1], np.float32)
        # Processor: ((x * scale - offset) - mean) / std, folded into one multiply-add per channel.
        self._mul = torch.tensor(scale / std, device=self.device).view(3, 1, 1)
        self._add = torch.tensor((-offset - mean) / std, device=self.device).view(3, 1, 1)
        self.dim = int(self(np.zeros((1, self.frames, *self.clip_size, 3), np.uint8)).shape[1])

    def _input_size(self) -> tuple[int, int]:
        p = self.processor
        size = _size_of(getattr(p, "crop_size", None)) if getattr(p, "do_center_crop", False) else None
        size = size or _size_of(getattr(p, "size", None))
        if size is None:
            side = getattr(self.config, "image_size", None) or getattr(getattr(self.config, "vision_config", None), "image_size", None)
            if not side:
                raise InputError(self.name, "cannot tell the model's input size from its image processor or config")
            size = (side, side) if isinstance(side, int) else tuple(side)
        return size

    @property
    @abstractmethod
    def frames(self) -> int:
        """Frames taken from each clip."""

    def pixel_values(self, clips: np.ndarray):
        """``(B, T, H, W, 3)`` uint8 -> ``(B, F, 3, H, W)`` float32 model input on the device, with the
        ``F = self.frames`` frames at the centres of ``F`` equal segments of the clip."""
        import torch

        t = clips.shape[1]
        idx = ((np.arange(self.frames) + 0.5) * t / self.frames).astype(np.intp)
        x = torch.from_numpy(np.ascontiguousarray(clips[:, idx])).to(self.device)  # (B, F, H, W, 3) uint8
        x = x.permute(0, 1, 4, 2, 3).float()  # (B, F, H, W, 3) -> (B, F, 3, H, W)
        return x * self._mul + self._add

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        import torch

        self._check(clips)
        with torch.inference_mode():
            out = self.embed(self.pixel_values(clips))
        return out.float().cpu().numpy()

    @abstractmethod
    def embed(self, pixel_values):
        """``(B, F, 3, H, W)`` model input -> ``(B, dim)`` tensor."""


class HFVideoBackbone(_HFBackbone):
    """A Hugging Face video model on whole clips. The clip's frames are subsampled (or repeated) to the
    model's ``num_frames``. Pooling: X-CLIP's video embedding (``get_video_features``: per-frame vision
    tower, then its multi-frame integration transformer and projection) when the model has one, otherwise
    the mean of the last hidden state over all tokens (VideoMAE, TimeSformer, ViViT)."""

    prefix = "hf"

    @property
    def frames(self) -> int:
        n = getattr(self.config, "num_frames", None) or getattr(getattr(self.config, "vision_config", None), "num_frames", None)
        if not n:
            raise ConfigError(f"{self.name}: the model config has no num_frames, so it is not a video model; use hf-image:")
        return int(n)

    def embed(self, pixel_values):
        if hasattr(self.model, "get_video_features"):
            return self.model.get_video_features(pixel_values=pixel_values).pooler_output
        return self.model(pixel_values=pixel_values).last_hidden_state.mean(dim=1)


class HFImageBackbone(_HFBackbone):
    """A Hugging Face image encoder on ``frames`` frames of each clip (centres of equal segments),
    mean-pooled over them. Pooling per frame: the projected image embedding (``get_image_features``) of
    dual encoders (CLIP, SigLIP), otherwise the mean of the last hidden state over all tokens (ViT, DINOv2)."""

    prefix = "hf-image"

    def __init__(self, spec: str, device: str = "auto", frames: int = 8):
        self._frames = frames
        super().__init__(spec, device)

    @property
    def frames(self) -> int:
        return self._frames

    def embed(self, pixel_values):
        b, f = pixel_values.shape[:2]
        images = pixel_values.flatten(0, 1)  # (B, F, 3, H, W) -> (B*F, 3, H, W)
        if hasattr(self.model, "get_image_features"):
            per_frame = self.model.get_image_features(pixel_values=images).pooler_output
        else:
            per_frame = self.model(pixel_values=images).last_hidden_state.mean(dim=1)
        return per_frame.view(b, f, -1).mean(dim=1)  # (B*F, D) -> (B, F, D) -> (B, D)


# ----------------------------------------------------------------------------------------------------------
# encoder: a clip encoder trained on the user's own videos (`videobert train-encoder`)


class EncoderBackbone(Backbone):
    """A `ClipEncoderModel` directory written by `videobert train-encoder`: clips decoded at its `image_size`, its
    clip vectors as features. Named ``encoder:<absolute directory>`` in ``features/meta.json``, so that `predict`
    finds the same encoder from any working directory."""

    def __init__(self, directory: str, device: str = "auto"):
        import torch

        from videobert.model.clip_encoder import ClipEncoderConfig, ClipEncoderModel

        path = Path(directory).expanduser().resolve()
        config_file = path / "config.json"
        if not path.is_dir():
            raise InputError(path, "not found; give a directory written by `videobert train-encoder`")
        if not config_file.is_file() or not (path / "model.safetensors").is_file():
            raise InputError(path, "is not a clip encoder directory (needs config.json and model.safetensors "
                                   "from `videobert train-encoder`)")  # fmt: skip
        try:
            kind = json.loads(config_file.read_text()).get("model_type")
        except (OSError, ValueError) as exc:
            raise InputError(config_file, f"unreadable ({exc})") from exc
        if kind != ClipEncoderConfig.model_type:
            raise InputError(config_file, f"describes a {kind!r} model, not a clip encoder from `videobert train-encoder`")
        try:
            self.model = ClipEncoderModel.from_pretrained(path, dtype=torch.float32)
        except Exception as exc:  # noqa: BLE001 - a damaged checkpoint is the user's file, named with the cause
            raise InputError(path, f"cannot load the clip encoder ({type(exc).__name__}: {exc})") from exc
        self.device = resolve_device(device)
        self.model.eval().to(self.device)
        self.name = f"encoder:{path}"
        side = int(self.model.config.image_size)
        self.clip_size = (side, side)
        self.dim = int(self.model.config.hidden_size)
        # The weight-free descriptor an encoder may read beside the frames, at the encoder's frame size.
        self.descriptor = PixelsBackbone(clip_size=self.clip_size) if self.model.config.descriptor == "pixels" else None

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        import torch

        self._check(clips)
        if clips.shape[1] < 2:
            raise ValueError(f"{self.name}: clips need at least 2 frames (the encoder reads motion), got {clips.shape[1]}")
        descriptor = None
        if self.descriptor is not None:
            descriptor = torch.from_numpy(self.descriptor(clips)).to(self.device)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(clips)).to(self.device)
            out = self.model(clips=x, descriptor=descriptor).clip_embeds
        return out.float().cpu().numpy()


# ----------------------------------------------------------------------------------------------------------
# registry

#: scheme -> (factory(argument, device), usage shown in errors). ``pixels`` takes no argument.
BACKBONES: dict[str, tuple[Callable[[str, str], Backbone], str]] = {}


def register_backbone(scheme: str, factory: Callable[[str, str], Backbone], usage: str) -> None:
    """Make ``scheme`` (``scheme`` or ``scheme:<argument>``) a backbone name; ``factory(argument, device)``
    builds it (argument is ``""`` when the name has none)."""
    BACKBONES[scheme] = (factory, usage)


def _pixels(arg: str, device: str) -> Backbone:
    if arg:
        raise ConfigError(f"the pixels backbone takes no argument, got 'pixels:{arg}'")
    if device not in ("auto", "cpu"):
        resolve_device(device)  # an impossible device request fails as for every backbone (this imports torch)
    return PixelsBackbone()


def _needs_arg(cls: type[_HFBackbone]) -> Callable[[str, str], Backbone]:
    def factory(arg: str, device: str) -> Backbone:
        if not arg:
            raise ConfigError(f"backbone '{cls.prefix}:' needs a model directory or hub id, e.g. '{cls.prefix}:path/to/model'")
        return cls(arg, device)

    return factory


register_backbone("pixels", _pixels, "pixels")
register_backbone("hf", _needs_arg(HFVideoBackbone), "hf:<model dir or hub id>")
register_backbone("hf-image", _needs_arg(HFImageBackbone), "hf-image:<model dir or hub id>")


def _encoder(arg: str, device: str) -> Backbone:
    if not arg:
        raise ConfigError("backbone 'encoder:' needs the directory written by `videobert train-encoder`, e.g. 'encoder:enc'")
    return EncoderBackbone(arg, device)


register_backbone("encoder", _encoder, "encoder:<directory from train-encoder>")


def get_backbone(name: str, device: str = "auto") -> Backbone:
    """Build the backbone called ``name`` (``pixels``, ``hf:<dir or id>``, ``hf-image:<dir or id>``) on
    ``device`` (``auto``: the GPU when there is one).

    Raises:
        ConfigError: unknown name (the message lists the valid ones) or unavailable device.
        InputError: a model directory that does not exist or lacks its config or weights.
    """
    scheme, _, arg = name.partition(":")
    if scheme not in BACKBONES:
        valid = ", ".join(usage for _, usage in BACKBONES.values())
        raise ConfigError(f"unknown backbone {name!r}; valid backbones: {valid}")
    factory, _ = BACKBONES[scheme]
    return factory(arg, device)


__all__ = [
    "Backbone",
    "PixelsBackbone",
    "HFVideoBackbone",
    "HFImageBackbone",
    "EncoderBackbone",
    "get_backbone",
    "register_backbone",
]
