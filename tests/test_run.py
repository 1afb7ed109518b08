"""`videobert run` on tiny corpora end to end (captions only, YouCook2-style; no annotations and no transcripts, some
videos with speech to recognise), and the recipe it chooses."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from videobert.cli import app
from videobert.data.ingest import load_manifest, load_segments
from videobert.recipe import (MIN_CLIPS_PER_WORD, CorpusSurvey, Recipe, apply_overrides, choose_recipe,
                              parse_option, vocabulary_shape)  # fmt: skip
from videobert.utils.errors import ConfigError

# A small BERT and few steps: the test checks the plumbing, not what the model learns.
TINY = ["--steps", "4", "--option", "pretrain.init=scratch:2x32", "--option", "pretrain.text_vocab=200",
        "--option", "pretrain.batch-size=8", "--option", "train_encoder.steps=3", "--option", "train_encoder.threads=1"]  # fmt: skip


@pytest.fixture(scope="module")
def minicook(tmp_path_factory):
    from videobert.data.synth import synth

    corpus = tmp_path_factory.mktemp("minicook") / "corpus"
    synth(corpus, videos=10, seed=0, width=64, height=64)
    return corpus


def test_vocabulary_shape_keeps_enough_clips_per_word():
    assert vocabulary_shape(100) == (100 // MIN_CLIPS_PER_WORD, 1)
    assert vocabulary_shape(12 * MIN_CLIPS_PER_WORD) == (12, 1)
    assert vocabulary_shape(906) == (7, 2)  # 60 words at most: 49 beats 12 (one level) and 27 (3 x 3 x 3)
    assert vocabulary_shape(144 * MIN_CLIPS_PER_WORD) == (12, 2)
    assert vocabulary_shape(10**9) == (12, 4)


def survey_of(**kwargs) -> CorpusSurvey:
    base = dict(videos=100, seconds=6000.0, median_video_seconds=60.0, with_transcript=100, needs_asr=0, segments=0,
                labelled=0, labels_from_captions=0, captioned=0, median_segment_seconds=0.0, splits={})
    return CorpusSurvey(**{**base, **kwargs})


def test_recipe_follows_the_corpus_and_the_budget():
    youcook = choose_recipe(survey_of(segments=500, labelled=480, labels_from_captions=500, captioned=500,
                                      median_segment_seconds=6.0, splits={"train": 70, "val": 30}))  # fmt: skip
    assert youcook.clip_frames == 30 and (youcook.k, youcook.depth) == (6, 3)  # 4,000 clips: 266 words at most
    assert youcook.evaluations == ("zeroshot", "retrieval") and youcook.zeroshot_labels_from == "train"
    assert youcook.eval_split == "val" and youcook.holdout == 0 and youcook.asr == ""
    folder = choose_recipe(survey_of(with_transcript=0, needs_asr=40, median_video_seconds=20.0), budget_minutes=60)
    assert folder.clip_frames == 15 and folder.evaluations == () and folder.holdout == 0.2
    assert folder.asr == "pocketsphinx" and folder.pretrain["init"] == "scratch:4x384"
    assert folder.pretrain_steps > choose_recipe(survey_of(), budget_minutes=10).pretrain_steps > 0
    assert choose_recipe(survey_of(), steps=123).pretrain_steps == 123
    # A clip encoder is trained where most videos have narration (given or to be recognised), not elsewhere.
    assert choose_recipe(survey_of()).train_encoder and not folder.train_encoder  # 40 of 100 narrated
    assert choose_recipe(survey_of(with_transcript=0, needs_asr=60)).train_encoder
    assert not choose_recipe(survey_of(with_transcript=30)).train_encoder


def test_options_and_recipe_files(tmp_path):
    assert parse_option("pretrain.learning-rate=5e-4") == ("pretrain", "learning_rate", 5e-4)
    assert parse_option("extract.backbone=hf-image:/m") == ("extract", "backbone", "hf-image:/m")
    with pytest.raises(ConfigError, match="STAGE.NAME=VALUE"):
        parse_option("learning_rate=1")
    with pytest.raises(ConfigError, match="pretrain has no option learning_rat;.*learning_rate"):
        apply_overrides(Recipe(), None, ["pretrain.learning_rat=1"])
    with pytest.raises(ConfigError, match="unknown stage 'pretrian'"):
        apply_overrides(Recipe(), None, ["pretrian.seed=1"])
    (tmp_path / "r.json").write_text(json.dumps({"clip_frames": 20, "options": {"vocab": {"max_points": 500}}}))
    recipe = apply_overrides(Recipe(), tmp_path / "r.json", ["vocab.seed=3"])
    assert recipe.clip_frames == 20 and recipe.options == {"vocab": {"max_points": 500, "seed": 3}}
    (tmp_path / "bad.json").write_text(json.dumps({"clip_frame": 20}))
    with pytest.raises(ConfigError, match="unknown recipe field.*clip_frame"):
        apply_overrides(Recipe(), tmp_path / "bad.json", [])


def test_run_on_a_captions_only_corpus(minicook, tmp_path):
    """YouCook2-style annotations (captions, no verb or noun): labels come from the captions, zero-shot takes its
    candidates from the training split, retrieval ranks the captions; a second run resumes."""
    corpus = tmp_path / "corpus"
    shutil.copytree(minicook, corpus)
    given = [json.loads(line) for line in (minicook / "annotations.jsonl").read_text().splitlines()]
    (corpus / "annotations.jsonl").write_text("".join(
        json.dumps({k: a[k] for k in ("video", "start", "end", "caption", "split")}) + "\n" for a in given))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(corpus), "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    assert result.output.index("recipe:") < result.output.index("ingest: done")  # printed before any work
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["evaluations"] == ["zeroshot", "retrieval"] and recipe["zeroshot_labels_from"] == "train"
    assert recipe["clip_frames"] == 15 and recipe["pretrain_steps"] == 4 and recipe["asr"] == ""
    assert recipe["train_encoder"] is True and recipe["options"]["train_encoder"] == {"steps": 3, "threads": 1}
    assert recipe["options"]["pretrain"] == {"init": "scratch:2x32", "text_vocab": 200, "batch_size": 8}
    derived = [(s["verb"], s["noun"]) for s in load_segments(out / "work").to_pylist()]
    assert sorted(derived) == sorted((a["verb"], a["noun"]) for a in given)  # "peel the carrot" -> peel / carrot

    summary = json.loads((out / "summary.json").read_text())
    assert summary["zeroshot"]["evaluated"] > 0 and summary["retrieval"]["pool"] >= 2
    assert summary["finetune"] is None and summary["pretraining"]["steps"] == 4
    zeroshot = json.loads((out / "eval" / "zeroshot" / "metrics.json").read_text())
    assert zeroshot["labels_from"] == "train"
    assert "Zero-shot action classification" in (out / "results.md").read_text()
    assert "the words whose clips most often show one step" in (out / "report.html").read_text()

    again = CliRunner().invoke(app, ["run", str(corpus), "--out", str(out), *TINY])
    assert again.exit_code == 0, again.output
    assert "extract: done=0 skipped=10" in again.output and "pretrain: done=0 skipped=1" in again.output


def test_run_on_videos_alone(minicook, tmp_path, monkeypatch):
    """No annotations, no subtitles; two videos have speech: they are transcribed into the work directory, a fifth
    of the videos is held out, and the results are pretraining, held-out alignment and the visual words. The speech
    engine is a stand-in that hears the same words in any audio (test_transcribe.py tests the real ones)."""
    from test_transcribe import write_clip

    from videobert.speech import engines

    class Hears(engines.SpeechEngine):
        engine, model, window_s = "pocketsphinx", "stand-in", 30.0

        def words(self, samples):
            return [engines.Word(w, 0.1 + 0.3 * i, 0.35 + 0.3 * i) for i, w in enumerate("now stir the soup".split())]

    monkeypatch.setitem(engines.ENGINES, "pocketsphinx", (lambda arg, device: Hears(), "pocketsphinx"))

    corpus = tmp_path / "corpus"
    for video in sorted((minicook / "videos").glob("*.mp4"))[:8]:
        (corpus / "silent").mkdir(parents=True, exist_ok=True)
        shutil.copy(video, corpus / "silent" / video.name)
    tone = np.sin(2 * np.pi * 220 * np.arange(32000) / 16000).astype(np.float32) * 0.3
    for name in ("a", "b"):
        write_clip(corpus / "talks" / f"{name}.mp4", tone, seconds=2.0)
    out = tmp_path / "out"
    (tmp_path / "recipe.json").write_text(json.dumps({"train_encoder": True}))
    result = CliRunner().invoke(app, ["run", str(corpus), "--out", str(out), "--recipe", str(tmp_path / "recipe.json"),
                                      *TINY])  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "work" / "features" / "meta.json").read_text())
    assert meta["backbone"] == f"encoder:{(out / 'encoder').resolve()}" and "train-encoder: done=1" in result.output
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["train_encoder"] is True and recipe["asr"] == "pocketsphinx" and recipe["holdout"] == 0.2 and recipe["evaluations"] == []
    assert sorted(p.name for p in (out / "work" / "transcripts" / "talks").iterdir()) == ["a.mp4.json", "b.mp4.json"]
    assert not list(corpus.rglob("*.json"))  # nothing written into the corpus
    splits = [r["split"] for r in load_manifest(out / "work").to_pylist()]
    assert splits.count("val") == 3 and splits.count(None) == 7  # a fifth of 8 silent videos, one of 2 narrated
    summary = json.loads((out / "summary.json").read_text())
    assert summary["zeroshot"] is None and summary["retrieval"] is None and summary["token_quality"] == {}
    # Measured on the held-out videos; their one narrated video gives no mismatched pair, so the (balanced) accuracy
    # is left out rather than reported as 1.0 for a head that always answers "aligned".
    held_out = summary["pretraining"]["eval"]
    assert "alignment_loss" in held_out and "alignment_accuracy" not in held_out
    html = (out / "report.html").read_text()
    assert "the most frequent words" in html and "Pretraining, held-out val videos" in html
