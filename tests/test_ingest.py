"""The ingest stage on corpora encoded here with PyAV: exact manifest rows, sentences and segments; every
kind of bad input recorded in errors.jsonl while the good items are kept; re-runs that skip probed videos
and give identical tables; resuming after an interruption; the CLI's exit code."""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import videobert.data.ingest as ingest_module
from videobert.data.ingest import ingest, load_manifest, load_segments, load_sentences
from videobert.data.video import probe
from videobert.utils.errors import InputError, read_errors

MP4 = "mov,mp4,m4a,3gp,3g2,mj2"
MKV = "matroska,webm"


def encode_video(path: Path, frames: int, fps: int = 10, size: tuple[int, int] = (48, 64), **container_options: str) -> Path:
    """A small H.264 video whose frames differ (so the encoder emits real data for every frame)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(frames)
    with av.open(str(path), "w", options=container_options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for _ in range(frames):
            image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _mux_silence(container, codec: str) -> None:
    audio = container.add_stream(codec, rate=44100)
    audio.layout = "mono"
    fmt, dtype = ("fltp", np.float32) if codec == "aac" else ("s16", np.int16)
    samples = 1024 if codec == "aac" else 1152
    for k in range(5):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), dtype), format=fmt, layout="mono")
        frame.sample_rate, frame.pts = 44100, k * samples
        for packet in audio.encode(frame):
            container.mux(packet)
    for packet in audio.encode():
        container.mux(packet)


def encode_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        _mux_silence(container, "aac")
    return path


def encode_video_without_frames(path: Path) -> Path:
    """A Matroska file that declares a video stream but carries packets for its audio stream only.
    (An MP4 cannot hold this: FFmpeg's muxer drops a track without samples.)"""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        _mux_silence(container, "mp2")
    return path


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def jsonl(*rows: dict | str) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def make_good_corpus(root: Path) -> Path:
    """cook.mp4 (1.5 s) + SRT, knead.mkv (2.0 s) + VTT, clip.mp4 at the root (2.0 s) + JSON, annotations."""
    encode_video(root / "a" / "cook.mp4", frames=15)
    write(root / "a" / "cook.srt", "1\n00:00:00,000 --> 00:00:01,200\nCrack the egg. Whisk it!\n\n"
                                   "2\n00:00:01,200 --> 00:00:03,000\n<i>Now fry</i>\n\n"
                                   "3\n00:00:04,000 --> 00:00:05,000\nafter the end\n")
    encode_video(root / "b" / "knead.mkv", frames=20)
    write(root / "b" / "knead.vtt", "WEBVTT\n\n00:00.250 --> 00:01.750\n<v Cook>Knead the dough.\n")
    encode_video(root / "clip.mp4", frames=20)
    write(root / "clip.json", json.dumps({"segments": [{"start": 0.5, "end": 1.0, "text": " Serve."}]}))
    write(root / "annotations.jsonl", jsonl(
        {"video": "a/cook.mp4", "start": 0.0, "end": 1.2, "verb": "crack", "noun": "egg", "caption": "crack the egg", "split": "train"},
        {"video": "a/cook.mp4", "start": 1.2, "end": 9.0, "verb": "fry", "noun": "egg", "split": "train"},
        {"video": "b/knead.mkv", "start": 0.25, "end": 1.75, "verb": "knead", "noun": "dough", "split": "val"},
        {"video": "clip.mp4", "start": 0.5, "end": 1.0, "caption": "serve"},
    ))
    return root


def expected_row(root: Path, video: str, frames: int, container: str, transcript: str | None, split: str | None) -> dict:
    path = root / video
    return {
        "video": video, "path": str(path.resolve()), "duration": frames / 10, "fps": 10.0, "width": 64, "height": 48,
        "num_frames": frames, "rotation": 0, "codec": "h264", "container": container, "num_audio_streams": 0,
        "num_subtitle_streams": 0, "size_bytes": path.stat().st_size, "mtime": path.stat().st_mtime,
        "transcript": transcript, "split": split,
    }


def test_ingest_good_corpus_exact(tmp_path):
    corpus = make_good_corpus(tmp_path / "corpus")
    work = tmp_path / "work"
    report = ingest(corpus, work, jobs=2)

    assert (report.done, report.skipped, report.failed) == (3, 0, 0)
    assert not (work / "errors.jsonl").exists()
    assert load_manifest(work).to_pylist() == [
        expected_row(corpus, "a/cook.mp4", 15, MP4, "a/cook.srt", "train"),
        expected_row(corpus, "b/knead.mkv", 20, MKV, "b/knead.vtt", "val"),
        expected_row(corpus, "clip.mp4", 20, MP4, "clip.json", None),
    ]
    # "Crack the egg." (14 chars) and "Whisk it!" (9) share 1.2 s; the cue past the 1.5 s end is clipped,
    # the one starting after it dropped.
    assert load_sentences(work).to_pylist() == [
        {"video": "a/cook.mp4", "index": 0, "start": 0.0, "end": 1.2 * 14 / 23, "text": "Crack the egg.", "source": "a/cook.srt"},
        {"video": "a/cook.mp4", "index": 1, "start": 1.2 * 14 / 23, "end": 1.2, "text": "Whisk it!", "source": "a/cook.srt"},
        {"video": "a/cook.mp4", "index": 2, "start": 1.2, "end": 1.5, "text": "Now fry", "source": "a/cook.srt"},
        {"video": "b/knead.mkv", "index": 0, "start": 0.25, "end": 1.75, "text": "Knead the dough.", "source": "b/knead.vtt"},
        {"video": "clip.mp4", "index": 0, "start": 0.5, "end": 1.0, "text": "Serve.", "source": "clip.json"},
    ]
    assert load_segments(work).to_pylist() == [
        {"video": "a/cook.mp4", "index": 0, "start": 0.0, "end": 1.2, "verb": "crack", "noun": "egg", "caption": "crack the egg", "split": "train"},
        {"video": "a/cook.mp4", "index": 1, "start": 1.2, "end": 1.5, "verb": "fry", "noun": "egg", "caption": None, "split": "train"},
        {"video": "b/knead.mkv", "index": 0, "start": 0.25, "end": 1.75, "verb": "knead", "noun": "dough", "caption": None, "split": "val"},
        {"video": "clip.mp4", "index": 0, "start": 0.5, "end": 1.0, "verb": "serve", "noun": None, "caption": "serve", "split": None},  # verb from the caption
    ]
    assert report.stats == {"videos": 3, "hours": 5.5 / 3600, "sentences": 5, "videos_with_transcript": 3,
                            "sentences_clipped": 1, "sentences_dropped": 1, "sentences_cut": 0, "segments": 4,
                            "segments_clipped": 1, "segment_labels_from_captions": 1}


def tables(work: Path) -> list:
    return [pq.read_table(work / name) for name in ("manifest.parquet", "sentences.parquet", "segments.parquet")]


def test_rerun_is_identical_and_skips_probed_videos(tmp_path, monkeypatch):
    corpus = make_good_corpus(tmp_path / "corpus")
    work = tmp_path / "work"
    ingest(corpus, work, jobs=1)
    first = tables(work)

    report = ingest(corpus, work, jobs=2)
    assert (report.done, report.skipped, report.failed) == (0, 3, 0)
    for before, after in zip(first, tables(work)):
        assert after.equals(before)

    # A changed file is probed again; the others are not.
    os.utime(corpus / "clip.mp4", (1_000_000_000, 1_000_000_000))
    report = ingest(corpus, work, jobs=1)
    assert (report.done, report.skipped) == (1, 2)
    assert load_manifest(work).to_pylist()[2]["mtime"] == 1_000_000_000

    # Rows probed from headers only are not trusted by a verifying run.
    ingest(corpus, work, verify=False, jobs=1)
    assert ingest(corpus, work, verify=False, jobs=1).skipped == 3
    assert ingest(corpus, work, verify=True, jobs=1).skipped == 0


def make_bad_corpus(root: Path) -> dict[str, str]:
    """Good videos next to every kind of bad input; returns {error item: expected error text (prefix)}."""
    good = encode_video(root / "good.mp4", frames=20).read_bytes()
    write(root / "sub" / "good2.mp4", good)
    write(root / "sub" / "good2.srt", "1\n00:00:00,000 --> 00:00:01,000\nStill fine.\n")
    write(root / "bad_srt.mp4", good)
    write(root / "bad_srt.srt", "1\n00:00:00,000 --> 00:00:0x,000\nbroken timing\n")
    write(root / "latin1.mp4", good)
    write(root / "latin1.srt", "1\n00:00:00,000 --> 00:00:01,000\ncafé\n".encode("latin-1"))

    # Cut in half: an MP4 written normally keeps its index (moov) at the end, so the container is unreadable;
    # one written with +faststart keeps it in front, so the header promises frames that are not there.
    write(root / "bad" / "truncated.mp4", good[: len(good) // 2])
    faststart = encode_video(root / "tmp" / "faststart.mp4", frames=20, movflags="faststart").read_bytes()
    shutil.rmtree(root / "tmp")
    write(root / "bad" / "truncated_faststart.mp4", faststart[: len(faststart) // 2])
    write(root / "bad" / "random.mp4", np.random.default_rng(0).bytes(4000))
    encode_audio_only(root / "bad" / "audio_only.mp4")
    encode_video_without_frames(root / "bad" / "no_frames.mkv")
    write(root / "bad" / "empty.webm", b"")

    write(root / "annotations.jsonl", jsonl(
        {"video": "good.mp4", "start": 0.0, "end": 1.0, "verb": "stir", "split": "test"},
        {"video": "missing.mp4", "start": 0.0, "end": 1.0},
        {"video": "bad/random.mp4", "start": 0.0, "end": 1.0},
        '{"video": "good.mp4", "start": 0.0,',
        {"video": "good.mp4", "start": 2.0, "end": 1.0},
        {"video": "good.mp4", "end": 1.0},
        {"video": "sub/good2.mp4", "start": 5.0, "end": 6.0},
        {"video": "good.mp4", "start": 1.0, "end": 1.5, "verb": "pour", "split": "train"},
        {"video": "good.mp4", "start": 0.0, "end": 1.0, "split": "dev"},
    ))
    return {
        "bad_srt.srt": "malformed SRT: line 2: bad cue timing '00:00:00,000 --> 00:00:0x,000'",
        "latin1.srt": "not valid UTF-8 (byte 0xe9 at offset 35)",
        "bad/truncated.mp4": "corrupt or unreadable video container",
        "bad/truncated_faststart.mp4": "truncated video: header declares 20 frames, only",
        "bad/random.mp4": "corrupt or unreadable video container",
        "bad/audio_only.mp4": "no video stream (streams found: audio aac)",
        "bad/no_frames.mkv": "zero-length video: the video stream has no decodable frame",
        "bad/empty.webm": "empty file (0 bytes)",
        "annotations.jsonl:2": "video 'missing.mp4' is not in the corpus",
        "annotations.jsonl:3": "video 'bad/random.mp4' failed to ingest",
        "annotations.jsonl:4": "line 4: not valid JSON",
        "annotations.jsonl:5": "line 5: end (1.0) <= start (2.0)",
        "annotations.jsonl:6": "line 6: missing field(s) start",
        "annotations.jsonl:7": "segment [5, 6] s starts after the end of 'sub/good2.mp4' (2 s)",
        "annotations.jsonl:9": "line 9: split must be train, val or test, got 'dev'",
        "good.mp4": "annotations put this video in several splits: test (annotations.jsonl:1), train (annotations.jsonl:8)",
    }


def test_bad_inputs_are_recorded_and_the_rest_is_kept(tmp_path):
    corpus = tmp_path / "corpus"
    expected = make_bad_corpus(corpus)
    work = tmp_path / "work"
    report = ingest(corpus, work, jobs=2)

    errors = {e.item: e for e in read_errors(work / "errors.jsonl")}
    assert sorted(errors) == sorted(expected)
    for item, text in expected.items():
        assert errors[item].error.startswith(text), (item, errors[item].error)
        assert errors[item].stage == "ingest" and errors[item].kind == "InputError"
    assert report.failed == len(expected)

    manifest = {r["video"]: r for r in load_manifest(work).to_pylist()}
    assert sorted(manifest) == ["bad_srt.mp4", "good.mp4", "latin1.mp4", "sub/good2.mp4"]
    # A bad transcript costs the video its sentences, not its place in the manifest.
    assert manifest["bad_srt.mp4"]["transcript"] is None and manifest["latin1.mp4"]["transcript"] is None
    assert manifest["sub/good2.mp4"]["transcript"] == "sub/good2.srt"
    # Contradicting splits leave the video in none (it must not leak between train and test).
    assert manifest["good.mp4"]["split"] is None
    assert [(r["video"], r["text"]) for r in load_sentences(work).to_pylist()] == [("sub/good2.mp4", "Still fine.")]
    assert [(r["video"], r["verb"], r["split"]) for r in load_segments(work).to_pylist()] == [
        ("good.mp4", "stir", "test"), ("good.mp4", "pour", "train")]

    # Errors are re-discovered, not accumulated, on a re-run; the good videos are not probed again.
    report = ingest(corpus, work, jobs=1)
    assert (report.skipped, report.done, report.failed) == (4, 0, len(expected))
    assert sorted(e.item for e in read_errors(work / "errors.jsonl")) == sorted(expected)


def test_fixed_inputs_clear_their_errors(tmp_path):
    corpus = tmp_path / "corpus"
    encode_video(corpus / "v.mp4", frames=10)
    write(corpus / "v.srt", "1\n00:00:00,000 --> 00:00:0x,000\nbroken\n")
    work = tmp_path / "work"
    assert ingest(corpus, work, jobs=1).failed == 1
    write(corpus / "v.srt", "1\n00:00:00,000 --> 00:00:00,500\nfixed\n")
    assert ingest(corpus, work, jobs=1).failed == 0
    assert read_errors(work / "errors.jsonl") == []
    assert load_sentences(work).column("text").to_pylist() == ["fixed"]


def test_youcook2_annotations(tmp_path):
    corpus = tmp_path / "corpus"
    encode_video(corpus / "training" / "cake" / "abcDEF123_x.mp4", frames=20)
    encode_video(corpus / "validation" / "eggs" / "zzz.mkv", frames=10)
    write(corpus / "youcookii_annotations_trainval.json", json.dumps({"database": {
        "abcDEF123_x": {"subset": "training", "duration": 2.0, "recipe_type": "101",
                        "annotations": [{"segment": [1, 3], "id": 1, "sentence": "mix flour and sugar"},
                                        {"segment": [0, 1], "id": 0, "sentence": "crack eggs"}]},
        "zzz": {"subset": "validation", "annotations": []},
        "notDownloaded": {"subset": "training", "annotations": [{"segment": [0, 5], "sentence": "x"}]},
    }}))
    work = tmp_path / "work"
    report = ingest(corpus, work, jobs=1)

    assert [(r["video"], r["split"]) for r in load_manifest(work).to_pylist()] == [
        ("training/cake/abcDEF123_x.mp4", "train"), ("validation/eggs/zzz.mkv", "val")]
    assert load_segments(work).to_pylist() == [
        {"video": "training/cake/abcDEF123_x.mp4", "index": 0, "start": 0.0, "end": 1.0, "verb": "crack", "noun": "egg",
         "caption": "crack eggs", "split": "train"},
        {"video": "training/cake/abcDEF123_x.mp4", "index": 1, "start": 1.0, "end": 2.0, "verb": "mix", "noun": "flour",
         "caption": "mix flour and sugar", "split": "train"},
    ]
    (error,) = read_errors(work / "errors.jsonl")
    assert (error.item, error.error) == ("youcookii_annotations_trainval.json",
                                         "1 of 3 annotated videos are not in the corpus: notDownloaded")
    assert report.failed == 1 and report.stats["segments_clipped"] == 1
    assert report.stats["segment_labels_from_captions"] == 2


def test_interrupted_run_resumes(tmp_path, monkeypatch):
    corpus = make_good_corpus(tmp_path / "corpus")
    work = tmp_path / "work"
    calls = []

    def probe_then_interrupt(path, verify=True):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(path)
        return probe(path, verify=verify)

    monkeypatch.setattr(ingest_module, "_CHECKPOINT_SECONDS", 0.0)
    monkeypatch.setattr(ingest_module, "probe", probe_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        ingest(corpus, work, jobs=1)
    # The checkpoint holds the two probed videos but is marked unfinished, so later stages refuse it.
    assert pq.read_table(work / "manifest.parquet").column("video").to_pylist() == ["a/cook.mp4", "b/knead.mkv"]
    with pytest.raises(InputError, match="interrupted ingest"):
        load_manifest(work)

    monkeypatch.setattr(ingest_module, "probe", probe)
    report = ingest(corpus, work, jobs=1)
    assert (report.done, report.skipped) == (1, 2)
    assert load_manifest(work).num_rows == 3


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork",
                    reason="the crashing probe is monkeypatched in, which only forked workers inherit")
def test_worker_crash_is_pinned_on_its_file(tmp_path, monkeypatch):
    corpus = make_good_corpus(tmp_path / "corpus")

    def probe_or_crash(path, verify=True):
        if path.endswith("knead.mkv"):
            os._exit(3)  # what a segfault in FFmpeg looks like from the parent
        return probe(path, verify=verify)

    monkeypatch.setattr(ingest_module, "probe", probe_or_crash)
    report = ingest(corpus, tmp_path / "work", jobs=2)
    errors = {e.item: e.error for e in read_errors(tmp_path / "work" / "errors.jsonl")}
    assert errors == {
        "b/knead.mkv": "the decoder crashed on this file (its worker process died)",
        "annotations.jsonl:3": "video 'b/knead.mkv' failed to ingest (see its own error)",
    }
    assert (report.done, report.failed) == (2, 2)
    assert load_manifest(tmp_path / "work").column("video").to_pylist() == ["a/cook.mp4", "clip.mp4"]


def test_missing_corpus_and_bad_jobs(tmp_path):
    with pytest.raises(InputError, match="corpus folder does not exist"):
        ingest(tmp_path / "nope", tmp_path / "work")
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        ingest(tmp_path, tmp_path / "work", jobs=0)


def test_cli_exit_codes(tmp_path):
    from videobert.cli import app

    runner = CliRunner()
    good = make_good_corpus(tmp_path / "good")
    result = runner.invoke(app, ["ingest", str(good), str(tmp_path / "w1"), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert load_manifest(tmp_path / "w1").num_rows == 3

    bad = tmp_path / "bad"
    encode_video(bad / "ok.mp4", frames=10)
    write(bad / "broken.mp4", b"not a video at all")
    result = runner.invoke(app, ["ingest", str(bad), str(tmp_path / "w2"), "--no-verify"])
    assert result.exit_code == 1
    assert [e.item for e in read_errors(tmp_path / "w2" / "errors.jsonl")] == ["broken.mp4"]

    result = runner.invoke(app, ["ingest", str(tmp_path / "absent"), str(tmp_path / "w3")])
    assert result.exit_code == 2


def test_held_out_videos_are_a_stable_share_of_each_kind():
    from videobert.data.ingest import held_out

    videos = [f"v{i:02d}.mp4" for i in range(10)]
    narrated = set(videos[:5])
    chosen = held_out(videos, 0.2, narrated=narrated)
    assert set(chosen.values()) == {"val"}
    assert len(chosen.keys() & narrated) == 1 and len(chosen.keys() - narrated) == 1  # round(0.2 * 5) of each
    assert held_out(list(reversed(videos)), 0.2, narrated=narrated) == chosen  # by hash, not by order
    assert held_out(videos, 0.0) == {} and held_out(videos[:1], 0.5) == {}
