"""Backbones: the pixels descriptor's invariants, Hugging Face models loaded from a directory exactly as a user's
checkpoint is (tiny random models saved to tmp_path), and the registry's errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from videobert.features.backbones import PixelsBackbone, get_backbone
from videobert.utils.errors import ConfigError, InputError

T, S = 12, 32  # frames per clip, frame side


def solid(colour, t: int = T) -> np.ndarray:
    """(t, S, S, 3) clip of one colour."""
    return np.broadcast_to(np.asarray(colour, np.uint8), (t, S, S, 3)).copy()


def square_clip(dx: int = 0, dy: int = 0, colour=(220, 40, 30), background=(90, 90, 90), side: int = 8) -> np.ndarray:
    """A square moving by (dx, dy) pixels a frame over a grey background: (T, S, S, 3)."""
    clip = solid(background)
    for t in range(T):
        x, y = 12 + dx * (t - T // 2), 12 + dy * (t - T // 2)  # stays inside the frame for |dx|, |dy| <= 2
        clip[t, y : y + side, x : x + side] = colour
    return clip


def batch(*clips: np.ndarray) -> np.ndarray:
    return np.stack(clips)  # (B, T, S, S, 3)


# ------------------------------------------------------------------------------------------------ pixels


@pytest.fixture(scope="module")
def pixels() -> PixelsBackbone:
    return get_backbone("pixels")


def test_pixels_shape_dtype_and_determinism(pixels):
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (5, T, S, S, 3), dtype=np.uint8)
    out = pixels(clips)
    assert pixels.name == "pixels" and pixels.clip_size == (32, 32)
    assert out.shape == (5, pixels.dim) and out.dtype == np.float32
    assert pixels.dim == sum(width for _, width, _ in PixelsBackbone.BLOCKS)
    np.testing.assert_array_equal(out, pixels(clips))
    # A clip's vector does not depend on the batch it is in (bit for bit), so a resumed extraction that
    # batches differently writes the same features.
    np.testing.assert_array_equal(out[2:4], pixels(clips[2:4]))
    assert np.isfinite(out).all()


def test_pixels_blocks_have_their_shares(pixels):
    blocks = pixels.blocks(batch(square_clip(dx=2)))
    assert list(blocks) == [name for name, _, _ in PixelsBackbone.BLOCKS]
    for name, width, share in PixelsBackbone.BLOCKS:
        assert blocks[name].shape == (1, width)
        norm = np.linalg.norm(blocks[name])
        if name in PixelsBackbone.MOTION:  # scaled by the motion presence e / (e + floor) < 1
            assert 0.5 * np.sqrt(share) < norm <= np.sqrt(share) + 1e-6
        else:
            assert norm == pytest.approx(np.sqrt(share), rel=1e-5)


def test_static_clip_has_zero_motion(pixels):
    blocks = pixels.blocks(batch(square_clip(), solid((10, 200, 30))))
    for name in PixelsBackbone.MOTION:
        assert not blocks[name].any(), name
    assert blocks["colour_histogram"].any() and blocks["colour_layout"][0].any()


def test_colour_changes_appearance_not_motion(pixels):
    red = pixels.blocks(batch(square_clip(dx=1, colour=(220, 30, 30))))
    blue = pixels.blocks(batch(square_clip(dx=1, colour=(30, 60, 220))))
    hist_red, hist_blue = red["colour_histogram"][0], blue["colour_histogram"][0]
    assert np.linalg.norm(hist_red - hist_blue) > 0.5 * np.linalg.norm(hist_red)
    assert not np.allclose(red["colour_layout"], blue["colour_layout"])
    # Same movement and (nearly) the same lightness contrast: the motion pattern hardly changes.
    assert np.linalg.norm(red["motion_layout"] - blue["motion_layout"]) < 0.2 * np.linalg.norm(red["motion_layout"])


def test_colour_histogram_ignores_grey_background(pixels):
    """The same object on two different grey counters has the same colour histogram."""
    a = pixels.blocks(batch(square_clip(background=(60, 60, 60))))["colour_histogram"]
    b = pixels.blocks(batch(square_clip(background=(170, 170, 170))))["colour_histogram"]
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_motion_separates_moving_from_static_and_directions(pixels):
    blocks = pixels.blocks(batch(square_clip(), square_clip(dx=1), square_clip(dy=1), square_clip(dx=-1)))
    motion = np.concatenate([blocks[n] for n in ("motion_layout", "motion_direction", "trajectory")], axis=1)
    assert not motion[0].any() and all(np.linalg.norm(m) > 0.3 for m in motion[1:])
    # Direction bins are centred on multiples of 45 degrees from +x, image y pointing down: a square moving
    # right puts most of its mass in bin 0, moving down in bin 2, moving left in bin 4.
    direction = blocks["motion_direction"].reshape(4, 3, 8).sum(axis=1)
    assert [int(np.argmax(d)) for d in direction[1:]] == [0, 2, 4]
    # Drift of the motion centroid: +x for right, +y for down, -x for left.
    drift = blocks["trajectory"][:, :2]
    assert drift[1, 0] > 0 and drift[2, 1] > 0 and drift[3, 0] < 0
    assert abs(drift[1, 1]) < 0.2 * drift[1, 0]


def test_shape_tells_round_from_elongated(pixels):
    disc, stick = solid((90, 90, 90)), solid((90, 90, 90))
    y, x = np.mgrid[0:S, 0:S]
    disc[:, (x - 16) ** 2 + (y - 16) ** 2 < 64] = (220, 40, 30)
    stick[:, 14:18, 4:28] = (220, 40, 30)
    shape = pixels.blocks(batch(disc, stick))["shape"] / np.sqrt(0.1)
    elongation = shape[:, 8]  # after the 8 outline-orientation bins
    assert elongation[0] < 0.1 < 0.6 < elongation[1]


def test_larger_input_is_area_pooled_to_the_same_descriptor():
    rng = np.random.default_rng(1)
    clips = rng.integers(0, 256, (2, T, S, S, 3), dtype=np.uint8)
    big = clips.repeat(2, axis=2).repeat(2, axis=3)  # (B, T, 32, 32, 3) -> (B, T, 64, 64, 3)
    np.testing.assert_allclose(PixelsBackbone((64, 64))(big), PixelsBackbone()(clips), atol=1e-6)


def test_pixels_rejects_wrong_input(pixels):
    with pytest.raises(ValueError, match="expected frames of"):
        pixels(np.zeros((1, T, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        pixels(np.zeros((1, T, S, S, 3), np.float32))
    with pytest.raises(ConfigError, match="at least 32x32"):
        PixelsBackbone((16, 16))


# ------------------------------------------------------------------------------------------------ registry


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown backbone 's3d'.*pixels.*hf:<model dir or hub id>.*hf-image:"):
        get_backbone("s3d")
    with pytest.raises(ConfigError, match="needs a model directory"):
        get_backbone("hf:")
    with pytest.raises(ConfigError, match="takes no argument"):
        get_backbone("pixels:64")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when no GPU is present")
def test_cuda_without_gpu_is_a_config_error():
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        get_backbone("pixels", device="cuda")


# ------------------------------------------------------------------------------------------ Hugging Face

TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


def save_model(directory, model, processor) -> str:
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """Tiny random models saved the way a downloaded checkpoint is laid out."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hf")
    t = transformers
    square = dict(size={"height": 32, "width": 32})
    return {
        "videomae": save_model(
            root / "videomae",
            t.VideoMAEModel(t.VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, **TINY)),
            t.VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        ),
        "timesformer": save_model(
            root / "timesformer",
            t.TimesformerModel(t.TimesformerConfig(image_size=32, patch_size=16, num_frames=4, **TINY)),
            t.VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        ),
        "vivit": save_model(
            root / "vivit",
            t.VivitModel(t.VivitConfig(image_size=32, num_frames=4, tubelet_size=[2, 16, 16], **TINY)),
            t.VivitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        ),
        "xclip": save_model(
            root / "xclip",
            t.XCLIPModel(t.XCLIPConfig(
                vision_config=dict(image_size=32, patch_size=16, num_frames=4, mit_hidden_size=16,
                                   mit_intermediate_size=32, mit_num_hidden_layers=1, mit_num_attention_heads=2, **TINY),
                text_config=TINY, projection_dim=16, prompt_layers=1)),
            t.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        ),
        "dinov2": save_model(
            root / "dinov2",
            t.Dinov2Model(t.Dinov2Config(image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, mlp_ratio=2)),
            t.BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        ),
        "vit": save_model(root / "vit", t.ViTModel(t.ViTConfig(image_size=32, patch_size=16, **TINY)), t.ViTImageProcessor(**square)),
        "clip": save_model(
            root / "clip",
            t.CLIPModel(t.CLIPConfig(vision_config=dict(image_size=32, patch_size=16, **TINY), text_config=TINY, projection_dim=16)),
            t.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        ),
    }


def random_clips(n: int = 3, t: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, t, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "name, dim, frames",
    [("hf:videomae", 32, 4), ("hf:timesformer", 32, 4), ("hf:vivit", 32, 4), ("hf:xclip", 16, 4),
     ("hf-image:vit", 32, 8), ("hf-image:dinov2", 32, 8), ("hf-image:clip", 16, 8)],
)
def test_hf_backbones(models, name, dim, frames):
    scheme, key = name.split(":")
    backbone = get_backbone(f"{scheme}:{models[key]}", device="cpu")
    assert backbone.name == f"{scheme}:{models[key]}"
    assert (backbone.dim, backbone.clip_size, backbone.frames, backbone.device) == (dim, (32, 32), frames, "cpu")
    clips = random_clips()
    out = backbone(clips)
    assert out.shape == (3, dim) and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(out, backbone(clips))
    assert not np.allclose(out[0], out[1])
    # Fewer frames than the model takes are repeated, not an error.
    assert backbone(random_clips(t=2)).shape == (3, dim)


@pytest.mark.parametrize("key", ["videomae", "vivit", "clip"])
def test_hf_preprocessing_matches_the_image_processor(models, key):
    """Frames come decoded at the model's input size; the rescale/offset/normalisation applied as tensor
    ops equals what the checkpoint's own image processor produces from the same frames."""
    scheme = "hf-image" if key == "clip" else "hf"
    backbone = get_backbone(f"{scheme}:{models[key]}", device="cpu")
    clips = random_clips(n=2, t=12)
    idx = ((np.arange(backbone.frames) + 0.5) * 12 / backbone.frames).astype(int)
    ours = backbone.pixel_values(clips)  # (B, F, 3, H, W)
    if key == "clip":
        frames = [f for clip in clips[:, idx] for f in clip]
        theirs = backbone.processor(images=frames, return_tensors="pt")["pixel_values"].view(ours.shape)
    else:
        theirs = backbone.processor([list(clip) for clip in clips[:, idx]], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_hf_video_backbone_rejects_image_model(models):
    with pytest.raises(ConfigError, match="not a video model; use hf-image:"):
        get_backbone(f"hf:{models['vit']}", device="cpu")


def test_model_dir_errors_name_the_path(tmp_path, models):
    missing = tmp_path / "no-such-model"
    with pytest.raises(InputError, match="model directory does not exist") as err:
        get_backbone(f"hf:{missing}")
    assert err.value.path == str(missing)

    no_weights = tmp_path / "config-only"
    transformers.ViTConfig(image_size=32, patch_size=16, **TINY).save_pretrained(no_weights)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(no_weights)
    with pytest.raises(InputError, match="no model weights") as err:
        get_backbone(f"hf-image:{no_weights}")
    assert err.value.path == str(no_weights)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no config.json"):
        get_backbone(f"hf:{empty}")


def test_model_dir_without_processor(tmp_path):
    bare = tmp_path / "bare"
    transformers.ViTModel(transformers.ViTConfig(image_size=32, patch_size=16, **TINY)).save_pretrained(bare)
    with pytest.raises(InputError, match="image processor") as err:
        get_backbone(f"hf-image:{bare}")
    assert err.value.path == str(bare)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_hf_backbone_on_gpu_matches_cpu(models):
    cpu = get_backbone(f"hf:{models['videomae']}", device="cpu")
    gpu = get_backbone(f"hf:{models['videomae']}", device="auto")
    assert gpu.device.startswith("cuda")
    clips = random_clips()
    np.testing.assert_allclose(gpu(clips), cpu(clips), atol=1e-4, rtol=1e-3)
