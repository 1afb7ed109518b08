"""The work directory: one place that names every artifact a stage reads or writes (DESIGN.md §3)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from videobert.utils.errors import InputError


@dataclass(frozen=True)
class WorkDir:
    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    # ingest
    @property
    def manifest(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def sentences(self) -> Path:
        return self.root / "sentences.parquet"

    @property
    def segments(self) -> Path:
        return self.root / "segments.parquet"

    @property
    def errors(self) -> Path:
        return self.root / "errors.jsonl"

    # transcribe
    @property
    def transcripts(self) -> Path:
        return self.root / "transcripts"

    def transcript_of(self, video: str) -> Path:
        """Where speech recognised in ``video`` (its id: a path relative to the corpus) is written."""
        return self.transcripts / f"{video}.json"

    # extract
    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def clips(self) -> Path:
        return self.root / "clips.parquet"

    # vocab / tokenize
    @property
    def vocab(self) -> Path:
        return self.root / "vocab"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens.parquet"

    def require(self, path: Path, stage: str) -> Path:
        """Fail with the name of the stage that must run first when an input artifact is missing."""
        if not path.exists():
            raise InputError(path, f"not found; run `videobert {stage} ...` first")
        return path

    def ensure(self) -> "WorkDir":
        self.root.mkdir(parents=True, exist_ok=True)
        return self
