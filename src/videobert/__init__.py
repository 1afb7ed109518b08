"""videobert: VideoBERT-style video-language learning.

The Python API mirrors the CLI: ``videobert.ingest(corpus, work)`` is ``videobert ingest CORPUS WORK``.
Functions are imported lazily so that ``import videobert`` stays fast.
"""
from __future__ import annotations

import importlib
from typing import Any

from videobert._version import __version__

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    from videobert.cli import COMMANDS

    if name in COMMANDS:
        module, func = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), func)
    raise AttributeError(f"module 'videobert' has no attribute {name!r}")


def __dir__() -> list[str]:
    from videobert.cli import COMMANDS

    return sorted([*globals(), *COMMANDS])
