"""`videobert demo` end to end at the smallest size, through the CLI as `make demo` runs it."""
from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from videobert.cli import app


def test_demo_tiny_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--size", "tiny"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"] == 12
    for stage in ("synth", "ingest", "extract", "vocab", "tokenize", "pretrain", "zeroshot", "retrieval",
                  "finetune-few-shot-pretrained", "finetune-all-random", "captioning"):  # fmt: skip
        assert summary["timings_s"][stage] >= 0
    for label in ("verb", "noun"):
        assert 0 <= summary["token_quality"][f"{label}_probe_tokens"] <= 1
        for method in ("language_prior", "videobert"):
            assert 0 <= summary["zeroshot"][method][f"{label}_top1"] <= summary["zeroshot"][method][f"{label}_top5"] <= 1
        for budget in ("few-shot", "all"):
            for init in ("pretrained", "random"):
                assert 0 <= summary["finetune"][budget][init]["test"][label]["top1"] <= 1
    assert summary["pretraining"]["steps"] == 20
    assert set(summary["retrieval"]) == {"pool", "alignment", "embedding", "likelihood"}
    assert set(summary["captioning"]["methods"]) == {"pretrained", "random", "features", "pretrained+features", "random+features"}
    assert set(summary["targets"]) == {"zeroshot verb top-1", "zeroshot noun top-1", "finetune gain",
                                       "text-to-video R@1"}  # fmt: skip
    for artifact in ("work/tokens.parquet", "model/model.safetensors", "results.md", "report.html"):
        assert (out / artifact).is_file()
    html = (out / "report.html").read_text()
    assert "Zero-shot action classification" in html and html.count("<svg") >= 2 and "data:image/png;base64" in html
    assert "Zero-shot action classification (Table 1)" in result.output
    results = (out / "results.md").read_text()
    assert re.search(r"\| VideoBERT \| [\d.]+ \|", results)  # the zero-shot row, in percent

    again = CliRunner().invoke(app, ["demo", "--out", str(out), "--size", "tiny", "--no-captioning"])
    assert again.exit_code == 0, again.output
    assert "extract: done=0 skipped=12" in again.output
    assert "pretrain: done=0 skipped=1" in again.output


def test_demo_on_a_recipe_corpus_adds_forecasting(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--size", "tiny", "--recipes", "--no-captioning"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "corpus" / "synth.json").read_text())["parameters"]["recipes"] is True
    summary = json.loads((out / "summary.json").read_text())
    assert summary["captioning"] is None and summary["timings_s"]["forecast-finetune"] >= 0
    forecast = summary["forecast"]
    assert forecast["examples"] >= 1 and forecast["training_examples"] >= 1
    methods = forecast["methods"]
    assert set(methods) == {"frequency_prior", "last_step_prior", "language_prior", "videobert_zeroshot",
                            "videobert_finetuned"}  # fmt: skip
    for row in methods.values():
        for slot in ("verb", "noun"):
            assert 0 <= row[f"{slot}_top1"] <= row[f"{slot}_top5"] <= 1
    assert "token_top1" in methods["videobert_zeroshot"] and "token_top1" not in methods["videobert_finetuned"]
    results = (out / "results.md").read_text()
    assert "### Next-step forecasting (recipe corpus)" in results
    assert re.search(r"\| VideoBERT fine-tuned \(\d+ examples\) \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| - \| - \|", results)


def test_demo_rejects_unknown_size(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--size", "huge"])
    assert result.exit_code == 2
    assert "unknown demo size 'huge'" in result.output
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--pretrain-steps", "-5"])
    assert result.exit_code == 2 and "pretrain_steps must be non-negative" in result.output
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--clip-frames", "1"])
    assert result.exit_code == 2 and "clip_frames must be at least 2" in result.output
    assert not (tmp_path / "corpus").exists()  # refused before any work


def test_demo_trains_its_clip_encoder_first(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--size", "tiny", "--backbone", "encoder", "--encoder-steps", "4", "--no-captioning"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "work" / "features" / "meta.json").read_text())
    assert meta["backbone"] == f"encoder:{(out / 'encoder').resolve()}" and meta["dim"] == 128 and meta["size"] == [32, 32]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timings_s"]["train-encoder"] >= 0 and summary["pretraining"]["steps"] == 20
    assert json.loads((out / "encoder" / "train_encoder.json").read_text())["summary"]["steps"] == 4
