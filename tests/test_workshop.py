"""Workshop world: MiniCook's contract (labels, narration, identity, determinism) with a randomised look."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import webvtt

from videobert.data.synth import MINICOOK, TEMPLATE, plan_video, synth
from videobert.data.video import decode_frames
from videobert.data.workshop import NOUNS, VERBS, WORKSHOP, WORLDS, _background, _Look
from videobert.utils.errors import ConfigError

SIZE = dict(width=64, height=64)
VIDEOS = 3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("workshop") / "corpus"
    report = synth(out, videos=VIDEOS, seed=3, world="workshop", **SIZE)
    assert (report.done, report.skipped, report.failed) == (VIDEOS, 0, 0)
    return out


def _files(corpus: Path) -> dict[str, bytes]:
    return {str(p.relative_to(corpus)): p.read_bytes() for p in sorted(corpus.rglob("*")) if p.is_file()}


def test_registry_and_words():
    assert list(WORLDS) == ["minicook", "workshop", "realcam"] and WORLDS["workshop"] is WORKSHOP
    assert len(VERBS) == 8 and len(NOUNS) == 10
    assert not set(VERBS) & set(MINICOOK.verbs) and not set(NOUNS) & set(MINICOOK.nouns)
    assert all(" " not in word for word in VERBS + NOUNS)


def test_layout_identity_and_word_lists(corpus):
    names = sorted(p.name for p in (corpus / "videos").iterdir())
    assert names == sorted(f"workshop_{i:04d}.{ext}" for i in range(VIDEOS) for ext in ("mp4", "srt"))
    config = json.loads((corpus / "synth.json").read_text())
    assert config["parameters"]["world"] == "workshop"
    assert config["verbs"] == list(VERBS) and config["nouns"] == list(NOUNS)
    assert set(config["noun_colours"]) == set(NOUNS)


def test_same_seed_same_bytes(corpus, tmp_path):
    again = tmp_path / "again"
    synth(again, videos=VIDEOS, seed=3, world="workshop", **SIZE)
    assert _files(again) == _files(corpus)


def test_not_resumed_as_another_world(corpus, tmp_path):
    with pytest.raises(ConfigError, match=r"other parameters \(.*world: 'workshop' -> None"):
        synth(corpus, videos=VIDEOS, seed=3, **SIZE)
    minicook = tmp_path / "minicook"
    synth(minicook, videos=1, seed=3, **SIZE)
    assert "world" not in json.loads((minicook / "synth.json").read_text())["parameters"]
    with pytest.raises(ConfigError, match=r"other parameters \(.*world: None -> 'workshop'"):
        synth(minicook, videos=1, seed=3, world="workshop", **SIZE)
    # Overwriting replaces the other world's videos instead of leaving them next to the new ones.
    synth(minicook, videos=1, seed=3, world="workshop", overwrite=True, **SIZE)
    assert sorted(p.name for p in (minicook / "videos").iterdir()) == ["workshop_0000.mp4", "workshop_0000.srt"]


def test_unknown_world_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown world 'kitchen'; choose one of minicook, workshop"):
        synth(tmp_path / "x", videos=1, world="kitchen")
    assert not (tmp_path / "x").exists()


def test_annotations_and_narration(corpus):
    rows = [json.loads(line) for line in (corpus / "annotations.jsonl").read_text().splitlines()]
    assert len({row["video"] for row in rows}) == VIDEOS
    for row in rows:
        assert row["verb"] in VERBS and row["noun"] in NOUNS
        assert row["caption"] == f"{row['verb']} the {row['noun']}"
    for srt in (corpus / "videos").glob("*.srt"):
        starts = [c.start_in_seconds for c in webvtt.from_srt(str(srt))]
        assert starts == sorted(starts) and starts
    # Over many planned videos (no pixels needed), about 40 % of steps are announced with the template sentence,
    # less the few that ASR noise alters.
    plans = [plan_video(i, 0, world=WORKSHOP) for i in range(40)]
    templated = sum(TEMPLATE.format(verb=s.verb, noun=s.noun) in {c.text for c in p.cues}
                    for p in plans for s in p.steps)
    assert 0.25 < templated / sum(len(p.steps) for p in plans) < 0.45
    spoken = " ".join(c.text for p in plans for c in p.cues).split()
    assert {"pushing", "squash", "bottle"} <= set(spoken) and not {"stir", "tomato"} & set(spoken)


def test_backgrounds_differ_between_videos(corpus):
    first = [next(iter(decode_frames(p))).array.reshape(-1, 3).mean(0)
             for p in sorted((corpus / "videos").glob("*.mp4"))]
    for i in range(VIDEOS):
        for j in range(i):
            assert np.abs(first[i] - first[j]).sum() > 30, (i, j, first[i], first[j])


def test_light_drifts_and_camera_shakes_zooms_and_pans():
    rng = np.random.default_rng(0)
    for _ in range(3):
        scene = _background(64, 64, rng)
        look = _Look(10.0, 64, 64, rng)
        # Within a video, brightness and colour balance change by several percent.
        gain = look.gain(np.linspace(0, 10, 50))
        assert (gain.max(0) - gain.min(0)).max() > 0.05
        # A still, noise-free scene: at one moment, frames differ only by the shake...
        frames = look.camera(np.repeat(scene[None], 8, axis=0), np.zeros(8), rng)
        assert frames.shape == (8, 64, 64, 3)
        assert 255 * np.abs(np.diff(frames, axis=0)).mean() > 0.2  # exactly 0 without shake
        # ...and without shake, the start and end of the video differ by the slow zoom and pan.
        look.shake = 0.0
        ends = look.camera(np.repeat(scene[None], 2, axis=0), np.array([0.0, 10.0]), rng)
        assert 255 * np.abs(ends[1] - ends[0]).mean() > 0.5
