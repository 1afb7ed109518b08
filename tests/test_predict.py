"""`videobert predict` on a MiniCook video with a tiny model over the MiniCook vocabulary: the same visual words as the
pipeline, windows that cover every clip, ranked zero-shot labels, sentence alignment from the sidecar subtitles;
and the feature-source record of the visual vocabulary that makes a model directory self-sufficient."""
from __future__ import annotations

import json
import shutil

import av

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from videobert.cli import app
from videobert.data.synth import NOUNS, VERBS
from videobert.model import VideoBertForPreTraining
from videobert.model.captioning import VideoBertForCaptioning
from videobert.features.store import FeatureStore
from videobert.tasks.caption import caption_segments, words_and_features
from videobert.tasks.predict import find_subtitles, predict
from videobert.tasks.retrieval import alignment_similarity
from videobert.tasks.zeroshot import LabelSet, template_scores
from videobert.tokenizer.hkmeans import FeatureSource, VisualTokenizer, VisualVocabConfig
from videobert.tokenizer.stages import vocab
from videobert.utils.errors import ConfigError, InputError
from videobert.utils.io import read_json
from checkpoints import save_tiny_bert

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "now", "let", "me", "show", "you", "how", "to", "the",
         *VERBS, *NOUNS]  # fmt: skip
WINDOW = 3


@pytest.fixture(scope="module")
def model_dir(minicook_work, tmp_path_factory):
    """A random tiny VideoBERT (2 layers, hidden 32) over the MiniCook visual vocabulary, saved as a model directory
    (as the `base_dir` fixture of tests/test_finetune.py)."""
    bert_dir = save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), {w: i for i, w in enumerate(WORDS)})
    visual_tokenizer = VisualTokenizer.from_pretrained(minicook_work / "vocab")
    model = VideoBertForPreTraining.from_text_checkpoint(bert_dir, visual_tokenizer=visual_tokenizer)
    directory = tmp_path_factory.mktemp("tiny_videobert")
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def video(minicook_work):
    """(video id, path) of the first MiniCook video."""
    manifest = pq.read_table(minicook_work / "manifest.parquet", columns=["video", "path"]).to_pylist()
    return manifest[0]["video"], manifest[0]["path"]


@pytest.fixture(scope="module")
def predicted(model_dir, minicook_work, video, tmp_path_factory):
    """predict() on that video with the work dir's labels, run from a fresh directory with the default output."""
    cwd = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        report = predict(model_dir, video[1], work=minicook_work, window=WINDOW, device="cpu")
    return report, cwd


def test_predict_writes_the_default_json_and_reports(predicted, video):
    report, cwd = predicted
    stem = video[1].rsplit("/", 1)[-1].rsplit(".", 1)[0]
    out = cwd / f"{stem}.predict.json"
    assert report.ok and report.outputs["predictions"] == str(out) and out.is_file()
    result = read_json(out)
    assert result["video"] == video[1] and result["window_clips"] == WINDOW
    assert report.stats["clips"] == len(result["clips"]) and report.stats["windows"] == len(result["windows"])
    assert [p.name for p in cwd.iterdir()] == [out.name]  # no temp file left behind


def test_tokens_equal_the_pipeline_tokens(predicted, minicook_work, video):
    result = read_json(predicted[0].outputs["predictions"])
    tokens = pq.read_table(minicook_work / "tokens.parquet")
    mine = tokens.filter(pc.equal(tokens["video"], video[0])).sort_by("clip").to_pylist()
    assert len(mine) > WINDOW
    assert [(c["clip"], c["start"], c["end"], c["token"]) for c in result["clips"]] == [
        (r["clip"], r["start"], r["end"], r["token"]) for r in mine
    ]
    assert [c["word"] for c in result["clips"]] == [f"[V{r['token']}]" for r in mine]
    assert result["feature_source"] == read_json(minicook_work / "features" / "meta.json")


def test_windows_cover_every_clip_once(predicted):
    result = read_json(predicted[0].outputs["predictions"])
    clips, windows = result["clips"], result["windows"]
    assert len(windows) == -(-len(clips) // WINDOW)
    covered = [c for w in windows for c in range(w["first_clip"], w["first_clip"] + w["clips"])]
    assert covered == list(range(len(clips)))
    for w in windows:
        inside = clips[w["first_clip"] : w["first_clip"] + w["clips"]]
        assert 1 <= w["clips"] <= WINDOW and w["words"] == [c["word"] for c in inside]
        assert (w["start"], w["end"]) == (inside[0]["start"], inside[-1]["end"])
        assert w["caption"] is None


def test_zero_shot_top5_is_ranked_and_matches_template_scores(predicted, model_dir, minicook_work):
    result = read_json(predicted[0].outputs["predictions"])
    segments = pq.read_table(minicook_work / "segments.parquet")
    model = VideoBertForPreTraining.from_pretrained(model_dir).eval()
    labels = {slot: LabelSet.from_values(segments[slot].to_pylist(), model.tokenizer.text_tokenizer)
              for slot in ("verb", "noun")}  # fmt: skip
    assert result["labels"] == {slot: list(labels[slot].names) for slot in labels}
    first = [int(c["word"][2:-1]) for c in result["clips"][:WINDOW]]
    with torch.inference_mode():
        expected = dict(zip(("verb", "noun"), template_scores(model, model.tokenizer, [first], *labels.values())))
    for w in result["windows"]:
        for slot in ("verb", "noun"):
            ranked = w[slot]
            probs = [r["prob"] for r in ranked]
            assert len(ranked) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
            assert {r["label"] for r in ranked} <= set(labels[slot].names)
            # prob is the softmax of the scores over the candidates: ratios are exp of score differences
            assert probs[0] / probs[1] == pytest.approx(np.exp(ranked[0]["log_prob"] - ranked[1]["log_prob"]))
    for slot in ("verb", "noun"):
        best = np.argsort(-expected[slot][0], kind="stable")[:5]
        assert [r["label"] for r in result["windows"][0][slot]] == [labels[slot].names[i] for i in best]
        assert [r["log_prob"] for r in result["windows"][0][slot]] == pytest.approx(expected[slot][0][best])
    assert len(result["language_prior"]["verb"]) == 5


def test_sentences_come_from_the_sidecar_subtitles(predicted, minicook_work, video, model_dir):
    result = read_json(predicted[0].outputs["predictions"])
    srt = video[1].rsplit(".", 1)[0] + ".srt"
    assert result["subtitles"] == srt
    sentences = pq.read_table(minicook_work / "sentences.parquet")
    mine = sentences.filter(pc.equal(sentences["video"], video[0])).to_pylist()
    rows = result["sentences"]
    assert len(mine) >= 2 and [s["text"] for s in rows] == [s["text"] for s in mine]
    assert [t for s in rows for t in (s["start"], s["end"])] == [t for s in mine for t in (s["start"], s["end"])]
    scored = [s for s in rows if s["p_aligned"] is not None]
    assert scored and all(0 < s["p_aligned"] < 1 and s["clips"] > 0 for s in scored)
    assert all(s["control_sentence"] != s["sentence"] for s in scored)
    # sentence 0's score is the alignment head on [CLS] text [>] its clips (midpoint rule) [SEP]
    s = scored[0]
    clips = result["clips"]
    own = [int(c["word"][2:-1]) for c in clips if s["start"] <= (c["start"] + c["end"]) / 2 < s["end"]]
    assert len(own) == s["clips"]
    model = VideoBertForPreTraining.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        log_odds = alignment_similarity(model, model.tokenizer, [s["text"]], [own])[0, 0]
    assert s["p_aligned"] == pytest.approx(1 / (1 + np.exp(-log_odds)))
    summary = result["alignment"]
    assert summary["sentences"] == len(rows) and summary["scored"] == len(scored)
    assert summary["mean_p_aligned"] == pytest.approx(np.mean([s["p_aligned"] for s in scored]))


def test_cli_with_given_labels_and_no_subtitles(model_dir, video, tmp_path):
    bare = tmp_path / "bare.mp4"
    shutil.copy(video[1], bare)  # no sidecar next to the copy
    assert find_subtitles(bare) is None
    out = tmp_path / "out" / "p.json"
    result = CliRunner().invoke(app, ["predict", str(model_dir), str(bare), "--verbs", "cut, peel", "--nouns", "egg",
                                      "--out", str(out), "--window", "100", "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    predictions = read_json(out)
    assert predictions["subtitles"] is None and predictions["sentences"] == []
    assert len(predictions["windows"]) == 1 and predictions["windows"][0]["clips"] == len(predictions["clips"])
    assert [r["label"] for r in predictions["windows"][0]["noun"]] == ["egg"]
    assert predictions["windows"][0]["noun"][0]["prob"] == pytest.approx(1.0)
    assert sorted(r["label"] for r in predictions["windows"][0]["verb"]) == ["cut", "peel"]


def test_bad_inputs_fail_clearly(model_dir, minicook_work, video, tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(InputError) as excinfo:
        predict(model_dir, corrupt, verbs="cut", nouns="egg", out=tmp_path / "x.json", device="cpu")
    assert str(corrupt) in str(excinfo.value)
    with pytest.raises(InputError, match="does not exist"):
        predict(model_dir, tmp_path / "missing.mp4", verbs="cut", nouns="egg", device="cpu")
    audio = tmp_path / "audio.wav"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(InputError, match="no video stream") as excinfo:
        predict(model_dir, audio, verbs="cut", nouns="egg", device="cpu")
    assert str(audio) in str(excinfo.value)
    with pytest.raises(InputError, match="model directory not found"):
        predict(tmp_path / "no_model", video[1], verbs="cut", nouns="egg", device="cpu")
    with pytest.raises(ConfigError, match="no candidate nouns"):
        predict(model_dir, video[1], verbs="cut", device="cpu")
    with pytest.raises(ConfigError, match="window"):
        predict(model_dir, video[1], work=minicook_work, window=0, device="cpu")
    assert not (tmp_path / "x.json").exists()


def test_captioner_captions_each_window(model_dir, video, tmp_path):
    torch.manual_seed(0)
    captioner = VideoBertForCaptioning.from_videobert(model_dir, decoder_layers=1, max_caption_length=6)
    captioner.save_pretrained(tmp_path / "captioner")
    out = tmp_path / "captioned.json"
    report = predict(model_dir, video[1], verbs="cut", nouns="egg", window=4, captioner=tmp_path / "captioner",
                     out=out, device="cpu")  # fmt: skip
    windows = read_json(out)["windows"]
    expected = caption_segments(tmp_path / "captioner", [np.array([int(w[2:-1]) for w in window["words"]])
                                                         for window in windows], device="cpu")  # fmt: skip
    assert [w["caption"] for w in windows] == expected and all(isinstance(c, str) for c in expected)
    assert report.stats["captions"] == "written"


def test_a_captioner_over_words_and_features_gets_both_and_a_foreign_one_is_refused(
    model_dir, minicook_work, video, tmp_path
):
    store = FeatureStore(minicook_work)
    torch.manual_seed(0)
    captioner = VideoBertForCaptioning.from_videobert(
        model_dir, encoder_mode="pretrained+features", feature_dim=store.dim, decoder_layers=1, max_caption_length=6
    )  # fmt: skip
    captioner.save_pretrained(tmp_path / "captioner")
    out = tmp_path / "captioned.json"
    predict(model_dir, video[1], verbs="cut", nouns="egg", window=4, captioner=tmp_path / "captioner", out=out,
            device="cpu")  # fmt: skip
    windows = read_json(out)["windows"]
    # The clip features predict computes are the work dir's (extract), in the same float16 rounding.
    rows = np.flatnonzero(np.asarray(store.clips["video"].to_pylist()) == video[0])
    features = store.load()[rows]  # (clips of the video, D), clip order
    words = [np.array([int(w[2:-1]) for w in window["words"]]) for window in windows]
    visual = [words_and_features(w, features[window["first_clip"] : window["first_clip"] + window["clips"]])
              for w, window in zip(words, windows)]  # fmt: skip
    assert [w["caption"] for w in windows] == caption_segments(tmp_path / "captioner", visual, device="cpu")
    torch.manual_seed(0)
    foreign = VideoBertForCaptioning.from_videobert(model_dir, encoder_mode="features", feature_dim=store.dim + 1,
                                                    decoder_layers=1)  # fmt: skip
    foreign.save_pretrained(tmp_path / "foreign")
    with pytest.raises(ConfigError, match=f"reads {store.dim + 1}-d clip features"):
        predict(model_dir, video[1], verbs="cut", nouns="egg", captioner=tmp_path / "foreign", device="cpu")


def test_a_model_without_the_feature_source_is_refused(model_dir, video, tmp_path):
    old = tmp_path / "old_model"
    shutil.copytree(model_dir, old)
    config_path = old / "visual_vocab" / "config.json"
    meta = read_json(config_path)
    del meta["feature_source"]  # as written before vocabularies recorded it
    config_path.write_text(json.dumps(meta))
    assert VideoBertForPreTraining.from_pretrained(old).visual_tokenizer.feature_source is None  # still loads
    with pytest.raises(ConfigError, match="does not record how the vocabulary's features were made"):
        predict(old, video[1], verbs="cut", nouns="egg", device="cpu")


# ------------------------------------------------------------------------------------- feature source


def test_the_vocabulary_and_the_model_carry_the_feature_source(minicook_work, model_dir):
    meta = read_json(minicook_work / "features" / "meta.json")
    source = VisualTokenizer.from_pretrained(minicook_work / "vocab").feature_source
    assert source == FeatureSource("pixels", meta["dim"], meta["fps"], meta["clip_frames"], tuple(meta["size"]))
    assert source.to_meta() == meta
    assert read_json(model_dir / "visual_vocab" / "config.json")["feature_source"] == meta


def test_feature_source_round_trips_outside_the_content_hash(tmp_path):
    x = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    plain = VisualTokenizer(VisualVocabConfig(k=2, depth=2)).fit(x)
    source = FeatureSource("hf:some/model", 4, 20, 30, (224, 224))
    with_source = VisualTokenizer(VisualVocabConfig(k=2, depth=2), feature_source=source).fit(x)
    assert with_source.content_hash == plain.content_hash
    with_source.save_pretrained(tmp_path / "v")
    back = VisualTokenizer.from_pretrained(tmp_path / "v")
    assert back.feature_source == source and back.feature_source.fps == 20.0
    plain.save_pretrained(tmp_path / "p")
    assert VisualTokenizer.from_pretrained(tmp_path / "p").feature_source is None
    with pytest.raises(ConfigError, match="3-d"):
        wrong_dim = FeatureSource("pixels", 3, 20, 30, (32, 32))
        VisualTokenizer(VisualVocabConfig(k=2, depth=2), feature_source=wrong_dim).fit(x)
    for bad in ({"dim": 0}, {"fps": -1.0}, {"size": (32,)}, {"backbone": ""}):
        with pytest.raises(ConfigError):
            FeatureSource(**{"backbone": "pixels", "dim": 4, "fps": 20.0, "clip_frames": 30, "size": (32, 32), **bad})
    assert FeatureSource.from_meta({"backbone": "test", "dim": 6}) is None  # a store not written by `extract`


def test_vocab_adds_the_feature_source_to_an_older_vocabulary(minicook_work, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(minicook_work, work)
    config_path = work / "vocab" / "config.json"
    meta = read_json(config_path)
    del meta["feature_source"]
    config_path.write_text(json.dumps(meta))
    report = vocab(work, k=12, depth=2, seed=0)  # same settings: skipped, the record filled in
    assert report.skipped == 1 and report.stats["content_hash"] == meta["content_hash"]
    assert read_json(config_path)["feature_source"] == read_json(work / "features" / "meta.json")
