"""Zero-shot action classification: label pieces, template filling, exact scores and Table 1 numbers from a model
whose logits the test sets, parity with a real tiny model, and the `evaluate` stage end to end on MiniCook (both
tasks, the paper-style outputs, and the failures a user can run into)."""
from __future__ import annotations

import math
import shutil
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from transformers import BertTokenizer

from videobert.data.synth import NOUNS, VERBS
from videobert.model import VideoBertConfig, VideoBertForPreTraining, VideoBertTokenizer
from videobert.tasks.evaluate import evaluate
from videobert.tasks.zeroshot import LabelSet, fill_template, split_template, template_scores, zero_shot
from videobert.tokenizer.hkmeans import VisualTokenizer, VisualVocabConfig
from videobert.utils.errors import ConfigError, InputError
from videobert.utils.io import read_json
from checkpoints import save_tiny_bert

# The template's words and every MiniCook verb and noun, except that tomato and potato are split by WordPiece.
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "now", "let", "me", "show", "you", "how", "to", "the",
         *VERBS, *(n for n in NOUNS if n not in ("tomato", "potato")), "tom", "pot", "##ato"]  # fmt: skip
ID = {w: i for i, w in enumerate(WORDS)}
T = len(WORDS)  # text ids; [>] = T, [V0] = T + 1
MASK = ID["[MASK]"]
TEMPLATE = "now let me show you how to [MASK] the [MASK]"


@pytest.fixture(scope="module")
def text_tokenizer():
    return BertTokenizer(vocab=ID)


@pytest.fixture(scope="module")
def tokenizer(text_tokenizer):
    config = VideoBertConfig(text_vocab_size=T, visual_vocab_size=4, hidden_size=32, num_attention_heads=4,
                             cls_token_id=ID["[CLS]"], sep_token_id=ID["[SEP]"], mask_token_id=MASK,
                             pad_token_id=ID["[PAD]"])  # fmt: skip
    return VideoBertTokenizer(text_tokenizer, config)


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    """A random 2-layer BERT (hidden 32) in BERT's pretraining layout with a WordPiece vocabulary of WORDS."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), ID)


# ---------------------------------------------------------------------------------------------- labels, template


def test_label_set_sorts_tokenizes_and_indexes(text_tokenizer):
    labels = LabelSet.from_values(["tomato", None, " egg", "", "tomato", "onion"], text_tokenizer)
    assert labels.names == ("egg", "onion", "tomato")
    assert labels.pieces == ((ID["egg"],), (ID["onion"],), (ID["tom"], ID["##ato"]))
    assert labels.index(["onion", None, "tomato ", ""]).tolist() == [1, -1, 2, -1]
    groups = labels.groups()
    assert sorted(groups) == [1, 2]
    assert groups[1][0].tolist() == [0, 1] and groups[2][1].tolist() == [[ID["tom"], ID["##ato"]]]
    with pytest.raises(ValueError, match="not among"):
        labels.index(["bread"])
    with pytest.raises(ValueError, match="no labels"):
        LabelSet.from_values([None, " "], text_tokenizer)


def test_template_slots():
    assert fill_template(TEMPLATE, "[MASK]", 2, 1) == "now let me show you how to [MASK] [MASK] the [MASK]"
    assert fill_template(TEMPLATE, "[MASK]", 1, 3) == "now let me show you how to [MASK] the [MASK] [MASK] [MASK]"
    for bad in ("now let me show you how to [MASK] it", "[MASK] [MASK] the [MASK]"):
        with pytest.raises(ConfigError, match="exactly two"):
            split_template(bad, "[MASK]")


# ---------------------------------------------------------------------------------------------- known logits

VERB_LABELS = ["cut", "peel", "stir", "fry", "add", "roll", "wash"]
NOUN_LABELS = ["egg", "onion", "tomato"]  # tomato = tom ##ato
# Four segments: their visual tokens (the stand-in model reads the first one) and gold labels.
VISUAL = [[0, 1], [1], [2, 2, 2], [3]]
GOLD_VERBS = ["cut", "peel", "stir", "fry"]
GOLD_NOUNS = ["egg", "tomato", "onion", "tomato"]

# Logits at the j-th of the n [MASK]s of a slot, keyed (first visual word or None without video, slot, n, j);
# words not named score 0.
LOGITS = {
    (0, "verb", 1, 0): {"cut": 3},
    (1, "verb", 1, 0): {"cut": 3, "stir": 2, "add": 1, "peel": 0.5},  # gold peel: rank 4
    (2, "verb", 1, 0): {"stir": 1, "peel": 1},  # gold stir ties with peel: rank 2
    (3, "verb", 1, 0): {"cut": 1, "peel": 1, "stir": 1, "add": 1, "roll": 1},  # gold fry ties with wash: rank 7
    (None, "verb", 1, 0): {"cut": 2, "peel": 1, "stir": -1, "fry": -1, "add": -1, "roll": -1, "wash": -1},
    (0, "noun", 1, 0): {"egg": 2, "onion": 1},
    (0, "noun", 2, 0): {"tom": 1},
    (0, "noun", 2, 1): {"##ato": 1},
    (1, "noun", 1, 0): {"egg": 1, "onion": 1},
    (1, "noun", 2, 0): {"tom": 4},
    (1, "noun", 2, 1): {"##ato": 4},
    (2, "noun", 1, 0): {"onion": 1, "egg": 2},
    # Segment 3: each piece of tomato at -0.93, egg at -1.27. The mean ranks tomato first; the sum (-1.87) would
    # rank egg first.
    (3, "noun", 1, 0): {"egg": 2.5},
    (3, "noun", 2, 0): {"tom": 3},
    (3, "noun", 2, 1): {"##ato": 3},
    (None, "noun", 1, 0): {"onion": 1},
}


def logit_row(config: VideoBertConfig, key: tuple) -> torch.Tensor:
    row = torch.zeros(config.vocab_size)
    for word, value in LOGITS.get(key, {}).items():
        row[ID[word]] = value
    # A visual word the slot cannot hold; it must not take part in the normalisation.
    row[config.visual_token_offset] = 50.0
    return row


def expected_score(config: VideoBertConfig, visual: int | None, slot: str, label: str) -> float:
    """Mean over the label's pieces of the log-softmax over the text vocabulary, read off LOGITS by hand."""
    pieces = {"tomato": ["tom", "##ato"]}.get(label, [label])
    rows = [logit_row(config, (visual, slot, len(pieces), j))[:T].log_softmax(-1) for j in range(len(pieces))]
    return float(np.mean([row[ID[p]].item() for row, p in zip(rows, pieces)]))


class KnownLogits:
    """Stands in for `VideoBertForPreTraining`: the masked-token logits of each [MASK] come from LOGITS."""

    def __init__(self, config: VideoBertConfig):
        self.config = config
        self.inputs: list[torch.Tensor] = []

    def __call__(self, input_ids, attention_mask, token_type_ids, labels):
        assert torch.equal(labels != -100, input_ids == MASK), "exactly the [MASK]s are scored"
        self.inputs.append(input_ids)
        rows = []
        for ids in input_ids.tolist():
            visual = [self.config.id_to_visual_token(i) for i in ids if self.config.is_visual(i)]
            masks = [p for p, i in enumerate(ids) if i == MASK]
            the = ids.index(ID["the"])
            for slot, positions in (("verb", [p for p in masks if p < the]), ("noun", [p for p in masks if p > the])):
                for j in range(len(positions)):
                    rows.append(logit_row(self.config, (visual[0] if visual else None, slot, len(positions), j)))
        return SimpleNamespace(prediction_logits=torch.stack(rows))  # (num_masked, vocab), row-major


@pytest.fixture
def labels(text_tokenizer):
    return LabelSet.from_values(VERB_LABELS, text_tokenizer), LabelSet.from_values(NOUN_LABELS, text_tokenizer)


def test_template_scores_are_mean_piece_log_probs(tokenizer, labels):
    verbs, nouns = labels
    examples = [*VISUAL, None]
    verb_scores, noun_scores = template_scores(KnownLogits(tokenizer.config), tokenizer, examples, verbs, nouns)
    assert verb_scores.shape == (5, 7) and noun_scores.shape == (5, 3)
    for row, visual in enumerate(examples):
        first = visual[0] if visual else None
        for slot, scores, names in (("verb", verb_scores, verbs.names), ("noun", noun_scores, nouns.names)):
            expected = [expected_score(tokenizer.config, first, slot, name) for name in names]
            np.testing.assert_allclose(scores[row], expected, rtol=1e-6)
    # Segment 3: the two-piece tomato wins by its mean log-probability, where the sum would lose to egg.
    tomato = [expected_score(tokenizer.config, 3, "noun", "tomato")] * 2
    assert noun_scores[3].argmax() == nouns.names.index("tomato")
    assert sum(tomato) < noun_scores[3, nouns.names.index("egg")] < np.mean(tomato)


def test_batching_does_not_change_scores(tokenizer, labels):
    model = KnownLogits(tokenizer.config)
    one_batch = template_scores(model, tokenizer, VISUAL, *labels, batch_size=64)
    # Two layouts per segment, (1, 1) for every verb and egg / onion and (1, 2) for tomato: 8 inputs in all.
    assert [len(batch) for batch in model.inputs] == [8]
    model.inputs.clear()
    small_batches = template_scores(model, tokenizer, VISUAL, *labels, batch_size=3)
    assert [len(batch) for batch in model.inputs] == [3, 3, 2]
    for a, b in zip(one_batch, small_batches):
        np.testing.assert_array_equal(a, b)


def test_zero_shot_table(tokenizer, labels):
    results = zero_shot(KnownLogits(tokenizer.config), tokenizer, VISUAL, GOLD_VERBS, GOLD_NOUNS, *labels)
    # Gold ranks, video: verbs 1, 4, 2, 7 and nouns 1, 1, 2, 1; prior: verbs 1, 2, 7, 7 and nouns 3, 2, 1, 2.
    assert results == {
        "language_prior": {"verb_top1": 0.25, "verb_top5": 0.5, "noun_top1": 0.25, "noun_top5": 1.0},
        "videobert": {"verb_top1": 0.25, "verb_top5": 0.75, "noun_top1": 0.75, "noun_top5": 1.0},
    }


def test_missing_gold_labels_leave_the_example_out_of_that_slot(tokenizer, labels):
    results = zero_shot(KnownLogits(tokenizer.config), tokenizer, VISUAL, ["cut", None, None, "fry"],
                        GOLD_NOUNS, *labels)  # fmt: skip
    assert results["videobert"]["verb_top1"] == 0.5  # ranks 1 and 7
    assert results["videobert"]["noun_top1"] == 0.75
    with pytest.raises(ValueError, match="no example has a verb label"):
        zero_shot(KnownLogits(tokenizer.config), tokenizer, VISUAL, [None] * 4, GOLD_NOUNS, *labels)


def test_inputs_video_and_language_prior(tokenizer, labels):
    model = KnownLogits(tokenizer.config)
    template_scores(model, tokenizer, [[2, 3]], *labels)
    words = "[CLS] now let me show you how to".split()
    first = model.inputs[0][0]  # layout (1, 1), padded to the (1, 2) input of the same batch
    assert tokenizer.convert_ids_to_tokens(first[first != 0]) == [
        *words, "[MASK]", "the", "[MASK]", "[>]", "[V2]", "[V3]", "[SEP]"
    ]  # fmt: skip

    model.inputs.clear()
    template_scores(model, tokenizer, [None], *labels)
    (prior,) = model.inputs
    assert (prior < T).all(), "the language prior sees no [>] and no visual word"
    assert [tokenizer.convert_ids_to_tokens(row[row != 0]) for row in prior] == [
        [*words, "[MASK]", "the", "[MASK]", "[SEP]"],
        [*words, "[MASK]", "the", "[MASK]", "[MASK]", "[SEP]"],
    ]


def test_template_that_loses_its_masks_fails(tokenizer, labels):
    with pytest.raises(ConfigError, match="does not keep"):
        # Longer than the model's 512 positions: the end of the text, with its slots, is cut off.
        template = "now " * 600 + "[MASK] the [MASK]"
        template_scores(KnownLogits(tokenizer.config), tokenizer, VISUAL, *labels, template=template)


# ---------------------------------------------------------------------------------------------- a real tiny model


def test_template_scores_match_a_direct_forward_pass(tiny_bert_dir, text_tokenizer):
    torch.manual_seed(0)
    model = VideoBertForPreTraining.from_text_checkpoint(tiny_bert_dir, visual_vocab_size=4, visual_init="random")
    model.eval()
    verbs = LabelSet.from_values(["cut", "peel"], text_tokenizer)
    nouns = LabelSet.from_values(["egg", "tomato", "potato"], text_tokenizer)
    examples = [[0, 1, 2], None, [3]]
    with torch.inference_mode():
        verb_scores, noun_scores = template_scores(model, model.tokenizer, examples, verbs, nouns, batch_size=3)
        for row, visual in enumerate(examples):
            for slot, scores, label_set in (("verb", verb_scores, verbs), ("noun", noun_scores, nouns)):
                for column, pieces in enumerate(label_set.pieces):
                    masks = (len(pieces), 1) if slot == "verb" else (1, len(pieces))
                    encoded = model.tokenizer.encode(fill_template(TEMPLATE, "[MASK]", *masks), visual)
                    inputs = {key: torch.tensor([value]) for key, value in encoded.items()}
                    logits = model(**inputs).prediction_logits[0]  # (seq, vocab): every position, no padding
                    positions = (inputs["input_ids"][0] == MASK).nonzero().flatten().tolist()
                    positions = positions[: masks[0]] if slot == "verb" else positions[masks[0] :]
                    log_probs = logits[positions, :T].log_softmax(-1)  # (pieces, text_vocab)
                    expected = log_probs[range(len(pieces)), list(pieces)].mean().item()
                    assert math.isclose(scores[row, column], expected, rel_tol=1e-5, abs_tol=1e-6)


# ---------------------------------------------------------------------------------------------- evaluate, end to end


@pytest.fixture(scope="module")
def minicook_model(minicook_work, tiny_bert_dir, tmp_path_factory):
    """A random tiny VideoBERT over the MiniCook work dir's visual vocabulary, saved as a model directory."""
    torch.manual_seed(0)
    visual_tokenizer = VisualTokenizer.from_pretrained(minicook_work / "vocab")
    model = VideoBertForPreTraining.from_text_checkpoint(tiny_bert_dir, visual_tokenizer=visual_tokenizer)
    directory = tmp_path_factory.mktemp("minicook_model")
    model.save_pretrained(directory)
    return directory


def test_evaluate_zeroshot(minicook_model, minicook_work, capsys):
    report = evaluate(minicook_model, minicook_work, task="zeroshot", batch_size=16)
    path = minicook_model / "eval" / "zeroshot-test" / "metrics.json"
    assert report.outputs == {"metrics": str(path)}
    metrics = read_json(path)
    assert metrics["task"] == "zeroshot" and metrics["split"] == "test" and metrics["template"] == TEMPLATE
    assert 0 < metrics["evaluated"] == report.done <= metrics["segments"]
    assert metrics["segments"] == metrics["evaluated"] + metrics["segments_without_video"]
    assert 2 <= metrics["verb_labels"] <= len(VERBS) and 2 <= metrics["noun_labels"] <= len(NOUNS)
    assert set(metrics["methods"]) == {"language_prior", "videobert"}
    for row in metrics["methods"].values():
        assert set(row) == {"verb_top1", "verb_top5", "noun_top1", "noun_top5"}
        assert all(0 <= value <= 1 for value in row.values())
        assert row["verb_top1"] <= row["verb_top5"] and row["noun_top1"] <= row["noun_top5"]
    assert report.stats["methods.videobert.verb_top5"] == metrics["methods"]["videobert"]["verb_top5"]
    table = capsys.readouterr().out
    assert "language prior" in table and "cross modal" in table and "object top-5" in table


def test_evaluate_retrieval(minicook_model, minicook_work, tmp_path, capsys):
    report = evaluate(minicook_model, minicook_work, task="retrieval", split="test", max_candidates=6, seed=1,
                      out=tmp_path / "retrieval")  # fmt: skip
    metrics = read_json(tmp_path / "retrieval" / "metrics.json")
    assert metrics["pool"] == metrics["evaluated"] == report.done == 6
    assert (metrics["max_candidates"], metrics["seed"]) == (6, 1)
    assert set(metrics["methods"]) == {"alignment", "embedding", "likelihood"}
    assert 2 <= metrics["distinct_captions"] <= 6
    for directions in metrics["methods"].values():
        assert set(directions) == {"text_to_video", "video_to_text"}
        for row in directions.values():
            assert set(row) == {"r1", "r5", "r10", "median_rank"}
            assert 0 <= row["r1"] <= row["r5"] <= row["r10"] == 1.0  # a pool of 6 puts every item in the top 10
            assert 1 <= row["median_rank"] <= 6
            assert row["r1"] * metrics["distinct_captions"] == pytest.approx(round(row["r1"] * metrics["distinct_captions"]))
    assert "median rank" in capsys.readouterr().out
    # The seeded subsample is reproducible.
    again = evaluate(minicook_model, minicook_work, task="retrieval", max_candidates=6, seed=1, out=tmp_path / "again")
    assert again.stats == report.stats


def test_evaluate_rejects_a_model_of_another_vocabulary(minicook_work, tiny_bert_dir, tmp_path):
    features = np.random.default_rng(0).normal(size=(1500, 4)).astype(np.float32)
    other = VisualTokenizer(VisualVocabConfig(k=12, depth=2, seed=1)).fit(features, threads=1)  # 144 words as well
    VideoBertForPreTraining.from_text_checkpoint(tiny_bert_dir, visual_tokenizer=other).save_pretrained(tmp_path / "m")
    with pytest.raises(ConfigError, match="hash"):
        evaluate(tmp_path / "m", minicook_work, out=tmp_path / "eval")
    assert not (tmp_path / "eval").exists()


def test_evaluate_rejects_unknown_task_empty_split_and_bad_template(minicook_model, minicook_work, tmp_path):
    with pytest.raises(ConfigError, match="unknown task 'captioning'"):
        evaluate(minicook_model, minicook_work, task="captioning", out=tmp_path)
    with pytest.raises(InputError, match="no annotated segments in split 'dev'.*test"):
        evaluate(minicook_model, minicook_work, split="dev", out=tmp_path)
    with pytest.raises(ConfigError, match="exactly two"):
        evaluate(minicook_model, minicook_work, template="how to [MASK] it", out=tmp_path)
    assert not (tmp_path / "metrics.json").exists()


def test_evaluate_needs_clips_inside_the_segments(minicook_model, minicook_work, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(minicook_work / "vocab", work / "vocab")
    shutil.copy(minicook_work / "segments.parquet", work)
    tokens = pq.read_table(minicook_work / "tokens.parquet")  # keeps the vocabulary hash in its metadata
    test_videos = pa.array(sorted({s["video"] for s in pq.read_table(work / "segments.parquet").to_pylist()
                                   if s["split"] == "test"}))  # fmt: skip
    pq.write_table(tokens.filter(pc.invert(pc.is_in(tokens["video"], test_videos))), work / "tokens.parquet")
    with pytest.raises(InputError, match="no clip lies inside any of the .* segments of split 'test'"):
        evaluate(minicook_model, work, out=tmp_path / "eval")


@pytest.mark.parametrize("task", ["qa", "forecast"])
def test_evaluate_dispatches_qa_and_forecast(minicook_model, minicook_work, tmp_path, task):
    report = evaluate(minicook_model, minicook_work, task=task, out=tmp_path / task, device="cpu")
    metrics = read_json(tmp_path / task / "metrics.json")
    assert report.ok and report.done > 0 and metrics


def test_evaluate_zeroshot_with_candidates_from_one_split(minicook_model, minicook_work, tmp_path):
    """Candidates from one split (the paper's YouCook2 protocol takes the training split's; here val, whose 20
    segments miss some of MiniCook's labels): a test label outside them is left out of that slot and counted."""
    from videobert.data.ingest import load_segments

    segments = load_segments(minicook_work).to_pylist()
    evaluate(minicook_model, minicook_work, task="zeroshot", labels_from="val", batch_size=16, out=tmp_path)
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics["labels_from"] == "val"
    for slot in ("verb", "noun"):
        candidates = {s[slot] for s in segments if s["split"] == "val"}
        assert metrics[f"{slot}_labels"] == len(candidates)
        assert metrics[f"{slot}_unseen"] == sum(s["split"] == "test" and s[slot] not in candidates for s in segments)
    assert metrics["verb_unseen"] + metrics["noun_unseen"] > 0
