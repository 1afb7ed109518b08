"""What every stage function returns: counts a user (or a test) can check, and where the outputs are."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StageReport:
    """Summary of one stage run. ``failed`` counts items recorded in ``errors.jsonl`` during this run;
    the CLI exits with status 1 when it is non-zero (the rest of the batch still completed)."""

    stage: str
    done: int = 0
    skipped: int = 0
    failed: int = 0
    outputs: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def rows(self) -> list[tuple[str, str]]:
        rows = [("done", str(self.done)), ("skipped (already done)", str(self.skipped)), ("failed", str(self.failed))]
        rows += [(k, _fmt(v)) for k, v in self.stats.items()]
        rows += [(k, v) for k, v in self.outputs.items()]
        return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"a.b.c": value}``: nested metrics as flat report stats."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
