"""Stage ``extract`` end to end on tiny encoded videos: exact clip windows, features, per-video failures,
re-runs, and an interruption (SIGKILL) that resumes to exactly what an uninterrupted run writes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from videobert.data.schema import MANIFEST
from videobert.features.backbones import PixelsBackbone
from videobert.features.extract import extract
from videobert.features.store import FeatureStore
from videobert.utils.errors import ConfigError, InputError, read_errors
from videobert.utils.io import write_parquet

FPS, CLIP_FRAMES = 20, 10  # 0.5 s clips keep the videos short
SIZE = 64


def write_video(path: Path, n_frames: int, seed: int) -> Path:
    """A coloured square moving over a grey counter, H.264 at 20 fps, SIZE x SIZE."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 256, 3)
    dx, dy = rng.integers(-2, 3, 2)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        for t in range(n_frames):
            frame = np.full((SIZE, SIZE, 3), 100, np.uint8)
            x, y = 24 + dx * (t % 10), 24 + dy * (t % 10)
            frame[y : y + 12, x : x + 12] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_manifest(work: Path, videos: dict[str, tuple[Path, float]]) -> None:
    """MANIFEST rows for ``{id: (path, duration)}``; the columns extract does not read stay null."""
    rows = [{"video": vid, "path": str(p), "duration": d, "fps": float(FPS), "width": SIZE, "height": SIZE,
             "num_frames": int(round(d * FPS))} for vid, (p, d) in videos.items()]
    write_parquet(work / "manifest.parquet", rows, schema=MANIFEST)


# id -> frames at 20 fps: 4, 6, 8, 10 and 12 clips of 10 frames (b and d with a partial clip left over, which
# is dropped), and one video shorter than a clip.
LENGTHS = {"a.mp4": 40, "sub/b.mp4": 65, "c.mp4": 80, "d.mp4": 109, "e.mp4": 120, "short.mp4": 7}
EXPECTED_CLIPS = {"a.mp4": 4, "sub/b.mp4": 6, "c.mp4": 8, "d.mp4": 10, "e.mp4": 12, "short.mp4": 0}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, tuple[Path, float]]:
    root = tmp_path_factory.mktemp("corpus")
    (root / "sub").mkdir()
    return {vid: (write_video(root / vid, n, seed=i), n / FPS) for i, (vid, n) in enumerate(LENGTHS.items())}


def make_work(tmp_path: Path, corpus, name: str = "work") -> Path:
    work = tmp_path / name
    work.mkdir()
    write_manifest(work, corpus)
    return work


def run(work: Path, **kwargs):
    kwargs = {"fps": FPS, "clip_frames": CLIP_FRAMES, "batch_size": 5, "workers": 0, **kwargs}
    return extract(work, **kwargs)


def test_extract_end_to_end(tmp_path, corpus):
    work = make_work(tmp_path, corpus)
    report = run(work, workers=2, shard_clips=8)
    assert (report.done, report.skipped, report.failed) == (len(LENGTHS), 0, 0)
    assert report.stats["videos shorter than one clip (0 clips)"] == 1
    assert report.stats["clips extracted"] == sum(EXPECTED_CLIPS.values()) == 40

    clips = pq.read_table(work / "clips.parquet").to_pylist()
    per_video: dict[str, list[dict]] = {}
    for row in clips:
        per_video.setdefault(row["video"], []).append(row)
    assert list(per_video) == [v for v in LENGTHS if EXPECTED_CLIPS[v]]  # manifest order, no zero-clip video
    for vid, rows in per_video.items():
        assert [r["clip"] for r in rows] == list(range(EXPECTED_CLIPS[vid]))
        assert [(r["start"], r["end"]) for r in rows] == [(k * 0.5, (k + 1) * 0.5) for k in range(len(rows))]

    store = FeatureStore(work)
    feats = store.load()
    assert feats.shape == (40, PixelsBackbone().dim) and np.isfinite(feats).all()
    assert store.meta == {"backbone": "pixels", "dim": PixelsBackbone().dim, "fps": FPS, "clip_frames": CLIP_FRAMES,
                          "size": [32, 32]}
    # Whole videos per shard: a shard closes at the first video boundary after 8 clips.
    shards = sorted(p.name for p in (work / "features").glob("shard-*.parquet"))
    assert len(shards) == 4  # a+b (10), c (8), d (10), e (12)
    assert {r["video"]: r["shard"] for r in clips}["sub/b.mp4"] == "shard-00000.npy"

    # Decoding in worker processes or in this one changes nothing.
    serial = make_work(tmp_path, corpus, "serial")
    run(serial, workers=0, shard_clips=8, batch_size=7)
    np.testing.assert_array_equal(FeatureStore(serial).load(), feats)
    assert pq.read_table(serial / "clips.parquet").equals(pq.read_table(work / "clips.parquet"))


def test_rerun_skips_finished_videos_and_checks_settings(tmp_path, corpus):
    work = make_work(tmp_path, corpus)
    run(work, shard_clips=100)
    before = (work / "features" / "shard-00000.npy").read_bytes()
    again = run(work, shard_clips=100)
    # The zero-clip video is in no shard, so it is looked at again (cheaply); the others are skipped.
    assert (again.done, again.skipped, again.failed) == (1, 5, 0)
    assert again.stats["clips extracted"] == 0 and again.stats["clips in store"] == 40
    assert (work / "features" / "shard-00000.npy").read_bytes() == before

    with pytest.raises(InputError, match=r"different settings \(clip_frames: 10 -> 5\).*overwrite=True"):
        run(work, clip_frames=5)
    redone = run(work, clip_frames=5, overwrite=True)
    assert redone.skipped == 0 and redone.stats["clips in store"] == sum(n // 5 for n in LENGTHS.values()) == 83
    assert FeatureStore(work).meta["clip_frames"] == 5


def test_bad_videos_are_recorded_and_the_rest_extracted(tmp_path, corpus):
    good = corpus["c.mp4"][0].read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good[: len(good) // 2])  # the index (moov) is at the end: unreadable
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    videos = {"a.mp4": corpus["a.mp4"], "truncated.mp4": (truncated, 4.0), "garbage.mp4": (garbage, 1.0),
              "gone.mp4": (tmp_path / "gone.mp4", 1.0), "e.mp4": corpus["e.mp4"]}
    work = make_work(tmp_path, videos)
    report = run(work, workers=2)
    assert (report.done, report.failed) == (2, 3) and not report.ok
    assert sorted(set(pq.read_table(work / "clips.parquet")["video"].to_pylist())) == ["a.mp4", "e.mp4"]
    errors = read_errors(work / "errors.jsonl")
    assert sorted(e.item for e in errors) == ["garbage.mp4", "gone.mp4", "truncated.mp4"]
    assert all(e.stage == "extract" and e.kind == "InputError" for e in errors)
    assert "does not exist" in next(e.error for e in errors if e.item == "gone.mp4")

    # A re-run tries the failed videos again and replaces their records instead of piling up duplicates.
    again = run(work, workers=0)
    assert (again.done, again.skipped, again.failed) == (0, 2, 3)
    assert len(read_errors(work / "errors.jsonl")) == 3


def test_config_errors_come_before_any_work(tmp_path, corpus):
    work = make_work(tmp_path, corpus)
    with pytest.raises(ConfigError, match="unknown backbone 'resnet'"):
        run(work, backbone="resnet")
    with pytest.raises(ConfigError, match="batch_size must be at least 1"):
        run(work, batch_size=0)
    with pytest.raises(ConfigError, match="fps must be positive"):
        run(work, fps=0)
    assert not (work / "features").exists() and not (work / "errors.jsonl").exists()
    with pytest.raises(InputError, match="run `videobert ingest"):
        run(tmp_path / "empty")


def test_extract_with_a_hugging_face_model(tmp_path, corpus):
    import torch
    import transformers

    torch.manual_seed(0)
    model_dir = tmp_path / "tiny-videomae"
    config = transformers.VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    transformers.VideoMAEModel(config).save_pretrained(model_dir)
    transformers.VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(model_dir)
    work = make_work(tmp_path, {k: corpus[k] for k in ("a.mp4", "c.mp4")})
    report = run(work, backbone=f"hf:{model_dir}", device="cpu")
    assert report.ok and report.stats["clips extracted"] == 12
    store = FeatureStore(work)
    assert store.meta["backbone"] == f"hf:{model_dir}" and store.meta["dim"] == 32 and store.meta["size"] == [32, 32]
    assert store.load().shape == (12, 32)


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs. Zombies do not count: whether an orphan's exit status
    is reaped promptly depends on the container's init, not on the code under test."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue  # exited while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


# The child extracts with 2 decoder processes and small shards, and SIGKILLs itself (no cleanup of any
# kind) right after shard 1's array is written and before its index commits it: shard 0 is committed,
# shard 1 is an orphan array, its decoder workers are left running.
KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import videobert.features.store as store
    from videobert.features.extract import extract

    commit = store.write_parquet
    def write_parquet(path, *args, **kwargs):
        if Path(path).name == "shard-00001.parquet":
            os.kill(os.getpid(), signal.SIGKILL)
        return commit(path, *args, **kwargs)
    store.write_parquet = write_parquet
    extract(Path(sys.argv[1]), fps={fps}, clip_frames={clip_frames}, batch_size=3, workers=2, shard_clips=8)
    """
).format(fps=FPS, clip_frames=CLIP_FRAMES)


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, corpus):
    reference = make_work(tmp_path, corpus, "reference")
    run(reference, shard_clips=8, batch_size=3)

    work = make_work(tmp_path, corpus, "killed")
    # Its own session, so that its process group is exactly the child and the workers it starts.
    child = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(work)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, stderr
    features = work / "features"
    assert sorted(p.name for p in features.glob("shard-*")) == ["shard-00000.npy", "shard-00000.parquet", "shard-00001.npy"]
    assert not (work / "clips.parquet").exists()
    # The orphaned decoder workers notice their parent is gone and exit by themselves.
    deadline = time.monotonic() + 30
    while group_alive(child.pid):
        if time.monotonic() > deadline:
            os.killpg(child.pid, signal.SIGKILL)
            pytest.fail("decoder workers outlived their killed parent")
        time.sleep(0.2)

    report = run(work, shard_clips=8, batch_size=4, workers=2)
    assert report.skipped == 2 and report.failed == 0  # a and b were in the committed shard 0
    assert pq.read_table(work / "clips.parquet").equals(pq.read_table(reference / "clips.parquet"))
    names = sorted(p.name for p in features.iterdir())
    assert names == sorted(p.name for p in (reference / "features").iterdir())
    for name in names:
        assert (features / name).read_bytes() == (reference / "features" / name).read_bytes(), name
    rows = pq.read_table(work / "clips.parquet").to_pylist()
    assert len({(r["video"], r["clip"]) for r in rows}) == len(rows) == 40
    assert json.loads((features / "meta.json").read_text())["backbone"] == "pixels"


def test_a_crashed_decoder_process_fails_its_video_only(tmp_path, corpus):
    """A decoder process that dies (FFmpeg crashing, the OOM killer) costs the video it was on; a fresh
    process takes over the videos after it."""
    from videobert.data.video import ClipDecoder
    from videobert.features.extract import _DecoderPool

    names = ["e.mp4", "a.mp4", "c.mp4"]
    tasks = [(i, str(corpus[name][0])) for i, name in enumerate(names)]
    pool = _DecoderPool(tasks, ClipDecoder(FPS, CLIP_FRAMES, size=(32, 32), threads=1), chunk=1, workers=1)
    messages = iter(pool)
    first = next(messages)
    assert first[:2] == ("clips", 0)
    # e.mp4 has 12 clips of one message each and the queue holds 2: its worker is still on it.
    os.kill(pool.procs[0].pid, signal.SIGKILL)
    rest = list(messages)
    crash = [m for m in rest if m[0] == "error"]
    assert len(crash) == 1 and crash[0][:3] == ("error", 0, "DecoderCrash")
    assert [m[:2] for m in rest if m[0] == "end"] == [("end", 1), ("end", 2)]
    assert sum(len(m[4]) for m in rest if m[0] == "clips" and m[1] > 0) == EXPECTED_CLIPS["a.mp4"] + EXPECTED_CLIPS["c.mp4"]
