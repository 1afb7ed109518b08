"""Video question answering: questions generated from the annotated steps, answered by multiple choice or by
generating the answer.

Question types (`KINDS`), for a step t of a video (its segments ordered by start time are its steps)::

    kind     question                                        answer                  visual context window
    object   what is being {verb pp}?                        the noun of t           step t
    action   what is done to the {noun}?                     the verb of t           step t
    next     what happens after the {noun} is {verb pp}?     "{verb} the {noun}"     steps t and t+1
                                                             of step t+1
    before   what happens before the {noun} is {verb pp}?    the same of step t-1    steps t-1 and t

Which window
    A question is answered from its visual tokens, so the window must show the answer; otherwise it would be
    forecasting (`tasks.forecast`), not question answering. `next` therefore sees from the start of the named step t
    to the end of step t+1 (the clips whose midpoint lies in it, gaps between the steps included), and `before` from
    the start of step t-1 to the end of step t: the named step is in view too, so "after" and "before" are a matter
    of order inside the window, and the answering step is never the only thing shown. Steps follow each other within
    one video only: the last step of a video has no `next` question and its first no `before`.

Answers and candidates
    Each question has `num_choices` candidates: the gold answer and distractors drawn without replacement, with
    `seed`, from the distinct answers of the same kind (nouns, verbs, or "{verb} the {noun}" step phrases) of the
    annotations of *every* split, so the candidates do not depend on which split is asked; a distractor is never
    equal to the gold answer. A kind with fewer distinct answers than `num_choices` offers all of them, and a kind
    with only one gives no question. The gold answer's position among the candidates is drawn too.

Labels from narration
    A segment without a verb (or noun) takes it from the narration when the transcript sentences whose midpoint lies
    in the segment mention exactly one of the verbs (nouns) of the annotations, as whole words (case ignored);
    otherwise questions that need the missing label are skipped. Such questions have `source` "narration".

Past participles
    `past_participle` looks the verb up in `PAST_PARTICIPLES` (the MiniCook verbs and common recipe verbs whose
    participle is irregular or doubles its last consonant) and falls back to the regular rule: +d after a final
    "e", "y" -> "ied" after a consonant, +ed otherwise.

Scoring a candidate
    Each candidate has a declarative *statement* ("cut the tomato", "cut the tomato and then fry the onion"), the
    kind of sentence the narration of a step is, which is what the alignment head saw in pretraining. `form`
    chooses the text scored against the window: ``statement``, or ``question`` (the question followed by the
    candidate: "what is being cut? tomato"). Zero-shot, a candidate's score is the alignment head's log-odds
    ``logit(ALIGNED) - logit(NOT_ALIGNED)`` of ``[CLS] text [>] visual tokens [SEP]`` (the ranking of P(aligned),
    as in `tasks.retrieval`). Fine-tuning trains the same score, encoder and alignment head (the word embeddings
    stay frozen, `tasks.supervised.freeze_word_embeddings`), with the cross-entropy of the softmax over a training
    question's gold answer and `train_choices - 1` of its distractors, drawn anew every epoch (a step costs one
    sequence per candidate, and over the epochs every distractor is seen); so the fine-tuned model is again a
    VideoBERT model directory that `evaluate_qa` reads as it reads a pretrained one. Accuracy is top-1 per kind and
    over all questions, always over all `num_choices` candidates, ties counted against the gold answer
    (`tasks.metrics`).

Baselines: ``chance`` (1 / number of candidates) and ``answer_prior``, which ranks the candidates by how often each
is the gold answer of a training question of the same kind (video and question unseen).

Open-ended answers
    The same questions, answered by generating text: `open_ended_examples` makes them `tasks.caption.Seq2SeqExamples`
    (text = the question, visual = the window's tokens, target = the answer) for the captioning model's
    encoder-decoder (`model.captioning`, encoder from the pretrained VideoBERT, a new BART decoder), trained with
    `train_seq2seq` and decoded greedily with `generate_texts`. Scored by exact match (case and spacing ignored);
    the baseline always gives the most frequent training answer of the question's kind.
"""
from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from videobert.data.ingest import load_segments
from videobert.model import ALIGNED, NOT_ALIGNED, VideoBertConfig, VideoBertForPreTraining, VideoBertTokenizer
from videobert.model.captioning import VideoBertCaptioningConfig, VideoBertForCaptioning
from videobert.model.configuration import directory_model_type, require_visual_words
from videobert.model.modeling import IGNORE_INDEX, require_tokenizer
from videobert.tasks.caption import Seq2SeqExamples, generate_texts, train_seq2seq
from videobert.tasks.evaluate import segment_visual_tokens
from videobert.tasks.metrics import gold_ranks
from videobert.tasks.supervised import (
    check_training_options,
    checked_tokens,
    fit,
    freeze_word_embeddings,
    print_table,
)
from videobert.tasks.zeroshot import encode_batch, model_device
from videobert.tokenizer.quality import segment_clip_index
from videobert.utils.device import resolve_device
from videobert.utils.errors import ConfigError, InputError
from videobert.utils.io import read_parquet, write_json
from videobert.utils.stage import StageReport, flatten
from videobert.workdir import WorkDir

logger = logging.getLogger(__name__)

KINDS = ("object", "action", "next", "before")
FORMS = ("statement", "question")
ANSWERS = ("choice", "open")
# Most epochs when not given; early stopping on the val loss usually ends a run sooner. Multiple choice: 2 epochs left
# the demo's model at 0.69 overall, 10 (stopped after 9) reached 0.82 (BENCHMARKS.md, "Video QA").
DEFAULT_EPOCHS = {"choice": 10, "open": 3}
DEFAULT_LEARNING_RATES = {"choice": 1e-4, "open": 5e-4}
OPEN_DECODER_LAYERS = 2
# Decoder positions of an open-ended answer: the start token, at most "verb the noun" in WordPieces, the end token.
ANSWER_POSITIONS = 16
METRICS_FILE = "metrics.json"
MODEL_DIR = "model"

PAST_PARTICIPLES = {
    "cut": "cut", "put": "put", "set": "set", "spread": "spread", "let": "let", "beat": "beaten",
    "break": "broken", "freeze": "frozen", "grind": "ground", "shake": "shaken", "take": "taken", "hold": "held",
    "stir": "stirred", "chop": "chopped", "dip": "dipped", "drop": "dropped", "whip": "whipped", "pat": "patted",
    "trim": "trimmed", "skim": "skimmed", "rub": "rubbed", "scrub": "scrubbed", "slit": "slit", "shred": "shredded",
}  # fmt: skip


def past_participle(verb: str) -> str:
    """The past participle of `verb`: `PAST_PARTICIPLES`, else the regular rule (module docstring)."""
    verb = verb.strip().lower()
    if verb in PAST_PARTICIPLES:
        return PAST_PARTICIPLES[verb]
    if verb.endswith("e"):
        return verb + "d"
    if len(verb) > 1 and verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ied"
    return verb + "ed"


def step_phrase(verb: str, noun: str) -> str:
    """How a step is named as an answer: "cut the tomato"."""
    return f"{verb} the {noun}"


@dataclass(frozen=True)
class Question:
    """One question about a step of a video, with its multiple-choice candidates."""

    kind: str
    """One of KINDS."""
    video: str
    """Video id, as in segments.parquet."""
    step: int
    """Position of the step the question names among its video's steps (0-based, in time order)."""
    start: float
    """Start of the visual context window, in seconds."""
    end: float
    """End of the visual context window, in seconds."""
    question: str
    """The question's text, e.g. "what happens after the tomato is cut?"."""
    answer: str
    """The gold answer: a noun, a verb or a step phrase ("fry the egg")."""
    candidates: tuple[str, ...]
    """The answers to choose from, the gold one at `gold`."""
    statements: tuple[str, ...]
    """The declarative sentence of each candidate ("cut the tomato and then fry the onion")."""
    gold: int
    """Index of `answer` in `candidates`."""
    source: str = "annotation"
    """"annotation", or "narration" when a label it uses came from the transcript."""

    def texts(self, form: str) -> tuple[str, ...]:
        """The text scored against the window for each candidate under `form` (one of FORMS)."""
        if form == "statement":
            return self.statements
        if form == "question":
            return tuple(f"{self.question} {candidate}" for candidate in self.candidates)
        raise ConfigError(f"unknown form {form!r}; choose one of {', '.join(FORMS)}")


@dataclass
class QADataset:
    """Questions and, once `with_visual` has read them, the visual tokens of each question's window."""

    questions: list[Question]
    visual: list[np.ndarray] | None = None
    without_video: int = 0
    """Questions left out by `with_visual` because no clip lies in their window."""

    def __len__(self) -> int:
        return len(self.questions)

    def subset(self, rows: Sequence[int]) -> "QADataset":
        visual = None if self.visual is None else [self.visual[i] for i in rows]
        return QADataset([self.questions[i] for i in rows], visual, self.without_video)

    def counts(self) -> dict[str, int]:
        """Kind -> number of questions, in the order of KINDS."""
        found = Counter(q.kind for q in self.questions)
        return {kind: found[kind] for kind in KINDS if found[kind]}

    def windows(self) -> pa.Table:
        """(video, start, end) of every question's context window, in question order."""
        return pa.table({
            "video": [q.video for q in self.questions],
            "start": pa.array([q.start for q in self.questions], pa.float64()),
            "end": pa.array([q.end for q in self.questions], pa.float64()),
        })  # fmt: skip

    def sample_candidates(self, count: int, rng: np.random.Generator) -> "QADataset":
        """The same questions, each with its gold answer and at most `count - 1` of its distractors drawn at random
        (in their original order)."""
        questions = []
        for q in self.questions:
            distractors = [i for i in range(len(q.candidates)) if i != q.gold]
            drawn = rng.choice(distractors, size=min(count - 1, len(distractors)), replace=False)
            keep = sorted([q.gold, *drawn.tolist()])
            questions.append(replace(
                q, candidates=tuple(q.candidates[i] for i in keep), statements=tuple(q.statements[i] for i in keep),
                gold=keep.index(q.gold),
            ))  # fmt: skip
        return QADataset(questions, self.visual, self.without_video)

    def with_visual(self, tokens_path: str | Path) -> "QADataset":
        """The questions whose window holds at least one clip, with the visual words of those clips in clip order
        (`tasks.evaluate.segment_visual_tokens`)."""
        visual = segment_visual_tokens(Path(tokens_path), self.windows()) if self.questions else []
        keep = [i for i, v in enumerate(visual) if len(v)]
        return QADataset([self.questions[i] for i in keep], [visual[i] for i in keep], len(self) - len(keep))


@dataclass
class _Step:
    video: str
    start: float
    end: float
    split: str | None
    verb: str | None
    noun: str | None
    narrated: set[str] = field(default_factory=set)  # which of verb / noun came from the narration


def build_qa(
    segments: pa.Table, sentences: pa.Table | None, split: str, seed: int = 0, *, num_choices: int = 5
) -> QADataset:
    """The questions about the steps of `split` (module docstring), in video order, then step order, then KINDS.

    `segments` has the columns of segments.parquet (video, start, end, verb, noun, split); `sentences` those of
    sentences.parquet (video, start, end, text), or None for no narration. Deterministic given its arguments.
    """
    if num_choices < 2:
        raise ConfigError(f"num_choices must be at least 2 (the answer and a distractor), got {num_choices}")
    steps = _steps(segments, sentences)
    pools = {
        "object": sorted({s.noun for s in steps if s.noun}),
        "action": sorted({s.verb for s in steps if s.verb}),
        "next": sorted({step_phrase(s.verb, s.noun) for s in steps if s.verb and s.noun}),
    }
    pools["before"] = pools["next"]
    for kind, pool in pools.items():
        if len(pool) < 2:
            logger.warning("no %s questions: the annotations have %d distinct answer(s) of that kind", kind, len(pool))
    rng = np.random.default_rng(seed)
    questions: list[Question] = []
    by_video: dict[str, list[_Step]] = {}
    for s in steps:
        by_video.setdefault(s.video, []).append(s)
    for video, video_steps in by_video.items():
        for t, step in enumerate(video_steps):
            if step.split != split or not (step.verb and step.noun):
                continue
            pp = past_participle(step.verb)
            asked = [
                ("object", f"what is being {pp}?", step.noun, step, step),
                ("action", f"what is done to the {step.noun}?", step.verb, step, step),
            ]
            after = video_steps[t + 1] if t + 1 < len(video_steps) else None
            if after is not None and after.verb and after.noun:
                text = f"what happens after the {step.noun} is {pp}?"
                asked.append(("next", text, step_phrase(after.verb, after.noun), step, after))
            prior = video_steps[t - 1] if t > 0 else None
            if prior is not None and prior.verb and prior.noun:
                text = f"what happens before the {step.noun} is {pp}?"
                asked.append(("before", text, step_phrase(prior.verb, prior.noun), prior, step))
            for kind, text, answer, first, last in asked:
                if len(pools[kind]) < 2:
                    continue
                candidates = _candidates(answer, pools[kind], num_choices, rng)
                source = "narration" if first.narrated or last.narrated else "annotation"
                questions.append(Question(
                    kind=kind, video=video, step=t, start=first.start, end=last.end, question=text, answer=answer,
                    candidates=candidates, statements=tuple(_statement(kind, step, c) for c in candidates),
                    gold=candidates.index(answer), source=source,
                ))  # fmt: skip
    return QADataset(questions)


def _statement(kind: str, step: _Step, candidate: str) -> str:
    """The declarative sentence of `candidate` as the answer about `step`."""
    if kind == "object":
        return step_phrase(step.verb, candidate)
    if kind == "action":
        return step_phrase(candidate, step.noun)
    named = step_phrase(step.verb, step.noun)
    return f"{named} and then {candidate}" if kind == "next" else f"{candidate} and then {named}"


def _candidates(answer: str, pool: list[str], num_choices: int, rng: np.random.Generator) -> tuple[str, ...]:
    """`answer` and min(num_choices, len(pool)) - 1 distinct distractors from `pool`, in a random order."""
    others = [a for a in pool if a != answer]
    chosen = [others[i] for i in rng.choice(len(others), size=min(num_choices, len(pool)) - 1, replace=False)]
    chosen.insert(int(rng.integers(len(chosen) + 1)), answer)
    return tuple(chosen)


def _steps(segments: pa.Table, sentences: pa.Table | None) -> list[_Step]:
    """The segments as steps sorted by (video, start, end), missing labels filled from the narration where it is
    unambiguous (module docstring)."""
    segments = segments.sort_by([("video", "ascending"), ("start", "ascending"), ("end", "ascending")])
    rows = segments.select(["video", "start", "end", "split", "verb", "noun"]).to_pylist()
    steps = [
        _Step(r["video"], r["start"], r["end"], r["split"], _clean(r["verb"]), _clean(r["noun"])) for r in rows
    ]
    missing = [i for i, s in enumerate(steps) if not (s.verb and s.noun)]
    if sentences is None or not missing or sentences.num_rows == 0:
        return steps
    # Whole words (or phrases, for labels of several words), case ignored.
    known = {}
    for slot in ("verb", "noun"):
        labels = sorted({getattr(s, slot) for s in steps if getattr(s, slot)})
        known[slot] = {label: re.compile(rf"\b{re.escape(label.lower())}\b") for label in labels}
    texts = sentences["text"].to_pylist()
    for i, rows_in_window in zip(missing, segment_clip_index(sentences, segments.take(missing))):
        narration = " ".join(texts[j] for j in rows_in_window).lower()
        for slot in ("verb", "noun"):
            found = [label for label, pattern in known[slot].items() if pattern.search(narration)]
            if getattr(steps[i], slot) is None and len(found) == 1:
                setattr(steps[i], slot, found[0])
                steps[i].narrated.add(slot)
    return steps


def _clean(label: str | None) -> str | None:
    return label.strip() if label is not None and label.strip() else None


def open_ended_examples(dataset: QADataset) -> Seq2SeqExamples:
    """The sequence-to-sequence examples of open-ended QA of a dataset read `with_visual`: texts = the questions,
    visual = their windows' tokens, targets = the answers."""
    if dataset.visual is None:
        raise ValueError("open-ended examples need the visual tokens: call with_visual first")
    return Seq2SeqExamples(
        [q.question for q in dataset.questions], list(dataset.visual), [q.answer for q in dataset.questions]
    )


# ---------------------------------------------------------------------------------------------- scoring


def alignment_log_odds(
    model: Any, tokenizer: VideoBertTokenizer, texts: Sequence[str], visual: Sequence[Sequence[int]]
) -> torch.Tensor:
    """(pairs,) alignment log-odds of ``[CLS] text [>] visual [SEP]`` for each pair (texts[i], visual[i]), with
    gradients when enabled; `model` is called like `VideoBertForPreTraining` and runs in its current mode."""
    batch = encode_batch(tokenizer, texts, visual, model_device(model))
    # No labelled position: the model skips the (batch, seq, vocab) projection of the masked-token head.
    no_labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
    logits = model(**batch, labels=no_labels).alignment_logits.float()  # (pairs, 2)
    return logits[:, ALIGNED] - logits[:, NOT_ALIGNED]


def _choice_matrix(scores: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """(questions, max candidates) scores of consecutive candidate groups of `sizes`, -inf where a question has
    fewer candidates (so a softmax over a row ignores them)."""
    matrix = scores.new_full((len(sizes), max(sizes)), float("-inf"))
    rows = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))  # (pairs,)
    columns = torch.cat([torch.arange(n) for n in sizes])  # (pairs,)
    matrix[rows, columns] = scores
    return matrix


def _pairs(dataset: QADataset, form: str) -> tuple[list[str], list[np.ndarray]]:
    """The (text, visual tokens) pair of every candidate of every question, question by question."""
    texts = [text for q in dataset.questions for text in q.texts(form)]
    visual = [v for q, v in zip(dataset.questions, dataset.visual) for _ in q.candidates]
    return texts, visual


def choice_scores(
    model: Any, tokenizer: VideoBertTokenizer, dataset: QADataset, form: str = "statement", batch_size: int = 64
) -> list[np.ndarray]:
    """Each question's candidate scores (alignment log-odds, module docstring), in question order; `batch_size`
    candidate pairs per forward pass. The caller chooses eval mode and gradient handling."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if dataset.visual is None:
        raise ValueError("scoring needs the visual tokens: call with_visual first")
    texts, visual = _pairs(dataset, form)
    parts = [
        alignment_log_odds(model, tokenizer, texts[i : i + batch_size], visual[i : i + batch_size]).double()
        for i in range(0, len(texts), batch_size)
    ]
    flat = torch.cat(parts).cpu().numpy()  # (pairs,), question by question
    return np.split(flat, np.cumsum([len(q.candidates) for q in dataset.questions])[:-1])


def choice_loss(model: Any, tokenizer: VideoBertTokenizer, dataset: QADataset, form: str) -> torch.Tensor:
    """Mean cross-entropy of the gold answer under the softmax over each question's candidate scores."""
    texts, visual = _pairs(dataset, form)
    sizes = [len(q.candidates) for q in dataset.questions]
    matrix = _choice_matrix(alignment_log_odds(model, tokenizer, texts, visual), sizes)  # (questions, max cand.)
    gold = torch.tensor([q.gold for q in dataset.questions], device=matrix.device)
    return F.cross_entropy(matrix, gold)


def mean_choice_loss(
    model: Any, tokenizer: VideoBertTokenizer, dataset: QADataset, form: str, batch_size: int
) -> float:
    """`choice_loss` over all of `dataset`, `batch_size` questions at a time, without gradients."""
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            part = dataset.subset(range(start, min(start + batch_size, len(dataset))))
            total += choice_loss(model, tokenizer, part, form).item() * len(part)
    return total / len(dataset)


def mean_by_kind(dataset: QADataset, values: Sequence[float]) -> dict[str, float]:
    """The mean of one value per question over the questions of each kind present, and ``overall``."""
    values = np.asarray(values, dtype=float)
    kinds = np.array([q.kind for q in dataset.questions])
    return {**{kind: float(values[kinds == kind].mean()) for kind in dataset.counts()}, "overall": float(values.mean())}


def accuracy_by_kind(dataset: QADataset, scores: Sequence[np.ndarray]) -> dict[str, float]:
    """Top-1 accuracy per kind present and ``overall`` (over all questions), ties counted against gold."""
    ranks = [gold_ranks(s[None, :], np.array([q.gold]))[0] for q, s in zip(dataset.questions, scores)]
    return mean_by_kind(dataset, [rank == 1 for rank in ranks])


def baselines(dataset: QADataset, train: QADataset) -> dict[str, dict[str, float]]:
    """``chance`` (expected accuracy of a uniform guess) and ``answer_prior`` (candidates ranked by how often they
    are the gold answer of a `train` question of the same kind), per kind and overall."""
    seen = {kind: Counter(q.answer for q in train.questions if q.kind == kind) for kind in KINDS}
    prior = [np.array([seen[q.kind][c] for c in q.candidates], dtype=float) for q in dataset.questions]
    chance = mean_by_kind(dataset, [1 / len(q.candidates) for q in dataset.questions])
    return {"chance": chance, "answer_prior": accuracy_by_kind(dataset, prior)}


def normalise_answer(text: str) -> str:
    """Lower case, single spaces: what exact-match compares."""
    return " ".join(text.lower().split())


def exact_match_by_kind(dataset: QADataset, answers: Sequence[str]) -> dict[str, float]:
    """Fraction of questions whose generated answer equals the gold one (`normalise_answer`), per kind present and
    ``overall``."""
    return mean_by_kind(
        dataset, [normalise_answer(a) == normalise_answer(q.answer) for q, a in zip(dataset.questions, answers)]
    )


def most_frequent_answers(dataset: QADataset, train: QADataset) -> list[str]:
    """The open-ended answer prior: for each question, the most frequent gold answer of its kind in `train` (the
    first in sorted order among equally frequent ones; an empty answer for a kind `train` lacks)."""
    counts = {kind: Counter(q.answer for q in train.questions if q.kind == kind) for kind in KINDS}
    best = {kind: min(c, key=lambda a: (-c[a], a)) if c else "" for kind, c in counts.items()}
    return [best[q.kind] for q in dataset.questions]


# ---------------------------------------------------------------------------------------------- stages


def load_questions(work: str | Path, tokens_path: Path, split: str, seed: int, num_choices: int) -> QADataset:
    """The questions of `split` built from WORK's segments and narration, with their visual tokens."""
    wd = WorkDir(work)
    segments = load_segments(work)
    sentences = read_parquet(wd.sentences) if wd.sentences.exists() else None
    dataset = build_qa(segments, sentences, split, seed, num_choices=num_choices).with_visual(tokens_path)
    if not len(dataset):
        raise InputError(
            wd.segments,
            f"no question with video in split {split!r}: QA needs segments with verb and noun labels and clips",
        )
    return dataset


def _load_model(model: Path) -> VideoBertForPreTraining:
    network = VideoBertForPreTraining.from_pretrained(model)
    require_visual_words(network.config, model, "question answering")
    require_tokenizer(network, model)
    return network


def _load_answerer(model: Path) -> VideoBertForCaptioning:
    network = VideoBertForCaptioning.from_pretrained(model)
    if network.tokenizer is None or network.config.reads_features:
        raise ConfigError(f"{model}: open-ended QA needs a checkpoint over visual words with its tokenizer files")
    return network


def _is_answerer(model: Path) -> bool:
    """Whether `model` is an open-ended QA (sequence-to-sequence) checkpoint rather than a VideoBERT directory."""
    return directory_model_type(model) == VideoBertCaptioningConfig.model_type


def evaluate_qa(
    model: Path,
    work: Path,
    *,
    split: str = "test",
    form: str = "statement",
    num_choices: int = 5,
    batch_size: int = 64,
    seed: int = 0,
    out: Path | None = None,
    device: str = "auto",
) -> StageReport:
    """Video QA on the questions generated from the annotated steps of one split; writes metrics.json with the
    accuracy per question type (object, action, next, before) next to chance and an answer prior.

    A VideoBERT model directory (pretrained, or OUT/model of `finetune_qa`) answers multiple choice: each candidate
    is scored against the question's visual tokens by the alignment head. An open-ended checkpoint (OUT/model of
    `finetune_qa --answers open`) generates each answer, scored by exact match.

    Args:
        model: Model directory written by `videobert pretrain`, or OUT/model of `finetune_qa`.
        work: Work directory; reads segments.parquet, sentences.parquet (when present), tokens.parquet and vocab/.
        split: Annotation split whose steps are asked about.
        form: Multiple choice: text scored for a candidate, statement ("cut the tomato") or question (the question,
            then the answer).
        num_choices: Multiple choice: candidate answers per question (the gold one and distractors of its kind).
        batch_size: Question-candidate pairs (open-ended: questions) per forward pass.
        seed: Seed of the distractors and of their order.
        out: Folder for metrics.json (default MODEL/eval/qa-SPLIT).
        device: auto (CUDA when available), cuda or cpu.
    """
    if form not in FORMS:
        raise ConfigError(f"unknown form {form!r}; choose one of {', '.join(FORMS)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    torch_device = torch.device(resolve_device(device))
    began = time.perf_counter()
    open_ended = _is_answerer(model)
    network = _load_answerer(model) if open_ended else _load_model(model)
    tokens_path = checked_tokens(work, network.config.encoder if open_ended else network.config)
    dataset = load_questions(work, tokens_path, split, seed, num_choices)
    train = load_questions(work, tokens_path, "train", seed, num_choices) if split != "train" else dataset
    if open_ended:
        answers = generate_texts(
            network, open_ended_examples(dataset), num_beams=1, batch_size=batch_size, device=torch_device
        )
        methods = {
            "answer_prior": exact_match_by_kind(dataset, most_frequent_answers(dataset, train)),
            "generated": exact_match_by_kind(dataset, answers),
        }
    else:
        network.eval().to(torch_device)
        with torch.inference_mode():
            scores = choice_scores(network, network.tokenizer, dataset, form, batch_size)
        methods = {**baselines(dataset, train), "alignment": accuracy_by_kind(dataset, scores)}
    metrics: dict[str, Any] = {
        "task": "qa", "answers": "open" if open_ended else "choice", "split": split, "model": str(model),
        "work": str(work), "seed": seed, "questions": dataset.counts(), "evaluated": len(dataset),
        "questions_without_video": dataset.without_video, "methods": methods,
        "seconds": round(time.perf_counter() - began, 2),
        **({} if open_ended else {"form": form, "num_choices": num_choices}),
    }  # fmt: skip
    out = Path(out) if out is not None else Path(model) / "eval" / f"qa-{split}"
    write_json(out / METRICS_FILE, metrics)
    _print_accuracy(f"VideoBERT QA, split {split}", metrics, metrics["questions"])
    return StageReport(
        "evaluate",
        done=len(dataset),
        outputs={"metrics": str(out / METRICS_FILE)},
        stats=flatten({"questions": metrics["questions"], "methods": methods}),
    )


def finetune_qa(
    model: Path,
    work: Path,
    out: Path,
    *,
    answers: str = "choice",
    epochs: int | None = None,
    batch_size: int = 16,
    learning_rate: float | None = None,
    form: str = "statement",
    num_choices: int = 5,
    train_choices: int = 2,
    patience: int = 2,
    seed: int = 0,
    device: str = "auto",
) -> StageReport:
    """Fine-tune VideoBERT for video QA on the questions of split train, stopping early on the val loss, and report
    the test accuracy per question type; writes metrics.json and the model to OUT/model.

    choice: the encoder and alignment head learn to rank the gold answer first among each question's candidates (the
    word embeddings stay frozen); test accuracy next to chance, the answer prior and MODEL's zero-shot accuracy.
    open: a BART decoder on the VideoBERT encoder learns to generate the answer from the question and the video
    (`tasks.caption`); test exact match, greedy decoding, next to always giving the most frequent answer.
    `evaluate_qa OUT/model WORK` reproduces the test accuracy of either.

    Args:
        model: Model directory written by `videobert pretrain`.
        work: Work directory; reads segments.parquet, sentences.parquet (when present), tokens.parquet and vocab/.
        out: Folder for metrics.json and the fine-tuned model (OUT/model).
        answers: choice (multiple choice) or open (generated answers).
        epochs: Most passes over the training questions (default 10 for choice, 3 for open).
        batch_size: Questions per optimisation step (choice: each brings train_choices candidates).
        learning_rate: AdamW learning rate (default 1e-4 for choice, 5e-4 for open).
        form: Choice: text scored for a candidate, statement ("cut the tomato") or question (the question, then the
            answer).
        num_choices: Choice: candidate answers per question (the gold one and distractors of its kind).
        train_choices: Choice: candidates a training question brings to a step, the gold one and distractors drawn
            anew every epoch (a step costs one sequence per candidate); at least 2, at most num_choices.
        patience: Stop after this many epochs without a lower val loss.
        seed: Seed of the distractors, the shuffling and the initialisation.
        device: auto (CUDA when available), cuda or cpu.
    """
    if answers not in ANSWERS:
        raise ConfigError(f"unknown answers {answers!r}; choose one of {', '.join(ANSWERS)}")
    if form not in FORMS:
        raise ConfigError(f"unknown form {form!r}; choose one of {', '.join(FORMS)}")
    if not 2 <= train_choices <= num_choices:
        raise ConfigError(f"train_choices must be in [2, num_choices={num_choices}], got {train_choices}")
    epochs = DEFAULT_EPOCHS[answers] if epochs is None else epochs
    learning_rate = DEFAULT_LEARNING_RATES[answers] if learning_rate is None else learning_rate
    check_training_options(epochs=epochs, batch_size=batch_size, patience=patience, learning_rate=learning_rate)
    torch_device = torch.device(resolve_device(device))
    began = time.perf_counter()
    out = Path(out)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = VideoBertConfig.from_pretrained(model)
    require_visual_words(config, model, "question answering")
    tokens_path = checked_tokens(work, config)
    splits = {split: load_questions(work, tokens_path, split, seed, num_choices) for split in ("train", "val", "test")}
    options = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "patience": patience}
    if answers == "choice":
        network, history, methods = _finetune_choice(
            Path(model), splits, form=form, train_choices=train_choices, rng=rng, device=torch_device, **options
        )
    else:
        network, history, methods = _finetune_open(Path(model), splits, seed=seed, device=torch_device, **options)
    network.save_pretrained(out / MODEL_DIR)
    best_epoch = min(history, key=lambda row: row["val_loss"])["epoch"]
    metrics: dict[str, Any] = {
        "task": "qa", "answers": answers, "model": str(model), "work": str(work), "seed": seed, **options,
        "questions": {split: data.counts() for split, data in splits.items()},
        "epochs_run": len(history), "best_epoch": best_epoch, "history": history, "methods": methods,
        "seconds": round(time.perf_counter() - began, 2),
        **({"form": form, "num_choices": num_choices, "train_choices": train_choices} if answers == "choice" else {}),
    }  # fmt: skip
    write_json(out / METRICS_FILE, metrics)
    _print_accuracy("VideoBERT fine-tuned QA, split test", metrics, metrics["questions"]["test"])
    return StageReport(
        "finetune",
        done=len(splits["test"]),
        outputs={"metrics": str(out / METRICS_FILE), "checkpoint": str(out / MODEL_DIR)},
        stats={"best_epoch": best_epoch, **flatten({"test": methods["finetuned"]})},
    )


def _finetune_choice(
    model: Path, splits: dict[str, QADataset], *, form: str, train_choices: int, rng: np.random.Generator,
    device: torch.device, epochs: int, batch_size: int, learning_rate: float, patience: int,
) -> tuple[VideoBertForPreTraining, list[dict[str, float]], dict[str, dict[str, float]]]:
    """Multiple choice: the alignment log-odds trained with the softmax cross-entropy over each training question's
    gold answer and `train_choices - 1` distractors; returns the trained model, the history and the test accuracies
    of every method."""
    network = _load_model(model)
    tokenizer = network.tokenizer
    freeze_word_embeddings(network)
    network.to(device).eval()
    pairs_per_pass = batch_size * max(len(q.candidates) for q in splits["test"].questions)
    with torch.inference_mode():
        zero_shot = accuracy_by_kind(
            splits["test"], choice_scores(network, tokenizer, splits["test"], form, pairs_per_pass)
        )

    def batch_loss(rows: np.ndarray) -> torch.Tensor:
        questions = splits["train"].subset(rows).sample_candidates(train_choices, rng)
        return choice_loss(network, tokenizer, questions, form)

    history, _ = fit(
        network,
        len(splits["train"]),
        batch_loss,
        lambda: mean_choice_loss(network, tokenizer, splits["val"], form, batch_size),
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, patience=patience, rng=rng,
    )  # fmt: skip
    with torch.inference_mode():
        test = accuracy_by_kind(splits["test"], choice_scores(network, tokenizer, splits["test"], form, pairs_per_pass))
    return network, history, {**baselines(splits["test"], splits["train"]), "zero_shot": zero_shot, "finetuned": test}


def _finetune_open(
    model: Path, splits: dict[str, QADataset], *, seed: int, device: torch.device, epochs: int, batch_size: int,
    learning_rate: float, patience: int,
) -> tuple[VideoBertForCaptioning, list[dict[str, float]], dict[str, dict[str, float]]]:
    """Open-ended: `tasks.caption.train_seq2seq` on (question, video) -> answer, greedy answers on test."""
    network = VideoBertForCaptioning.from_videobert(
        model, encoder_mode="pretrained", decoder_layers=OPEN_DECODER_LAYERS, max_caption_length=ANSWER_POSITIONS
    )
    history = train_seq2seq(
        network, open_ended_examples(splits["train"]), open_ended_examples(splits["val"]), epochs=epochs,
        batch_size=batch_size, learning_rate=learning_rate, seed=seed, device=device, patience=patience,
    )  # fmt: skip
    generated = generate_texts(network, open_ended_examples(splits["test"]), num_beams=1, device=device)
    prior = most_frequent_answers(splits["test"], splits["train"])
    methods = {
        "answer_prior": exact_match_by_kind(splits["test"], prior),
        "finetuned": exact_match_by_kind(splits["test"], generated),
    }
    return network, history, methods


def _print_accuracy(title: str, metrics: dict[str, Any], questions: dict[str, int]) -> None:
    kinds = [kind for kind in KINDS if kind in questions] + ["overall"]
    counts = {**questions, "overall": sum(questions.values())}
    rows = [("questions", [counts[k] for k in kinds])]
    rows += [(method.replace("_", " "), [row.get(k) for k in kinds]) for method, row in metrics["methods"].items()]
    if metrics["answers"] == "choice":
        title += f", accuracy (%) of {metrics['num_choices']} choices, form {metrics['form']}"
    else:
        title += ", exact match (%) of generated answers"
    print_table(title, kinds, rows)
