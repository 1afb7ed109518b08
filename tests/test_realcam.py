"""RealCam world: camera moves over real footage, with MiniCook's corpus contract (labels, narration, identity,
determinism). Most tests film small videos written here; one films /work/shared/realvideo when it is present."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from videobert.data.realcam import (
    CACHE_FPS,
    REALCAM,
    SPARE_WORDS,
    VERBS,
    camera_path,
    film,
    scenes,
    source_frames,
)
from videobert.data.synth import MINICOOK, synth
from videobert.data.video import decode_frames
from videobert.data.workshop import WORLDS
from videobert.utils.errors import ConfigError

# The shared folder sits beside the checkout (or beside the folder of worktrees).
REAL = next((p / "shared" / "realvideo" for p in Path(__file__).resolve().parents[1:4]
             if (p / "shared" / "realvideo").is_dir()), Path(__file__).resolve().parents[2] / "shared" / "realvideo")
SIZE = dict(width=32, height=32)
VIDEOS = 3


def _texture(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random colour texture (H, W, 3) uint8: coarse noise blown up bilinearly."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (height // 8 + 2, width // 8 + 2, 3))
    y, x = np.linspace(0, height // 8, height), np.linspace(0, width // 8, width)
    rows = np.stack([np.interp(y, np.arange(len(coarse)), coarse[:, j, c]) for j in range(coarse.shape[1])
                     for c in range(3)], 1).reshape(height, coarse.shape[1], 3)
    return np.stack([[np.interp(x, np.arange(coarse.shape[1]), rows[i, :, c]) for c in range(3)]
                     for i in range(height)]).transpose(0, 2, 1).astype(np.uint8)


def _write_video(path: Path, seed: int, frames: int = 12, height: int = 48, width: int = 64) -> None:
    """A small H.264 video at 10 fps of a texture drifting right, 1 px a frame."""
    texture = _texture(height, width + frames, seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(texture[:, k:k + width]), format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, 10)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("footage")
    _write_video(folder / "street_b.mp4", 1)
    _write_video(folder / "a_clip.mp4", 2)
    (folder / "nested").mkdir()
    _write_video(folder / "nested" / "bunny_test.mp4", 3)
    (folder / "notes.txt").write_text("not a video")
    return folder


@pytest.fixture(scope="module")
def corpus(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("realcam") / "corpus"
    report = synth(out, videos=VIDEOS, seed=4, world="realcam", source=source, **SIZE)
    assert (report.done, report.skipped, report.failed) == (VIDEOS, 0, 0)
    return out


def _files(corpus: Path) -> dict[str, bytes]:
    return {str(p.relative_to(corpus)): p.read_bytes() for p in sorted(corpus.rglob("*")) if p.is_file()}


def test_registry_and_words():
    assert WORLDS["realcam"] is REALCAM and REALCAM.from_source is not None
    assert VERBS == ("pan", "tilt", "zoom", "pull", "hold", "shake", "spin", "sweep")
    # Camera moves, not hand actions; "shake" and "spin" are Workshop's words too, for another motion.
    assert not set(VERBS) & set(MINICOOK.verbs) and set(VERBS) & set(WORLDS["workshop"].verbs) == {"shake", "spin"}
    assert all(w.isalpha() and w.islower() for w in VERBS + SPARE_WORDS)


def test_scene_names():
    names = ["a/bigbuckbunny_0_30.webm", "a/bigbuckbunny_5s.mp4", "a/chaplin.mp4", "b/grid_x.mpg", "b/grid_y.mpg",
             "c/nasa_13013.mp4", "c/zzz.mp4", "d/aaa.mov", "d/man_on_green_screen.mp4"]
    found = {s.noun: s.files for s in scenes(names)}
    assert list(found) == ["bunny", "tramp", "face", "rocket", "forest", "river", "man"]
    assert found["bunny"] == ("a/bigbuckbunny_0_30.webm", "a/bigbuckbunny_5s.mp4")
    assert found["face"] == ("b/grid_x.mpg", "b/grid_y.mpg") and found["forest"] == ("c/zzz.mp4",)


def test_layout_identity_and_annotations(corpus, source):
    names = sorted(p.name for p in (corpus / "videos").iterdir())
    assert names == sorted(f"realcam_{i:04d}.{ext}" for i in range(VIDEOS) for ext in ("mp4", "srt"))
    config = json.loads((corpus / "synth.json").read_text())
    sizes = {"a_clip.mp4": (source / "a_clip.mp4").stat().st_size,
             "nested/bunny_test.mp4": (source / "nested" / "bunny_test.mp4").stat().st_size,
             "street_b.mp4": (source / "street_b.mp4").stat().st_size}
    assert config["parameters"]["world"] == "realcam" and config["parameters"]["sources"] == sizes
    assert config["verbs"] == list(VERBS) and config["nouns"] == ["forest", "bunny", "river"]
    assert config["scenes"] == {"forest": ["a_clip.mp4"], "bunny": ["nested/bunny_test.mp4"],
                                "river": ["street_b.mp4"]}
    rows = [json.loads(line) for line in (corpus / "annotations.jsonl").read_text().splitlines()]
    assert {r["video"] for r in rows} == {f"videos/realcam_{i:04d}.mp4" for i in range(VIDEOS)}
    for r in rows:
        assert r["verb"] in VERBS and r["noun"] in config["nouns"] and r["caption"] == f"{r['verb']} the {r['noun']}"
        assert r["split"] in ("train", "val", "test") and 0 <= r["start"] < r["end"]
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    # Each video decodes to 32x32 for as long as its last step and a little more.
    for i in range(VIDEOS):
        frames = list(decode_frames(corpus / "videos" / f"realcam_{i:04d}.mp4", fps=20))
        assert frames[0].array.shape == (32, 32, 3)
        assert len(frames) / 20 > max(r["end"] for r in rows if r["video"].endswith(f"{i:04d}.mp4"))


def test_same_seed_same_bytes_and_source_is_identity(corpus, source, tmp_path):
    again = tmp_path / "again"
    synth(again, videos=VIDEOS, seed=4, world="realcam", source=source, **SIZE)
    assert _files(again) == _files(corpus)
    # Other footage (here: one file fewer) is another corpus: resuming into this one is refused.
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for name in ("a_clip.mp4", "street_b.mp4"):
        (fewer / name).symlink_to(source / name)
    with pytest.raises(ConfigError, match=r"other parameters \(sources: "):
        synth(corpus, videos=VIDEOS, seed=4, world="realcam", source=fewer, **SIZE)


def test_source_errors(source, tmp_path):
    with pytest.raises(ConfigError, match="world realcam films real footage: pass source"):
        synth(tmp_path / "a", world="realcam", **SIZE)
    with pytest.raises(ConfigError, match="source is only for .*minicook draws its own"):
        synth(tmp_path / "b", source=source, **SIZE)
    with pytest.raises(ConfigError, match=f"source folder {tmp_path / 'missing'} does not exist"):
        synth(tmp_path / "c", world="realcam", source=tmp_path / "missing", **SIZE)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no videos here")
    with pytest.raises(ConfigError, match=f"source folder {empty} holds no video files"):
        synth(tmp_path / "d", world="realcam", source=empty, **SIZE)
    one = tmp_path / "one"
    one.mkdir()
    (one / "good.mp4").symlink_to(source / "a_clip.mp4")
    (one / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    with pytest.raises(ConfigError, match=rf"source folder {one} needs at least 2 readable videos, found 1; "
                                          r"unreadable: broken.mp4"):
        synth(tmp_path / "e", world="realcam", source=one, **SIZE)
    assert not (tmp_path / "e").exists()


# ----------------------------------------------------------------------------------------- camera moves

def _path(verb: str, seed: int = 0, n: int = 40):
    return camera_path(verb, n, 20, (96, 128), (32, 32), np.random.default_rng(seed))


@pytest.mark.parametrize("verb", VERBS)
def test_window_stays_inside_the_frame(verb):
    for seed in range(20):
        p = _path(verb, seed)
        for sx, sy in ((-1, -1), (-1, 1), (1, -1), (1, 1)):  # the four corners of the turned window
            u, v = sx * 16 * p.scale, sy * 16 * p.scale
            x = p.cx + u * np.cos(p.angle) - v * np.sin(p.angle)
            y = p.cy + u * np.sin(p.angle) + v * np.cos(p.angle)
            assert x.min() >= -1e-6 and x.max() <= 128 + 1e-6 and y.min() >= -1e-6 and y.max() <= 96 + 1e-6


def _monotone(x: np.ndarray) -> bool:
    d = np.diff(x)
    return bool((d > 1e-9).all() or (d < -1e-9).all())


def _still(x: np.ndarray) -> bool:
    return bool(np.ptp(x) < 1e-9)


def test_motion_signatures_of_the_camera_paths():
    for seed in range(5):
        pan, tilt, sweep = _path("pan", seed), _path("tilt", seed), _path("sweep", seed)
        assert _monotone(pan.cx) and _still(pan.cy) and _still(pan.scale) and _still(pan.angle)
        assert _still(tilt.cx) and _monotone(tilt.cy) and _still(tilt.scale)
        assert _monotone(sweep.cx) and _monotone(sweep.cy) and _still(sweep.scale)
        zoom, pull = _path("zoom", seed), _path("pull", seed)
        assert (np.diff(zoom.scale) < 0).all() and 0.45 <= zoom.scale[-1] / zoom.scale[0] <= 0.55
        assert (np.diff(pull.scale) > 0).all() and 0.45 <= pull.scale[0] / pull.scale[-1] <= 0.55
        hold = _path("hold", seed)
        assert all(_still(x) for x in (hold.cx, hold.cy, hold.scale, hold.angle))
        shake = _path("shake", seed)
        assert not _monotone(shake.cx) and not _monotone(shake.cy) and _still(shake.scale)
        assert 0.3 < np.abs(np.diff(shake.cx)).mean() < 3  # a jolt of a few percent of the window every frame
        spin = _path("spin", seed)
        turn = np.diff(spin.angle)
        assert _still(spin.cx) and _still(spin.cy) and _still(turn) and 0.5 / 20 <= abs(turn[0]) <= 0.8 / 20


def test_pan_films_shifted_copies_and_hold_a_still(tmp_path):
    still = _texture(96, 128, 5)[None]  # a source whose scene does not move
    at = np.zeros(40, int)
    pan = _path("pan", 1)
    frames = film(still, at, pan, 32, 32).astype(np.float32)
    shift = (pan.cx[1] - pan.cx[0]) / pan.scale[0]  # output pixels a frame
    assert 0.2 < abs(shift) < 3
    cols = np.arange(32, dtype=np.float32)
    inner = slice(4, 28)
    for k in range(0, 39, 7):
        # Frame k + 1 is frame k moved by `shift` pixels: resampling frame k there reproduces it.
        moved = np.stack([[np.interp(cols + shift, cols, frames[k, i, :, c]) for c in range(3)]
                          for i in range(32)]).transpose(0, 2, 1)
        err_moved = np.abs(moved[:, inner] - frames[k + 1][:, inner]).mean()
        err_same = np.abs(frames[k][:, inner] - frames[k + 1][:, inner]).mean()
        assert err_moved < 1.5 and err_same > 4 * err_moved
    held = film(still, at, _path("hold", 1), 32, 32)
    assert (held == held[0]).all() and held.std() > 10


def test_scene_plays_from_a_random_moment():
    rng = np.random.default_rng(0)
    k = source_frames(200, 40, 20, rng)  # 2 s of output from 20 s of source at 10 fps
    assert (np.diff(k) >= 0).all() and k[-1] - k[0] in (19, 20) and CACHE_FPS == 10
    starts = {int(source_frames(200, 40, 20, rng)[0]) for _ in range(10)}
    assert len(starts) > 5
    short = source_frames(5, 40, 20, rng)  # a source shorter than the step plays back and forth
    assert short.min() >= 0 and short.max() <= 4 and (np.abs(np.diff(short)) <= 1).all()


# ------------------------------------------------------------------------------------------ real footage

@pytest.mark.skipif(not (REAL / "unlabeled").is_dir(), reason=f"real footage not present at {REAL}")
def test_real_footage(tmp_path):
    folder = tmp_path / "footage"
    folder.mkdir()
    for name in ("unlabeled/carphone_qcif.mp4", "subtitles_asr/grid_bbaf2n.mpg", "subtitles_asr/grid_brbk7n.mpg"):
        (folder / Path(name).name).symlink_to(REAL / name)
    out = tmp_path / "corpus"
    synth(out, videos=2, seed=0, world="realcam", source=folder, **SIZE)
    config = json.loads((out / "synth.json").read_text())
    assert config["scenes"] == {"car": ["carphone_qcif.mp4"], "face": ["grid_bbaf2n.mpg", "grid_brbk7n.mpg"]}
    frames = np.stack([f.array for f in decode_frames(out / "videos" / "realcam_0000.mp4", fps=20)])
    rows = [json.loads(line) for line in (out / "annotations.jsonl").read_text().splitlines()]
    first = rows[0]
    step = frames[int(first["start"] * 20):int(first["end"] * 20)]
    assert step.std() > 20  # real pictures, not the dark frames between steps
    assert frames[0].max() < 40  # before the first step the camera is off
