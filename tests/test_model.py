"""VideoBERT model: config layout, joint tokenizer, parity with BERT, vocabulary extension, heads, model directories."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForPreTraining, BertForPreTraining, BertModel, BertTokenizer

from videobert.model import (
    ALIGNED,
    NOT_ALIGNED,
    VideoBertConfig,
    VideoBertForPreTraining,
    VideoBertModel,
    VideoBertTokenizer,
    default_text_checkpoint,
    require_tokenizer,
    visual_tokenizer_from_work_dir,
)
from videobert.model.captioning import VideoBertForCaptioning
from videobert.tokenizer.hkmeans import VisualTokenizer, VisualVocabConfig
from videobert.utils.errors import ConfigError
from checkpoints import save_tiny_bert

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "now", "let", "me", "show", "you", "how", "to",
         "cut", "the", "tomato", "onion", "pour", "water", "##s", "into", "pan"]  # fmt: skip
TEXT_VOCAB = len(WORDS)  # 21 WordPiece ids; [>] = 21, [V0] = 22
CLS, SEP, MASK, PAD = 2, 3, 4, 0


def fit_visual_tokenizer(seed: int) -> VisualTokenizer:
    """k=2, depth=3: 8 visual words over 6-d features."""
    features = np.random.default_rng(seed).normal(size=(200, 6)).astype(np.float32)
    return VisualTokenizer(VisualVocabConfig(k=2, depth=3, seed=seed)).fit(features)


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    """A random 2-layer BERT in BERT's pretraining layout (MLM and next-sentence heads), with its tokenizer."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), {w: i for i, w in enumerate(WORDS)})


@pytest.fixture(scope="module")
def visual_tokenizer():
    return fit_visual_tokenizer(seed=0)


@pytest.fixture(scope="module")
def tiny_model(tiny_bert_dir, visual_tokenizer):
    torch.manual_seed(0)
    return VideoBertForPreTraining.from_text_checkpoint(tiny_bert_dir, visual_tokenizer=visual_tokenizer).eval()


@pytest.fixture(scope="module")
def minilm_model():
    return VideoBertForPreTraining.from_text_checkpoint(visual_vocab_size=144, visual_init="random").eval()


# ---------------------------------------------------------------------------------------------- configuration


def test_config_layout_and_validation(tmp_path):
    config = VideoBertConfig(text_vocab_size=21, visual_vocab_size=8, hidden_size=32, num_attention_heads=4,
                             cls_token_id=CLS, sep_token_id=SEP, mask_token_id=MASK)  # fmt: skip
    assert (config.vocab_size, config.visual_separator_token_id, config.visual_token_offset) == (30, 21, 22)
    assert config.special_tokens == {"[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "[PAD]": 0, "[>]": 21}
    assert config.visual_token_to_id(3) == 25 and config.id_to_visual_token(25) == 3
    ids = torch.tensor([0, 20, 21, 22, 29, 30])
    assert config.is_visual(ids).tolist() == [False, False, False, True, True, False]
    assert config.is_text(ids).tolist() == [True, True, False, False, False, False]
    assert VideoBertConfig().vocab_size == 30522 + 1 + 12**4

    config.save_pretrained(tmp_path)
    assert VideoBertConfig.from_pretrained(tmp_path).to_dict() == config.to_dict()

    for bad, message in [
        (dict(visual_vocab_size=0), "visual_vocab_size"),
        (dict(hidden_size=30, num_attention_heads=4), "divisible"),
        (dict(text_vocab_size=21, visual_vocab_size=8, vocab_size=29), "joint layout"),
        (dict(text_vocab_size=21, visual_separator_token_id=22), "visual_separator_token_id"),
        (dict(text_vocab_size=21, cls_token_id=21), "cls_token_id"),
        (dict(type_vocab_size=1), "type_vocab_size"),
    ]:
        with pytest.raises(ConfigError, match=message):
            VideoBertConfig(**bad)


# ---------------------------------------------------------------------------------------------- joint tokenizer


@pytest.fixture(scope="module")
def joint_tokenizer():
    config = VideoBertConfig(text_vocab_size=TEXT_VOCAB, visual_vocab_size=8, hidden_size=32, num_attention_heads=4,
                             cls_token_id=CLS, sep_token_id=SEP, mask_token_id=MASK,
                             max_position_embeddings=64)  # fmt: skip
    return VideoBertTokenizer(BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}), config)


def test_joint_tokenizer_layouts(joint_tokenizer):
    both = joint_tokenizer.encode("cut the tomatos", [3, 7])
    assert both["input_ids"] == [CLS, 12, 13, 14, 18, 21, 22 + 3, 22 + 7, SEP]
    assert both["token_type_ids"] == [0, 0, 0, 0, 0, 0, 1, 1, 1]
    assert both["attention_mask"] == [1] * 9
    assert joint_tokenizer.decode(both["input_ids"]) == "[CLS] cut the tomatos [>] [V3] [V7] [SEP]"
    assert joint_tokenizer.decode(both["input_ids"], skip_special_tokens=True) == "cut the tomatos [V3] [V7]"
    assert joint_tokenizer.convert_ids_to_tokens(both["input_ids"])[4:8] == ["##s", "[>]", "[V3]", "[V7]"]

    text = joint_tokenizer.encode("pour water")
    assert text == {"input_ids": [CLS, 16, 17, SEP], "token_type_ids": [0] * 4, "attention_mask": [1] * 4}
    assert text["input_ids"] == joint_tokenizer.text_tokenizer("pour water")["input_ids"]  # BERT's own input

    video = joint_tokenizer.encode(None, [0, 5])
    assert video["input_ids"] == [CLS, 21, 22, 27, SEP]
    assert video["token_type_ids"] == [0, 0, 1, 1, 1]

    template = joint_tokenizer.encode("now let me show you how to [MASK] the [MASK]", [1])
    assert template["input_ids"][1:12] == [5, 6, 7, 8, 9, 10, 11, MASK, 13, MASK, 21]

    with pytest.raises(ConfigError, match="visual token 8"):
        joint_tokenizer.encode("cut", [8])
    with pytest.raises(ValueError):
        joint_tokenizer.encode(None, None)


def test_joint_tokenizer_truncation_is_fair(joint_tokenizer):
    long_text = " ".join(["cut the onion"] * 10)  # 30 WordPiece ids
    # budget 12 - 3 special = 9: both sides longer than half -> text 5, video 4; each side keeps its beginning
    cut = joint_tokenizer.encode(long_text, list(range(8)) * 2, max_length=12)
    assert cut["input_ids"] == [CLS, 12, 13, 15, 12, 13, 21, 22, 23, 24, 25, SEP]
    # a side that fits into its half is kept whole, the other side takes the rest
    short_video = joint_tokenizer.encode(long_text, [1, 2], max_length=12)
    assert short_video["input_ids"][-4:] == [21, 23, 24, SEP] and len(short_video["input_ids"]) == 12
    short_text = joint_tokenizer.encode("pour", list(range(8)) * 2, max_length=12)
    assert short_text["input_ids"][:3] == [CLS, 16, 21] and len(short_text["input_ids"]) == 12
    assert len(joint_tokenizer.encode(long_text, max_length=12)["input_ids"]) == 12
    with pytest.raises(ConfigError, match="max_length"):
        joint_tokenizer.encode("cut", [1], max_length=2)


def test_joint_tokenizer_batch_and_save(joint_tokenizer, tmp_path):
    batch = joint_tokenizer.batch_encode(["cut the onion", None, "pour"], [[1, 2], [3], None])
    # the longest is [CLS] cut the onion [>] [V1] [V2] [SEP]
    assert batch["input_ids"].shape == (3, 8) and batch["input_ids"].dtype == torch.long
    assert batch["input_ids"][2].tolist() == [CLS, 16, SEP, PAD, PAD, PAD, PAD, PAD]
    assert batch["attention_mask"][2].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert batch["token_type_ids"][1].tolist() == [0, 0, 1, 1, 0, 0, 0, 0]
    padded = joint_tokenizer.batch_encode(["cut"], max_length=10, padding="max_length")
    assert padded["input_ids"].shape == (1, 10)

    joint_tokenizer.save_pretrained(tmp_path)
    loaded = VideoBertTokenizer.from_pretrained(tmp_path)
    assert loaded.encode("cut the tomato", [3, 7]) == joint_tokenizer.encode("cut the tomato", [3, 7])


# ---------------------------------------------------------------------------------------------- parity with BERT


def assert_text_only_parity(model: VideoBertForPreTraining, reference: BertModel, text_tokenizer) -> float:
    batch = text_tokenizer(["cut the tomato into the pan", "pour water"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model.bert(**batch)
        theirs = reference.eval()(**batch)
    keep = batch["attention_mask"].bool()
    diff = (ours.last_hidden_state - theirs.last_hidden_state)[keep].abs().max().item()
    assert diff <= 1e-5
    torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, atol=1e-5, rtol=0)
    return diff


def test_text_only_parity_tiny_bert(tiny_model, tiny_bert_dir):
    assert_text_only_parity(tiny_model, BertModel.from_pretrained(tiny_bert_dir), tiny_model.tokenizer.text_tokenizer)


def test_text_only_parity_minilm(minilm_model):
    reference = BertModel.from_pretrained(default_text_checkpoint())
    assert minilm_model.config.text_vocab_size == 30522 and minilm_model.config.hidden_size == 384
    assert minilm_model.config._attn_implementation == "sdpa"
    assert_text_only_parity(minilm_model, reference, minilm_model.tokenizer.text_tokenizer)
    # the joint tokenizer's text-only input is the text tokenizer's
    sentence = "now let me show you how to cut the tomato"
    encoded = minilm_model.tokenizer.encode(sentence)
    assert encoded["input_ids"] == minilm_model.tokenizer.text_tokenizer(sentence)["input_ids"]


# ---------------------------------------------------------------------------------------------- vocabulary extension


def test_vocabulary_extension_from_centroids(tiny_model, tiny_bert_dir, visual_tokenizer):
    text = BertForPreTraining.from_pretrained(tiny_bert_dir)
    text_embeddings = text.get_input_embeddings().weight.detach()  # (21, 32)
    embeddings = tiny_model.get_input_embeddings().weight.detach()  # (30, 32)
    config = tiny_model.config
    assert embeddings.shape == (TEXT_VOCAB + 1 + 8, 32)
    assert config.visual_vocab_hash == visual_tokenizer.content_hash
    torch.testing.assert_close(embeddings[:TEXT_VOCAB], text_embeddings, atol=0, rtol=0)
    torch.testing.assert_close(embeddings[config.visual_separator_token_id], text_embeddings[SEP], atol=0, rtol=0)

    # visual rows: the text embeddings' mean + the centroids' principal coordinates scaled to the text std
    mean = text_embeddings.double().mean(0)
    text_std = (text_embeddings.double() - mean).std(unbiased=False)
    visual = embeddings[config.visual_token_offset :].double() - mean  # (8, 32)
    assert visual.std(unbiased=False).item() == pytest.approx(text_std.item(), rel=1e-5)
    # 6-d centroids in a 32-d space: the projection keeps every axis, so distances are preserved up to one scale
    centroids = torch.as_tensor(visual_tokenizer.centroids(space="working"), dtype=torch.float64)
    ratio = torch.pdist(visual) / torch.pdist(centroids)
    assert (ratio.max() - ratio.min()).item() <= 1e-5 * ratio.mean().item()

    # the output layer is the input embedding (same storage), its bias extends the checkpoint's with zeros
    decoder = tiny_model.get_output_embeddings()
    assert decoder.weight.data_ptr() == tiny_model.get_input_embeddings().weight.data_ptr()
    assert decoder.bias.data_ptr() == tiny_model.cls.predictions.bias.data_ptr()
    torch.testing.assert_close(tiny_model.cls.predictions.bias[:TEXT_VOCAB], text.cls.predictions.bias, atol=0, rtol=0)
    assert not tiny_model.cls.predictions.bias[TEXT_VOCAB:].any()
    # BERT's heads come along: MLM transform and next-sentence head (= alignment head)
    torch.testing.assert_close(
        tiny_model.cls.predictions.transform.dense.weight, text.cls.predictions.transform.dense.weight, atol=0, rtol=0
    )
    torch.testing.assert_close(tiny_model.cls.seq_relationship.weight, text.cls.seq_relationship.weight, atol=0, rtol=0)


def test_vocabulary_extension_random(minilm_model):
    text_embeddings = BertModel.from_pretrained(default_text_checkpoint()).get_input_embeddings().weight.detach()
    embeddings = minilm_model.get_input_embeddings().weight.detach()
    assert embeddings.shape == (30522 + 1 + 144, 384)
    torch.testing.assert_close(embeddings[:30522], text_embeddings, atol=0, rtol=0)
    mean = text_embeddings.mean(0)
    visual = embeddings[minilm_model.config.visual_token_offset :] - mean  # (144, 384)
    assert visual.std().item() == pytest.approx((text_embeddings - mean).std().item(), rel=0.05)
    assert visual.mean(0).abs().max().item() < 4 * (text_embeddings - mean).std().item() / 144**0.5 + 1e-6
    assert minilm_model.config.visual_vocab_hash is None and minilm_model.visual_tokenizer is None


def test_from_text_checkpoint_argument_errors(tiny_bert_dir, visual_tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="needs a visual_tokenizer or a visual_vocab_size"):
        VideoBertForPreTraining.from_text_checkpoint(tiny_bert_dir)
    with pytest.raises(ConfigError, match="centroids"):
        VideoBertForPreTraining.from_text_checkpoint(tiny_bert_dir, visual_vocab_size=8)
    with pytest.raises(ConfigError, match="visual_vocab_size=9"):
        VideoBertForPreTraining.from_text_checkpoint(
            tiny_bert_dir, visual_tokenizer=visual_tokenizer, visual_vocab_size=9
        )
    with pytest.raises(ConfigError, match="no config.json"):
        VideoBertForPreTraining.from_text_checkpoint(tmp_path, visual_vocab_size=8, visual_init="random")
    with pytest.raises(ConfigError, match="no such directory"):
        VideoBertForPreTraining.from_text_checkpoint(tmp_path / "missing", visual_vocab_size=8, visual_init="random")


# ---------------------------------------------------------------------------------------------- heads and losses


def masked_batch(model: VideoBertForPreTraining):
    batch = model.tokenizer.batch_encode(
        ["cut the tomato into the pan", "pour water", None], [[1, 2, 3], None, [4, 5, 6, 7]]
    )
    generator = torch.Generator().manual_seed(0)
    real = batch["attention_mask"].bool()
    masked = (torch.rand(batch["input_ids"].shape, generator=generator) < 0.4) & real
    masked[:, 1] = True  # every sequence has at least one target
    labels = torch.where(masked, batch["input_ids"], torch.full_like(batch["input_ids"], -100))
    batch["input_ids"] = torch.where(masked, torch.full_like(labels, MASK), batch["input_ids"])
    return batch, labels


def test_masked_positions_only_logits_give_the_full_loss(tiny_model):
    batch, labels = masked_batch(tiny_model)
    vocab = tiny_model.config.vocab_size
    with torch.no_grad():
        full = tiny_model(**batch)
        fast = tiny_model(**batch, labels=labels)
        both = tiny_model(**batch, labels=labels, return_full_logits=True)
    assert full.loss is None and full.mlm_loss is None and full.prediction_logits.shape == (*labels.shape, vocab)
    reference = F.cross_entropy(full.prediction_logits.view(-1, vocab), labels.view(-1))  # ignore_index=-100
    masked = labels != -100
    assert fast.prediction_logits.shape == (masked.sum().item(), vocab)
    torch.testing.assert_close(fast.prediction_logits, full.prediction_logits[masked], atol=1e-5, rtol=0)
    assert fast.mlm_loss.item() == pytest.approx(reference.item(), abs=1e-5)
    assert fast.loss.item() == pytest.approx(reference.item(), abs=1e-5) and fast.alignment_loss is None
    assert both.prediction_logits.shape == full.prediction_logits.shape
    assert both.mlm_loss.item() == pytest.approx(reference.item(), abs=1e-5)

    nothing_masked = tiny_model(**batch, labels=torch.full_like(labels, -100))
    assert nothing_masked.mlm_loss.item() == 0.0  # not NaN: the other objectives still train


def test_alignment_head(tiny_model):
    batch, labels = masked_batch(tiny_model)
    alignment_labels = torch.tensor([ALIGNED, -100, NOT_ALIGNED])  # the text-only example has no pair
    out = tiny_model(**batch, alignment_labels=alignment_labels)
    assert out.alignment_logits.shape == (3, 2)
    assert out.mlm_loss is None
    expected = F.cross_entropy(out.alignment_logits[[0, 2]], torch.tensor([ALIGNED, NOT_ALIGNED]))
    assert out.alignment_loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-6)

    out = tiny_model(**batch, labels=labels, alignment_labels=alignment_labels, output_hidden_states=True)
    assert out.loss.item() == pytest.approx(out.mlm_loss.item() + out.alignment_loss.item(), abs=1e-6)
    assert len(out.hidden_states) == tiny_model.config.num_hidden_layers + 1
    out.loss.backward()
    assert tiny_model.cls.seq_relationship.weight.grad is not None
    tiny_model.zero_grad(set_to_none=True)
    assert tiny_model(**batch).loss is None
    as_tuple = tiny_model(**batch, return_dict=False)
    assert isinstance(as_tuple, tuple) and as_tuple[1].shape == (3, 2)  # (prediction_logits, alignment_logits)


# ---------------------------------------------------------------------------------------------- model directories


def test_save_and_load_round_trip(tiny_model, visual_tokenizer, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    files = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "visual_vocab/config.json")
    for name in files:
        assert (tmp_path / name).is_file(), name
    loaded = VideoBertForPreTraining.from_pretrained(tmp_path).eval()
    saved_fields = {k: v for k, v in tiny_model.config.to_dict().items() if k != "_name_or_path"}
    assert saved_fields.items() <= loaded.config.to_dict().items()
    assert loaded.visual_tokenizer.content_hash == visual_tokenizer.content_hash
    assert loaded.get_output_embeddings().weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()

    batch, labels = masked_batch(tiny_model)
    assert loaded.tokenizer.batch_encode(["cut the tomato"], [[1]])["input_ids"].tolist() == \
        tiny_model.tokenizer.batch_encode(["cut the tomato"], [[1]])["input_ids"].tolist()  # fmt: skip
    with torch.no_grad():
        before = tiny_model(**batch, labels=labels, alignment_labels=torch.tensor([0, 1, 0]))
        after = loaded(**batch, labels=labels, alignment_labels=torch.tensor([0, 1, 0]))
        base = VideoBertModel.from_pretrained(tmp_path).eval()(**batch)
        auto = AutoModelForPreTraining.from_pretrained(tmp_path).eval()(**batch)
    torch.testing.assert_close(after.prediction_logits, before.prediction_logits, atol=0, rtol=0)
    torch.testing.assert_close(after.alignment_logits, before.alignment_logits, atol=0, rtol=0)
    assert before.loss.item() == after.loss.item()
    torch.testing.assert_close(auto.alignment_logits, before.alignment_logits, atol=0, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(base.last_hidden_state, tiny_model.bert(**batch).last_hidden_state, atol=0, rtol=0)


def test_a_directory_without_tokenizer_files_is_refused_where_a_tokenizer_is_needed(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    assert require_tokenizer(VideoBertForPreTraining.from_pretrained(tmp_path), tmp_path) is not None
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).unlink()
    bare = VideoBertForPreTraining.from_pretrained(tmp_path)  # the weights alone still load
    with pytest.raises(ConfigError, match=f"{tmp_path}: no text tokenizer files"):
        require_tokenizer(bare, tmp_path)


def test_wrong_visual_vocabulary_is_refused(tiny_model, visual_tokenizer, tmp_path):
    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    other = fit_visual_tokenizer(seed=1)
    assert other.content_hash != visual_tokenizer.content_hash
    with pytest.raises(ConfigError) as excinfo:
        VideoBertForPreTraining.from_pretrained(model_dir, visual_tokenizer=other)
    assert other.content_hash in str(excinfo.value) and visual_tokenizer.content_hash in str(excinfo.value)

    work = tmp_path / "work"
    other.save_pretrained(work / "vocab")
    with pytest.raises(ConfigError, match=visual_tokenizer.content_hash):
        visual_tokenizer_from_work_dir(work, tiny_model.config)
    visual_tokenizer.save_pretrained(work / "vocab")
    assert visual_tokenizer_from_work_dir(work, tiny_model.config).content_hash == visual_tokenizer.content_hash


def test_checkpoint_kinds_are_not_confused(tiny_model, tiny_bert_dir, tmp_path):
    tiny_model.save_pretrained(tmp_path / "videobert")
    with pytest.raises(ConfigError, match="already a VideoBERT model"):
        VideoBertForPreTraining.from_text_checkpoint(tmp_path / "videobert", visual_vocab_size=8, visual_init="random")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="model_type is 'bert'.*from_text_checkpoint"):
        VideoBertForPreTraining.from_pretrained(tiny_bert_dir)
    with pytest.raises(ConfigError, match="no config.json"):
        VideoBertForPreTraining.from_pretrained(tmp_path / "empty")
    with pytest.raises(ConfigError, match="no config.json"):
        VideoBertTokenizer.from_pretrained(tmp_path / "empty")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "config.json").write_text('{"model_type": "videob')  # truncated
    with pytest.raises(ConfigError, match=r"corrupt/config.json: unreadable"):
        VideoBertForPreTraining.from_pretrained(tmp_path / "corrupt")
    (tmp_path / "corrupt" / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"corrupt/config.json: not a JSON object"):
        VideoBertForCaptioning.from_pretrained(tmp_path / "corrupt")
