"""The learned clip encoder: the network (shapes, gradients, save/load), the self-supervised losses on hand-built
cases, `train-encoder` on a tiny generated corpus (each objective's loss falls, train videos only, resume), and the
`encoder:DIR` backbone."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from videobert.data.ingest import load_manifest
from videobert.features.backbones import EncoderBackbone, get_backbone
from videobert.model.clip_encoder import ClipEncoderConfig, ClipEncoderForPreTraining, ClipEncoderModel
from videobert.training import encoder as enc
from videobert.training.encoder import info_nce, mil_nce, narration_positives, train_encoder, words_of
from videobert.utils.errors import ConfigError, InputError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(image_size=16, num_frames=4, hidden_size=32, temporal_layers=2)


def tiny_config(**kw) -> ClipEncoderConfig:
    return ClipEncoderConfig(**{**TINY, "stem_channels": [8, 16, 16], "attention_heads": 2, **kw})


# ------------------------------------------------------------------------------------------------ network


def test_shapes_and_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = ClipEncoderForPreTraining(tiny_config(text_vocab=["[UNK]", "cut", "tomato"]))
    clips = torch.randint(0, 256, (3, 10, 16, 16, 3), dtype=torch.uint8)
    out = model.encoder(clips=clips)
    assert out.clip_embeds.shape == (3, 32)
    assert out.frame_states.shape == out.temporal_states.shape == (3, 4, 32)
    assert out.spatial_attention.shape == (3, 4, 2, 16)  # 2 heads over the 4 x 4 stem grid
    torch.testing.assert_close(out.spatial_attention.sum(-1), torch.ones(3, 4, 2))
    # Every head of the pretraining model is reached by the loss of some objective.
    frames = out.frame_states
    text = model.embed_text(word_ids=torch.tensor([1, 2, 0]), offsets=torch.tensor([0, 2]))
    loss = (model.embed_clips(out.clip_embeds) @ text.T).sum() * model.logit_scale.exp()
    masked = torch.where(torch.tensor([True, False, False, True])[None, :, None], model.mask_frame, frames)
    loss = loss + model.masked_head(model.encoder.temporal_mix(masked)).sum()
    loss = loss + model.next_head(model.encoder.temporal_mix(frames, causal=True)).sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_frames_are_sampled_at_part_centres_and_motion_is_the_difference():
    model = ClipEncoderModel(tiny_config())
    assert model.frame_indices(10).tolist() == [1, 3, 6, 8]  # centres of 4 parts of 10 frames
    clips = torch.zeros(1, 10, 16, 16, 3, dtype=torch.uint8)
    clips[0, 6:] = 255  # the picture turns white between sampled frames 3 and 6
    x = model.pixel_values(clips)  # (1, 4, 6, 16, 16)
    assert x.shape == (1, 4, 6, 16, 16)
    assert torch.all(x[0, :, 3:][[0, 1, 3]] == 0) and torch.allclose(x[0, 2, 3:], torch.tensor(1 / 0.25))


def test_causal_temporal_states_do_not_see_the_future():
    torch.manual_seed(0)
    model = ClipEncoderModel(tiny_config()).eval()
    frames = torch.randn(2, 4, 32)
    changed = frames.clone()
    changed[:, 3] += 5.0
    a, b = model.temporal_mix(frames, causal=True), model.temporal_mix(changed, causal=True)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(model.temporal_mix(frames)[:, 2], model.temporal_mix(changed)[:, 2])


def test_save_and_load_give_equal_outputs(tmp_path):
    torch.manual_seed(1)
    model = ClipEncoderModel(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    again = ClipEncoderModel.from_pretrained(tmp_path).eval()
    clips = torch.randint(0, 256, (2, 8, 16, 16, 3), dtype=torch.uint8)
    torch.testing.assert_close(model(clips=clips).clip_embeds, again(clips=clips).clip_embeds, rtol=0, atol=0)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "videobert-clip-encoder"


@pytest.mark.parametrize("bad", [dict(image_size=18), dict(num_frames=1), dict(stem_channels=[8, 16, 15])])
def test_invalid_configs_are_refused(bad):
    with pytest.raises(ConfigError):
        tiny_config(**bad)


# ------------------------------------------------------------------------------------------------- losses


def test_narration_positives_are_the_sentences_overlapping_the_clip():
    # Video 0: clips [0, 1), [1, 2), [2, 3); sentences [0.2, 0.6), [1.5, 2.5), and [4, 5) far away; video 1 has one
    # sentence at [0, 3) that must never pair with video 0's clips.
    clips_v, clips_s, clips_e = np.array([0, 0, 0]), np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])
    sent_v, sent_s, sent_e = np.array([0, 0, 0, 1]), np.array([0.2, 1.5, 4.0, 0.0]), np.array([0.6, 2.5, 5.0, 3.0])
    tight = narration_positives(clips_v, clips_s, clips_e, sent_v, sent_s, sent_e, slack=0.0)
    assert [p.tolist() for p in tight] == [[0], [1], [1]]
    loose = narration_positives(clips_v, clips_s, clips_e, sent_v, sent_s, sent_e, slack=1.0)
    assert [p.tolist() for p in loose] == [[0, 1], [0, 1], [1]]  # [4, 5) widened to [3, 6) still misses [2, 3)


def test_mil_nce_equals_the_hand_computed_value():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.5, 1.5, 0.0]])
    positives = torch.tensor([[True, False, True], [False, True, False]])
    e = math.exp
    clip_side = (-math.log((e(2) + e(1)) / (e(2) + e(0) + e(1))) - math.log(e(1.5) / (e(0.5) + e(1.5) + e(0)))) / 2
    text_side = (-math.log(e(2) / (e(2) + e(0.5))) - math.log(e(1.5) / (e(0) + e(1.5))) - math.log(e(1) / (e(1) + e(0)))) / 3
    assert float(mil_nce(logits, positives)) == pytest.approx((clip_side + text_side) / 2, rel=1e-6)


def test_info_nce_is_low_for_matching_targets_and_reports_top1():
    torch.manual_seed(0)
    target = torch.randn(6, 8)
    loss, acc = info_nce(target.clone(), target, temperature=0.1)
    shuffled, acc_shuffled = info_nce(target[torch.tensor([1, 2, 3, 4, 5, 0])], target, temperature=0.1)
    assert acc == 1.0 and acc_shuffled == 0.0 and float(loss) < float(shuffled)


def test_words_of_lowercases_and_keeps_contractions():
    assert words_of("Okay, now I'm going to CUT the tomato!") == ["okay", "now", "i'm", "going", "to", "cut", "the", "tomato"]


# --------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def tiny_work(minicook_work):
    return minicook_work


TRAIN = dict(steps=24, clip_frames=10, batch_videos=4, clips_per_video=4, save_steps=100, threads=1, descriptor="none",
             **TINY)


@pytest.mark.parametrize("objective", ["contrast", "masked_frame", "next_frame"])
def test_each_objective_alone_lowers_its_loss(tiny_work, tmp_path, objective):
    weights = {f"{name}_weight": float(name == objective) for name in ("contrast", "masked_frame", "next_frame")}
    report = train_encoder(tiny_work, out=tmp_path / "enc", learning_rate=3e-3, log_steps=8, augment=False,
                           **weights, **TRAIN)  # fmt: skip
    history = json.loads((tmp_path / "enc" / enc.TRAINING_FILE).read_text())["history"]
    losses = [h[f"loss/{objective}"] for h in history]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    assert report.stats["clips"] > 0 and set(k for k in history[0] if k.startswith("loss/")) == {f"loss/{objective}", "loss/total"}


def test_training_reads_only_train_videos_and_the_backbone_loads_it(tiny_work, tmp_path):
    out = tmp_path / "enc"
    train_encoder(tiny_work, out=out, **{**TRAIN, "steps": 4})
    index = json.loads((out / "cache" / "index.json").read_text())
    splits = {r["video"]: r["split"] for r in load_manifest(tiny_work).to_pylist()}
    assert index["videos"] and all(splits[v] in ("train", None) for v in index["videos"])
    assert len(index["videos"]) == sum(s in ("train", None) for s in splits.values())

    backbone = get_backbone(f"encoder:{out}")
    assert isinstance(backbone, EncoderBackbone) and backbone.clip_size == (16, 16) and backbone.dim == 32
    assert backbone.name == f"encoder:{out.resolve()}"
    clips = np.random.default_rng(0).integers(0, 256, (3, 10, 16, 16, 3), dtype=np.uint8)
    features = backbone(clips)
    assert features.shape == (3, 32) and features.dtype == np.float32
    np.testing.assert_array_equal(features[1:], backbone(clips[1:]))  # a clip's vector does not depend on its batch
    with pytest.raises(ValueError, match=r"expected frames of \(16, 16\)"):
        backbone(np.zeros((1, 10, 32, 32, 3), np.uint8))
    # A finished encoder with the same settings is left alone; other settings need overwrite.
    assert train_encoder(tiny_work, out=out, **{**TRAIN, "steps": 4}).skipped == 1
    with pytest.raises(ConfigError, match="other settings"):
        train_encoder(tiny_work, out=out, **{**TRAIN, "steps": 5})


def test_backbone_refuses_what_is_not_an_encoder(tmp_path):
    with pytest.raises(ConfigError, match="train-encoder"):
        get_backbone("encoder:")
    with pytest.raises(InputError, match="not found"):
        get_backbone(f"encoder:{tmp_path / 'missing'}")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "bert" / "model.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="not a clip encoder"):
        get_backbone(f"encoder:{tmp_path / 'bert'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is not a clip encoder directory"):
        get_backbone(f"encoder:{tmp_path / 'empty'}")


def test_a_killed_run_resumes_to_the_same_encoder(tiny_work, tmp_path, monkeypatch):
    settings = {**TRAIN, "steps": 12, "save_steps": 6}
    train_encoder(tiny_work, out=tmp_path / "straight", **settings)

    calls = {"n": 0}
    real = enc._batch

    def dies_at_step_9(step, *args, **kwargs):
        if step == 9:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(step, *args, **kwargs)

    monkeypatch.setattr(enc, "_batch", dies_at_step_9)
    with pytest.raises(KeyboardInterrupt):
        train_encoder(tiny_work, out=tmp_path / "resumed", **settings)
    assert (tmp_path / "resumed" / "checkpoints" / "step-6" / "state.json").is_file()
    monkeypatch.setattr(enc, "_batch", real)
    report = train_encoder(tiny_work, out=tmp_path / "resumed", **settings)
    assert report.stats["trained_steps_this_run"] == 6
    a = ClipEncoderModel.from_pretrained(tmp_path / "straight").state_dict()
    b = ClipEncoderModel.from_pretrained(tmp_path / "resumed").state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    assert not (tmp_path / "resumed" / "checkpoints").exists()


def test_no_narration_turns_the_contrast_off_or_refuses(tiny_work, tmp_path):
    import shutil

    import pyarrow.parquet as pq

    silent = tmp_path / "work"
    shutil.copytree(tiny_work, silent)
    table = pq.read_table(silent / "sentences.parquet")
    pq.write_table(table.slice(0, 0), silent / "sentences.parquet")
    with pytest.raises(InputError, match="no sentence"):
        train_encoder(silent, out=tmp_path / "a", contrast_weight=1.0, masked_frame_weight=0, next_frame_weight=0, **TRAIN)
    report = train_encoder(silent, out=tmp_path / "b", **{**TRAIN, "steps": 3})
    record = json.loads((tmp_path / "b" / enc.TRAINING_FILE).read_text())
    assert report.stats["sentences"] == 0 and "narration contrast is off" in record["warnings"][0]


def test_the_pixels_descriptor_is_read_beside_the_frames(tiny_work, tmp_path):
    """With descriptor pixels the clip vector adds a learned projection of the weight-free descriptor, computed on
    the same clips: training caches it, the backbone computes it, and the encoder refuses to run without it."""
    out = tmp_path / "enc"
    settings = {**TRAIN, "steps": 3, "descriptor": "pixels", "image_size": 32}
    train_encoder(tiny_work, out=out, **settings)
    config = json.loads((out / "config.json").read_text())
    assert config["descriptor"] == "pixels" and config["descriptor_dim"] == get_backbone("pixels").dim
    cached = len(json.loads((out / "cache" / "index.json").read_text())["video"])
    assert np.load(out / "cache" / "descriptors.npy").shape == (cached, config["descriptor_dim"])
    backbone = get_backbone(f"encoder:{out}")
    clips = np.random.default_rng(0).integers(0, 256, (2, 10, 32, 32, 3), dtype=np.uint8)
    features = backbone(clips)
    model = backbone.model
    descriptor = torch.from_numpy(get_backbone("pixels")(clips))
    with torch.inference_mode():
        same = model(clips=torch.from_numpy(clips), descriptor=descriptor).clip_embeds.numpy()
        other = model(clips=torch.from_numpy(clips), descriptor=torch.zeros_like(descriptor)).clip_embeds.numpy()
    np.testing.assert_allclose(features, same, rtol=1e-5, atol=1e-6)
    assert features.shape == (2, 32) and not np.allclose(features, other, atol=1e-3)
    with pytest.raises(ValueError, match="descriptor"):
        model(clips=torch.from_numpy(clips))


def test_a_finished_descriptor_encoder_is_recognised_on_a_rerun(tiny_work, tmp_path):
    settings = {**TRAIN, "steps": 2, "descriptor": "pixels", "image_size": 32}
    assert train_encoder(tiny_work, out=tmp_path / "enc", **settings).done == 1
    assert train_encoder(tiny_work, out=tmp_path / "enc", **settings).skipped == 1


def test_the_clip_encoder_exports_to_onnx_with_parity(tmp_path):
    """A model whose features came from a learned clip encoder exports it as one more ONNX part: clip vectors from the
    sampled frames and the descriptor, equal to PyTorch for another batch size, in fp32 and close in int8."""
    from types import SimpleNamespace

    from videobert.serving.export import _clip_encoder_graph, _export_graph, _max_abs_diff, quantize_int8
    from videobert.serving.runtime import session
    from videobert.tokenizer.hkmeans import FeatureSource

    torch.manual_seed(0)
    dim = get_backbone("pixels").dim
    encoder = ClipEncoderModel(tiny_config(image_size=32, descriptor="pixels", descriptor_dim=dim)).eval()
    encoder.save_pretrained(tmp_path / "enc")
    source = FeatureSource(backbone=f"encoder:{tmp_path / 'enc'}", dim=32, fps=20.0, clip_frames=10, size=(32, 32))
    sources = SimpleNamespace(feature_source=source)
    graph = _clip_encoder_graph(sources)
    assert graph is not None and list(graph.inputs) == ["pixel_values", "descriptor"]
    _export_graph(graph, tmp_path / "clip_encoder.onnx", 18)
    assert _max_abs_diff(graph, tmp_path / "clip_encoder.onnx") < 1e-4
    clips = torch.randint(0, 256, (5, 10, 32, 32, 3), dtype=torch.uint8)
    descriptor = torch.from_numpy(get_backbone("pixels")(clips.numpy()))
    with torch.inference_mode():
        expected = encoder(clips=clips, descriptor=descriptor).clip_embeds.numpy()
    feeds = {"pixel_values": encoder.pixel_values(clips).numpy(), "descriptor": descriptor.numpy()}
    got = session(tmp_path / "clip_encoder.onnx").run(["clip_embeds"], feeds)[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    quantize_int8(tmp_path / "clip_encoder.onnx", tmp_path / "clip_encoder.int8.onnx")
    int8 = session(tmp_path / "clip_encoder.int8.onnx").run(["clip_embeds"], feeds)[0]
    cosine = (int8 * expected).sum(1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() > 0.95
    # A model whose features came from another backbone has no clip-encoder part.
    assert _clip_encoder_graph(SimpleNamespace(feature_source=FeatureSource("pixels", dim, 20.0, 10, (32, 32)))) is None


@pytest.mark.parametrize("bad, message", [
    (dict(steps=0), "steps must be at least 1"),
    (dict(contrast_weight=0, masked_frame_weight=0, next_frame_weight=0), "at least one positive"),
    (dict(descriptor="hog"), "descriptor must be pixels or none"),
    (dict(text="no/such/bert"), "text must be bow, minilm or a BERT directory"),
    (dict(threads=-1), "threads must be non-negative"),
    (dict(image_size=18), "image_size must be a multiple of 4"),
])
def test_train_encoder_refuses_bad_options_before_any_work(tiny_work, tmp_path, bad, message):
    with pytest.raises(ConfigError, match=message):
        train_encoder(tiny_work, out=tmp_path / "enc", **{**TRAIN, **bad})
    assert not (tmp_path / "enc" / "cache").exists()
