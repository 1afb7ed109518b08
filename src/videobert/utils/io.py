"""Atomic file writes: every artifact appears whole or not at all.

A stage killed mid-write must never leave a half-written Parquet file or JSON that a later run would
mistake for finished work, so every writer goes through a temp file in the same directory followed by
``os.replace`` (atomic on POSIX and Windows when source and target share a filesystem).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from videobert.utils.errors import InputError

# mkstemp creates files readable by their owner only; artifacts get the permissions a plain `open` would give.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open`` for writing whose result is only visible once the ``with`` block completes."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def publish_permissions(path: str | os.PathLike) -> None:
    """Give ``path`` (a file, or every file below a folder) the permissions a plain ``open`` would: some writers
    (safetensors' ``save_file``) create files readable by their owner only."""
    path = Path(path)
    for file in [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file()):
        os.chmod(file, _FILE_MODE)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, ensure_ascii=False)
        fh.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path``; a file that is not JSON raises :class:`InputError` naming it."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(path, f"damaged or not JSON ({error})") from None


@contextlib.contextmanager
def _reading_parquet(path: str | os.PathLike) -> Iterator[None]:
    try:
        yield
    except pa.ArrowException as error:
        raise InputError(path, f"damaged or not a Parquet file ({error}); run the stage that writes it again") from None


def read_parquet(path: str | os.PathLike, **kwargs: Any) -> pa.Table:
    """``pq.read_table(path, **kwargs)``; a damaged file raises :class:`InputError` naming it."""
    with _reading_parquet(path):
        return pq.read_table(path, **kwargs)


def read_parquet_schema(path: str | os.PathLike) -> pa.Schema:
    """``pq.read_schema(path)``; a damaged file raises :class:`InputError` naming it."""
    with _reading_parquet(path):
        return pq.read_schema(path)


def open_parquet(path: str | os.PathLike) -> pq.ParquetFile:
    """``pq.ParquetFile(path)``; a damaged file raises :class:`InputError` naming it."""
    with _reading_parquet(path):
        return pq.ParquetFile(path)


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file; a damaged file raises :class:`InputError` naming it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except SafetensorError as error:
        raise InputError(path, f"damaged safetensors file ({error})") from None


def write_parquet(path: str | os.PathLike, table: pa.Table | list[dict], schema: pa.Schema | None = None) -> None:
    """Write a table (or a list of row dicts with an explicit schema) atomically."""
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pylist(table, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
