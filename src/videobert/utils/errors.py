"""Errors users can act on, and the per-item failure log every batch stage writes.

Batch stages never stop on one bad item: they call :meth:`ErrorLog.record`, which appends one JSON line
to ``errors.jsonl`` in the work directory and prints one readable line to stderr, then carry on.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


class VideoBertError(Exception):
    """Base class for errors raised by videobert that a user can fix (bad input, wrong setup)."""


class InputError(VideoBertError):
    """A user-provided file cannot be used. The message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        # Worker processes send errors back pickled; the default reduce would call __init__ with one arg.
        return (type(self), (self.path, self.problem))


class ConfigError(VideoBertError, ValueError):
    """An invalid option or combination of options."""


@dataclass(frozen=True)
class ErrorRecord:
    stage: str
    item: str
    error: str
    kind: str
    time: float


class ErrorLog:
    """Append-only ``errors.jsonl``. Each line is written with one ``write`` call and flushed, so a crash
    can at worst lose the last line, never corrupt earlier ones."""

    def __init__(self, path: str | os.PathLike, stage: str, echo: bool = True):
        self.path = Path(path)
        self.stage = stage
        self.echo = echo
        self.count = 0

    def record(self, item: str | os.PathLike, error: BaseException | str) -> ErrorRecord:
        message = error.problem if isinstance(error, InputError) else str(error)
        kind = type(error).__name__ if isinstance(error, BaseException) else "Error"
        rec = ErrorRecord(self.stage, str(item), message, kind, time.time())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec.__dict__, ensure_ascii=False) + "\n")
            fh.flush()
        self.count += 1
        if self.echo:
            print(f"[{self.stage}] error: {rec.item}: {message}", file=sys.stderr)
        return rec

    def clear_stage(self) -> None:
        """Drop this stage's earlier records (a re-run re-discovers the failures that still hold)."""
        if not self.path.exists():
            return
        keep = [r for r in read_errors(self.path) if r.stage != self.stage]
        from videobert.utils.io import atomic_open

        with atomic_open(self.path, "w", encoding="utf-8") as fh:
            for r in keep:
                fh.write(json.dumps(r.__dict__, ensure_ascii=False) + "\n")


def read_errors(path: str | os.PathLike) -> list[ErrorRecord]:
    """The records of an ``errors.jsonl``. A line that is not a record (the last one, cut short by a crash while
    it was written) is left out: the stage that wrote it finds that failure again when it runs again."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                out.append(ErrorRecord(**json.loads(line)))
            except (ValueError, TypeError):
                continue
    return out


def iter_stage_errors(path: str | os.PathLike, stage: str) -> Iterator[ErrorRecord]:
    return (r for r in read_errors(path) if r.stage == stage)
