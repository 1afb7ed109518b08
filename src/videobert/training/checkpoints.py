"""Which Trainer checkpoint a resumed run may continue from.

The Trainer writes ``checkpoint-STEP/`` file by file, so a crash or a full disk during a save leaves a folder that
looks like the newest checkpoint but holds a truncated ``model.safetensors`` or ``optimizer.pt``, or lacks
``trainer_state.json``. Resuming from it would fail on every rerun. :func:`last_complete_checkpoint` checks each
checkpoint, newest first, and returns the first whose files all read back; the damaged ones are skipped with a
warning naming the file and the problem (the run then redoes the steps since the checkpoint it uses), and
:func:`set_aside_damaged` renames them out of the Trainer's way.

Checking reads what resuming reads: JSON files parse, safetensors headers describe exactly the bytes that are
there, and PyTorch files load with ``weights_only=True`` under the Trainer's own allow-list, so a pickle that would
run code (e.g. planted as ``rng_state.pth``) is refused, never executed.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import warnings
import zipfile
from pathlib import Path

import torch
from safetensors import safe_open
from transformers.trainer_pt_utils import safe_globals

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
# What the Trainer needs to resume; optimizer, scheduler and RNG files are checked when present.
_REQUIRED = ("config.json", "model.safetensors", "trainer_state.json")
# Damaged checkpoints already reported by this process (planning and training both ask).
_warned: set[Path] = set()


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (``"FILE: problem"``), or None when every file reads back."""
    for path in sorted(checkpoint.iterdir()):
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".safetensors":
                with safe_open(path, framework="pt") as fh:  # checks the header covers the file exactly
                    fh.keys()
            elif path.suffix in (".pt", ".pth"):
                with safe_globals(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch warns about what it then refuses; the refusal is reported
                    # mmap: an optimizer state as large as the model is checked without reading it into memory.
                    torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except Exception as error:  # the file is what is checked: any failure to read it back disqualifies it
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            if "Weights only load failed" in reason or "weights_only" in reason:
                reason = "holds Python objects other than tensors and plain data; refused (it could run code)"
            return f"{path.name}: {type(error).__name__}: {reason}"
    missing = [name for name in _REQUIRED if not (checkpoint / name).is_file()]
    return f"{missing[0]}: missing" if missing else None


def set_aside_damaged(folder: str | os.PathLike) -> list[Path]:
    """Rename the damaged checkpoints newer than the last complete one to ``damaged-checkpoint-STEP`` (kept for
    inspection; a later save of that step must not mix with their files, and the Trainer's rotation, which counts
    every ``checkpoint-STEP``, must not delete a good checkpoint to keep a damaged one). Returns the new paths."""
    folder = Path(folder)
    keep = last_complete_checkpoint(folder)
    moved = []
    for step, checkpoint in _checkpoints(folder):
        if keep is not None and checkpoint == Path(keep):
            break
        target = checkpoint.with_name(f"damaged-{checkpoint.name}")
        if target.exists():
            shutil.rmtree(target)
        checkpoint.rename(target)
        moved.append(target)
    return moved


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every ``checkpoint-STEP`` folder, newest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.fullmatch(p.name)) and p.is_dir()]
    return sorted(found, reverse=True)


def last_complete_checkpoint(folder: str | os.PathLike) -> str | None:
    """The newest ``checkpoint-STEP`` in ``folder`` whose files all read back, or None; damaged newer ones are
    skipped with a warning."""
    for _, checkpoint in _checkpoints(Path(folder)):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return str(checkpoint)
        if checkpoint not in _warned:
            _warned.add(checkpoint)
            logger.warning("skipping damaged checkpoint %s (%s)", checkpoint, problem)
    return None
