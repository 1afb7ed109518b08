"""A tiny VideoBERT over the MiniCook vocabulary, exported to ONNX (fp32 + int8) once per test session: shared by
the export, index and API tests."""
from __future__ import annotations

from pathlib import Path

from videobert.data.synth import NOUNS, VERBS

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "now", "let", "me", "show", "you", "how", "to", "the",
         *VERBS, *NOUNS]  # fmt: skip


def tiny_model(work: Path, root: Path) -> Path:
    from checkpoints import save_tiny_videobert

    return save_tiny_videobert(root, work / "vocab", WORDS)
