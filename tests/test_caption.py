"""Captioning: the VideoBERT encoder + BART decoder model, its checkpoints, the generic seq2seq core (training,
greedy and beam decoding), text infilling, the four encoder modes and the `finetune` / `evaluate` caption tasks
end to end on MiniCook."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

import pyarrow.compute as pc

from videobert.data.ingest import load_manifest, load_sentences
from videobert.features.store import FeatureStore
from videobert.model import VideoBertForPreTraining
from videobert.model.captioning import ENCODER_MODES, VideoBertForCaptioning
from videobert.tasks import caption_metrics
from videobert.tasks.caption import (
    Seq2SeqExamples,
    caption_comparison,
    caption_segments,
    denoise,
    encoder_inputs,
    generate_texts,
    load_caption_examples,
    seq2seq_loss,
    target_labels,
    text_infilling,
    train_seq2seq,
    training_sentences,
    words_and_features,
)
from videobert.tasks.evaluate import evaluate
from videobert.tasks.finetune import finetune
from videobert.utils.errors import ConfigError
import test_finetune
from test_finetune import ID

# The tiny VideoBERT directory (2 layers, hidden 32, MiniCook's visual vocabulary) of the fine-tuning tests.
base_dir = test_finetune.base_dir

CAPTIONS = ["cut the egg", "peel the onion", "stir the egg", "cut the onion", "peel the egg"]
VISUAL = [[0, 1], [2, 3, 4], [5], [6, 7], [8, 9, 10, 11]]


def captioner(base_dir, mode="pretrained", **kwargs) -> VideoBertForCaptioning:
    torch.manual_seed(0)
    return VideoBertForCaptioning.from_videobert(base_dir, encoder_mode=mode, **kwargs)


def five_examples() -> Seq2SeqExamples:
    return Seq2SeqExamples([None] * 5, [np.array(v) for v in VISUAL], CAPTIONS)


@pytest.fixture(scope="module")
def trained(base_dir):
    """A tiny captioner trained on five examples until it reproduces them (about 3 s)."""
    model = captioner(base_dir, decoder_layers=1)
    examples = five_examples()
    history = train_seq2seq(model, examples, examples, epochs=150, batch_size=5, learning_rate=3e-3, seed=0,
                            patience=150)  # fmt: skip
    return model, history


# ---------------------------------------------------------------------------------------------- model


def test_model_starts_from_the_pretrained_encoder_and_ties_the_decoder_head(base_dir):
    model = captioner(base_dir)
    encoder = VideoBertForPreTraining.from_pretrained(base_dir).bert.state_dict()
    for name, tensor in model.encoder.bert.state_dict().items():
        assert torch.equal(tensor, encoder[name]), name
    text_rows = encoder["embeddings.word_embeddings.weight"][: len(ID)]
    assert torch.equal(model.decoder.get_input_embeddings().weight, text_rows)
    assert model.decoder.lm_head.weight is model.decoder.get_input_embeddings().weight
    assert model.config.decoder.vocab_size == len(ID) and model.config.decoder_start_token_id == ID["[CLS]"]
    random = captioner(base_dir, "random")
    assert not torch.equal(random.encoder.bert.embeddings.word_embeddings.weight,
                           encoder["embeddings.word_embeddings.weight"])  # fmt: skip
    assert random.config.encoder.visual_vocab_hash == model.config.encoder.visual_vocab_hash


def test_loss_only_with_labels_and_equal_to_the_token_cross_entropy(base_dir):
    model = captioner(base_dir).eval()
    batch = encoder_inputs(model, [None, "now let me show you"], [np.array([0, 5]), np.array([7])], torch.device("cpu"))
    labels = target_labels(model, ["cut the egg", "stir"], torch.device("cpu"))
    assert labels.tolist() == [[ID["cut"], ID["the"], ID["egg"], ID["[SEP]"]], [ID["stir"], ID["[SEP]"], -100, -100]]
    out = model(**batch, labels=labels)
    assert out.logits.shape == (2, 4, len(ID)) and out.encoder_last_hidden_state.shape == (2, 9, 32)
    decoder_input_ids = torch.tensor([[ID["[CLS]"], ID["cut"], ID["the"], ID["egg"]],
                                      [ID["[CLS]"], ID["stir"], ID["[SEP]"], ID["[PAD]"]]])  # fmt: skip
    plain = model(**batch, decoder_input_ids=decoder_input_ids)
    assert plain.loss is None and torch.allclose(plain.logits, out.logits, atol=1e-6)
    expected = F.cross_entropy(plain.logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    assert torch.allclose(out.loss, expected)


def test_a_narrower_decoder_reads_the_encoder_through_a_projection(base_dir):
    model = captioner(base_dir, decoder_hidden_size=16, decoder_heads=2).eval()
    assert model.encoder_projection.weight.shape == (16, 32)
    batch = encoder_inputs(model, [None], [np.array([1, 2])], torch.device("cpu"))
    assert model(**batch, labels=target_labels(model, ["cut"], torch.device("cpu"))).logits.shape == (1, 2, len(ID))


def test_examples_and_options_are_checked(base_dir):
    with pytest.raises(ValueError, match="2 texts, 1 visual"):
        Seq2SeqExamples([None, "a"], [np.array([1])], ["x", "y"])
    with pytest.raises(ValueError, match="a text, a visual input or both"):
        Seq2SeqExamples([None], [None], ["x"])
    with pytest.raises(ConfigError, match="encoder must be one of"):
        captioner(base_dir, "frozen")
    with pytest.raises(ConfigError, match="needs a positive feature_dim"):
        captioner(base_dir, "features")
    with pytest.raises(ConfigError, match="max_new_tokens must be in"):
        generate_texts(captioner(base_dir), five_examples(), max_new_tokens=64)


# ---------------------------------------------------------------------------------------------- training, decoding


def test_a_tiny_captioner_overfits_five_examples_under_greedy_and_beam_decoding(trained):
    model, history = trained
    assert history[-1]["val_loss"] < 0.05 < history[0]["val_loss"]
    examples = five_examples()
    assert generate_texts(model, examples, num_beams=1) == CAPTIONS
    assert generate_texts(model, examples, num_beams=3, length_penalty=1.0, no_repeat_ngram_size=2) == CAPTIONS
    assert generate_texts(model, (examples.texts, examples.visual), num_beams=2, batch_size=2) == CAPTIONS


def test_training_restores_the_best_epoch(base_dir):
    model = captioner(base_dir, decoder_layers=1)
    examples = five_examples()
    history = train_seq2seq(model, examples, examples, epochs=3, batch_size=5, learning_rate=0.5, seed=0, patience=1)
    best = min(range(len(history)), key=lambda i: history[i]["val_loss"])
    assert len(history) <= 3
    assert seq2seq_loss(model, examples, batch_size=5) == pytest.approx(
        history[best]["val_loss"], rel=1e-5
    )


def test_checkpoint_round_trip_gives_identical_logits_and_captions(trained, tmp_path):
    model, _ = trained
    model.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "visual_vocab"} <= {
        p.name for p in tmp_path.iterdir()
    }
    loaded = VideoBertForCaptioning.from_pretrained(tmp_path).eval()
    assert loaded.visual_tokenizer.content_hash == model.visual_tokenizer.content_hash
    assert loaded.decoder.lm_head.weight is loaded.decoder.get_input_embeddings().weight
    examples = five_examples()
    cpu = torch.device("cpu")
    batch = encoder_inputs(model, examples.texts, examples.visual, cpu)
    labels = target_labels(model, examples.targets, cpu)
    assert torch.equal(loaded(**batch, labels=labels).logits, model.eval()(**batch, labels=labels).logits)
    for beams in (1, 3):
        assert generate_texts(loaded, examples, num_beams=beams) == CAPTIONS
    assert caption_segments(tmp_path, examples.visual, num_beams=2, device="cpu") == CAPTIONS


def test_loading_a_checkpoint_of_the_wrong_kind_raises(base_dir, trained, tmp_path):
    with pytest.raises(ConfigError, match="model_type is 'videobert', not a caption checkpoint.*--task caption"):
        VideoBertForCaptioning.from_pretrained(base_dir)
    with pytest.raises(ConfigError, match="no config.json"):
        VideoBertForCaptioning.from_pretrained(tmp_path)
    trained[0].save_pretrained(tmp_path / "caption")
    with pytest.raises(ConfigError, match="not a VideoBERT model directory"):
        VideoBertForPreTraining.from_pretrained(tmp_path / "caption")


def test_text_infilling_masks_spans_and_keeps_the_rest_in_order():
    rng = np.random.default_rng(0)
    sentence = "now let me show you how to cut the onion into thin rings"
    for _ in range(20):
        corrupted = text_infilling(sentence, "[MASK]", rng).split()
        kept = [w for w in corrupted if w != "[MASK]"]
        assert "[MASK]" in corrupted and len(kept) <= len(sentence.split()) - 4  # at least 30 % of 13 words
        words = iter(sentence.split())
        assert all(any(w == x for x in words) for w in kept)  # a subsequence of the sentence
    assert text_infilling("stir", "[MASK]", rng) == "[MASK]"


def test_denoising_learns_to_reconstruct_the_narration(base_dir):
    model = captioner(base_dir, decoder_layers=1)
    sentences = ["now let me show you how to cut the onion", "peel the egg", "stir the egg now"]
    losses = denoise(model, sentences, steps=40, batch_size=6, learning_rate=3e-3, seed=0)
    assert len(losses) == 40 and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


# ---------------------------------------------------------------------------------------------- MiniCook


def test_denoising_reads_only_the_narration_of_training_videos(minicook_work):
    manifest = load_manifest(minicook_work)
    train = set(pc.filter(manifest["video"], pc.equal(manifest["split"], "train")).to_pylist())
    sentences = load_sentences(minicook_work)
    expected = [t for v, t in zip(sentences["video"].to_pylist(), sentences["text"].to_pylist()) if v in train]
    assert training_sentences(minicook_work) == expected and 0 < len(expected) < sentences.num_rows


def test_features_encoder_reads_clip_features_at_the_visual_positions(base_dir, minicook_work, tmp_path):
    dim = FeatureStore(minicook_work).dim
    model = captioner(base_dir, "features", feature_dim=dim).eval()
    splits = load_caption_examples(minicook_work, model.config, splits=("test",))
    examples = splits["test"].examples.subset([0, 1, 2])
    assert all(v.dtype == np.float32 and v.ndim == 2 and v.shape[1] == dim for v in examples.visual)
    batch = encoder_inputs(model, examples.texts, examples.visual, torch.device("cpu"))
    visual = model.config.encoder.is_visual(batch["input_ids"])
    assert int(visual[0].sum()) == len(examples.visual[0])
    assert torch.equal(batch["visual_features"][0, visual[0]], torch.from_numpy(examples.visual[0]))
    out = model.encoder(**batch).last_hidden_state
    shifted = dict(batch, visual_features=batch["visual_features"] + 1.0)
    assert not torch.allclose(model.encoder(**shifted).last_hidden_state, out)
    assert len(generate_texts(model, examples, num_beams=2, max_new_tokens=4)) == 3
    # The standardisation statistics are part of the checkpoint.
    clips = np.concatenate(examples.visual)
    model.encoder.set_feature_statistics(torch.from_numpy(clips.mean(axis=0)), torch.from_numpy(clips.std(axis=0)))
    model.save_pretrained(tmp_path)
    loaded = VideoBertForCaptioning.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.encoder.feature_mean, torch.from_numpy(clips.mean(axis=0)))
    assert torch.equal(loaded.encoder(**batch).last_hidden_state, model.encoder(**batch).last_hidden_state)


def test_videobert_plus_features_reads_both_and_keeps_the_pretrained_encoder(base_dir, minicook_work, tmp_path):
    """Mode pretrained+features (the paper's VideoBERT + S3D): the pretrained encoder over the visual words beside a
    features encoder over the same clips; the decoder attends to the sum of their states, position by position."""
    dim = FeatureStore(minicook_work).dim
    model = captioner(base_dir, "pretrained+features", feature_dim=dim).eval()
    source = VideoBertForPreTraining.from_pretrained(base_dir)
    for name, tensor in source.bert.state_dict().items():
        if not name.startswith("pooler."):
            assert torch.equal(model.encoder.bert.state_dict()[name], tensor), name
    splits = load_caption_examples(minicook_work, model.config, splits=("test",))
    examples = splits["test"].examples.subset([0, 1, 2])
    words_only = load_caption_examples(minicook_work, captioner(base_dir).config, splits=("test",))["test"].examples
    features_only = load_caption_examples(minicook_work, captioner(base_dir, "features", feature_dim=dim).config,
                                          splits=("test",))["test"].examples  # fmt: skip
    for i, visual in enumerate(examples.visual):
        assert visual.dtype.names == ("word", "feature")
        assert np.array_equal(visual["word"], words_only.visual[i])
        assert np.array_equal(visual["feature"], features_only.visual[i])
    batch = encoder_inputs(model, examples.texts, examples.visual, torch.device("cpu"))
    visual = model.config.encoder.is_visual(batch["input_ids"])
    words = [model.config.encoder.visual_token_to_id(int(w)) for w in examples.visual[0]["word"]]
    assert batch["input_ids"][0, visual[0]].tolist() == words  # the real visual words, not placeholders
    states = model.encoder(**batch).last_hidden_state
    assert states.shape == (*batch["input_ids"].shape, model.config.encoder.hidden_size)
    # The word part is exactly the pretrained VideoBERT over the words; the rest is what the features encoder reads
    # with the features embedded at the visual positions.
    plain = source.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        token_type_ids=batch["token_type_ids"]).last_hidden_state  # fmt: skip
    encoder = model.encoder
    embedded = torch.where(visual.unsqueeze(-1), encoder.feature_projection(
        (batch["visual_features"] - encoder.feature_mean) / encoder.feature_std),
        encoder.feature_bert.embeddings.word_embeddings(batch["input_ids"]))  # fmt: skip
    feature_states = encoder.feature_bert(inputs_embeds=embedded, attention_mask=batch["attention_mask"],
                                          token_type_ids=batch["token_type_ids"]).last_hidden_state  # fmt: skip
    assert torch.allclose(states, plain + feature_states, atol=1e-5)
    shifted = model.encoder(**dict(batch, visual_features=batch["visual_features"] + 1.0)).last_hidden_state
    assert not torch.allclose(shifted, states)
    # Its control, random+features: the same two encoders, the word encoder drawn at random.
    control = captioner(base_dir, "random+features", feature_dim=dim)
    assert control.config.reads_words and control.config.reads_features and control.encoder.feature_bert is not None
    weights = control.encoder.bert.state_dict()["encoder.layer.0.attention.self.query.weight"]
    assert not torch.equal(weights, source.bert.state_dict()["encoder.layer.0.attention.self.query.weight"])
    # Augmentation keeps words and features together; training, decoding and a checkpoint round trip work.
    assert np.array_equal(examples.visual[0][::2]["word"], examples.visual[0]["word"][::2])
    train_seq2seq(model, examples, examples, epochs=1, batch_size=3, learning_rate=1e-3, seed=0, stride=2)
    captions = generate_texts(model.eval(), examples, num_beams=2, max_new_tokens=4)
    model.save_pretrained(tmp_path)
    loaded = VideoBertForCaptioning.from_pretrained(tmp_path).eval()
    assert loaded.config.encoder_mode == "pretrained+features"
    assert torch.equal(loaded.encoder(**batch).last_hidden_state, model.encoder(**batch).last_hidden_state)
    assert generate_texts(loaded, examples, num_beams=2, max_new_tokens=4) == captions
    with pytest.raises(ConfigError, match="needs a positive feature_dim"):
        captioner(base_dir, "pretrained+features")
    with pytest.raises(ValueError, match="3 visual words but 2 clip features"):
        words_and_features(np.arange(3), np.zeros((2, dim), np.float32))


def test_finetune_caption_end_to_end_and_evaluate(base_dir, minicook_work, tmp_path, monkeypatch):
    # Java-free scoring: METEOR's jar takes seconds to load and is covered by tests/test_caption_metrics.py.
    monkeypatch.setattr(caption_metrics, "find_java", lambda: None)
    out = tmp_path / "caption"
    with pytest.warns(RuntimeWarning, match="java"):
        report = finetune(base_dir, minicook_work, out, task="caption", epochs=2, batch_size=16, learning_rate=1e-3,
                          num_beams=2)  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"bleu3", "bleu4", "meteor", "rouge_l", "cider"}
    assert metrics["options"]["encoder"] == "pretrained" and metrics["epochs_run"] == 2
    assert metrics["test"]["meteor"] is None and metrics["metric_tokenizer"] == "simple"
    assert all(0.0 <= v for v in metrics["test"].values() if v is not None)
    lines = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert len(lines) == metrics["examples"]["test"] == report.done
    assert set(lines[0]) == {"video", "start", "end", "reference", "generated"}

    # evaluate --task caption on the finetune output reproduces the test captions and scores.
    with pytest.warns(RuntimeWarning, match="java"):
        again = evaluate(out, minicook_work, task="caption", num_beams=2, out=tmp_path / "eval")
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["scores"]["meteor"] is None and again.done == len(lines)
    for key in ("bleu3", "bleu4", "rouge_l", "cider"):
        assert evaluated["scores"][key] == pytest.approx(metrics["test"][key], abs=1e-9)
    regenerated = [json.loads(line)["generated"] for line in (tmp_path / "eval" / "captions.jsonl").read_text().splitlines()]
    assert regenerated == [line["generated"] for line in lines]


def test_finetune_caption_rejects_classification_options(base_dir, minicook_work, tmp_path):
    with pytest.raises(ConfigError, match="apply to task classify"):
        finetune(base_dir, minicook_work, tmp_path, task="caption", method="lora")
    with pytest.raises(ConfigError, match="unknown task 'describe'"):
        finetune(base_dir, minicook_work, tmp_path, task="describe")
    with pytest.raises(ConfigError, match="unknown encoder 'frozen'"):
        finetune(base_dir, minicook_work, tmp_path, task="caption", encoder="frozen")


def test_caption_comparison_writes_table3_with_every_encoder(base_dir, minicook_work, tmp_path, monkeypatch):
    monkeypatch.setattr(caption_metrics, "find_java", lambda: None)  # the Java path is covered above
    with pytest.warns(RuntimeWarning, match="java"):
        report = caption_comparison(base_dir, minicook_work, tmp_path, epochs=1, batch_size=32, num_beams=1,
                                    denoise_steps=2, few_shot=1)  # fmt: skip
    comparison = json.loads((tmp_path / "comparison.json").read_text())
    assert set(comparison["methods"]) == set(ENCODER_MODES) and report.done == 5
    # few_shot=1: one training segment per distinct caption, the same count for every encoder.
    segments = pq.read_table(minicook_work / "segments.parquet").to_pylist()
    train_captions = {row["caption"] for row in segments if row["split"] == "train"}
    all_train = sum(row["split"] == "train" for row in segments)
    assert comparison["examples"]["train"] == len(train_captions) < all_train
    for mode in ENCODER_MODES:
        run = json.loads((tmp_path / mode / "metrics.json").read_text())
        assert run["options"]["encoder"] == mode and run["options"]["denoise_steps"] == 2
        assert run["test"] == comparison["methods"][mode]["test"] and run["denoise_loss_first_last"] is not None
        assert VideoBertForCaptioning.from_pretrained(tmp_path / mode / "model").config.encoder_mode == mode
    table = (tmp_path / "table3.md").read_text().splitlines()
    assert len(table) == 2 + len(ENCODER_MODES) and table[2].startswith("| VideoBERT (pretrained) |") and "| - |" in table[2]
