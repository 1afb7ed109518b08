"""Speech recognition: audio windows and sentence grouping on exact cases, the stage's plumbing and bad input on
generated clips, the Whisper code path with a tiny randomly initialised Whisper, and PocketSphinx on the real GRID
and NASA speech of /work/shared/realvideo (skipped when absent)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import pytest

from videobert.data.ingest import ingest, load_manifest, load_sentences
from videobert.speech.audio import SAMPLE_RATE, audio_windows, decode_audio, is_silent
from videobert.speech.engines import ENGINES, SpeechEngine, Word, get_engine, recognize
from videobert.speech.transcribe import SentenceRules, group_sentences, transcribe
from videobert.utils.errors import ConfigError, InputError, read_errors

REAL = Path(os.environ.get("VIDEOBERT_REALVIDEO", Path(__file__).parents[1].parent / "shared" / "realvideo"))
GRID = REAL / "subtitles_asr"


def write_clip(path: Path, audio: np.ndarray | None, seconds: float = 2.0) -> Path:
    """A 64x48 clip at 10 fps with, when given, a 16 kHz mono AAC track of ``audio`` (float samples)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono") if audio is not None else None
        for k in range(int(seconds * 10)):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * k, np.uint8), format="rgb24")
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if sound is not None:
            for start in range(0, audio.size, 1024):
                frame = av.AudioFrame.from_ndarray(audio[None, start:start + 1024].astype(np.float32), format="fltp",
                                                   layout="mono")  # fmt: skip
                frame.sample_rate = SAMPLE_RATE
                container.mux(sound.encode(frame))
            container.mux(sound.encode())
    return path


def noise(seconds: float, level: float = 0.1) -> np.ndarray:
    return (level * np.random.default_rng(0).standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)


def test_audio_windows_tile_the_track_with_overlap():
    assert audio_windows(20 * SAMPLE_RATE, 30.0, 5.0) == [(0, 20 * SAMPLE_RATE, 0.0, 20.0)]
    windows = audio_windows(70 * SAMPLE_RATE, 30.0, 5.0)
    assert windows == [(0, 30 * SAMPLE_RATE, 0.0, 27.5), (25 * SAMPLE_RATE, 55 * SAMPLE_RATE, 27.5, 52.5),
                       (50 * SAMPLE_RATE, 70 * SAMPLE_RATE, 52.5, 70.0)]  # fmt: skip


class _Scripted(SpeechEngine):
    """Hears a fixed script of (word, absolute start, end) in whatever part of the track it is given; the track's
    samples are its own timestamps, so a window tells where it starts."""

    engine, model, window_s = "scripted", "script", 10.0

    def __init__(self, script):
        self.script = script

    def words(self, samples):
        offset = round(float(samples[0]), 3)
        end = offset + samples.size / SAMPLE_RATE
        return [Word(w, s - offset, e - offset) for w, s, e in self.script if s < end and e > offset]


def test_recognize_keeps_each_word_of_an_overlap_once():
    script = [("one", 1.0, 1.5), ("two", 7.6, 8.1), ("three", 8.5, 9.2), ("four", 15.0, 15.5), ("five", 23.0, 23.4)]
    clock = np.arange(24 * SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE  # windows of 10 s every 6 s over 24 s
    words = recognize(_Scripted(script), clock, overlap_s=4.0)
    assert [w.text for w in words] == ["one", "two", "three", "four", "five"]
    assert [t for w in words for t in (w.start, w.end)] == pytest.approx([t for _, s, e in script for t in (s, e)])


def test_group_sentences_at_pauses_punctuation_and_length():
    words = [Word("cut", 0.0, 0.3), Word("the", 0.35, 0.5), Word("onion", 0.55, 1.0),  # pause of 1 s follows
             Word("now.", 2.0, 2.3), Word("then", 2.4, 2.6), Word("fry", 2.7, 3.0), Word("it", 3.05, 3.2)]  # fmt: skip
    sentences = group_sentences(words, SentenceRules(max_pause=0.6, max_words=2))
    assert [s["text"] for s in sentences] == ["cut the", "onion", "now.", "then fry", "it"]
    sentences = group_sentences(words, SentenceRules(max_pause=0.6, max_words=20))
    assert [(s["text"], s["start"], s["end"]) for s in sentences] == [
        ("cut the onion", 0.0, 1.0), ("now.", 2.0, 2.3), ("then fry it", 2.4, 3.2)]
    assert sentences[2]["words"][1] == {"word": "fry", "start": 2.7, "end": 3.0}
    with pytest.raises(ConfigError):
        SentenceRules(max_pause=0)


def test_decode_audio_resamples_to_16k_mono(tmp_path):
    clip = write_clip(tmp_path / "a.mp4", noise(2.0))
    samples = decode_audio(clip)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.size - 2 * SAMPLE_RATE) <= 2048  # AAC priming and padding
    assert not is_silent(samples) and is_silent(np.zeros(100, np.float32))
    with pytest.raises(InputError, match="no audio stream"):
        decode_audio(write_clip(tmp_path / "mute.mp4", None))


def test_stage_records_bad_items_and_goes_on(tmp_path, monkeypatch):
    """No audio, silent audio: one error each; a video with its own subtitles is left alone; the rest is
    transcribed into the work directory and ingest reads it as the video's sentences."""
    corpus, work = tmp_path / "corpus", tmp_path / "work"
    write_clip(corpus / "speech" / "talk.mp4", noise(2.0))
    write_clip(corpus / "mute.mp4", None)
    write_clip(corpus / "silent.mp4", np.zeros(2 * SAMPLE_RATE, np.float32))
    write_clip(corpus / "subtitled.mp4", noise(2.0))
    (corpus / "subtitled.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhello there\n")

    class Fake(SpeechEngine):
        engine, model, window_s = "fake", "fake-1", 30.0

        def words(self, samples):
            return [Word("stir", 0.2, 0.5), Word("the", 0.5, 0.6), Word("soup", 0.6, 1.0)]

    monkeypatch.setitem(ENGINES, "fake", (lambda arg, device: Fake(), "fake"))
    before = sorted(p.name for p in corpus.rglob("*"))
    report = transcribe(corpus, work, asr="fake")
    assert (report.done, report.failed, report.skipped) == (1, 2, 0)
    assert sorted(p.name for p in corpus.rglob("*")) == before  # nothing written into the corpus
    problems = {r.item: r.error for r in read_errors(work / "errors.jsonl")}
    assert set(problems) == {"mute.mp4", "silent.mp4"}
    assert "no audio stream" in problems["mute.mp4"] and "silent" in problems["silent.mp4"]
    written = json.loads((work / "transcripts" / "speech" / "talk.mp4.json").read_text())
    assert (written["engine"], written["model"]) == ("fake", "fake-1")
    assert [s["text"] for s in written["segments"]] == ["stir the soup"]

    again = transcribe(corpus, work, asr="fake")  # a recognised transcript is left alone unless asked
    assert (again.done, again.skipped) == (0, 1)
    assert transcribe(corpus, work, asr="fake", overwrite=True).done == 1

    ingested = ingest(corpus, work, jobs=1)
    assert ingested.stats["videos_with_transcript"] == 2
    sentences = {r["video"]: r for r in load_sentences(work).to_pylist()}
    assert sentences["speech/talk.mp4"]["text"] == "stir the soup"
    assert sentences["speech/talk.mp4"]["source"] == "work:transcripts/speech/talk.mp4.json"
    assert sentences["subtitled.mp4"]["text"] == "hello there"
    manifest = {r["video"]: r["transcript"] for r in load_manifest(work).to_pylist()}
    assert manifest["mute.mp4"] is None and manifest["subtitled.mp4"] == "subtitled.srt"


def test_unknown_engine_and_bad_whisper_directory(tmp_path):
    with pytest.raises(ConfigError, match="unknown speech engine 'vosk'.*pocketsphinx"):
        get_engine("vosk")
    with pytest.raises(ConfigError, match="needs a Whisper model"):
        get_engine("hf:")
    with pytest.raises(InputError, match="does not exist"):
        get_engine(f"hf:{tmp_path / 'nowhere'}")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "bert" / "model.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="not a Whisper"):
        get_engine(f"hf:{tmp_path / 'bert'}")


def tiny_whisper(path: Path) -> Path:
    """A randomly initialised two-layer Whisper with a byte-level vocabulary, saved as a checkpoint would be."""
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperTokenizer)
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    path.mkdir(parents=True)
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = WhisperTokenizer(str(path / "vocab.json"), str(path / "merges.txt"), unk_token="<|endoftext|>",
                                 bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    specials = ["<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
                "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>", *(f"<|{0.02 * i:.2f}|>" for i in range(1501))]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ["<|endoftext|>", *specials[:8]]}
    special = dict(decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids["<|endoftext|>"],
                   pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"])  # fmt: skip
    config = WhisperConfig(vocab_size=len(tokenizer), num_mel_bins=80, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, d_model=16, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, max_target_positions=64, **special)  # fmt: skip
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        **special, no_timestamps_token_id=ids["<|notimestamps|>"], lang_to_id={"<|en|>": ids["<|en|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}, is_multilingual=True,
        max_initial_timestamp_index=50, alignment_heads=[[0, 0], [0, 1]], max_length=12,
    )  # fmt: skip
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(path)
    return path


def test_whisper_engine_through_the_stage(tmp_path):
    corpus, work = tmp_path / "corpus", tmp_path / "work"
    write_clip(corpus / "talk.mp4", noise(3.0))
    model = tiny_whisper(tmp_path / "whisper")
    report = transcribe(corpus, work, asr=f"hf:{model}", device="cpu")
    assert (report.done, report.failed) == (1, 0)
    written = json.loads((work / "transcripts" / "talk.mp4.json").read_text())
    assert written["engine"] == "hf" and written["model"] == str(model)
    for segment in written["segments"]:  # a random model says anything, but inside the audio it heard
        for w in segment["words"]:
            assert 0 <= w["start"] <= w["end"] <= written["audio_seconds"] + 1e-6


@pytest.mark.skipif(not GRID.is_dir(), reason=f"real speech not present at {GRID}")
def test_pocketsphinx_on_real_speech(tmp_path):
    """The bundled English model on the NASA narration (natural English; 38 % WER measured, BENCHMARKS.md) and a
    GRID clip (a command grammar its language model does not know), with word times near GRID's alignment."""
    engine = get_engine("pocketsphinx")
    opening = decode_audio(GRID / "nasa_13013.mp4")[: 5 * SAMPLE_RATE]  # "This is the optical and science segment
    nasa = " ".join(w.text for w in recognize(engine, opening))  # of the Webb space telescope"
    assert nasa.startswith("this is the") and nasa.endswith("webb space telescope")
    words = recognize(engine, decode_audio(GRID / "grid_id2_vcd_swwp2s.mpg"))
    assert words[-1].text == "soon"  # GRID: "set white with p two soon", soon from 1.72 to 2.21 s
    assert abs(words[-1].start - 1.72) < 0.1 and abs(words[-1].end - 2.21) < 0.1
    assert abs(words[0].start - 0.49) < 0.1  # speech starts at 0.49 s
