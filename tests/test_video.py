"""Decoder contract: lossless frames come back bit-exact, resampling picks the frame on screen, clips have
exact boundaries, and bad files fail with the file's name and the problem."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from videobert.data.video import ClipDecoder, clip_windows, decode_frames, probe
from videobert.utils.errors import InputError
from media import write_lossless


@pytest.fixture(scope="module")
def lossless30(tmp_path_factory) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(93, 24, 32, 3), dtype=np.uint8)  # 3.1 s at 30 fps
    return write_lossless(tmp_path_factory.mktemp("v") / "ll30.mp4", frames, 30), frames


def test_lossless_frames_round_trip(lossless30):
    path, frames = lossless30
    out = list(decode_frames(path))
    assert len(out) == len(frames)
    for i, fr in enumerate(out):
        assert fr.index == i
        assert fr.time == pytest.approx(i / 30)
        np.testing.assert_array_equal(fr.array, frames[i])


def test_probe_exact(lossless30):
    path, frames = lossless30
    info = probe(path)
    assert (info.width, info.height, info.num_frames, info.fps) == (32, 24, 93, 30.0)
    assert info.duration == pytest.approx(93 / 30)
    assert info.rotation == 0 and info.verified
    quick = probe(path, verify=False)
    assert (quick.width, quick.height) == (32, 24)
    assert quick.duration == pytest.approx(93 / 30, abs=0.05)


def test_resample_30_to_20_picks_frame_on_screen(lossless30):
    path, frames = lossless30
    out = list(decode_frames(path, fps=20))
    # t_j = j/20 is shown by source frame floor(j * 30/20): 0, 1, 3, 4, 6, 7, ...
    expected = [int(Fraction(j * 30, 20)) for j in range(len(out))]
    assert expected[:6] == [0, 1, 3, 4, 6, 7]
    assert len(out) == 62  # t_j < 3.1 s
    for j, fr in enumerate(out):
        np.testing.assert_array_equal(fr.array, frames[expected[j]])
        assert fr.source_time == pytest.approx(expected[j] / 30)


def test_upsampling_repeats_frames(lossless30):
    path, frames = lossless30
    out = list(decode_frames(path, fps=60, end=0.5))
    assert len(out) == 30
    for j, fr in enumerate(out):
        np.testing.assert_array_equal(fr.array, frames[j // 2])


def test_window_equals_slice_of_full_decode(lossless30):
    path, _ = lossless30
    full = list(decode_frames(path, fps=20))
    win = list(decode_frames(path, fps=20, start=1.23, end=2.5))
    assert [f.index for f in win] == list(range(25, 50))  # ceil(1.23*20) .. t < 2.5
    for f in win:
        np.testing.assert_array_equal(f.array, full[f.index].array)


def test_scaling_happens_to_requested_size(lossless30):
    path, _ = lossless30
    fr = next(decode_frames(path, size=(12, 20)))
    assert fr.array.shape == (12, 20, 3) and fr.array.dtype == np.uint8


def test_clip_windows_exact():
    assert clip_windows(4.6, clip_frames=30, fps=20) == [(0.0, 1.5), (1.5, 3.0), (3.0, 4.5)]
    assert clip_windows(4.5, 30, 20) == [(0.0, 1.5), (1.5, 3.0), (3.0, 4.5)]
    assert clip_windows(1.0, 30, 20) == []
    assert clip_windows(1.0, 30, 20, drop_last=False) == [(0.0, 1.5)]


def test_clip_decoder_boundaries_and_frames(lossless30):
    path, frames = lossless30
    dec = ClipDecoder(fps=20, clip_frames=10, size=None)
    clips = list(dec.clips(path, video_id="v"))
    assert [(c.index, c.start, c.end) for c in clips] == [(k, k * 0.5, (k + 1) * 0.5) for k in range(6)]
    assert all(c.frames.shape == (10, 24, 32, 3) and c.video == "v" for c in clips)
    # clip 1 holds output frames 10..19 -> source frames floor(1.5 j)
    for i, j in enumerate(range(10, 20)):
        np.testing.assert_array_equal(clips[1].frames[i], frames[int(1.5 * j)])
    later = list(dec.clips(path, start_clip=3, video_id="v"))
    assert [c.index for c in later] == [3, 4, 5]
    for a, b in zip(later, clips[3:]):
        np.testing.assert_array_equal(a.frames, b.frames)


def test_clip_decoder_validates():
    with pytest.raises(ValueError, match="fps"):
        ClipDecoder(fps=0)
    with pytest.raises(ValueError, match="clip_frames"):
        ClipDecoder(clip_frames=0)


def test_missing_empty_and_corrupt_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        probe(tmp_path / "nope.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty.mp4: empty file"):
        probe(empty)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match=r"junk.mp4: corrupt"):
        list(decode_frames(junk))


def test_no_video_stream(tmp_path):
    path = tmp_path / "audio.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mp2", rate=16000)
        samples = np.zeros((1, 16000), dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(InputError, match=r"audio.mkv: no video stream \(streams found: audio mp2\)"):
        probe(path)


def test_truncated_file_is_reported(lossless30, tmp_path):
    path, _ = lossless30
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut.mp4: (corrupt|truncated)"):
        probe(cut)


def test_truncated_matroska_is_reported(tmp_path):
    """Matroska stores no frame count, only a duration: truncation is caught from the decoded span."""
    rng = np.random.default_rng(2)
    path = tmp_path / "full.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(60):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert probe(path).num_frames == 60
    data = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut.mkv: (corrupt|truncated)"):
        probe(cut)
