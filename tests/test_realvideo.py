"""Ingest on real footage (/work/shared/realvideo: 25 videos in six containers and codecs, real subtitles,
rotation metadata) checked against the collector's manifest.jsonl; then clips decoded from a real file.
The corpus is read-only here: everything is written under tmp_path."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from videobert.data.actions import verb_and_noun
from videobert.data.ingest import ingest, load_manifest, load_segments, load_sentences
from videobert.data.video import ClipDecoder, clip_windows

REAL = Path(__file__).parents[1].parent / "shared" / "realvideo"

pytestmark = pytest.mark.skipif(not (REAL / "manifest.jsonl").is_file(), reason=f"real-footage corpus not present at {REAL}")


@pytest.fixture(scope="module")
def truth() -> dict[str, dict]:
    with open(REAL / "manifest.jsonl", encoding="utf-8") as fh:
        return {row["file"]: row for row in map(json.loads, fh)}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    report = ingest(REAL, work, verify=True, jobs=2)
    return report, work, {r["video"]: r for r in load_manifest(work).to_pylist()}


def test_every_video_ingested_with_exact_frame_counts(ingested, truth):
    report, work, manifest = ingested
    assert report.failed == 0 and not (work / "errors.jsonl").exists()
    assert sorted(manifest) == sorted(truth) and len(manifest) == 25
    for video, row in manifest.items():
        t = truth[video]
        assert row["num_frames"] == t["decoded_frames"], video
        assert row["fps"] == pytest.approx(t["fps"], abs=0.01), video
        assert row["codec"] == t["video_codec"] and row["container"] == t["container"], video
        # Container durations include audio or edit lists; ours is the video stream's, within two frames.
        assert abs(row["duration"] - t["duration_s"]) <= 2 / t["fps"], video


def test_rotation_gives_upright_size(ingested):
    _, _, manifest = ingested
    for angle in (0, 90, 180, 270):
        row = manifest[f"decoder_edge_cases/decord_rotation_{angle}.mov"]
        assert (row["width"], row["height"]) == ((320, 568) if angle in (90, 270) else (568, 320)), angle
        # The file names give the display-matrix angle; the manifest's rotation is the counter-clockwise turn
        # that makes frames upright, so 90 and 270 may trade places depending on convention.
        assert row["rotation"] in ((90, 270) if angle in (90, 270) else (angle,))


def test_nasa_captions_become_four_sentences_last_clipped(ingested, truth):
    _, work, manifest = ingested
    video = "subtitles_asr/nasa_13013.mp4"
    assert manifest[video]["transcript"] == "subtitles_asr/nasa_13013.srt"
    assert (manifest[video]["num_audio_streams"], manifest[video]["num_subtitle_streams"]) == (2, 2)
    duration = manifest[video]["duration"]
    sentences = [r for r in load_sentences(work).to_pylist() if r["video"] == video]
    cues = truth[video]["segments"]
    assert [s["text"] for s in sentences] == [c["text"] for c in cues]
    assert [s["start"] for s in sentences] == [c["start"] for c in cues]
    assert [s["end"] for s in sentences[:3]] == [c["end"] for c in cues[:3]]
    # The captions run to 16.57 s; the clip was cut at 13 s.
    assert cues[-1]["end"] > duration and sentences[-1]["end"] == duration


def test_grid_transcripts_give_their_sentence(ingested, truth):
    _, work, manifest = ingested
    sentences = load_sentences(work).to_pylist()
    grid = sorted(v for v in truth if v.startswith("subtitles_asr/grid_"))
    assert len(grid) == 11
    for video in grid:
        assert manifest[video]["transcript"] == video.replace(".mpg", ".srt")
        assert [(s["start"], s["end"], s["text"]) for s in sentences if s["video"] == video] == [(0.0, 2.98, truth[video]["captions"][0])]
    assert len(sentences) == 11 + 4


def test_annotations_load_as_segments(ingested):
    _, work, _ = ingested
    with open(REAL / "annotations.jsonl", encoding="utf-8") as fh:
        expected = [json.loads(line) for line in fh if line.strip()]
    segments = {r["video"]: r for r in load_segments(work).to_pylist()}
    assert len(segments) == len(expected) == 14
    for a in expected:
        s = segments[a["video"]]
        assert (s["index"], s["start"], s["end"], s["caption"]) == (0, a["start"], a["end"], a["caption"])
        derived = verb_and_noun(a["caption"])  # captions without labels get them from the caption
        assert (s["verb"], s["noun"], s["split"]) == (a.get("verb", derived[0]), a.get("noun", derived[1]), None)


def test_clip_decoder_on_real_files(ingested):
    _, _, manifest = ingested
    row = manifest["unlabeled/chaplin.mp4"]
    decoder = ClipDecoder(fps=20, clip_frames=30, size=(112, 112))
    clips = list(decoder.clips(row["path"], video_id=row["video"]))
    assert [(c.start, c.end) for c in clips] == clip_windows(row["duration"], 30, 20) == [
        (1.5 * k, 1.5 * (k + 1)) for k in range(6)]  # 9.64 s -> 193 frames at 20 fps -> 6 full clips
    assert all(c.frames.shape == (30, 112, 112, 3) and c.video == "unlabeled/chaplin.mp4" for c in clips)
    # Starting at clip 4 seeks instead of decoding from the start; the frames are the same.
    later = next(decoder.clips(row["path"], start_clip=4))
    assert later.index == 4 and (later.frames == clips[4].frames).all()

    # Native size, rotated: frames come out upright, as tall as the manifest says.
    rotated = manifest["decoder_edge_cases/decord_rotation_90.mov"]
    (clip,) = ClipDecoder(fps=30, clip_frames=3, size=None).clips(rotated["path"])
    assert clip.frames.shape == (3, rotated["height"], rotated["width"], 3) == (3, 568, 320, 3)
