"""CBT-style pretraining over continuous clip features: the noise-contrastive loss against hand-computed values, no
leak of a masked clip's own feature (model and collator), the visual input mode through save/load, clear refusals of
mismatched inputs, the unchanged words recipe (pinned losses on a fixed batch), and a features run end to end with
zero-shot and retrieval reading its clip features."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from test_pretrain_data import FEATURE_DIM, VISUAL_WORDS, clip_feature, narrated, write_work_dir
from transformers import AutoTokenizer

from videobert.features.store import FeatureStore
from videobert.model import VideoBertConfig, VideoBertForPreTraining, VideoBertTokenizer, default_text_checkpoint
from videobert.model.captioning import VideoBertForCaptioning
from videobert.model.modeling import IGNORE_INDEX, info_nce
from videobert.model.visual_input import words_and_features
from videobert.tasks.caption import encoder_inputs
from videobert.tasks.evaluate import segment_visual_inputs
from videobert.tasks.finetune import finetune
from videobert.tasks.predict import predict
from videobert.tasks.retrieval import retrieval
from videobert.tasks.zeroshot import LabelSet, zero_shot
from videobert.tokenizer.hkmeans import FeatureSource
from videobert.training.data import MaskingCollator, PretrainCorpus, PretrainDataConfig, PretrainStream
from videobert.training.objectives import MaskedClips, ObjectiveMeter, build_objectives, objectives_step
from videobert.training.pretrain import PretrainConfig, run_pretraining
from videobert.utils.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def text_tokenizer():
    return AutoTokenizer.from_pretrained(default_text_checkpoint())


def tiny_config(text_tokenizer, visual_input: str = "words") -> VideoBertConfig:
    reads_features = visual_input != "words"
    return VideoBertConfig(
        text_vocab_size=len(text_tokenizer), visual_vocab_size=1 if visual_input == "features" else VISUAL_WORDS,
        cls_token_id=text_tokenizer.cls_token_id, sep_token_id=text_tokenizer.sep_token_id,
        mask_token_id=text_tokenizer.mask_token_id, pad_token_id=text_tokenizer.pad_token_id, hidden_size=32,
        num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, visual_input=visual_input,
        feature_dim=FEATURE_DIM if reads_features else None,
    )  # fmt: skip


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    videos = {f"n{i}": narrated(i, 12 + 2 * i, "train") for i in range(4)}
    videos.update({"held0": narrated(4, 10, "val"), "held1": narrated(5, 12, "val")})
    return write_work_dir(tmp_path_factory.mktemp("cbt"), videos, with_features=True)


# ------------------------------------------------------------------------------------------- noise-contrastive loss


def test_info_nce_equals_the_hand_computed_value():
    queries = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # cosine similarity ignores the norms
    targets = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    loss, logits = info_nce(queries, targets, torch.tensor([4, 9]), temperature=0.5)
    # Row 1 scores [cos 0, cos 45 deg] / 0.5 = [2, sqrt 2], row 2 [cos 90, cos 45] / 0.5 = [0, sqrt 2].
    r = math.sqrt(2)
    expected = ((-2 + math.log(math.exp(2) + math.exp(r))) + (-r + math.log(1 + math.exp(r)))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert torch.allclose(logits, torch.tensor([[2.0, r], [0.0, r]]))


def test_info_nce_memory_adds_negatives_and_the_same_clip_is_never_a_negative():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # The same clip (id 7) at two positions: each is the other's positive's twin, not a negative -> loss 0.
    loss, logits = info_nce(queries, targets, torch.tensor([7, 7]), temperature=1.0)
    assert loss.item() == 0.0 and torch.isinf(logits[0, 1]) and torch.isinf(logits[1, 0])
    # A memory clip (id 3) along the first axis; the memory copy of clip 5 is not a negative of clip 5.
    memory = (torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([3, 5]))
    loss, logits = info_nce(queries, targets, torch.tensor([1, 5]), temperature=1.0, memory=memory)
    assert logits.shape == (2, 4) and torch.isinf(logits[1, 3]) and not torch.isinf(logits[0, 3])
    row1 = -1 + math.log(math.e + 1 + math.e + 1)  # candidates: own 1, other 0, memory 3: 1, memory 5: 0
    row2 = -1 + math.log(1 + math.e + 1)  # own 1, other 0, memory 3: 0 (memory 5 is itself: left out)
    assert loss.item() == pytest.approx((row1 + row2) / 2, rel=1e-6)
    empty, _ = info_nce(torch.zeros(0, 2), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), temperature=0.1)
    assert empty.item() == 0.0


# ------------------------------------------------------------------------------------------------------- no leak


def features_batch(config: VideoBertConfig, text_tokenizer) -> dict[str, torch.Tensor]:
    """[CLS] cut the tomato [>] V V [MASK] V [SEP] with random clip features at the four clip positions."""
    tokenizer = VideoBertTokenizer(text_tokenizer, config)
    batch = tokenizer.batch_encode(["cut the tomato"], [[0, 0, 0, 0]])
    visual = config.is_visual(batch["input_ids"])  # (1, seq)
    positions = visual[0].nonzero().flatten()
    batch["input_ids"][0, positions[2]] = config.mask_token_id
    torch.manual_seed(1)
    features = torch.zeros(*batch["input_ids"].shape, FEATURE_DIM)
    features[0, positions] = torch.randn(len(positions), FEATURE_DIM)
    batch["visual_features"] = features
    return batch, positions


@pytest.mark.parametrize("visual_input", ["features", "both"])
def test_a_masked_clip_never_sees_its_own_feature(text_tokenizer, visual_input):
    config = tiny_config(text_tokenizer, visual_input)
    torch.manual_seed(0)
    model = VideoBertForPreTraining(config).eval()
    batch, positions = features_batch(config, text_tokenizer)
    hidden = model(**batch, output_hidden_states=True).hidden_states

    changed = {k: v.clone() for k, v in batch.items()}
    changed["visual_features"][0, positions[2]] += 5.0  # the masked clip's feature: only a target
    assert all(torch.equal(a, b) for a, b in zip(hidden, model(**changed, output_hidden_states=True).hidden_states))
    changed["visual_features"][0, positions[1]] += 5.0  # a visible clip's feature is read
    assert not torch.equal(hidden[0], model(**changed, output_hidden_states=True).hidden_states[0])


@pytest.mark.parametrize("visual_input", ["features", "both"])
def test_collator_masks_clips_with_the_mask_token_and_targets_their_features(text_tokenizer, work, visual_input):
    config = tiny_config(text_tokenizer, visual_input)
    tokenizer = VideoBertTokenizer(text_tokenizer, config)
    corpus = PretrainCorpus.from_work_dir(work, visual_input)
    data = PretrainDataConfig(batch_size=64, shuffle_buffer=128, max_length=64, mask_prob=0.3)
    examples = [e for batch in PretrainStream(corpus, corpus.train_videos, tokenizer, data, train=False) for e in batch]
    store = FeatureStore(work)
    batch = MaskingCollator(tokenizer, 0.3, objectives=[MaskedClips(1.0, config, store)])(examples)
    masked = batch["feature_labels"] != IGNORE_INDEX
    clip_positions = sum(e.token_type_ids.count(1) - 1 for e in examples)  # visual part without its closing [SEP]
    assert 0.2 < masked.sum().item() / clip_positions < 0.4  # 30 % of the clips
    assert (batch["input_ids"][masked] == config.mask_token_id).all()  # never the 10 % kept or replaced
    # Every clip position holds its own clip's feature (the hand-made one), masked ones included as targets.
    rows = batch["feature_labels"][masked].numpy()
    assert np.allclose(batch["visual_features"][masked].numpy(), store.gather(rows), atol=1e-3)
    clips = store.clips.take(pa.array(rows)).to_pylist()
    tokens = {(r["video"], r["clip"]): r["token"] for r in pq.read_table(work / "tokens.parquet").to_pylist()}
    expected = np.stack([clip_feature(tokens[c["video"], c["clip"]], c["clip"]) for c in clips])
    assert np.allclose(batch["visual_features"][masked].numpy(), expected, atol=1e-2)
    visible = config.is_visual(batch["input_ids"])
    assert (batch["visual_features"][visible].abs().sum(-1) > 0).all()
    labels = batch["labels"][masked]
    if visual_input == "features":
        assert (labels == IGNORE_INDEX).all()  # the placeholder word is no target
    else:  # both: the masked clip's visual word is predicted as well
        assert config.is_visual(labels).all()


# --------------------------------------------------------------------------------------------- save, load, refuse


def test_save_and_load_keep_the_visual_input_and_the_feature_statistics(text_tokenizer, tmp_path):
    config = tiny_config(text_tokenizer, "features")
    torch.manual_seed(0)
    model = VideoBertForPreTraining(config).eval()
    model.set_feature_statistics(np.arange(FEATURE_DIM, dtype=np.float32), np.array([0, 1, 2, 3, 4, 5.0]))
    model.tokenizer = VideoBertTokenizer(text_tokenizer, config)
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["visual_input"] == "features"
    loaded = VideoBertForPreTraining.from_pretrained(tmp_path / "m").eval()
    assert (loaded.config.visual_input, loaded.config.feature_dim) == ("features", FEATURE_DIM)
    assert loaded.clip_input.feature_std.tolist() == [1, 1, 2, 3, 4, 5]  # a std of 0 counts as 1
    batch, _ = features_batch(config, text_tokenizer)
    saved, reloaded = model.state_dict(), loaded.state_dict()
    assert saved.keys() == reloaded.keys() and all(torch.equal(saved[k], reloaded[k]) for k in saved)
    # (attention kernels may differ after loading: equal up to float rounding)
    assert torch.allclose(model(**batch).alignment_logits, loaded(**batch).alignment_logits, atol=1e-6)


def test_mismatched_visual_input_is_refused_with_a_clear_message(text_tokenizer, tmp_path):
    words_config, features_config = tiny_config(text_tokenizer), tiny_config(text_tokenizer, "features")
    batch, _ = features_batch(features_config, text_tokenizer)
    with pytest.raises(ConfigError, match="trained on visual words .* cannot read continuous clip features"):
        VideoBertForPreTraining(words_config)(**batch)
    del batch["visual_features"]
    with pytest.raises(ConfigError, match="trained on continuous clip features .* needs them"):
        VideoBertForPreTraining(features_config)(**batch)
    model = VideoBertForPreTraining(features_config)
    model.tokenizer = VideoBertTokenizer(text_tokenizer, features_config)
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(ConfigError, match="fine-tuning feeds the model visual words only.*visual_input=features"):
        finetune(tmp_path / "m", tmp_path / "work", tmp_path / "out")
    with pytest.raises(ConfigError, match="reads them itself; use encoder pretrained or random"):
        VideoBertForCaptioning.from_videobert(tmp_path / "m", encoder_mode="pretrained+features", feature_dim=6)


@pytest.mark.parametrize("visual_input", ["features", "both"])
def test_a_captioner_on_a_clip_feature_videobert_reads_its_features_through_the_pretrained_input(
    text_tokenizer, tmp_path, visual_input
):
    config = tiny_config(text_tokenizer, visual_input)
    torch.manual_seed(0)
    model = VideoBertForPreTraining(config)
    model.set_feature_statistics(np.full(FEATURE_DIM, 0.5), np.full(FEATURE_DIM, 2.0))
    model.tokenizer = VideoBertTokenizer(text_tokenizer, config)
    model.save_pretrained(tmp_path / "m")
    captioner = VideoBertForCaptioning.from_videobert(tmp_path / "m", decoder_layers=1).eval()
    assert captioner.config.reads_features and captioner.config.reads_words == (visual_input == "both")
    assert captioner.config.feature_dim == FEATURE_DIM
    for key, value in model.clip_input.state_dict().items():  # weights and the training clips' statistics
        assert torch.equal(captioner.encoder.clip_input.state_dict()[key], value)
    features = [np.random.default_rng(i).normal(size=(3, FEATURE_DIM)).astype(np.float32) for i in range(2)]
    visual = features if visual_input == "features" else [words_and_features(np.arange(3), f) for f in features]
    batch = encoder_inputs(captioner, [None, None], visual, torch.device("cpu"))
    # The encoder's states are the pretrained VideoBERT's own over the same input.
    states = captioner.encoder(**batch).last_hidden_state
    expected = model.eval()(**batch, output_hidden_states=True).hidden_states[-1]
    assert torch.allclose(states, expected, atol=1e-5)
    captions = captioner.generate(**batch, max_new_tokens=3)
    assert captions.shape[0] == 2
    captioner.save_pretrained(tmp_path / "cap")
    reloaded = VideoBertForCaptioning.from_pretrained(tmp_path / "cap").eval()
    assert reloaded.config.encoder.visual_input == visual_input
    assert torch.allclose(reloaded.encoder(**batch).last_hidden_state, states, atol=1e-5)


# -------------------------------------------------------------------------------------------------- words parity


def test_the_words_recipe_gives_the_same_losses_as_before(text_tokenizer, tmp_path):
    """Losses of a fixed batch through the words recipe, pinned from the implementation before clip features."""
    videos = {f"n{i}": narrated(i, 12 + 2 * i, "train") for i in range(4)}
    work = write_work_dir(tmp_path / "work", videos)
    config = tiny_config(text_tokenizer)
    tokenizer = VideoBertTokenizer(text_tokenizer, config)
    corpus = PretrainCorpus.from_work_dir(work)
    data = PretrainDataConfig(batch_size=16, shuffle_buffer=32, max_length=64, mask_prob=0.3)
    examples = next(iter(PretrainStream(corpus, corpus.train_videos, tokenizer, data, train=True)))
    objectives = build_objectives(PretrainConfig(device="cpu"), config)
    assert [o.name for o in objectives] == ["masked_words", "masked_visual_words", "alignment"]
    batch = MaskingCollator(tokenizer, 0.3, objectives=objectives)(examples)
    torch.manual_seed(0)
    model = VideoBertForPreTraining(config).eval()
    regime = batch.pop("regime")
    out = model(**batch)
    assert out.mlm_loss.item() == pytest.approx(10.33409309387207, abs=1e-5)
    assert out.alignment_loss.item() == pytest.approx(0.6947382688522339, abs=1e-5)
    loss, sums = objectives_step(objectives, out, batch, regime, train=True)
    assert loss.item() == pytest.approx(11.028831481933594, abs=1e-5)  # the training loss: mlm + alignment
    meter = ObjectiveMeter(objectives, torch.device("cpu"))
    meter.add(sums, batch["attention_mask"])
    # mlm_loss_text is the text-only examples' mean; before the objectives it also averaged in the text-video
    # positions (10.336094597975412: a bucket named "text_video_*" matched the prefix "text_").
    expected = {"mlm_loss_text": 10.368863741556803, "mlm_loss_video": 10.302080472310385,
                "mlm_loss_text_video_words": 10.332593887082991, "mlm_loss_text_video_visual": 10.328086159446023,
                "mlm_loss_text_video": 10.3314132917495, "alignment_loss": 0.6947382926940918}  # fmt: skip
    collected = meter.collect()
    assert {k: v for k, v in collected.items() if k in expected} == pytest.approx(expected, abs=1e-5)
    # Accuracy: 0.3 of the pairs before (3 of 10); now per class and balanced over the two classes.
    aligned, not_aligned = collected["alignment_accuracy_aligned"], collected["alignment_accuracy_not_aligned"]
    assert collected["alignment_accuracy"] == pytest.approx((aligned + not_aligned) / 2)
    labels = batch["alignment_labels"][batch["alignment_labels"] != -100]
    n_aligned = int((labels == 0).sum())
    assert aligned * n_aligned + not_aligned * (len(labels) - n_aligned) == pytest.approx(0.3 * len(labels))


# ------------------------------------------------------------------------------------------------- end to end


def test_features_pretraining_then_zero_shot_and_retrieval_on_clip_features(text_tokenizer, work, tmp_path):
    config = PretrainConfig(init="scratch:2x32", visual_input="features", max_steps=6, learning_rate=1e-3,
                            data={"batch_size": 8, "shuffle_buffer": 16, "max_length": 64}, device="cpu",
                            save_steps=6, eval_steps=6, logging_steps=3, nce_memory=16)  # fmt: skip
    report = run_pretraining(work, tmp_path / "m", config)
    assert report.ok and report.done == 1
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert 0.0 <= metrics["eval"]["nce_accuracy"] <= 1.0 and metrics["eval"]["nce_loss"] > 0
    assert "mlm_loss_video" not in metrics["eval"]  # a clip has no word to predict
    model = VideoBertForPreTraining.from_pretrained(tmp_path / "m").eval()
    assert model.config.visual_input == "features" and model.visual_tokenizer is None
    store = FeatureStore(work)
    mean = store.load().astype(np.float64)[np.isin(store.clips["video"].to_numpy(zero_copy_only=False),
                                                   ["n0", "n1", "n2", "n3"])].mean(0)  # fmt: skip
    assert np.allclose(model.clip_input.feature_mean.numpy(), mean, atol=1e-4)  # the training clips' statistics

    segments = pa.table({"video": ["held0", "held1", "held0"], "start": [0.0, 0.0, 6.0], "end": [6.0, 6.0, 9.0]})
    visual = segment_visual_inputs(work, segments, model.config)
    assert [v.shape for v in visual] == [(4, FEATURE_DIM), (4, FEATURE_DIM), (2, FEATURE_DIM)]
    verbs, nouns = LabelSet.from_values(["cut", "peel"], model.tokenizer.text_tokenizer), LabelSet.from_values(
        ["lemon", "apple"], model.tokenizer.text_tokenizer)  # fmt: skip
    with torch.inference_mode():
        table = zero_shot(model, model.tokenizer, visual, ["cut", "cut", "peel"], ["lemon", "apple", "lemon"],
                          verbs, nouns)  # fmt: skip
        ranked = retrieval(model, model.tokenizer, ["cut the lemon", "cut the apple", "peel the lemon"], visual)
    assert set(table) == {"language_prior", "videobert"} and 0 <= table["videobert"]["verb_top1"] <= 1
    assert set(ranked) == {"alignment", "embedding", "likelihood"}
    # The same segments as both: words and features side by side.
    both = segment_visual_inputs(work, segments, tiny_config(text_tokenizer, "both"))
    assert both[2].dtype.names == ("word", "feature") and np.array_equal(both[2]["feature"], visual[2])


def test_visual_input_settings_are_validated(text_tokenizer):
    with pytest.raises(ConfigError, match="visual_input must be one of words, features, both"):
        PretrainConfig(visual_input="pixels", device="cpu")
    with pytest.raises(ConfigError, match="nce_temperature must be positive"):
        PretrainConfig(visual_input="features", nce_temperature=0.0, device="cpu")
    with pytest.raises(ConfigError, match="needs a positive feature_dim"):
        VideoBertConfig(visual_input="features")
    # A run saved before these settings existed compares equal to the defaults, not as changed settings.
    old = dataclasses.asdict(PretrainConfig(device="cpu"))
    for key in ("visual_input", "nce_weight", "nce_temperature", "nce_memory", "masked_words_weight",
                "masked_visual_words_weight"):  # fmt: skip
        del old[key]
    assert PretrainConfig(device="cpu").differences(old) == []
    changed = PretrainConfig(visual_input="features", device="cpu").differences(old)
    assert changed == ["visual_input: None -> 'features'"]


def test_predict_embeds_a_new_video_for_a_model_over_clip_features(minicook_work, tmp_path):
    config = PretrainConfig(init="scratch:1x32", visual_input="features", max_steps=2, learning_rate=1e-3,
                            data={"batch_size": 8, "shuffle_buffer": 16, "max_length": 64}, device="cpu",
                            save_steps=2, eval_steps=2, logging_steps=1)  # fmt: skip
    assert run_pretraining(minicook_work, tmp_path / "m", config).ok
    model = VideoBertForPreTraining.from_pretrained(tmp_path / "m")
    assert model.config.feature_source == {k: v for k, v in json.loads(
        (minicook_work / "features" / "meta.json").read_text()).items() if k in FeatureSource.KEYS}  # fmt: skip
    video = pq.read_table(minicook_work / "manifest.parquet", columns=["path"])["path"][0].as_py()
    report = predict(tmp_path / "m", video, work=minicook_work, window=3, out=tmp_path / "p.json", device="cpu")
    result = json.loads((tmp_path / "p.json").read_text())
    assert report.ok and result["clips"] and all(c["word"] is None for c in result["clips"])
    # One clip per clip that extract wrote for this video: the same backbone and clip sampling.
    store = FeatureStore(minicook_work)
    video_id = pq.read_table(minicook_work / "manifest.parquet", columns=["video"])["video"][0].as_py()
    rows = np.flatnonzero(store.clips["video"].to_numpy(zero_copy_only=False) == video_id)
    assert len(rows) == len(result["clips"])
    assert {len(w["verb"]) for w in result["windows"]} == {5}  # zero-shot top 5 of every window
