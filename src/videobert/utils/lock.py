"""One writer per directory: the lock every stage that writes a work or model directory takes.

Two runs writing the same directory would interleave their artifacts (two ``extract`` runs each committing the
same videos into their own shards; two ``pretrain`` runs saving over each other's checkpoints), so a stage that
writes takes the directory's lock first and a second run is refused at once with a message naming the holder.
Stages that only read never lock.

Adopting it in a stage is one decorator naming the parameter that holds the directory::

    from videobert.utils.lock import locked

    @locked("work")                  # or @locked("out"); several names lock several directories, in order
    def my_stage(work: Path, ...) -> StageReport:
        ...

or, around a block, ``with DirectoryLock(path): ...``. The decorator keeps the function's signature and
docstring, so the generated CLI is unchanged.

How it works: ``DIR/.videobert.lock`` holds a POSIX record lock (``fcntl.lockf``) while the run lasts, and the
holder's pid, host, command and start time as JSON for the message; the run removes it when it ends. The kernel
drops a record lock when its process ends however it ends (``kill -9`` included), and forked children (decoder and
data-loader workers) do not inherit it, so the file a killed run leaves behind is no lock: the next run takes it
over with nothing to clean up. The lock is re-entrant
within a process (a stage calling another stage on the same directory), and in a distributed run only global rank
0 takes it: the other ranks are the same run. A lock on a network filesystem is only as good as its ``lockf``
support.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from videobert.utils.errors import VideoBertError

LOCK_FILE = ".videobert.lock"

F = TypeVar("F", bound=Callable[..., Any])

# Directories this process holds: resolved path -> [open lock file, depth].
_held: dict[Path, list[Any]] = {}


class LockedError(VideoBertError):
    """The directory is being written by another run."""


def _holder(lock_file: Path) -> str:
    try:
        info = json.loads(lock_file.read_text(encoding="utf-8"))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"pid {info['pid']} on {info['host']} ({info['command']}), since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"  # it holds the lock but has not written its details yet


def _same_file(fh: Any, path: Path) -> bool:
    """Whether the open ``fh`` is still the file at ``path``."""
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fh.fileno())
    return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)


def _is_secondary_rank() -> bool:
    return int(os.environ.get("RANK", "0") or 0) != 0


class DirectoryLock:
    """Exclusive lock on a directory (created when missing) for the duration of a ``with`` block; raises
    :class:`LockedError` naming the holder when another process has it."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def __enter__(self) -> "DirectoryLock":
        if _is_secondary_rank():
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        key = self.directory.resolve()
        if key in _held:
            _held[key][1] += 1
            return self
        lock_file = key / LOCK_FILE
        while True:
            fh = open(lock_file, "a+", encoding="utf-8")
            try:
                fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                raise LockedError(
                    f"{self.directory} is in use by {_holder(lock_file)}; wait for that run to finish or stop it"
                ) from None
            if _same_file(fh, lock_file):
                break
            fh.close()  # its holder removed it between our open and our lock: take the current file
        fh.seek(0)
        fh.truncate()
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                             "since": time.time()}))  # fmt: skip
        fh.flush()
        _held[key] = [fh, 1]
        return self

    def __exit__(self, *exc: Any) -> None:
        if _is_secondary_rank():
            return
        key = self.directory.resolve()
        entry = _held[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _held[key]
            # Removed while still locked, so the directory is left as the run found it; a run that opened the file
            # just before sees on locking that it is no longer the current one (`_same_file`) and starts over.
            (key / LOCK_FILE).unlink(missing_ok=True)
            entry[0].close()


def locked(*params: str) -> Callable[[F], F]:
    """Decorator: hold :class:`DirectoryLock` on the directories passed as ``params`` while the function runs."""

    def wrap(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with contextlib.ExitStack() as stack:
                for p in params:
                    if bound.arguments[p] is not None:  # an optional output that was not asked for
                        stack.enter_context(DirectoryLock(bound.arguments[p]))
                return fn(*args, **kwargs)

        return run  # type: ignore[return-value]

    return wrap
