"""On-disk clip features: float16 shards plus a clip index, written so that an interrupted extraction
resumes without losing or duplicating a clip.

Layout under ``WORK/features/``::

    meta.json               backbone name, feature dim, clip sampling (fps, clip_frames, size)
    shard-00000.npy         (N0, D) float16, rows are clips
    shard-00000.parquet     the N0 clips of that shard (CLIPS schema; ``row`` indexes the .npy)
    ...

A shard holds whole videos and is written (array first, then index, each atomically) only once it is
complete; the index file is the commit marker. A video is done exactly when some shard index lists it.
``WORK/clips.parquet`` is the concatenation of the shard indexes in shard order, rewritten after each run.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from videobert.data.schema import CLIPS
from videobert.utils.errors import InputError
from videobert.utils.io import read_json, read_parquet, save_npy, write_json, write_parquet
from videobert.workdir import WorkDir


def shard_name(i: int) -> str:
    return f"shard-{i:05d}"


class ShardWriter:
    """Accumulates whole videos' features and commits a shard once it holds ``shard_clips`` clips."""

    def __init__(self, work: str | os.PathLike, meta: dict[str, Any], shard_clips: int = 4096):
        self.wd = WorkDir(work)
        self.dir = self.wd.features
        self.dir.mkdir(parents=True, exist_ok=True)
        meta_path = self.dir / "meta.json"
        if meta_path.exists():
            old = read_json(meta_path)
            if old != meta:
                raise InputError(
                    meta_path,
                    f"features were extracted with different settings ({_diff(old, meta)}); "
                    "use a new work directory or pass overwrite=True",
                )
        else:
            write_json(meta_path, meta)
        self.meta = meta
        self.shard_clips = shard_clips
        self.next_index = len(list(self.dir.glob("shard-*.parquet")))
        self._rows: list[dict] = []
        self._arrays: list[np.ndarray] = []

    def done_videos(self) -> set[str]:
        return set(read_clip_index(self.dir)["video"].to_pylist()) if self.next_index else set()

    def add_video(self, video: str, starts: list[float], ends: list[float], feats: np.ndarray) -> None:
        """Queue one video's clips; ``feats`` is (num_clips, D)."""
        if feats.ndim != 2 or feats.shape[0] != len(starts):
            raise ValueError(f"{video}: features {feats.shape} do not match {len(starts)} clips")
        base = sum(a.shape[0] for a in self._arrays)
        name = shard_name(self.next_index) + ".npy"
        for c, (s, e) in enumerate(zip(starts, ends)):
            self._rows.append({"video": video, "clip": c, "start": s, "end": e, "shard": name, "row": base + c})
        self._arrays.append(feats.astype(np.float16))
        if base + feats.shape[0] >= self.shard_clips:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        stem = self.dir / shard_name(self.next_index)
        dim = int(self.meta.get("dim", self._arrays[0].shape[1]))
        save_npy(stem.with_suffix(".npy"), np.concatenate(self._arrays) if self._arrays else np.zeros((0, dim), np.float16))
        write_parquet(stem.with_suffix(".parquet"), self._rows, schema=CLIPS)
        self.next_index += 1
        self._rows, self._arrays = [], []

    def close(self) -> pa.Table:
        """Commit the last partial shard and rewrite ``clips.parquet``."""
        self.flush()
        table = read_clip_index(self.dir)
        write_parquet(self.wd.clips, table)
        return table


def read_clip_index(features_dir: str | os.PathLike) -> pa.Table:
    shards = sorted(Path(features_dir).glob("shard-*.parquet"))
    if not shards:
        return CLIPS.empty_table()
    return pa.concat_tables([read_parquet(p, schema=CLIPS) for p in shards])


def _diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)


class FeatureStore:
    """Read side: the clip table and its features, row-aligned, memory-mapped shard by shard."""

    def __init__(self, work: str | os.PathLike):
        self.wd = WorkDir(work)
        meta_path = self.wd.require(self.wd.features / "meta.json", "extract")
        self.meta: dict[str, Any] = read_json(meta_path)
        self.clips: pa.Table = read_clip_index(self.wd.features)
        self._locations: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def __len__(self) -> int:
        return self.clips.num_rows

    def _shard(self, name: str, rows: int) -> np.ndarray:
        """Shard ``name`` memory-mapped, checked to hold ``rows`` clips of :attr:`dim` features."""
        path = self.wd.features / name
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:  # missing, truncated, or not a .npy file
            raise InputError(path, f"damaged feature shard ({error}); run `videobert extract --overwrite`") from None
        if array.ndim != 2 or array.shape[0] < rows or array.shape[1] != self.dim:
            raise InputError(
                path, f"shape {array.shape} does not match its index ({rows} clips of {self.dim} features); "
                "run `videobert extract --overwrite`"
            )  # fmt: skip
        return array

    def iter_shards(self) -> Iterator[tuple[pa.Table, np.ndarray]]:
        """(clip rows, (n, D) float16 memmap) per shard, in clip-table order."""
        names = self.clips["shard"].to_pylist()
        rows = self.clips["row"].to_numpy()
        start = 0
        while start < len(names):
            stop = start
            while stop < len(names) and names[stop] == names[start]:
                stop += 1
            yield self.clips.slice(start, stop - start), self._shard(names[start], int(rows[start:stop].max()) + 1)
            start = stop

    def load(self, dtype: Any = np.float32) -> np.ndarray:
        """All features as one (N, D) array, rows aligned with :attr:`clips`."""
        if len(self) == 0:
            return np.zeros((0, self.dim), dtype)
        return np.concatenate([np.asarray(arr, dtype=dtype) for _, arr in self.iter_shards()])

    def gather(self, rows: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """(len(rows), D) features of the clips at global rows ``rows`` (positions in :attr:`clips`), read from the
        memory-mapped shards (only those rows)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=dtype)
        if not len(rows):
            return out
        if self._locations is None:  # (shard index, row in shard) of every clip, built on first use
            names, shard_of = np.unique(self.clips["shard"].to_numpy(zero_copy_only=False), return_inverse=True)
            self._locations = (names, shard_of, self.clips["row"].to_numpy())
        names, shard_of, in_shard = self._locations
        for shard in np.unique(shard_of[rows]):
            picked = shard_of[rows] == shard
            wanted = in_shard[rows[picked]]
            out[picked] = np.asarray(self._shard(names[shard], int(wanted.max()) + 1)[wanted], dtype=dtype)
        return out

    def statistics(self, videos: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean and std (D,) float64 of the clips of ``videos`` (all clips when None), one shard at a
        time."""
        wanted = None if videos is None else set(videos)
        total = np.zeros(self.dim)
        squares = np.zeros(self.dim)
        count = 0
        for rows, array in self.iter_shards():
            videos_of = rows["video"].to_numpy(zero_copy_only=False)
            keep = np.ones(rows.num_rows, bool) if wanted is None else np.isin(videos_of, list(wanted))
            x = np.asarray(array[rows["row"].to_numpy()[keep]], dtype=np.float64)  # (n, D)
            total += x.sum(axis=0)
            squares += (x**2).sum(axis=0)
            count += len(x)
        if count == 0:
            raise InputError(self.wd.clips, "no clip of the requested videos has features")
        mean = total / count
        return mean, np.sqrt(np.maximum(squares / count - mean**2, 0.0))
