"""Video QA: question generation from a hand-made annotations table (exact questions, answers, windows, candidates,
narration fallback, determinism), the visual context of each window, alignment scoring and its loss on a tiny model,
accuracies and baselines from known scores, and the evaluate / finetune stages end to end on MiniCook with a
checkpoint that round-trips."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from videobert.data.synth import NOUNS, VERBS
from videobert.model import VideoBertForPreTraining
from videobert.tasks.qa import (
    KINDS,
    Question,
    QADataset,
    accuracy_by_kind,
    baselines,
    build_qa,
    choice_loss,
    choice_scores,
    evaluate_qa,
    exact_match_by_kind,
    finetune_qa,
    load_questions,
    most_frequent_answers,
    open_ended_examples,
    past_participle,
)
from videobert.tasks.retrieval import alignment_similarity
from videobert.utils.errors import ConfigError
from videobert.utils.io import read_json
from checkpoints import save_tiny_videobert

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "now", "let", "me", "show", "you", "how", "to", "the", "what",
         "is", "being", "done", "happens", "after", "before", "and", "then", "?", *VERBS, *NOUNS]  # fmt: skip


def table(rows: list[tuple]) -> pa.Table:
    """segments.parquet rows from (video, start, end, verb, noun, split) tuples."""
    names = ["video", "start", "end", "verb", "noun", "split"]
    columns = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    return pa.table({**columns, "caption": [None] * len(rows)})


# Video a (test) is listed out of time order; video b (train) gives the pools their other answers.
SEGMENTS = table([
    ("a", 3.0, 6.0, "fry", "egg", "test"),
    ("a", 0.0, 3.0, "cut", "tomato", "test"),
    ("a", 6.0, 9.0, "peel", "onion", "test"),
    ("b", 0.0, 2.0, "stir", "apple", "train"),
    ("b", 2.0, 4.0, "wash", "fish", "train"),
])  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base_dir(minicook_work, tmp_path_factory):
    """A random tiny VideoBERT (2 layers, hidden 32) over the MiniCook visual vocabulary."""
    return save_tiny_videobert(tmp_path_factory.mktemp("tiny_qa"), minicook_work / "vocab", WORDS)


# ---------------------------------------------------------------------------------------------- questions


def test_past_participles_from_the_table_and_the_regular_rule():
    assert [past_participle(v) for v in VERBS] == [
        "cut", "poured", "stirred", "peeled", "fried", "added", "rolled", "washed"
    ]  # fmt: skip
    assert [past_participle(v) for v in ("bake", "play", "chop", "grind", " Boil ")] == [
        "baked", "played", "chopped", "ground", "boiled"
    ]  # fmt: skip


def test_questions_answers_and_windows_follow_the_steps_of_each_video():
    dataset = build_qa(SEGMENTS, None, "test", seed=0, num_choices=3)
    got = [(q.kind, q.video, q.step, q.question, q.answer, q.start, q.end) for q in dataset.questions]
    assert got == [
        ("object", "a", 0, "what is being cut?", "tomato", 0.0, 3.0),
        ("action", "a", 0, "what is done to the tomato?", "cut", 0.0, 3.0),
        ("next", "a", 0, "what happens after the tomato is cut?", "fry the egg", 0.0, 6.0),
        ("object", "a", 1, "what is being fried?", "egg", 3.0, 6.0),
        ("action", "a", 1, "what is done to the egg?", "fry", 3.0, 6.0),
        ("next", "a", 1, "what happens after the egg is fried?", "peel the onion", 3.0, 9.0),
        ("before", "a", 1, "what happens before the egg is fried?", "cut the tomato", 0.0, 6.0),
        ("object", "a", 2, "what is being peeled?", "onion", 6.0, 9.0),
        ("action", "a", 2, "what is done to the onion?", "peel", 6.0, 9.0),
        ("before", "a", 2, "what happens before the onion is peeled?", "fry the egg", 3.0, 9.0),
    ]  # fmt: skip
    assert dataset.counts() == {"object": 3, "action": 3, "next": 2, "before": 2}
    assert {q.source for q in dataset.questions} == {"annotation"}
    # Video b's steps are asked only in its own split, and never as the next step of video a.
    train = build_qa(SEGMENTS, None, "train", seed=0, num_choices=3)
    assert {q.video for q in train.questions} == {"b"}
    assert [(q.kind, q.answer) for q in train.questions if q.kind in ("next", "before")] == [
        ("next", "wash the fish"), ("before", "stir the apple")
    ]  # fmt: skip


def test_candidates_come_from_the_same_kind_and_never_repeat_the_gold_answer():
    pools = {
        "object": {"tomato", "egg", "onion", "apple", "fish"},
        "action": {"cut", "fry", "peel", "stir", "wash"},
        "next": {"cut the tomato", "fry the egg", "peel the onion", "stir the apple", "wash the fish"},
    }
    pools["before"] = pools["next"]
    for num_choices, expected in ((3, 3), (4, 4), (9, 5)):  # at most the 5 distinct answers of each kind
        for seed in range(5):
            for q in build_qa(SEGMENTS, None, "test", seed=seed, num_choices=num_choices).questions:
                assert len(q.candidates) == len(set(q.candidates)) == expected
                assert q.candidates[q.gold] == q.answer and q.candidates.count(q.answer) == 1
                assert set(q.candidates) <= pools[q.kind]
    q = build_qa(SEGMENTS, None, "test", seed=0, num_choices=3).questions[2]  # next: after the tomato is cut
    assert q.statements == tuple(f"cut the tomato and then {c}" for c in q.candidates)
    assert q.texts("question") == tuple(f"what happens after the tomato is cut? {c}" for c in q.candidates)
    before = build_qa(SEGMENTS, None, "test", seed=0, num_choices=3).questions[6]
    assert before.statements == tuple(f"{c} and then fry the egg" for c in before.candidates)
    with pytest.raises(ConfigError, match="unknown form"):
        q.texts("cloze")


def test_generation_is_deterministic_and_the_seed_moves_the_distractors():
    first = build_qa(SEGMENTS, None, "test", seed=3, num_choices=3)
    assert first == build_qa(SEGMENTS, None, "test", seed=3, num_choices=3)
    shuffled = SEGMENTS.take(np.array([4, 2, 0, 3, 1]))  # row order of the table does not matter
    assert first == build_qa(shuffled, None, "test", seed=3, num_choices=3)
    other = build_qa(SEGMENTS, None, "test", seed=4, num_choices=3)
    assert [q.answer for q in other.questions] == [q.answer for q in first.questions]
    assert [q.candidates for q in other.questions] != [q.candidates for q in first.questions]
    with pytest.raises(ConfigError, match="num_choices"):
        build_qa(SEGMENTS, None, "test", num_choices=1)


def test_missing_labels_come_from_unambiguous_narration():
    segments = table([
        ("a", 0.0, 3.0, "cut", None, "test"),     # the narration names one known noun: tomato
        ("a", 3.0, 6.0, None, "egg", "test"),     # it names two known verbs: no verb
        ("a", 6.0, 9.0, "pour", None, "test"),    # a label of two words
        ("b", 0.0, 3.0, "fry", "apple", "train"),
        ("b", 3.0, 6.0, "peel", "tomato", "train"),
        ("b", 6.0, 9.0, "pour", "olive oil", "train"),
    ])  # fmt: skip
    sentences = pa.table({
        "video": ["a", "a", "a", "b"], "start": [0.5, 3.5, 6.5, 0.0], "end": [2.5, 5.5, 8.5, 6.0],
        "text": ["now we cut the Tomato, nicely", "fry it or peel it", "pour in the olive oil", "fry the egg"],
    })  # fmt: skip
    dataset = build_qa(segments, sentences, "test", seed=0, num_choices=2)
    assert [(q.kind, q.step, q.question, q.answer, q.source) for q in dataset.questions] == [
        ("object", 0, "what is being cut?", "tomato", "narration"),
        ("action", 0, "what is done to the tomato?", "cut", "narration"),
        ("object", 2, "what is being poured?", "olive oil", "narration"),
        ("action", 2, "what is done to the olive oil?", "pour", "narration"),
    ]  # fmt: skip
    assert [(q.kind, q.answer) for q in build_qa(segments, None, "test", num_choices=2).questions] == []


def test_a_kind_with_a_single_answer_gives_no_question():
    segments = table([("a", 0.0, 1.0, "cut", "egg", "test"), ("a", 1.0, 2.0, "cut", "fish", "test")])
    dataset = build_qa(segments, None, "test", num_choices=4)
    assert dataset.counts() == {"object": 2, "next": 1, "before": 1}


def test_visual_context_is_the_clips_of_the_window(tmp_path):
    tokens = pa.table({
        "video": ["a"] * 7 + ["b"],
        "clip": pa.array([0, 1, 2, 3, 4, 5, 6, 0], pa.int32()),
        "start": [0.0, 1.5, 3.0, 4.5, 6.0, 7.5, 9.0, 0.0],
        "end": [1.5, 3.0, 4.5, 6.0, 7.5, 9.0, 10.5, 1.5],
        "token": pa.array([10, 11, 12, 13, 14, 15, 16, 20], pa.int32()),
    })  # fmt: skip
    pq.write_table(tokens, tmp_path / "tokens.parquet")
    dataset = build_qa(SEGMENTS, None, "test", seed=0, num_choices=3)
    seen = dataset.with_visual(tmp_path / "tokens.parquet")
    assert seen.without_video == 0 and len(seen) == len(dataset)
    by_question = {(q.kind, q.step): v.tolist() for q, v in zip(seen.questions, seen.visual)}
    assert by_question[("object", 0)] == [10, 11]  # clip midpoints 0.75 and 2.25 lie in [0, 3)
    assert by_question[("next", 0)] == [10, 11, 12, 13]  # steps 0 and 1: [0, 6)
    assert by_question[("before", 2)] == [12, 13, 14, 15]  # steps 1 and 2: [3, 9)
    pq.write_table(tokens.slice(0, 2), tmp_path / "short.parquet")  # only the clips of step 0
    seen = dataset.with_visual(tmp_path / "short.parquet")
    assert {(q.kind, q.step) for q in seen.questions} == {("object", 0), ("action", 0), ("next", 0), ("before", 1)}
    assert seen.without_video == len(dataset) - 4
    examples = open_ended_examples(seen)
    assert examples.texts[0] == "what is being cut?" and examples.targets[0] == "tomato"
    assert examples.visual[0].tolist() == [10, 11] and len(examples) == 4
    with pytest.raises(ValueError, match="with_visual"):
        open_ended_examples(dataset)


# ---------------------------------------------------------------------------------------------- scoring


def _dataset_with(questions: list[Question], visual: list[list[int]]) -> QADataset:
    return QADataset(questions, [np.asarray(v) for v in visual])


def _question(kind: str, candidates: tuple[str, ...], gold: int) -> Question:
    return Question(kind, "a", 0, 0.0, 1.0, "what is being cut?", candidates[gold], candidates,
                    tuple(f"cut the {c}" for c in candidates), gold)  # fmt: skip


def test_choice_scores_are_the_alignment_log_odds_of_each_pair(base_dir):
    model = VideoBertForPreTraining.from_pretrained(base_dir).eval()
    dataset = _dataset_with(
        [_question("object", ("egg", "tomato", "fish"), 1), _question("object", ("apple", "onion"), 0)],
        [[1, 2, 3], [4]],
    )
    with torch.inference_mode():
        scores = choice_scores(model, model.tokenizer, dataset, "statement", batch_size=2)
        one_by_one = choice_scores(model, model.tokenizer, dataset, "statement", batch_size=1)
        for q, visual, got in zip(dataset.questions, dataset.visual, scores):
            expected = alignment_similarity(model, model.tokenizer, list(q.statements), [visual])[:, 0]
            np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [len(s) for s in scores] == [3, 2]
    for a, b in zip(scores, one_by_one):
        np.testing.assert_allclose(a, b, atol=1e-5)

    # The loss is the cross-entropy of each question's own candidates (ragged counts padded away).
    loss = choice_loss(model, model.tokenizer, dataset, "statement")
    expected = np.mean([-torch.log_softmax(torch.tensor(s), 0)[q.gold].item()
                        for q, s in zip(dataset.questions, scores)])  # fmt: skip
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_accuracy_per_kind_and_baselines_from_known_scores():
    questions = [
        _question("object", ("egg", "tomato", "fish"), 1),
        _question("object", ("egg", "tomato", "fish"), 0),
        _question("action", ("cut", "fry"), 0),
        _question("next", ("cut the egg", "fry the egg", "peel the egg", "wash the egg"), 3),
    ]
    dataset = QADataset(questions)
    scores = [np.array([0.1, 0.9, 0.0]), np.array([0.5, 0.5, 0.1]), np.array([2.0, 1.0]), np.array([0, 0, 0, 1.0])]
    # Question 2 ties its gold answer with another: counted wrong.
    assert accuracy_by_kind(dataset, scores) == {"object": 0.5, "action": 1.0, "next": 1.0, "overall": 0.75}
    train = QADataset([_question("object", ("fish", "egg"), 0), _question("object", ("fish", "tomato"), 0),
                       _question("object", ("egg", "tomato"), 0), _question("action", ("fry", "cut"), 0)])  # fmt: skip
    result = baselines(dataset, train)
    assert result["chance"] == pytest.approx({"object": 1 / 3, "action": 0.5, "next": 0.25,
                                              "overall": (2 / 3 + 0.5 + 0.25) / 4})  # fmt: skip
    # Train answers: object fish x2, egg x1; action fry. Prior picks fish (q1, q2 wrong), fry (wrong), none (tie).
    assert result["answer_prior"] == {"object": 0.0, "action": 0.0, "next": 0.0, "overall": 0.0}
    flipped = QADataset([questions[0], _question("action", ("cut", "fry"), 1)])
    assert baselines(flipped, train)["answer_prior"] == {"object": 0.0, "action": 1.0, "overall": 0.5}


def test_training_candidates_keep_the_gold_answer_and_draw_distractors():
    dataset = build_qa(SEGMENTS, None, "test", seed=0, num_choices=5)
    rng = np.random.default_rng(0)
    drawn = set()
    for _ in range(20):
        fewer = dataset.sample_candidates(2, rng)
        for full, q in zip(dataset.questions, fewer.questions):
            assert len(q.candidates) == 2 and q.candidates[q.gold] == full.answer == q.answer
            assert set(q.candidates) <= set(full.candidates)
            assert q.statements == tuple(full.statements[full.candidates.index(c)] for c in q.candidates)
        drawn.add(fewer.questions[0].candidates)
    assert len(drawn) == 4  # every distractor of the first question is drawn at some point
    assert dataset.sample_candidates(9, rng).questions == dataset.questions


def test_exact_match_and_the_most_frequent_answer():
    questions = [_question("object", ("egg", "tomato"), 1), _question("object", ("egg", "fish"), 0),
                 _question("action", ("cut", "fry"), 0)]  # fmt: skip
    dataset = QADataset(questions)
    assert exact_match_by_kind(dataset, [" Tomato", "fish", "cut"]) == {"object": 0.5, "action": 1.0,
                                                                        "overall": 2 / 3}  # fmt: skip
    train = QADataset([_question("object", ("fish", "egg"), 1), _question("object", ("tomato", "egg"), 0),
                       _question("object", ("egg", "fish"), 0)])  # fmt: skip
    # Objects: egg twice, tomato once; no action answer in train.
    assert most_frequent_answers(dataset, train) == ["egg", "egg", ""]


# ---------------------------------------------------------------------------------------------- stages


def test_evaluate_and_finetune_qa_end_to_end_with_a_checkpoint_that_round_trips(base_dir, minicook_work, tmp_path):
    report = evaluate_qa(base_dir, minicook_work, split="test", num_choices=4, out=tmp_path / "zero", device="cpu")
    metrics = read_json(tmp_path / "zero" / "metrics.json")
    assert metrics["task"] == "qa" and metrics["split"] == "test" and metrics["num_choices"] == 4
    assert set(metrics["methods"]) == {"chance", "answer_prior", "alignment"}
    assert set(metrics["questions"]) == set(KINDS)
    assert report.done == metrics["evaluated"] == sum(metrics["questions"].values())
    for row in metrics["methods"].values():
        assert set(row) == {*KINDS, "overall"} and all(0 <= v <= 1 for v in row.values())
    assert metrics["methods"]["chance"]["object"] == pytest.approx(0.25)
    dataset = load_questions(minicook_work, minicook_work / "tokens.parquet", "test", 0, 4)
    assert metrics["questions"] == dataset.counts()
    assert all(q.kind not in ("next", "before") or q.end > q.start for q in dataset.questions)

    out = tmp_path / "finetuned"
    report = finetune_qa(base_dir, minicook_work, out, epochs=2, batch_size=8, learning_rate=1e-3, num_choices=4,
                         train_choices=3, form="question", device="cpu")  # fmt: skip
    metrics = read_json(out / "metrics.json")
    assert set(metrics["methods"]) == {"chance", "answer_prior", "zero_shot", "finetuned"}
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] <= 2
    assert set(metrics["questions"]) == {"train", "val", "test"}
    assert report.outputs["checkpoint"] == str(out / "model")
    # The saved model is a VideoBERT model directory: evaluating it reproduces the fine-tuned test accuracy.
    evaluate_qa(out / "model", minicook_work, num_choices=4, form="question", out=tmp_path / "again", device="cpu")
    again = read_json(tmp_path / "again" / "metrics.json")
    assert again["methods"]["alignment"] == metrics["methods"]["finetuned"]
    reloaded = VideoBertForPreTraining.from_pretrained(out / "model")
    pretrained = VideoBertForPreTraining.from_pretrained(base_dir)
    assert not torch.equal(reloaded.cls.seq_relationship.weight, pretrained.cls.seq_relationship.weight)
    # Frozen: the word embeddings (and the masked-token decoder tied to them) are the pretrained ones.
    assert torch.equal(reloaded.get_input_embeddings().weight, pretrained.get_input_embeddings().weight)


def test_open_ended_qa_end_to_end_with_a_checkpoint_that_round_trips(base_dir, minicook_work, tmp_path):
    report = finetune_qa(base_dir, minicook_work, tmp_path, answers="open", epochs=1, batch_size=32, device="cpu")
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics["answers"] == "open" and set(metrics["methods"]) == {"answer_prior", "finetuned"}
    assert metrics["epochs_run"] == metrics["best_epoch"] == 1
    assert report.done == sum(metrics["questions"]["test"].values())
    for row in metrics["methods"].values():
        assert set(row) == {*KINDS, "overall"} and all(0 <= v <= 1 for v in row.values())
    evaluate_qa(tmp_path / "model", minicook_work, out=tmp_path / "again", device="cpu")
    again = read_json(tmp_path / "again" / "metrics.json")
    assert again["answers"] == "open" and again["methods"]["generated"] == metrics["methods"]["finetuned"]
    assert again["methods"]["answer_prior"] == metrics["methods"]["answer_prior"]


def test_qa_stages_reject_bad_options(base_dir, minicook_work, tmp_path):
    with pytest.raises(ConfigError, match="unknown form"):
        evaluate_qa(base_dir, minicook_work, form="cloze", out=tmp_path)
    with pytest.raises(ConfigError, match="epochs"):
        finetune_qa(base_dir, minicook_work, tmp_path, epochs=0)
    with pytest.raises(ConfigError, match="unknown answers"):
        finetune_qa(base_dir, minicook_work, tmp_path, answers="free")
    with pytest.raises(ConfigError, match="train_choices"):
        finetune_qa(base_dir, minicook_work, tmp_path, train_choices=6)
