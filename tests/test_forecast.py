"""Next-step forecasting: examples built from a hand-made annotations and tokens table (exact contexts and targets,
step order, no step across videos, context limits), the masked next-token input and its scores on a tiny model, the
metrics and priors from known scores, and the evaluate / finetune stages end to end on MiniCook with a checkpoint
that round-trips."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from videobert.data.ingest import load_segments
from videobert.data.synth import NOUNS, VERBS
from videobert.model import VideoBertForPreTraining
from videobert.tasks.finetune import evaluate_examples
from videobert.tasks.forecast import (
    ForecastExamples,
    build_forecast,
    classification_examples,
    context_budget,
    evaluate_forecast,
    finetune_forecast,
    label_accuracy,
    label_priors,
    next_token_log_probs,
    token_accuracy,
    token_prior,
)
from videobert.tasks.peft_methods import load_finetuned
from videobert.tasks.zeroshot import LabelSet
from videobert.utils.errors import ConfigError
from videobert.utils.io import read_json
from checkpoints import save_tiny_videobert

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "now", "let", "me", "show", "you", "how", "to", "the",
         *VERBS, *NOUNS]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base_dir(minicook_work, tmp_path_factory):
    """A random tiny VideoBERT (2 layers, hidden 32, 64 positions) over the MiniCook visual vocabulary."""
    return save_tiny_videobert(tmp_path_factory.mktemp("tiny_forecast"), minicook_work / "vocab", WORDS)


def segments_table(rows: list[tuple]) -> pa.Table:
    names = ["video", "start", "end", "verb", "noun", "split"]
    return pa.table({name: [row[i] for row in rows] for i, name in enumerate(names)})


@pytest.fixture
def annotated(tmp_path):
    """Video a (test): four steps listed out of order, one unlabelled and one without a clip; video b (test): one
    step; video c (train): two steps. Clip k of a video spans [1.5k, 1.5(k+1)) and has token 10 * video + k."""
    segments = segments_table([
        ("a", 3.0, 6.0, "fry", "egg", "test"),
        ("a", 0.0, 3.0, "cut", "tomato", "test"),
        ("a", 6.0, 6.5, "stir", "fish", "test"),     # no clip midpoint in [6, 6.5): not a step
        ("a", 7.5, 10.5, "peel", "onion", "test"),
        ("a", 10.5, 12.0, None, "egg", "test"),      # no verb: not a step
        ("b", 0.0, 3.0, "wash", "apple", "test"),
        ("c", 0.0, 3.0, "cut", "egg", "train"),
        ("c", 3.0, 6.0, "fry", "egg", "train"),
    ])  # fmt: skip
    clips = {"a": 8, "b": 2, "c": 4}
    base = {"a": 100, "b": 200, "c": 300}
    tokens = pa.table({
        "video": [v for v, n in clips.items() for _ in range(n)],
        "clip": pa.array([k for n in clips.values() for k in range(n)], pa.int32()),
        "start": [1.5 * k for n in clips.values() for k in range(n)],
        "end": [1.5 * (k + 1) for n in clips.values() for k in range(n)],
        "token": pa.array([base[v] + k for v, n in clips.items() for k in range(n)], pa.int32()),
    })  # fmt: skip
    pq.write_table(tokens, tmp_path / "tokens.parquet")
    return segments, tmp_path / "tokens.parquet"


# ---------------------------------------------------------------------------------------------- examples


def test_examples_follow_the_steps_of_each_video(annotated):
    segments, tokens = annotated
    examples = build_forecast(segments, tokens, "test")
    # Steps of a: cut tomato [100, 101], fry egg [102, 103], peel onion [105, 106] (clip 4 at 6.75 is in none).
    assert examples.videos == ["a", "a"] and examples.steps == [1, 2]
    assert [c.tolist() for c in examples.context] == [[100, 101], [100, 101, 102, 103]]
    assert [t.tolist() for t in examples.target] == [[102, 103], [105, 106]]
    assert (examples.verbs, examples.nouns) == (["fry", "peel"], ["egg", "onion"])
    assert (examples.last_verbs, examples.last_nouns) == (["cut", "fry"], ["tomato", "egg"])
    train = build_forecast(segments, tokens, "train")
    assert train.videos == ["c"] and [c.tolist() for c in train.context] == [[300, 301]]
    assert [c.tolist() for c in build_forecast(segments, tokens, "test", context_steps=1).context] == [
        [100, 101], [102, 103]
    ]  # fmt: skip
    assert [c.tolist() for c in build_forecast(segments, tokens, "test", max_context_tokens=3).context] == [
        [100, 101], [101, 102, 103]
    ]  # fmt: skip
    assert len(build_forecast(segments, tokens, "val")) == 0
    with pytest.raises(ConfigError, match="at least 0"):
        build_forecast(segments, tokens, "test", context_steps=-1)


# ---------------------------------------------------------------------------------------------- zero-shot


def test_masked_next_tokens_are_read_after_the_context(base_dir):
    model = VideoBertForPreTraining.from_pretrained(base_dir).eval()
    tokenizer, config = model.tokenizer, model.config
    contexts = [np.array([3, 4, 5]), np.array([7]), np.arange(100) % config.visual_vocab_size]
    with torch.inference_mode():
        scores = next_token_log_probs(model, tokenizer, contexts, num_masks=2, batch_size=2)
        assert scores.shape == (3, 2, config.visual_vocab_size)
        np.testing.assert_allclose(np.exp(scores).sum(axis=-1), 1.0, atol=1e-5)
        budget = context_budget(config, 2)
        assert budget == 64 - 5
        for context, got in zip(contexts, scores):
            # The input by hand: [CLS] [>] last `budget` context tokens [MASK] [MASK] [SEP], masks typed visual.
            kept = [config.visual_token_to_id(int(v)) for v in context[-budget:]]
            ids = [config.cls_token_id, config.visual_separator_token_id, *kept, config.mask_token_id,
                   config.mask_token_id, config.sep_token_id]  # fmt: skip
            types = [0, 0] + [1] * (len(ids) - 2)
            logits = model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types]),
                           attention_mask=torch.ones(1, len(ids), dtype=torch.long)).prediction_logits[0]  # fmt: skip
            expected = logits[-3:-1, config.visual_token_offset :].log_softmax(dim=-1).numpy()
            np.testing.assert_allclose(got, expected, atol=1e-4)
    with pytest.raises(ConfigError, match="num_masks"):
        next_token_log_probs(model, tokenizer, contexts, num_masks=0)


def test_token_accuracy_and_the_frequency_prior_from_known_scores():
    scores = np.zeros((2, 2, 6))
    scores[0, 0] = [0, 5, 4, 3, 2, 1]  # target 1: rank 1
    scores[0, 1] = [5, 4, 3, 2, 1, 0]  # target 5: rank 6
    scores[1, 0] = [1, 1, 1, 1, 1, 1]  # target 2: a tie with everything, rank 6
    # Example 1's target has one token: its second mask is not scored.
    assert token_accuracy(scores, [np.array([1, 5]), np.array([2])], ks=(1, 5)) == {"top1": 1 / 3, "top5": 1 / 3}
    train = ForecastExamples(["c", "c"], [1, 2], [np.array([0])] * 2, [np.array([2, 2, 3]), np.array([4])],
                             ["cut", "cut"], ["egg", "egg"], ["fry", "fry"], ["egg", "egg"])  # fmt: skip
    prior = token_prior(train, num_masks=2, visual_vocab_size=6, examples=3)
    assert prior.shape == (3, 2, 6) and prior[2, 1].tolist() == [0, 0, 2, 0, 1, 0]  # the third token is not counted


def test_label_priors_count_next_steps_and_follow_the_last_step():
    from transformers import BertTokenizer

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cut", "fry", "peel", "egg"])}
    tokenizer = BertTokenizer(vocab=vocab)
    labels = {"verb": LabelSet.from_values(["cut", "fry", "peel"], tokenizer),
              "noun": LabelSet.from_values(["egg"] * 2, tokenizer)}  # fmt: skip

    def examples(pairs):  # (last verb, next verb)
        n = len(pairs)
        return ForecastExamples(["v"] * n, list(range(1, n + 1)), [np.array([0])] * n, [np.array([0])] * n,
                                [b for _, b in pairs], ["egg"] * n, [a for a, _ in pairs], ["egg"] * n)  # fmt: skip

    train = examples([("cut", "fry"), ("cut", "fry"), ("fry", "peel"), ("peel", "peel"), ("fry", "peel")])
    test = examples([("cut", "fry"), ("fry", "cut"), ("peel", "peel")])
    priors = label_priors(train, test, labels)
    # Next verbs in train: fry 2, peel 3 -> the frequency prior ranks peel, fry, cut.
    assert priors["frequency_prior"]["verb"].tolist() == [[0, 2, 3]] * 3
    # After cut: fry twice; after fry: peel twice; after peel: peel once (ties broken by frequency).
    assert priors["last_step_prior"]["verb"].argmax(axis=1).tolist() == [1, 2, 2]
    accuracy = label_accuracy(priors["last_step_prior"], test, labels)
    assert accuracy["verb_top1"] == pytest.approx(2 / 3) and accuracy["noun_top1"] == 1.0  # the only noun
    assert label_accuracy(priors["frequency_prior"], test, labels)["verb_top1"] == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------------------------- stages


def test_evaluate_forecast_end_to_end(base_dir, minicook_work, tmp_path):
    report = evaluate_forecast(base_dir, minicook_work, num_masks=2, out=tmp_path, device="cpu")
    metrics = read_json(tmp_path / "metrics.json")
    segments = load_segments(minicook_work)
    test_steps = [v for v, s in zip(segments["video"].to_pylist(), segments["split"].to_pylist()) if s == "test"]
    expected = sum(test_steps.count(v) - 1 for v in set(test_steps))  # every MiniCook step has clips and labels
    assert report.done == metrics["examples"] == expected
    assert set(metrics["tokens"]) == {"frequency_prior", "videobert"}
    assert set(metrics["labels"]) == {"frequency_prior", "last_step_prior", "language_prior", "videobert"}
    for row in [*metrics["tokens"].values(), *metrics["labels"].values()]:
        assert all(0 <= value <= 1 for value in row.values())
        assert row.get("top1", 0) <= row.get("top5", 1) and row.get("verb_top1", 0) <= row.get("verb_top5", 1)


def test_finetune_forecast_end_to_end_with_a_checkpoint_that_round_trips(base_dir, minicook_work, tmp_path):
    report = finetune_forecast(base_dir, minicook_work, tmp_path, epochs=2, batch_size=16, learning_rate=1e-3,
                               max_context_tokens=20, device="cpu")  # fmt: skip
    metrics = read_json(tmp_path / "metrics.json")
    assert set(metrics["labels"]) == {"frequency_prior", "last_step_prior", "finetuned"}
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] <= 2
    assert report.done == metrics["examples"]["test"] > 0
    # Reloading the checkpoint reproduces the test scores, hence the reported accuracy.
    model = load_finetuned(tmp_path).eval()
    segments = load_segments(minicook_work)
    test = build_forecast(segments, minicook_work / "tokens.parquet", "test", max_context_tokens=20)
    labels = {slot: LabelSet.from_values(segments[slot].to_pylist(), model.tokenizer.text_tokenizer)
              for slot in ("verb", "noun")}  # fmt: skip
    data = classification_examples(test, labels, context_budget(model.config), model.targets)
    _, scores = evaluate_examples(model, model.tokenizer, data, 16, 64, torch.device("cpu"))
    assert label_accuracy(scores, test, labels) == metrics["labels"]["finetuned"]
    assert model.config.classification_labels == {slot: list(labels[slot].names) for slot in ("verb", "noun")}
