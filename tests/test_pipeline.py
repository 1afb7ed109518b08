"""`videobert demo` end to end at the smallest size, through the CLI as `make demo` runs it."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from videobert.cli import app


def test_demo_tiny_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--size", "tiny"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"] == 12
    for stage in ("synth", "ingest", "extract", "vocab", "tokenize"):
        assert summary[f"time_{stage}_s"] >= 0
    for label in ("verb", "noun"):
        assert 0 <= summary[f"{label}_probe_chance"] <= 1 and 0 <= summary[f"{label}_probe_tokens"] <= 1
    for artifact in ("manifest.parquet", "sentences.parquet", "segments.parquet", "clips.parquet", "tokens.parquet"):
        assert (out / "work" / artifact).exists()
    assert "│ verb" in result.output and "│ noun" in result.output  # the token-quality table

    again = CliRunner().invoke(app, ["demo", "--out", str(out), "--size", "tiny"])
    assert again.exit_code == 0, again.output
    assert "extract: done=0 skipped=12" in again.output


def test_demo_rejects_unknown_size(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--size", "huge"])
    assert result.exit_code == 2
    assert "unknown demo size 'huge'" in result.output
