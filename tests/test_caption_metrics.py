"""Captioning metrics: hand-computed BLEU / ROUGE-L / CIDEr cases that pycocoevalcap reproduces, METEOR through Java,
the Java-free subset, and the paper-style Table 3."""
from __future__ import annotations

import math

import pytest

from videobert.tasks import caption_metrics
from videobert.tasks.caption_metrics import (
    METRICS,
    CaptionScorer,
    caption_scores,
    find_java,
    format_table3,
    simple_tokenize,
    table3_cells,
)

needs_java = pytest.mark.skipif(find_java() is None, reason="METEOR and the PTB tokenizer need a Java runtime")

# BLEU: pycocoevalcap adds 1e-15 / 1e-9 to every n-gram precision's numerator / denominator, hence approx.
BLEU_TOLERANCE = 1e-7


@pytest.fixture(scope="module")
def scorer():
    """One scorer for the module: METEOR's jar takes seconds to load its paraphrase table."""
    with CaptionScorer() as shared:
        yield shared


@pytest.fixture
def no_java(monkeypatch):
    monkeypatch.setattr(caption_metrics, "find_java", lambda: None)


def partial_overlap(scores):
    # candidate "a b c d e" against reference "a b c d f": n-gram precisions 4/5, 3/4, 2/3, 1/2, equal lengths (no
    # brevity penalty). BLEU-3 = (4/5 * 3/4 * 2/3)^(1/3) = 0.4^(1/3); BLEU-4 = (0.4 * 1/2)^(1/4) = 0.2^(1/4).
    # ROUGE-L: LCS 4, precision = recall = 0.8, so F = 0.8. CIDEr: with one segment every n-gram occurs in every
    # reference set, idf = log(1) - log(1) = 0, so every vector is 0 and CIDEr is 0.
    assert scores["bleu3"] == pytest.approx(0.4 ** (1 / 3), abs=BLEU_TOLERANCE)
    assert scores["bleu4"] == pytest.approx(0.2**0.25, abs=BLEU_TOLERANCE)
    assert scores["rouge_l"] == pytest.approx(0.8, abs=1e-12)
    assert scores["cider"] == 0.0


def test_identical_captions(scorer):
    refs = {0: ["a cat sat on the mat"], 1: ["the dog ran in the park"]}
    scores = scorer.score(refs, {0: "a cat sat on the mat", 1: "the dog ran in the park"})
    assert set(scores) == set(METRICS)
    assert scores["bleu3"] == pytest.approx(1.0, abs=BLEU_TOLERANCE)
    assert scores["bleu4"] == pytest.approx(1.0, abs=BLEU_TOLERANCE)
    assert scores["rouge_l"] == 1.0
    # CIDEr-D: each n-gram order's tf-idf vectors are identical (cosine 1, no length penalty) for n = 1..4, so each
    # segment scores mean(1, 1, 1, 1) * 10 = 10 ("the", in both segments, has idf 0 but leaves the others).
    assert scores["cider"] == pytest.approx(10.0, abs=1e-9)
    if scorer.java:
        assert scores["meteor"] == pytest.approx(1.0, abs=1e-9)


def test_partial_overlap_matches_hand_computation(scorer):
    partial_overlap(scorer.score({"x": ["a b c d f"]}, {"x": "a b c d e"}))


def test_brevity_penalty_and_rouge_recall(scorer):
    # candidate "a b c" against "a b c d e": precisions 1, 1, 1 up to trigrams; brevity penalty exp(1 - 5/3).
    # ROUGE-L: LCS 3, precision 1, recall 3/5: F = (1 + 1.2^2) * 1 * 0.6 / (0.6 + 1.2^2 * 1) = 1.464 / 2.04.
    scores = scorer.score({0: ["a b c d e"]}, {0: "a b c"})
    assert scores["bleu3"] == pytest.approx(math.exp(1 - 5 / 3), abs=BLEU_TOLERANCE)
    assert scores["rouge_l"] == pytest.approx(1.464 / 2.04, abs=1e-12)


def test_cider_matches_hand_computation(scorer):
    # Two segments, references "a b" and "c d": every n-gram has df 1, idf = log(2). Segment 1, candidate "a d":
    # unigram vectors (a, d) vs (a, b), both weighted log 2: cosine 1/2; no shared bigram; equal lengths. Segment
    # score mean(1/2, 0, 0, 0) * 10 = 1.25. Segment 2, exact: unigram and bigram cosines 1, no trigrams:
    # mean(1, 1, 0, 0) * 10 = 5. CIDEr = (1.25 + 5) / 2.
    scores = scorer.score({1: ["a b"], 2: ["c d"]}, {1: "a d", 2: "c d"})
    assert scores["cider"] == pytest.approx(3.125, abs=1e-9)


@needs_java
def test_meteor_orders_captions_and_ptb_tokenization_normalises(scorer):
    exact = scorer.score({0: ["peel the egg"]}, {0: "peel the egg"})["meteor"]
    partial = scorer.score({0: ["peel the egg"]}, {0: "peel the onion"})["meteor"]
    empty = scorer.score({0: ["peel the egg"]}, {0: ""})["meteor"]
    assert exact == pytest.approx(1.0) and 0.0 < partial < exact and empty == 0.0
    # The PTB path lower-cases and drops punctuation: these are the hand-computed partial-overlap scores.
    scores = scorer.score({"x": ["A b, c D f."]}, {"x": "a B c d e!"})
    partial_overlap(scores)
    assert scorer.tokenizer == "ptb"


def test_simple_tokenize_reproduces_the_ptb_tokens():
    # What pycocoevalcap's PTBTokenizer returns for the same sentences.
    assert simple_tokenize("It's a Dog, isn't it?") == "it 's a dog is n't it"
    assert simple_tokenize("Cut the Tomato.") == "cut the tomato"
    assert simple_tokenize("a well-known  step -- then: stir!") == "a well-known step then stir"


def test_without_java_warns_and_reports_the_java_free_subset(no_java):
    with pytest.warns(RuntimeWarning, match="no `java` on PATH"):
        scores = caption_scores({"x": ["A b, c D f."]}, {"x": "a B c d e!"})
    assert scores["meteor"] is None
    partial_overlap(scores)
    with pytest.warns(RuntimeWarning):
        assert CaptionScorer().tokenizer == "simple"


def test_bad_inputs_raise(scorer):
    with pytest.raises(ValueError, match="no captions"):
        scorer.score({}, {})
    with pytest.raises(ValueError, match="differ in ids: 1 without a candidate"):
        scorer.score({0: ["a"], 1: ["b"]}, {0: "a"})
    with pytest.raises(ValueError, match="at least one reference"):
        scorer.score({0: []}, {0: "a"})


def test_table3_uses_the_paper_convention():
    paper = {"bleu3": 0.0733, "bleu4": 0.0433, "meteor": 0.1194, "rouge_l": 0.288, "cider": 0.55}
    header, body = table3_cells({"VideoBERT + S3D": paper, "no java": {**paper, "meteor": None}})
    assert header == ["method", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]
    assert body == [["VideoBERT + S3D", "7.33", "4.33", "11.94", "28.80", "0.55"],
                    ["no java", "7.33", "4.33", "-", "28.80", "0.55"]]  # fmt: skip
    lines = format_table3({"VideoBERT + S3D": paper}).splitlines()
    assert lines[0] == "| method | BLEU-3 | BLEU-4 | METEOR | ROUGE-L | CIDEr |"
    assert lines[2] == "| VideoBERT + S3D | 7.33 | 4.33 | 11.94 | 28.80 | 0.55 |"
