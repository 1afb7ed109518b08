"""The visual vocabulary: hierarchical k-means over clip features (VideoBERT, Sun et al. 2019, §3.3).

The tree has ``k`` clusters at the top, ``k`` inside each of them, and so on down to ``depth`` levels, which
gives ``k ** depth`` visual words (paper: k = 12, depth = 4, 20,736 words). A vector's word is found by
descending the tree -- at every level the nearest of the current node's ``k`` children -- not by a flat
search over the leaves, so encoding costs ``depth * k`` distances instead of ``k ** depth``.

Node and token ids are mixed-radix paths. The node reached by choosing children ``c1, ..., cl`` (each in
``[0, k)``) has id ``c1 * k**(l-1) + c2 * k**(l-2) + ... + cl`` among the ``k**l`` nodes of level ``l``;
its children are nodes ``id * k + c`` of level ``l + 1``; a token is the id of a leaf (level ``depth``).
So ``token // k**(depth - l)`` is the token's ancestor at level ``l``, and tokens that share a prefix share
coarse clusters.

The tree is always complete: every id in ``[0, k ** depth)`` has a centroid, at every level, whatever the
data. Where a node cannot be split ``k`` ways:

* a node whose training points have fewer than ``k`` distinct values gets those values (in order of first
  appearance) as its first children, one each;
* a node with no training point at all (a padding child, or a child that k-means left empty) gets a
  copy of itself as child 0;
* its remaining children are *padding*: they carry a copy of their parent's centroid and are not live.
  :meth:`VisualTokenizer.encode` never chooses a padding child, so a padding leaf is a valid id that no
  vector is ever assigned to (:meth:`VisualTokenizer.reachable` says which ids can occur).

Features can be preprocessed before clustering (``normalize``); the fitted statistics are stored with the
tree and applied again in :meth:`VisualTokenizer.encode`. Centroids live in that *working* space;
:meth:`VisualTokenizer.centroids` maps them back to the input feature space.

A vocabulary may also remember how its features were made (:class:`FeatureSource`: backbone, feature dimension,
clip sampling), so that a model directory that carries it can tokenize a new video on its own
(``videobert predict``). That record is stored in ``config.json`` but is *not* part of the content hash: the hash
identifies the mapping from feature vectors to words, which is what ``tokens.parquet`` and a trained model's
config record. Keeping the record out of it leaves every existing hash valid, and lets the record be added to an
older vocabulary (or a model's ``visual_vocab/``) without orphaning the models trained on it. Mixing features
made another way with a vocabulary is guarded where features meet it (``tokenize`` compares the feature store's
meta.json with the one recorded when the vocabulary was fitted; ``predict`` extracts with this record).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterator

import numpy as np
from safetensors.numpy import save_file
from threadpoolctl import threadpool_limits

from videobert.utils.errors import ConfigError, InputError
from videobert.utils.io import atomic_path, load_safetensors, read_json, write_json

try:
    import faiss
except ImportError:  # faiss-cpu is a dependency; the sklearn path keeps the package usable where no wheel exists
    faiss = None

NORMALIZE = ("none", "l2", "standardize", "pca-whiten")
CENTER = ("none", "video")
FORMAT = "videobert-visual-vocab"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
TENSORS_FILE = "centroids.safetensors"

# Rows assigned to children per step while fitting: bounds the temporary copies at _CHUNK x D floats.
_CHUNK = 8192

# Eigenvalues are floored at this fraction of the largest before whitening, so rank-deficient features
# (fewer points than dimensions, constant dimensions) do not divide by zero.
_EIG_FLOOR = 1e-6


@dataclass(frozen=True)
class VisualVocabConfig:
    """How the visual vocabulary is built. Every field is part of :attr:`VisualTokenizer.content_hash`."""

    k: int = 12
    """Children per node (paper: 12)."""
    depth: int = 4
    """Levels of the tree; the vocabulary has ``k ** depth`` words (paper: 4)."""
    seed: int = 0
    """Seeds every k-means run (each node derives its own seed from this, its level and its id) and the
    subsampling, so a fit is reproducible."""
    normalize: str = "standardize"
    """Preprocessing fitted on the training features and applied before every distance:
    ``none``; ``l2`` (unit-norm rows, so only the direction of a feature counts); ``standardize`` (zero mean,
    unit variance per dimension, so no dimension dominates the distances by its scale); ``pca-whiten``
    (project onto the top ``pca_dim`` principal components and scale each to unit variance, so correlated
    dimensions do not count several times)."""
    pca_dim: int = 0
    """Principal components kept by ``pca-whiten``; 0 keeps all of them. Only valid with ``pca-whiten``."""
    center: str = "none"
    """``none``, or ``video``: subtract each video's mean feature before everything else, so that what a whole
    video shares (its background, lighting, camera) does not decide its clips' words. Fitting and encoding then
    need each row's video mean (:func:`video_means`)."""
    niter: int = 20
    """Lloyd iterations of every node's k-means."""
    max_points_per_node: int = 8192
    """A node's k-means is fitted on at most this many of its points (a seeded random subset); all of its
    points are then assigned to the resulting children. k-means with few centroids is memory-bound, so
    this bounds the fit time of the large nodes near the top; 8192 (about 700 points per centroid for
    k = 12) matched the quantisation error of fitting on every point within seed-to-seed noise."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int):
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                    raise ConfigError(f"{f.name} must be an integer, got {value!r}")
                object.__setattr__(self, f.name, int(value))  # numpy integers would not serialise to JSON
        if self.k < 2:
            raise ConfigError(f"k must be at least 2, got {self.k}")
        if self.depth < 1:
            raise ConfigError(f"depth must be at least 1, got {self.depth}")
        if self.k**self.depth > np.iinfo(np.int32).max:
            raise ConfigError(f"k ** depth = {self.k ** self.depth} visual words do not fit the int32 token ids")
        if self.seed < 0:
            raise ConfigError(f"seed must be non-negative, got {self.seed}")
        if self.normalize not in NORMALIZE:
            raise ConfigError(f"normalize must be one of {', '.join(NORMALIZE)}; got {self.normalize!r}")
        if self.center not in CENTER:
            raise ConfigError(f"center must be one of {', '.join(CENTER)}; got {self.center!r}")
        if self.pca_dim < 0:
            raise ConfigError(f"pca_dim must be non-negative, got {self.pca_dim}")
        if self.pca_dim and self.normalize != "pca-whiten":
            raise ConfigError(
                f"pca_dim={self.pca_dim} only applies with normalize='pca-whiten' (got {self.normalize!r})"
            )
        if self.niter < 1:
            raise ConfigError(f"niter must be at least 1, got {self.niter}")
        if self.max_points_per_node < self.k:
            raise ConfigError(f"max_points_per_node ({self.max_points_per_node}) must be at least k ({self.k})")

    @property
    def vocab_size(self) -> int:
        return self.k**self.depth


@dataclass(frozen=True)
class FeatureSource:
    """How the clip features of a vocabulary were made: enough to make them again for a new video (the fields of
    the feature store's ``meta.json``, see :mod:`videobert.features.store`)."""

    backbone: str
    """Backbone spec as :func:`videobert.features.backbones.get_backbone` takes it (``pixels``, ``hf:<dir or id>``,
    ``hf-image:<dir or id>``)."""
    dim: int
    """Feature dimension the backbone produces; must equal the vocabulary's input dimension."""
    fps: float
    """Frame rate the clips were sampled at."""
    clip_frames: int
    """Frames per clip (clips last ``clip_frames / fps`` seconds, non-overlapping)."""
    size: tuple[int, int]
    """(height, width) the decoder scaled frames to, the backbone's input size."""

    KEYS = ("backbone", "dim", "fps", "clip_frames", "size")

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ConfigError(f"backbone must be a non-empty string, got {self.backbone!r}")
        for name in ("dim", "clip_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) or not self.fps > 0:
            raise ConfigError(f"fps must be a positive number, got {self.fps!r}")
        object.__setattr__(self, "fps", float(self.fps))
        size = tuple(self.size) if isinstance(self.size, (list, tuple)) else ()
        positive = [isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in size]
        if len(size) != 2 or not all(positive):
            raise ConfigError(f"size must be (height, width) positive integers, got {self.size!r}")
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))

    @classmethod
    def from_meta(cls, meta: dict) -> "FeatureSource | None":
        """From a feature store's ``meta.json`` (or this class's :meth:`to_meta`); None when it lacks one of the
        fields (features written by other means than ``extract``). Invalid values raise :class:`ConfigError`."""
        if not all(key in meta for key in cls.KEYS):
            return None
        return cls(**{key: meta[key] for key in cls.KEYS})

    def to_meta(self) -> dict:
        """The fields in the layout of the feature store's ``meta.json`` (``size`` as a list)."""
        return {"backbone": self.backbone, "dim": self.dim, "fps": self.fps, "clip_frames": self.clip_frames,
                "size": list(self.size)}  # fmt: skip


class VisualTokenizer:
    """Hierarchical k-means vocabulary: :meth:`fit` on (N, D) clip features, :meth:`encode` features to
    int32 visual words in ``[0, vocab_size)``, :meth:`save_pretrained` / :meth:`from_pretrained` a
    directory (``config.json`` + ``centroids.safetensors``; no pickle). ``feature_source``, when known, says how
    the features were made (module docstring); it travels with the saved files but not in the content hash."""

    def __init__(self, config: VisualVocabConfig | None = None, feature_source: FeatureSource | None = None):
        self.config = config or VisualVocabConfig()
        self.feature_source = feature_source
        self.dim: int | None = None  # input feature dimension, known after fit
        self._pre: dict[str, np.ndarray] = {}
        self._centroids: list[np.ndarray] = []  # level l (1-based) at [l-1]: (k**l, D_work) float32
        self._live: list[np.ndarray] = []  # level l at [l-1]: (k**l,) bool, False for padding children
        self._sqnorms: list[np.ndarray] = []  # (k**l,) squared norms of the centroids, for distances
        self._hash: str | None = None

    # ------------------------------------------------------------------ fit

    def fit(self, features: np.ndarray, threads: int = 0, means: np.ndarray | None = None) -> "VisualTokenizer":
        """Build the tree from ``features`` (N, D), level by level. ``threads`` is how many nodes are
        clustered at once (0: every core this process may use); it does not change the result. ``means``: each
        row's video mean (N, D), required exactly when ``center`` is ``video``."""
        x = self._centre(_as_matrix(features), means)
        if x.shape[0] == 0:
            raise ConfigError("cannot fit a visual vocabulary on zero feature vectors")
        cfg = self.config
        if cfg.pca_dim > x.shape[1]:
            raise ConfigError(f"pca_dim={cfg.pca_dim} exceeds the feature dimension {x.shape[1]}")
        self.dim = x.shape[1]
        self._check_feature_source()
        self._pre = _fit_preprocess(x, cfg.normalize, cfg.pca_dim)
        z = _apply_preprocess(x, self._pre, cfg.normalize)  # (N, D_work)
        del x
        k = cfg.k
        # rows[bounds[p]:bounds[p + 1]] are the indices of node p's points (in their original order), so a
        # node gathers only its own rows, a chunk at a time: no copy of the whole matrix per level
        rows, bounds = np.arange(len(z)), np.array([0, len(z)])
        projection = z @ _probe(z.shape[1])  # (N,): cheap evidence that a node has k distinct rows
        parents = z.mean(axis=0, keepdims=True)  # (1, D_work): the root's centroid
        self._centroids, self._live, self._sqnorms = [], [], []
        with _node_workers(threads or _available_cores()) as pool:
            for level in range(cfg.depth):
                n_parents = k**level
                nodes = [rows[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
                split = functools.partial(self._split, z, projection, parents, level)
                results = list(pool.map(split, range(n_parents), nodes))
                children = np.stack([c for c, _, _ in results])  # (n_parents, k, D_work)
                self._centroids.append(children.reshape(n_parents * k, -1))  # (k**(level+1), D_work)
                self._live.append(np.concatenate([live for _, live, _ in results]))  # (k**(level+1),)
                self._sqnorms.append(_sqnorms(self._centroids[-1]))
                parents = self._centroids[-1]
                child = np.concatenate([a for _, _, a in results])  # (N,), in the order of ``rows``
                node = np.repeat(np.arange(n_parents) * k, np.diff(bounds)) + child
                order = np.argsort(node, kind="stable")  # keeps each child's rows in their original order
                rows = rows[order]
                bounds = np.searchsorted(node[order], np.arange(n_parents * k + 1))
        self._hash = None
        return self

    def _split(
        self, z: np.ndarray, projection: np.ndarray, parents: np.ndarray, level: int, node: int, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Split one node whose points are ``z[rows]``: its (k, D_work) children, their (k,) live mask, and
        the child of each of its points (m,)."""
        cfg = self.config
        k = cfg.k
        children = np.repeat(parents[node][None], k, axis=0)  # (k, D_work); padding: copies of the parent
        live = np.zeros(k, bool)
        rng = np.random.default_rng([cfg.seed, level, node])
        distinct = _distinct_rows(z, rows, projection[rows], k)
        if distinct is None:
            sample = rows
            if len(rows) > cfg.max_points_per_node:
                sample = rows[np.sort(rng.choice(len(rows), cfg.max_points_per_node, replace=False))]
            children[:] = _kmeans(z[sample], k, cfg.niter, seed=int(rng.integers(2**31 - 1)))
            live[:] = True
        else:
            children[: len(distinct)] = distinct
            live[: max(len(distinct), 1)] = True  # a node without points keeps one live child: itself
        sqnorms, dead = _sqnorms(children), ~live
        assignment = np.zeros(len(rows), np.int64)
        for a in range(0, len(rows), _CHUNK):
            assignment[a : a + _CHUNK] = _nearest(z[rows[a : a + _CHUNK]], children, sqnorms, dead)
        return children, live, assignment

    @property
    def centres_videos(self) -> bool:
        """Whether fitting and encoding take each row's video mean (``center == "video"``)."""
        return self.config.center == "video"

    def _centre(self, x: np.ndarray, means: np.ndarray | None) -> np.ndarray:
        if not self.centres_videos:
            if means is not None:
                raise ConfigError("this visual vocabulary does not centre videos; pass no video means")
            return x
        if means is None or np.shape(means) != x.shape:
            raise ConfigError(f"this visual vocabulary centres each video: pass the (N, D) video means of the {x.shape[0]} rows")
        return x - np.asarray(means, np.float32)

    # ------------------------------------------------------------------ encode

    def encode(self, features: np.ndarray, means: np.ndarray | None = None) -> np.ndarray:
        """Visual word of every row of ``features`` (N, D): (N,) int32 in ``[0, vocab_size)``. ``means``: each
        row's video mean (N, D), required exactly when ``center`` is ``video``."""
        self._require_fitted()
        x = _as_matrix(features)
        if x.shape[1] != self.dim:
            raise ConfigError(f"features have dimension {x.shape[1]}, the visual vocabulary was fitted on {self.dim}")
        x = self._centre(x, means)
        z = _apply_preprocess(x, self._pre, self.config.normalize)  # (N, D_work)
        k = self.config.k
        node = np.zeros(z.shape[0], np.int64)
        for level in range(self.config.depth):
            children = self._centroids[level].reshape(k**level, k, -1)  # (parents, k, D_work)
            sqnorms = self._sqnorms[level].reshape(k**level, k)
            dead = ~self._live[level].reshape(k**level, k)
            child = np.empty_like(node)
            # grouping the points by node makes each group one (m, D) @ (D, k) product
            for parent, rows in _groups(node):
                child[rows] = _nearest(z[rows], children[parent], sqnorms[parent], dead[parent])
            node = node * k + child
        return node.astype(np.int32)

    # ------------------------------------------------------------------ inspection

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def centroids(self, level: int | None = None, space: str = "input") -> np.ndarray:
        """(k**level, D) centroids of the nodes of ``level`` (1..depth; None: the leaves), row ``i`` for
        node id ``i``. ``space="input"`` maps them back to the input feature space (``standardize``: exactly;
        ``pca-whiten``: onto the retained principal subspace; ``l2``: the unit-space centroid times the
        mean training norm); ``space="working"`` gives them as clustered."""
        self._require_fitted()
        level = self.config.depth if level is None else level
        if not 1 <= level <= self.config.depth:
            raise ConfigError(f"level must be in [1, {self.config.depth}], got {level}")
        c = self._centroids[level - 1]
        if space == "working":
            return c.copy()
        if space != "input":
            raise ConfigError(f"space must be 'input' or 'working', got {space!r}")
        return _invert_preprocess(c, self._pre, self.config.normalize)

    def leaf_centroids(self) -> np.ndarray:
        """(k**depth, D) input-space centroid of every visual word, row = token id (a padding leaf carries
        a copy of its parent's), e.g. to initialise visual word embeddings."""
        return self.centroids(self.config.depth)

    def reachable(self, level: int | None = None) -> np.ndarray:
        """(k**level,) bool: which node ids of ``level`` (None: the leaves) :meth:`encode` can produce."""
        self._require_fitted()
        level = self.config.depth if level is None else level
        reach = np.ones(1, bool)
        for lv in range(level):
            reach = np.repeat(reach, self.config.k) & self._live[lv]
        return reach

    def path(self, token: int) -> tuple[int, ...]:
        """The child chosen at each level on the way to ``token``: its mixed-radix digits, top first."""
        return token_path(token, self.config.k, self.config.depth)

    # ------------------------------------------------------------------ identity and persistence

    def _tensors(self) -> dict[str, np.ndarray]:
        tensors = {f"pre.{name}": v for name, v in self._pre.items()}
        for level, (c, live) in enumerate(zip(self._centroids, self._live), start=1):
            tensors[f"centroids.{level}"] = c
            tensors[f"live.{level}"] = live.astype(np.uint8)
        return tensors

    @property
    def content_hash(self) -> str:
        """sha256 over the config, the input dimension and every stored tensor (name, dtype, shape, bytes).
        Equal hashes mean equal encodings; a model trained on these tokens stores it."""
        self._require_fitted()
        if self._hash is None:
            h = hashlib.sha256()
            config = asdict(self.config)
            if config["center"] == "none":  # recorded only when on: vocabularies built before it keep their hash
                del config["center"]
            h.update(json.dumps({"config": config, "dim": self.dim}, sort_keys=True).encode())
            for name, arr in sorted(self._tensors().items()):
                arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
                h.update(f"{name}|{arr.dtype.str}|{arr.shape}".encode())
                h.update(arr.tobytes())
            self._hash = h.hexdigest()
        return self._hash

    def check_hash(self, expected: str) -> None:
        """Raise :class:`ConfigError` unless this vocabulary is the one whose hash is ``expected``."""
        if expected != self.content_hash:
            raise ConfigError(
                f"visual vocabulary mismatch: expected content hash {expected}, this vocabulary has "
                f"{self.content_hash}; tokens or a model built with another vocabulary cannot be mixed with it"
            )

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``centroids.safetensors`` into ``directory`` (each file atomically)."""
        self._require_fitted()
        self._check_feature_source()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / TENSORS_FILE) as tmp:
            save_file({n: np.ascontiguousarray(a) for n, a in self._tensors().items()}, str(tmp))
        write_json(
            directory / CONFIG_FILE,
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "config": asdict(self.config),
                "dim": self.dim,
                "vocab_size": self.vocab_size,
                "content_hash": self.content_hash,
                "feature_source": self.feature_source.to_meta() if self.feature_source is not None else None,
            },
        )
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "VisualTokenizer":
        """Load a directory written by :meth:`save_pretrained`; fails if its tensors do not match the hash
        recorded next to them."""
        directory = Path(directory)
        meta = read_vocab_config(directory)
        try:
            tok = cls(VisualVocabConfig(**meta["config"]))
        except TypeError as exc:
            raise InputError(directory / CONFIG_FILE, f"invalid visual vocabulary config ({exc})") from exc
        # Vocabularies saved before the feature source was recorded have no such key: they load without it.
        if meta.get("feature_source") is not None:
            try:
                tok.feature_source = FeatureSource.from_meta(meta["feature_source"])
            except (ConfigError, TypeError) as exc:
                raise InputError(directory / CONFIG_FILE, f"invalid feature_source ({exc})") from exc
            if tok.feature_source is None:
                raise InputError(
                    directory / CONFIG_FILE, f"feature_source lacks one of {', '.join(FeatureSource.KEYS)}"
                )
        tensors_path = directory / TENSORS_FILE
        if not tensors_path.exists():
            raise InputError(tensors_path, "not found; the visual vocabulary directory is incomplete")
        tensors = load_safetensors(tensors_path)
        tok.dim = int(meta["dim"])
        tok._pre = {n[len("pre.") :]: a for n, a in tensors.items() if n.startswith("pre.")}
        levels = range(1, tok.config.depth + 1)
        try:
            tok._centroids = [tensors[f"centroids.{lv}"] for lv in levels]
            tok._live = [tensors[f"live.{lv}"].astype(bool) for lv in levels]
        except KeyError as exc:
            raise InputError(tensors_path, f"missing tensor {exc}") from exc
        tok._sqnorms = [_sqnorms(c) for c in tok._centroids]
        try:
            tok._check_feature_source()
        except ConfigError as exc:
            raise InputError(directory / CONFIG_FILE, str(exc)) from exc
        if tok.content_hash != meta.get("content_hash"):
            raise InputError(
                directory,
                f"content hash {tok.content_hash} does not match the recorded {meta.get('content_hash')}; "
                "the vocabulary files are corrupt or were edited",
            )
        return tok

    def _check_feature_source(self) -> None:
        if self.feature_source is not None and self.dim is not None and self.feature_source.dim != self.dim:
            raise ConfigError(
                f"feature_source says the backbone gives {self.feature_source.dim}-d features, the vocabulary is "
                f"fitted on {self.dim}-d ones"
            )

    def _require_fitted(self) -> None:
        if not self._centroids:
            raise RuntimeError("the visual vocabulary is not fitted; call fit() or from_pretrained() first")


def token_path(token: int, k: int, depth: int) -> tuple[int, ...]:
    """The ``depth`` mixed-radix digits (base ``k``, top level first) of a token id."""
    if not 0 <= token < k**depth:
        raise ConfigError(f"token {token} is outside [0, {k ** depth})")
    digits = []
    for _ in range(depth):
        token, c = divmod(token, k)
        digits.append(c)
    return tuple(reversed(digits))


def read_vocab_config(directory: str | os.PathLike) -> dict:
    """The ``config.json`` of a saved vocabulary (config, dim, vocab_size, content_hash, and feature_source: the
    :meth:`FeatureSource.to_meta` dict, None or absent when unknown)."""
    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        raise InputError(path, "not found; not a visual vocabulary directory")
    meta = read_json(path)
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise InputError(path, f"not a {FORMAT} v{FORMAT_VERSION} file")
    return meta


# ---------------------------------------------------------------------- helpers


def _as_matrix(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features)
    if x.ndim != 2:
        raise ConfigError(f"features must be a (N, D) matrix, got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    # min and max propagate NaN and reach any infinity, without a full-size boolean temporary
    if x.size and not (np.isfinite(x.min()) and np.isfinite(x.max())):
        raise ConfigError("features contain NaN or infinite values")
    return x


def _sqnorms(c: np.ndarray) -> np.ndarray:
    return np.einsum("nd,nd->n", c, c)


def _groups(node: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(node id, row indices) for every node that holds at least one row."""
    order = np.argsort(node, kind="stable")
    ids, starts = np.unique(node[order], return_index=True)
    stops = np.append(starts[1:], len(order))
    for n, a, b in zip(ids.tolist(), starts.tolist(), stops.tolist()):
        yield n, order[a:b]


def _nearest(points: np.ndarray, centers: np.ndarray, sqnorms: np.ndarray, dead: np.ndarray) -> np.ndarray:
    """(m,) index of the nearest row of ``centers`` (k, D) that is not ``dead`` for each of ``points`` (m, D)."""
    dist = sqnorms - 2.0 * (points @ centers.T)  # (m, k); ||p||^2 is the same for every center, left out
    dist[:, dead] = np.inf
    return dist.argmin(axis=1)


def _probe(dim: int) -> np.ndarray:
    """A fixed random direction: rows with different projections on it are certainly different."""
    return np.random.default_rng(0).standard_normal(dim).astype(np.float32)


def _distinct_rows(z: np.ndarray, rows: np.ndarray, projection: np.ndarray, k: int) -> np.ndarray | None:
    """The distinct rows among ``z[rows]`` in order of first appearance when there are fewer than ``k`` of
    them (so the node cannot be split ``k`` ways), else None. ``projection`` (m,) is those rows'
    projection on :func:`_probe`: k distinct values settle the usual case without sorting the rows."""
    if len(rows) >= k and len(np.unique(projection)) >= k:
        return None
    points = z[rows]  # (m, D)
    as_bytes = points.view(np.dtype((np.void, points.shape[1] * points.itemsize))).ravel()  # (m,)
    _, first = np.unique(as_bytes, return_index=True)
    if len(first) >= k:
        return None
    return points[np.sort(first)]


def _kmeans(points: np.ndarray, k: int, niter: int, seed: int) -> np.ndarray:
    """(k, D) centroids of ``points`` (m, D): m >= k rows, at least k of them distinct."""
    if faiss is not None:
        params = dict(
            niter=niter,
            seed=seed,
            verbose=False,
            min_points_per_centroid=1,  # small nodes are expected deep in the tree; no warning for them
            max_points_per_centroid=1 << 30,  # subsampling is ours (max_points_per_node), seeded per node
        )
        if hasattr(faiss, "ClusteringInitMethod_KMEANS_PLUS_PLUS"):
            params["init_method"] = faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS
        km = faiss.Kmeans(points.shape[1], k, **params)
        km.train(np.ascontiguousarray(points, np.float32))
        return km.centroids.astype(np.float32)
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=1, max_iter=niter, random_state=seed).fit(points)
    return km.cluster_centers_.astype(np.float32)


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextlib.contextmanager
def _node_workers(n: int) -> Iterator[ThreadPoolExecutor]:
    """A pool that clusters ``n`` nodes at once, each on one thread. Nodes are small (k centroids), so one
    thread per node scales better than threads inside one k-means, whose per-iteration barriers stall
    whenever the cores are shared with other work; faiss and numpy release the GIL."""
    with threadpool_limits(limits=1, user_api="blas"):
        with ThreadPoolExecutor(n, initializer=_single_omp_thread) as pool:
            yield pool


def _single_omp_thread() -> None:
    if faiss is not None:
        faiss.omp_set_num_threads(1)  # OpenMP's thread count is per calling thread


def _fit_preprocess(x: np.ndarray, normalize: str, pca_dim: int) -> dict[str, np.ndarray]:
    """Statistics of the preprocessing, fitted on the (N, D) training features."""
    if normalize == "none":
        return {}
    if normalize == "l2":
        return {"norm": np.array([np.linalg.norm(x, axis=1).mean()], np.float32)}
    mean = x.mean(axis=0, dtype=np.float64)
    if normalize == "standardize":
        std = x.std(axis=0, dtype=np.float64)
        std[std == 0] = 1.0  # a constant dimension carries no information; leave it at zero, not NaN
        return {"mean": mean.astype(np.float32), "scale": std.astype(np.float32)}
    centered = x - mean.astype(np.float32)  # (N, D)
    cov = (centered.T @ centered).astype(np.float64) / max(len(x) - 1, 1)  # (D, D)
    eig, vec = np.linalg.eigh(cov)  # ascending
    keep = pca_dim or x.shape[1]
    eig, vec = eig[::-1][:keep], vec[:, ::-1][:, :keep]  # (p,), (D, p), largest first
    # eigh's eigenvector signs are arbitrary; fix them (largest entry positive) so refits agree bit for bit
    vec *= np.sign(vec[np.abs(vec).argmax(axis=0), np.arange(keep)])
    eig = np.maximum(eig, _EIG_FLOOR * max(eig[0], np.finfo(np.float64).tiny))
    return {
        "mean": mean.astype(np.float32),
        "components": vec.T.astype(np.float32),  # (p, D)
        "scale": np.sqrt(eig).astype(np.float32),
    }


def _apply_preprocess(x: np.ndarray, pre: dict[str, np.ndarray], normalize: str) -> np.ndarray:
    """(N, D) input features -> (N, D_work) working space."""
    if normalize == "none":
        return x
    if normalize == "l2":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.maximum(norms, np.finfo(np.float32).tiny)
    if normalize == "standardize":
        return (x - pre["mean"]) / pre["scale"]
    return ((x - pre["mean"]) @ pre["components"].T) / pre["scale"]  # (N, p)


def _invert_preprocess(c: np.ndarray, pre: dict[str, np.ndarray], normalize: str) -> np.ndarray:
    """(n, D_work) working-space points -> (n, D) input space."""
    if normalize == "none":
        return c.copy()
    if normalize == "l2":
        return c * pre["norm"]
    if normalize == "standardize":
        return c * pre["scale"] + pre["mean"]
    return (c * pre["scale"]) @ pre["components"] + pre["mean"]  # (n, D)


def video_means(features: np.ndarray, videos: np.ndarray) -> np.ndarray:
    """(N, D) each row's mean over the rows of the same video (``videos``: (N,) ids): the ``means`` argument of a
    vocabulary with ``center="video"`` when every clip of each video is at hand."""
    x = _as_matrix(features)
    _, inverse = np.unique(np.asarray(videos), return_inverse=True)
    sums = np.zeros((inverse.max() + 1 if len(inverse) else 0, x.shape[1]), np.float64)
    np.add.at(sums, inverse, x)
    counts = np.bincount(inverse, minlength=len(sums))[:, None]
    return (sums / np.maximum(counts, 1)).astype(np.float32)[inverse]
