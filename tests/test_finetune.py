"""Segment classification fine-tuning: the classification model, what each method trains, the bottleneck adapter,
adapter-only checkpoints, few-shot sampling and augmentation, and the `finetune` stage end to end on MiniCook."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import pyarrow.parquet as pq
from PIL import Image

from videobert.data.synth import NOUNS, VERBS
from videobert.model import VideoBertForPreTraining
from videobert.model.classification import BottleneckAdapter, VideoBertForSegmentClassification
from videobert.model.two_stream import VideoBertTwoStreamForSegmentClassification
from videobert.tasks.finetune import augment, few_shot_rows, finetune
from videobert.tasks.supervised import should_stop
from videobert.tasks.peft_methods import (
    METHODS,
    MethodOptions,
    apply_method,
    count_parameters,
    load_finetuned,
    save_finetuned,
)
from videobert.tokenizer.hkmeans import VisualTokenizer
from videobert.utils.errors import ConfigError
from videobert.utils.io import read_json
from checkpoints import save_tiny_bert

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "now", "let", "me", "show", "you", "how", "to", "the",
         *VERBS, *NOUNS]  # fmt: skip
ID = {w: i for i, w in enumerate(WORDS)}
HIDDEN, LAYERS, INTERMEDIATE = 32, 2, 64
LABELS = {"verb": ["cut", "peel", "stir"], "noun": ["egg", "onion"]}


@pytest.fixture(scope="module")
def base_dir(minicook_work, tmp_path_factory):
    """A random tiny VideoBERT (2 layers, hidden 32) over the MiniCook visual vocabulary, saved as a model
    directory (the same construction as tests/test_zeroshot.py)."""
    bert_dir = save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), ID, hidden=HIDDEN, layers=LAYERS,
                              intermediate=INTERMEDIATE)
    visual_tokenizer = VisualTokenizer.from_pretrained(minicook_work / "vocab")
    model = VideoBertForPreTraining.from_text_checkpoint(bert_dir, visual_tokenizer=visual_tokenizer)
    directory = tmp_path_factory.mktemp("tiny_videobert")
    model.save_pretrained(directory)
    return directory


def classifier(base_dir, labels=LABELS) -> VideoBertForSegmentClassification:
    torch.manual_seed(1)
    return VideoBertForSegmentClassification.from_pretrained(base_dir, classification_labels=labels)


def inputs(model: VideoBertForSegmentClassification) -> dict[str, torch.Tensor]:
    return model.tokenizer.batch_encode(["cut the egg", None, "stir"], [[0, 5, 7], [1, 2], [3]])


# ---------------------------------------------------------------------------------------------- model


def test_classifier_loads_the_pretrained_encoder_and_returns_losses_only_with_labels(base_dir):
    model = classifier(base_dir).eval()
    pretrained = VideoBertForPreTraining.from_pretrained(base_dir)
    for name, tensor in pretrained.bert.state_dict().items():
        assert torch.equal(model.bert.state_dict()[name], tensor), name
    batch = inputs(model)
    out = model(**batch)
    assert out.loss is None and out.logits.shape == (3, 5)
    assert out.target_logits["verb"].shape == (3, 3) and out.target_logits["noun"].shape == (3, 2)
    assert torch.equal(torch.cat([out.target_logits["verb"], out.target_logits["noun"]], dim=1), out.logits)
    labels = torch.tensor([[0, 1], [2, 0], [1, -100]])
    loss = model(**batch, labels=labels).loss
    expected = torch.nn.functional.cross_entropy(out.target_logits["verb"], labels[:, 0]) + \
        torch.nn.functional.cross_entropy(out.target_logits["noun"][:2], labels[:2, 1])  # fmt: skip
    assert torch.allclose(loss, expected)


def test_classifier_rejects_unknown_targets_and_single_labels(base_dir):
    with pytest.raises(ConfigError, match="unknown classification target"):
        classifier(base_dir, {"tool": ["knife", "pan"]})
    with pytest.raises(ConfigError, match="at least 2 labels"):
        classifier(base_dir, {"verb": ["cut"]})


# ---------------------------------------------------------------------------------------------- methods

HEAD = HIDDEN * 5 + 5  # classifier weight + bias for 3 verbs + 2 nouns


def trainable_names(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_each_method_trains_what_it_should(base_dir):
    total = count_parameters(classifier(base_dir))["total"]
    counts = {m: count_parameters(apply_method(classifier(base_dir), MethodOptions(m)))["trainable"]
              for m in METHODS if m != "two-stream"}  # fmt: skip
    assert counts["full"] == total
    assert counts["linear"] == HEAD
    base = classifier(base_dir)
    biases = sum(p.numel() for name, p in base.bert.named_parameters() if name.endswith(".bias"))
    assert counts["bitfit"] == biases + HEAD
    # Two adapters per layer, each HIDDEN -> 64 -> HIDDEN with biases.
    assert counts["adapter"] == LAYERS * 2 * (HIDDEN * 64 + 64 + 64 * HIDDEN + HIDDEN) + HEAD
    # LoRA rank 8 on query and value: A (8, HIDDEN) and B (HIDDEN, 8) each.
    assert counts["lora"] == LAYERS * 2 * (8 * HIDDEN + HIDDEN * 8) + HEAD
    assert counts["prompt"] == 10 * HIDDEN + HEAD
    # IA3: key and value outputs (HIDDEN each), attention output input (HIDDEN), feed-forward output input.
    assert counts["ia3"] == LAYERS * (3 * HIDDEN + INTERMEDIATE) + HEAD

    names = trainable_names(apply_method(classifier(base_dir), MethodOptions("lora")))
    assert all("lora_A" in n or "lora_B" in n or "classifier" in n for n in names)
    names = trainable_names(apply_method(classifier(base_dir), MethodOptions("adapter")))
    assert all(".adapter." in n or n.startswith("classifier.") for n in names)
    names = trainable_names(apply_method(classifier(base_dir), MethodOptions("bitfit")))
    assert all(n.endswith(".bias") or n.startswith("classifier.") for n in names)


def test_freeze_layers_freezes_embeddings_and_lower_layers(base_dir):
    model = apply_method(classifier(base_dir), MethodOptions("full", freeze_layers=1))
    for name, parameter in model.named_parameters():
        frozen = name.startswith(("bert.embeddings.", "bert.encoder.layer.0."))
        assert parameter.requires_grad is not frozen, name
    with pytest.raises(ConfigError, match="has 2 layers"):
        apply_method(classifier(base_dir), MethodOptions("full", freeze_layers=3))
    with pytest.raises(ConfigError, match="method 'full' only"):
        MethodOptions("lora", freeze_layers=1)
    with pytest.raises(ConfigError, match="unknown method"):
        MethodOptions("dora")


def test_bottleneck_adapter_is_the_identity_at_init():
    torch.manual_seed(0)
    adapter = BottleneckAdapter(HIDDEN, 4)
    assert adapter.down.weight.shape == (4, HIDDEN) and adapter.up.weight.shape == (HIDDEN, 4)
    x = torch.randn(2, 5, HIDDEN)
    assert torch.equal(adapter(x), x)
    with torch.no_grad():
        adapter.up.weight.fill_(0.1)
    assert adapter(x).shape == x.shape and not torch.allclose(adapter(x), x)
    with pytest.raises(ConfigError):
        BottleneckAdapter(HIDDEN, 0)


def test_adapters_leave_the_pretrained_network_unchanged_at_init(base_dir):
    plain = classifier(base_dir).eval()
    adapted = apply_method(classifier(base_dir), MethodOptions("adapter")).eval()
    batch = inputs(plain)
    assert torch.allclose(plain(**batch).logits, adapted(**batch).logits, atol=1e-6)


@pytest.mark.parametrize("method", ["bitfit", "adapter", "lora", "prompt", "ia3", "linear"])
def test_adapter_only_checkpoint_round_trips_onto_a_fresh_base(base_dir, tmp_path, method):
    options = MethodOptions(method, adapter_size=8)
    model = apply_method(classifier(base_dir), options)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))  # stands in for training
    model.eval()
    batch = inputs(classifier(base_dir))
    expected = model(**batch).logits
    checkpoint = save_finetuned(model, options, base_dir, tmp_path)
    assert not (checkpoint / "model.safetensors").exists()  # the base model stays out of the checkpoint
    size = sum(f.stat().st_size for f in checkpoint.iterdir())
    assert size < (base_dir / "model.safetensors").stat().st_size / 2
    loaded = load_finetuned(tmp_path).eval()
    assert torch.allclose(loaded(**batch).logits, expected, atol=1e-5)


def test_full_checkpoint_round_trips(base_dir, tmp_path):
    model = apply_method(classifier(base_dir), MethodOptions("full")).eval()
    batch = inputs(model)
    save_finetuned(model, MethodOptions("full"), base_dir, tmp_path)
    assert torch.allclose(load_finetuned(tmp_path).eval()(**batch).logits, model(**batch).logits, atol=1e-6)


def test_two_stream_encodes_text_and_video_apart_and_fuses_pooled_states(base_dir, tmp_path):
    torch.manual_seed(1)
    model = VideoBertTwoStreamForSegmentClassification.from_videobert(base_dir, LABELS).eval()
    encoder = VideoBertForPreTraining.from_pretrained(base_dir).bert.state_dict()
    for name, tensor in encoder.items():
        assert torch.equal(model.text_encoder.state_dict()[name], tensor)
        assert torch.equal(model.visual_encoder.state_dict()[name], tensor)
    text = model.tokenizer.batch_encode(["cut the egg", "stir"])
    video = model.tokenizer.batch_encode(None, [[0, 5, 7], [1]])
    batch = {"text_input_ids": text["input_ids"], "text_attention_mask": text["attention_mask"],
             "visual_input_ids": video["input_ids"], "visual_attention_mask": video["attention_mask"],
             "visual_token_type_ids": video["token_type_ids"]}  # fmt: skip
    out = model(**batch)
    assert out.loss is None and out.logits.shape == (2, 5) and out.target_logits["noun"].shape == (2, 2)
    pooled = torch.cat([model.text_encoder(text["input_ids"], attention_mask=text["attention_mask"]).pooler_output,
                        model.visual_encoder(**video).pooler_output], dim=-1)  # fmt: skip
    assert torch.allclose(out.logits, model.fusion(pooled), atol=1e-6)
    assert model(**batch, labels=torch.tensor([[0, 1], [2, 0]])).loss > 0
    options = MethodOptions("two-stream")
    assert count_parameters(apply_method(model, options))["trainable"] == count_parameters(model)["total"]
    with pytest.raises(ConfigError, match="does not apply"):
        apply_method(classifier(base_dir), options)
    save_finetuned(model, options, base_dir, tmp_path)
    assert torch.allclose(load_finetuned(tmp_path).eval()(**batch).logits, out.logits, atol=1e-6)


# ---------------------------------------------------------------------------------------------- data


def test_few_shot_keeps_exactly_k_per_class():
    rng = np.random.default_rng(0)
    labels = np.array([[0]] * 5 + [[1]] * 4 + [[2]] * 3)
    rows = few_shot_rows(labels, 3, rng)
    assert sorted(np.bincount(labels[rows, 0]).tolist()) == [3, 3, 3]
    assert len(set(rows.tolist())) == len(rows)
    pairs = np.array([[0, 0], [0, 0], [0, 1], [0, 1], [1, 1]])
    rows = few_shot_rows(pairs, 1, rng)
    assert sorted(map(tuple, pairs[rows].tolist())) == [(0, 0), (0, 1), (1, 1)]


def test_early_stopping_waits_patience_epochs_without_a_lower_val_loss():
    assert not should_stop([3.0], 1)
    assert not should_stop([3.0, 2.0, 2.5], 2)
    assert should_stop([3.0, 2.0, 2.5, 2.0], 2)  # a tie is no improvement
    assert not should_stop([3.0, 2.0, 2.5, 1.9], 2)
    assert should_stop([3.0, 3.5], 1)


def test_augment_subsamples_and_drops_but_never_empties():
    rng = np.random.default_rng(0)
    visual = np.arange(20)
    assert np.array_equal(augment(visual, 1, 0.0, rng), visual)
    for _ in range(50):
        view = augment(visual, 5, 0.0, rng)
        steps = set(np.diff(view).tolist())
        assert len(steps) == 1 and 1 <= steps.pop() <= 5 and view[0] < 5
        assert len(augment(visual[:1], 5, 0.9, rng)) == 1
    assert 4 <= np.mean([len(augment(visual, 1, 0.5, rng)) for _ in range(200)]) <= 16


# ---------------------------------------------------------------------------------------------- stage


def test_finetune_end_to_end(base_dir, minicook_work, tmp_path):
    out = tmp_path / "verb-noun"
    report = finetune(base_dir, minicook_work, out, target="verb+noun", method="full", epochs=4, batch_size=8,
                      learning_rate=1e-3, patience=4, stride=2, token_dropout=0.1, device="cpu")  # fmt: skip
    metrics = read_json(out / "metrics.json")
    assert metrics["method"] == "full" and metrics["target"] == "verb+noun"
    assert metrics["trainable_parameters"] == metrics["total_parameters"] > 0
    assert set(metrics["test"]) == {"verb", "noun"}
    for row in metrics["test"].values():
        assert 0 <= row["top1"] <= row["top5"] <= 1
    losses = [epoch["train_loss"] for epoch in metrics["history"]]
    assert losses[-1] < losses[0]
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] <= 4
    assert metrics["examples"]["train"] > 0 and report.done == metrics["examples"]["test"]
    text = (out / "classification_report.txt").read_text()
    assert "== verb ==" in text and "== noun ==" in text and "macro avg" in text
    for name in ("verb", "noun"):
        with Image.open(out / f"confusion_{name}.png") as image:
            assert image.format == "PNG" and image.width > 50
    segments = pq.read_table(minicook_work / "segments.parquet")
    reloaded = load_finetuned(out)
    labels = reloaded.config.classification_labels
    assert labels == {name: sorted(set(segments[name].to_pylist())) for name in ("verb", "noun")}
    # config.json stores the labels with sorted keys; the heads must still read verb first, noun second.
    assert reloaded.targets == ("verb", "noun")
    assert reloaded.num_labels_per_target == (len(labels["verb"]), len(labels["noun"]))


def test_finetune_random_encoder_keeps_the_architecture_but_not_the_weights(base_dir, minicook_work, tmp_path):
    finetune(base_dir, minicook_work, tmp_path, target="verb", encoder="random", epochs=1, batch_size=16,
             learning_rate=1e-3, device="cpu")  # fmt: skip
    assert read_json(tmp_path / "metrics.json")["encoder"] == "random"
    trained = load_finetuned(tmp_path)
    pretrained = VideoBertForPreTraining.from_pretrained(base_dir)
    assert trained.config.vocab_size == pretrained.config.vocab_size
    assert trained.visual_tokenizer.content_hash == pretrained.visual_tokenizer.content_hash
    # One epoch at 1e-3 moves weights by about 1e-3; a re-drawn embedding differs from the pretrained one everywhere.
    difference = trained.bert.embeddings.word_embeddings.weight - pretrained.bert.embeddings.word_embeddings.weight
    assert difference.abs().mean() > 5e-3
    with pytest.raises(ConfigError, match="method full"):
        finetune(base_dir, minicook_work, tmp_path / "lora", encoder="random", method="lora")


def test_finetune_two_stream_baseline(base_dir, minicook_work, tmp_path):
    finetune(base_dir, minicook_work, tmp_path, target="noun", method="two-stream", epochs=1, batch_size=16,
             with_text=True, device="cpu")  # fmt: skip
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics["method"] == "two-stream" and set(metrics["test"]) == {"noun"}
    assert metrics["trainable_parameters"] == metrics["total_parameters"]
    assert isinstance(load_finetuned(tmp_path), VideoBertTwoStreamForSegmentClassification)


@pytest.mark.parametrize("method, peft_type", [("lora", "LORA"), ("prompt", "PROMPT_TUNING")])
def test_finetune_peft_few_shot_with_text(base_dir, minicook_work, tmp_path, method, peft_type):
    out = tmp_path / method
    finetune(base_dir, minicook_work, out, target="verb", method=method, epochs=1, batch_size=16, few_shot=2,
             with_text=True, learning_rate=1e-3, device="cpu")  # fmt: skip
    metrics = read_json(out / "metrics.json")
    assert metrics["examples"]["train"] == 2 * metrics["labels"]["verb"]  # every MiniCook verb has 2+ examples
    assert metrics["trainable_parameters"] < metrics["total_parameters"] / 2
    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == peft_type
    assert 0 <= metrics["test"]["verb"]["top1"] <= metrics["test"]["verb"]["top5"] <= 1


def test_finetune_rejects_bad_options(base_dir, minicook_work, tmp_path):
    with pytest.raises(ConfigError, match="unknown target"):
        finetune(base_dir, minicook_work, tmp_path, target="tool")
    with pytest.raises(ConfigError, match="unknown method"):
        finetune(base_dir, minicook_work, tmp_path, method="dora")
    with pytest.raises(ConfigError, match="needs with_text"):
        finetune(base_dir, minicook_work, tmp_path, method="two-stream")
    with pytest.raises(ConfigError, match="token_dropout"):
        finetune(base_dir, minicook_work, tmp_path, token_dropout=1.0)


@pytest.mark.parametrize("task", ["qa", "forecast"])
def test_finetune_dispatches_qa_and_forecast(base_dir, minicook_work, tmp_path, task):
    report = finetune(base_dir, minicook_work, tmp_path / task, task=task, epochs=1, batch_size=16, device="cpu")
    assert report.ok and (tmp_path / task / "metrics.json").is_file()
