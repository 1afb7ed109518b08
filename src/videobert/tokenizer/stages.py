"""The ``vocab``, ``tokenize`` and ``inspect-vocab`` stages (DESIGN.md §3), and the token-informativeness
check of DESIGN.md §6.

``vocab`` fits the hierarchical k-means vocabulary on (a sample of) the clip features and writes
``WORK/vocab/`` (the :class:`VisualTokenizer` files, which also record how the features were made -- backbone
and clip sampling -- plus ``source.json``: which features, how sampled).
``tokenize`` writes ``WORK/tokens.parquet``, one row per clip in clip-table order, with the vocabulary's
content hash and the features' fingerprint in the Parquet key-value metadata so that later stages can
refuse tokens made with another vocabulary. ``inspect-vocab`` shows how the clips spread over the words
and what the clips of one word look like.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from videobert.data.schema import TOKENS
from videobert.features.store import FeatureStore
from videobert.tokenizer.hkmeans import (
    FeatureSource,
    VisualTokenizer,
    VisualVocabConfig,
    read_vocab_config,
    token_path,
)
from videobert.utils.errors import ConfigError, ErrorLog, InputError, VideoBertError
from videobert.utils.io import atomic_path, file_sha256, read_json, read_parquet, read_parquet_schema, write_json
from videobert.utils.lock import locked
from videobert.utils.stage import StageReport
from videobert.workdir import WorkDir

if TYPE_CHECKING:
    from PIL import Image

SOURCE_FILE = "source.json"
META_VOCAB_HASH = b"videobert.vocab_hash"
META_FEATURES = b"videobert.features"
THUMB_SIZE = (160, 120)  # (width, height) of one cell of the thumbnail grid


# ---------------------------------------------------------------------- vocab


@locked("work")
def vocab(
    work: Path,
    k: int = 12,
    depth: int = 4,
    seed: int = 0,
    normalize: str = "auto",
    pca_dim: int = 0,
    center: str = "none",
    max_points: int = 200000,
    overwrite: bool = False,
) -> StageReport:
    """Fit the visual vocabulary (hierarchical k-means, k**depth visual words) on the clip features.

    Args:
        work: Work directory; reads features/ (from `extract`), writes vocab/.
        k: Children per tree node (paper: 12).
        depth: Levels of the tree; the vocabulary has k**depth words (paper: 4, so 20736 words).
        seed: Seeds the clip sample and every k-means run.
        normalize: Preprocessing before clustering, one of auto, none, l2, standardize, pca-whiten. auto
            picks none for the pixels backbone (its blocks are already normalised and weighted; per-dimension
            standardising would inflate its sparse colour bins and cost noun separation: 0.85 -> 0.60 on
            MiniCook) and l2 for learned backbones (their embeddings compare by angle).
        pca_dim: Principal components kept by pca-whiten (0 keeps all); only with pca-whiten.
        center: none, or video: subtract each video's mean clip feature first, so that what a whole video shares
            (background, lighting, camera) does not decide its words (BENCHMARKS.md, "Visual words on other
            worlds").
        max_points: Fit on at most this many clips (a seeded random sample); tokenize encodes all clips.
        overwrite: Replace an existing vocabulary that was built with other settings or other features.
    """
    if max_points < 1:
        raise ConfigError(f"max_points must be at least 1, got {max_points}")
    wd = WorkDir(work)
    store = FeatureStore(work)
    if normalize == "auto":
        normalize = "none" if store.meta.get("backbone") == "pixels" else "l2"
    config = VisualVocabConfig(k=k, depth=depth, seed=seed, normalize=normalize, pca_dim=pca_dim, center=center)
    if len(store) == 0:
        raise InputError(wd.features, "holds no clip features; did `extract` find any video?")
    # the number of clips fitted on, not max_points itself: raising max_points above the clip count
    # changes nothing and must not ask for --overwrite
    fit_points = min(len(store), max_points)
    wanted = {"config": asdict(config), "features": features_fingerprint(store), "fit_points": fit_points}
    # How the features were made travels with the vocabulary (and into a model trained on it), so the model can
    # tokenize new videos by itself; None for a feature store not written by `extract`.
    feature_source = FeatureSource.from_meta(store.meta)
    report = StageReport("vocab", outputs={"vocab": str(wd.vocab)})
    if wd.vocab.exists():
        existing = _vocab_provenance(wd.vocab)
        if existing == wanted:
            _add_feature_source(wd.vocab, feature_source)
            report.skipped = 1
            report.stats.update(_vocab_stats(wd.vocab))
            return report
        if not overwrite:
            changed = ", ".join(_changed(existing, wanted)) or "no readable record of how it was built"
            raise ConfigError(
                f"{wd.vocab} was built with other settings or features ({changed}); "
                "pass overwrite=True (--overwrite) to replace it"
            )

    t0 = time.perf_counter()
    sample = _sample_rows(len(store), fit_points, seed)
    features = _gather(store, sample)  # (n_fit, D)
    means = _row_means(store, sample) if config.center == "video" else None  # (n_fit, D) or None
    tokenizer = VisualTokenizer(config, feature_source=feature_source).fit(features, means=means)
    used = int(np.unique(tokenizer.encode(features, means=means)).size)
    seconds = time.perf_counter() - t0
    source = {
        **wanted,
        "features_meta": store.meta,
        "clips": len(store),
        "max_points": max_points,
        "fit_leaves_used": used,
        "fit_seconds": round(seconds, 3),
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{wd.vocab.name}.", suffix=".tmp", dir=wd.root))
    try:
        tokenizer.save_pretrained(tmp)
        write_json(tmp / SOURCE_FILE, source)
        _swap_dir(tmp, wd.vocab)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.done = 1
    report.stats.update(_vocab_stats(wd.vocab))
    return report


def features_fingerprint(store: FeatureStore) -> str:
    """sha256 over the features' meta.json and the bytes of every committed shard (array and index), in
    shard order: equal fingerprints mean the same clips with the same features."""
    h = hashlib.sha256(json.dumps(store.meta, sort_keys=True).encode())
    for index in sorted(store.wd.features.glob("shard-*.parquet")):
        for path in (index.with_suffix(".npy"), index):
            h.update(f"{path.name}:{file_sha256(path)}\n".encode())
    return h.hexdigest()


def _add_feature_source(directory: Path, feature_source: FeatureSource | None) -> None:
    """Record ``feature_source`` in a vocabulary saved before vocabularies recorded it. The content hash does not
    cover it (see :mod:`videobert.tokenizer.hkmeans`), so the tokens made with the vocabulary stay valid."""
    if feature_source is None or read_vocab_config(directory).get("feature_source") is not None:
        return
    tokenizer = VisualTokenizer.from_pretrained(directory)
    tokenizer.feature_source = feature_source
    tokenizer.save_pretrained(directory)


def _vocab_provenance(directory: Path) -> dict[str, Any] | None:
    """What a saved vocabulary was built from, in the form ``vocab`` compares; None when unreadable."""
    try:
        meta = read_vocab_config(directory)
        source = read_json(directory / SOURCE_FILE)
        return {"config": meta["config"], "features": source["features"], "fit_points": source["fit_points"]}
    except (VideoBertError, OSError, KeyError, ValueError):
        return None


def _changed(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    if old is None:
        return []
    before = old["config"]
    out = [f"{key}: {before.get(key)!r} -> {v!r}" for key, v in new["config"].items() if before.get(key) != v]
    if old["features"] != new["features"]:
        out.append("the features changed")
    if old["fit_points"] != new["fit_points"]:
        out.append(f"clips fitted on (max_points): {old['fit_points']} -> {new['fit_points']}")
    return out


def _vocab_stats(directory: Path) -> dict[str, Any]:
    meta = read_vocab_config(directory)
    source = read_json(directory / SOURCE_FILE)
    return {
        "vocab_size": meta["vocab_size"],
        "fit_points": source["fit_points"],
        "fit_leaves_used": source["fit_leaves_used"],
        "content_hash": meta["content_hash"],
    }


def _sample_rows(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted clip-table positions to fit on: all of them, or a seeded sample of ``max_points``."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def _gather(store: FeatureStore, positions: np.ndarray) -> np.ndarray:
    """(len(positions), D) float32 features of the given sorted clip-table positions, read shard by shard
    so that only the sampled rows are ever held in memory."""
    out = np.empty((len(positions), store.dim), np.float32)
    offset = filled = 0
    for clips, shard in store.iter_shards():
        lo, hi = np.searchsorted(positions, [offset, offset + clips.num_rows])
        rows = clips["row"].to_numpy()[positions[lo:hi] - offset]
        out[filled : filled + len(rows)] = shard[rows]
        filled += len(rows)
        offset += clips.num_rows
    return out


def store_video_means(store: FeatureStore) -> dict[str, np.ndarray]:
    """Video id -> its mean clip feature (D,) float32, over every clip of the store, read shard by shard."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for clips, shard in store.iter_shards():
        names, inverse = np.unique(np.asarray(clips["video"].to_pylist(), dtype=object), return_inverse=True)
        part = np.zeros((len(names), store.dim), np.float64)
        np.add.at(part, inverse, shard[clips["row"].to_numpy()])
        for j, video in enumerate(names):
            sums[video] = sums.get(video, 0.0) + part[j]
            counts[video] = counts.get(video, 0) + int((inverse == j).sum())
    return {v: (sums[v] / counts[v]).astype(np.float32) for v in sums}


def _row_means(store: FeatureStore, positions: np.ndarray) -> np.ndarray:
    """(len(positions), D) the video mean of each given clip-table position."""
    means = store_video_means(store)
    videos = store.clips["video"].to_pylist()
    return np.stack([means[videos[p]] for p in positions]) if len(positions) else np.zeros((0, store.dim), np.float32)


def _swap_dir(new: Path, target: Path) -> None:
    """Put the finished directory ``new`` at ``target``. A crash between the two renames leaves no
    ``target`` (the next run rebuilds it), never a half-written one."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------- tokenize


@locked("work")
def tokenize(work: Path, batch_size: int = 65536) -> StageReport:
    """Give every clip its visual word, descending the vocabulary's tree; writes tokens.parquet.

    Args:
        work: Work directory; reads features/ and vocab/, writes tokens.parquet.
        batch_size: Clips encoded at once (bounds the memory of one step).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    wd = WorkDir(work)
    tokenizer = VisualTokenizer.from_pretrained(wd.require(wd.vocab, "vocab"))
    store = FeatureStore(work)
    if tokenizer.dim != store.dim:
        raise ConfigError(f"the vocabulary was fitted on {tokenizer.dim}-d features, the features are {store.dim}-d")
    # a vocabulary copied in by hand (e.g. from a pretrained model) has no source.json; its dimension must do
    source = wd.vocab / SOURCE_FILE
    fitted_on = read_json(source)["features_meta"] if source.exists() else store.meta
    if fitted_on != store.meta:
        keys = sorted(k for k in set(fitted_on) | set(store.meta) if fitted_on.get(k) != store.meta.get(k))
        raise ConfigError(
            f"the vocabulary was fitted on features extracted with other settings (differ in: {', '.join(keys)}); "
            "run `videobert vocab --overwrite` on the current features"
        )
    fingerprint = features_fingerprint(store)
    report = StageReport("tokenize", outputs={"tokens": str(wd.tokens)})
    if wd.tokens.exists():
        meta = tokens_metadata(wd.tokens)
        if meta.get("vocab_hash") == tokenizer.content_hash and meta.get("features") == fingerprint:
            report.skipped = len(store)
            report.stats["vocab_hash"] = tokenizer.content_hash
            return report

    schema = TOKENS.with_metadata(
        {META_VOCAB_HASH: tokenizer.content_hash.encode(), META_FEATURES: fingerprint.encode()}
    )
    counts = np.zeros(tokenizer.vocab_size, np.int64)
    means = store_video_means(store) if tokenizer.centres_videos else None
    with atomic_path(wd.tokens) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for clips, shard in store.iter_shards():
                rows = clips["row"].to_numpy()
                for a in range(0, len(rows), batch_size):
                    part = clips.slice(a, min(batch_size, len(rows) - a))
                    centre = None if means is None else np.stack([means[v] for v in part["video"].to_pylist()])
                    tokens = tokenizer.encode(shard[rows[a : a + batch_size]], means=centre)
                    counts += np.bincount(tokens, minlength=tokenizer.vocab_size)
                    columns = [part["video"], part["clip"], part["start"], part["end"], pa.array(tokens, pa.int32())]
                    writer.write_table(pa.Table.from_arrays(columns, schema=schema))
    report.done = len(store)
    report.stats.update({"vocab_size": tokenizer.vocab_size, "tokens_used": int((counts > 0).sum())})
    report.stats["vocab_hash"] = tokenizer.content_hash
    return report


def tokens_metadata(path: str | os.PathLike) -> dict[str, str]:
    """``vocab_hash`` and ``features`` fingerprint recorded in a tokens.parquet file."""
    meta = read_parquet_schema(path).metadata or {}
    prefix = b"videobert."
    return {key[len(prefix) :].decode(): value.decode() for key, value in meta.items() if key.startswith(prefix)}


# ---------------------------------------------------------------------- inspect-vocab


def inspect_vocab(
    work: Path, token: int = -1, top: int = 20, out: Path | None = None, max_clips: int = 16
) -> StageReport:
    """Show how clips spread over the visual words, and the clips of one word as a thumbnail grid.

    Prints the most frequent words, how many words are used and the entropy of the distribution; with
    segments.parquet, the NMI and purity of the words with the segments' verb and noun labels.

    Args:
        work: Work directory; reads tokens.parquet and vocab/ (and manifest.parquet for thumbnails).
        token: Visual word whose clips to show as a PNG grid of middle frames (-1: none).
        top: Number of most frequent words to list.
        out: Where to write the PNG (default WORK/inspect/token-TOKEN.png).
        max_clips: Most clips shown in the grid (a seeded random sample when the word has more).
    """
    from rich.console import Console
    from rich.table import Table

    if top < 0 or max_clips < 1:
        raise ConfigError(f"top must be >= 0 and max_clips >= 1, got top={top}, max_clips={max_clips}")
    wd = WorkDir(work)
    meta, tokens_table = load_tokens(work)
    vocab_size, k, depth = meta["vocab_size"], meta["config"]["k"], meta["config"]["depth"]
    if not -1 <= token < vocab_size:
        raise ConfigError(f"token must be -1 or in [0, {vocab_size}), got {token}")
    tokens = tokens_table["token"].to_numpy()
    counts = np.bincount(tokens, minlength=vocab_size)
    report = StageReport("inspect-vocab", done=1)
    report.stats.update(token_histogram(counts))

    table = Table(title=f"most frequent of {vocab_size} visual words ({len(tokens)} clips)")
    for name in ("rank", "token", "path", "clips", "share"):
        table.add_column(name, justify="right")
    for rank, t in enumerate(np.argsort(-counts, kind="stable")[:top], start=1):
        if counts[t] == 0:
            break
        table.add_row(str(rank), str(t), _path(int(t), k, depth), str(counts[t]), f"{counts[t] / len(tokens):.2%}")
    Console().print(table)

    if wd.segments.exists():
        segments = read_parquet(wd.segments)
        for column in ("verb", "noun"):
            labels = clip_labels(tokens_table, segments, column)
            keep = np.array([label is not None for label in labels], bool)
            if keep.any():
                info = token_informativeness(tokens[keep], [label for label in labels if label is not None])
                report.stats.update({f"{column}_{key}": value for key, value in info.items()})

    if token >= 0:
        picked = np.flatnonzero(tokens == token)
        report.stats["token_clips"] = int(len(picked))
        if len(picked):
            if len(picked) > max_clips:
                picked = np.sort(np.random.default_rng(0).choice(picked, max_clips, replace=False))
            out = Path(out) if out is not None else wd.root / "inspect" / f"token-{token}.png"
            title = f"token {token} ({_path(token, k, depth)})"
            report.failed = _write_token_grid(wd, tokens_table.take(picked), out, title)
            report.outputs["thumbnails"] = str(out)
    return report


def load_tokens(work: str | os.PathLike) -> tuple[dict[str, Any], pa.Table]:
    """The work directory's vocabulary config (:func:`read_vocab_config`) and its tokens.parquet table, after
    checking that the tokens were made with that vocabulary."""
    wd = WorkDir(work)
    meta = read_vocab_config(wd.require(wd.vocab, "vocab"))
    tokens_table = read_parquet(wd.require(wd.tokens, "tokenize"))
    if tokens_metadata(wd.tokens).get("vocab_hash") != meta["content_hash"]:
        raise ConfigError(
            f"{wd.tokens} was made with another vocabulary than {wd.vocab}; run `videobert tokenize` again"
        )
    return meta, tokens_table


def token_histogram(counts: np.ndarray) -> dict[str, Any]:
    """Summary of a (vocab_size,) clip count per word: words used, entropy (bits) and perplexity of the
    word distribution, share of the most frequent word, clips per used word."""
    total = int(counts.sum())
    used = int((counts > 0).sum())
    p = counts[counts > 0] / max(total, 1)
    entropy = float(-(p * np.log2(p)).sum()) if total else 0.0
    return {
        "clips": total,
        "words_used": used,
        "entropy_bits": entropy,
        "perplexity": 2.0**entropy,
        "top_word_share": float(counts.max() / total) if total else 0.0,
        "clips_per_used_word": total / used if used else 0.0,
    }


def token_informativeness(tokens: np.ndarray, labels: Sequence[Any], seed: int = 0) -> dict[str, float]:
    """How much of a labelling the visual words keep (DESIGN.md §6).

    ``nmi`` is sklearn's normalized mutual information between words and labels and ``purity`` the share of
    clips whose label is their word's majority label. Both grow with the number of words even without any
    signal, so ``nmi_shuffled`` / ``purity_shuffled`` give the same measures against a seeded permutation of
    the labels: the chance level for this vocabulary size and this data.
    """
    from sklearn.metrics import normalized_mutual_info_score
    from sklearn.metrics.cluster import contingency_matrix

    tokens = np.asarray(tokens)
    labels = np.asarray(labels)
    if len(tokens) != len(labels) or len(tokens) == 0:
        raise ConfigError(f"need as many labels as tokens (got {len(labels)} and {len(tokens)}), at least one")
    shuffled = labels[np.random.default_rng(seed).permutation(len(labels))]

    def purity(lab: np.ndarray) -> float:
        table = contingency_matrix(lab, tokens, sparse=True)  # (labels, words)
        return float(table.max(axis=0).sum() / len(tokens))

    return {
        "nmi": float(normalized_mutual_info_score(labels, tokens)),
        "nmi_shuffled": float(normalized_mutual_info_score(shuffled, tokens)),
        "purity": purity(labels),
        "purity_shuffled": purity(shuffled),
    }


def clip_labels(clips: pa.Table, segments: pa.Table, column: str) -> list[Any]:
    """Per clip (a table with video, start, end), the ``column`` of the segment of the same video that holds
    the clip's midpoint (the first such segment in table order), or None when no segment does."""
    labels: list[Any] = [None] * clips.num_rows
    videos = clips["video"].to_pylist()
    mids = (clips["start"].to_numpy() + clips["end"].to_numpy()) / 2
    by_video: dict[str, list[int]] = {}
    for i, v in enumerate(videos):
        by_video.setdefault(v, []).append(i)
    for seg in segments.select(["video", "start", "end", column]).to_pylist():
        idx = by_video.get(seg["video"])
        if not idx or seg[column] is None:
            continue
        for i in np.asarray(idx)[(mids[idx] >= seg["start"]) & (mids[idx] < seg["end"])]:
            if labels[i] is None:
                labels[i] = seg[column]
    return labels


def _path(token: int, k: int, depth: int) -> str:
    """A word's mixed-radix digits, top level first, e.g. ``3.0.11.7``."""
    return ".".join(map(str, token_path(token, k, depth)))


def manifest_paths(work: str | os.PathLike) -> dict[str, str]:
    """Video id -> file path, from the work directory's manifest.parquet."""
    wd = WorkDir(work)
    manifest = read_parquet(wd.require(wd.manifest, "ingest"), columns=["video", "path"])
    return dict(zip(manifest["video"].to_pylist(), manifest["path"].to_pylist()))


def _write_token_grid(wd: WorkDir, clips: pa.Table, out: Path, title: str) -> int:
    """Write :func:`thumbnail_grid` of ``clips`` as a PNG; returns the number of clips that could not be decoded
    (each recorded in errors.jsonl)."""
    log = ErrorLog(wd.errors, "inspect-vocab")
    log.clear_stage()  # the failures of an earlier grid are re-discovered if they still hold
    grid, failures = thumbnail_grid(clips, manifest_paths(wd.root), title)
    for item, exc in failures:
        log.record(item, exc)
    with atomic_path(out) as tmp:
        grid.save(tmp, format="PNG")
    return len(failures)


def thumbnail_grid(
    clips: pa.Table, paths: Mapping[str, str], title: str, cell: tuple[int, int] = THUMB_SIZE
) -> tuple["Image.Image", list[tuple[str, Exception]]]:
    """A grid (about square) of the middle frame of each clip (a table with video, start, end; ``paths`` maps
    video ids to files), each labelled ``video@start``, with ``title`` on top; ``cell`` is (width, height).
    Returns the RGB image and the clips that could not be decoded, as (``video@start``, error): they are drawn as
    grey cells, so one bad file does not lose the others."""
    from PIL import Image, ImageDraw

    n = clips.num_rows
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    width, height = cell
    grid = Image.new("RGB", (cols * width, rows * height), (0, 0, 0))
    draw = ImageDraw.Draw(grid)
    failures: list[tuple[str, Exception]] = []
    for i, clip in enumerate(clips.select(["video", "start", "end"]).to_pylist()):
        x, y = (i % cols) * width, (i // cols) * height
        item = f"{clip['video']}@{clip['start']:.2f}s"
        try:
            if clip["video"] not in paths:
                raise InputError(clip["video"], "no file known for this video (not in the manifest)")
            thumb = clip_thumbnail(paths[clip["video"]], clip["start"], clip["end"], cell)
            grid.paste(thumb, (x + (width - thumb.width) // 2, y + (height - thumb.height) // 2))
        except (VideoBertError, OSError) as exc:
            failures.append((item, exc))
            draw.rectangle([x, y, x + width - 1, y + height - 1], fill=(96, 96, 96))
        draw.rectangle([x, y + height - 12, x + width - 1, y + height - 1], fill=(0, 0, 0))
        draw.text((x + 2, y + height - 12), item[-26:], fill=(255, 255, 255))
    draw.text((2, 2), title, fill=(255, 255, 0))
    return grid, failures


def clip_thumbnail(
    path: str | os.PathLike, start: float, end: float, size: tuple[int, int] = THUMB_SIZE
) -> "Image.Image":
    """The first frame at or after the middle of ``[start, end)`` of the video at ``path``, scaled up or down to fit
    ``size`` = (width, height) with its aspect ratio kept, as an RGB PIL image."""
    from PIL import Image, ImageOps

    from videobert.data.video import decode_frames

    frames = decode_frames(path, start=(start + end) / 2, end=end)
    try:
        frame = next(frames).array  # (H, W, 3) uint8 RGB
    except StopIteration:
        raise InputError(path, f"no frame between {(start + end) / 2:.3f}s and {end:.3f}s") from None
    finally:
        frames.close()
    return ImageOps.contain(Image.fromarray(frame), size)
