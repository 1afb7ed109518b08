"""The `finetune` stage: segment classification (verb, noun or both) from a segment's visual tokens.

Examples are the annotated segments whose window holds at least one clip (the clips of `segment_clip_index`, as in
`evaluate`) and which have a label for every target. The label set of a target is the distinct labels of all
splits, so it does not depend on the split. With `with_text`, the segment's narration (the transcript sentences
whose midpoint lies in its window) precedes the visual tokens: `[CLS] narration [>] visual tokens [SEP]`. Method
`two-stream` trains the baseline of `model.two_stream` instead, on the same examples and splits, so that its
metrics compare directly with the single-stream model's.

Recipe: setup (data, model, method) -> train on split `train`, evaluating the loss on `val` after every epoch and
keeping the trained tensors of the best epoch (early stopping after `patience` epochs without improvement) ->
evaluate on `test` -> save. Outputs in OUT::

    metrics.json                 method, target, parameter counts, per-epoch losses, test top-1 / top-5 per target
    classification_report.txt    scikit-learn's classification_report per target on the test split
    confusion_<target>.png       row-normalised confusion matrix on the test split
    finetune.json, model/ or adapter/   the checkpoint (`tasks.peft_methods.save_finetuned`)
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from PIL import Image, ImageDraw, ImageFont
from sklearn.metrics import classification_report, confusion_matrix
from torch import nn

from videobert.data.ingest import load_segments
from videobert.model.configuration import require_visual_words
from videobert.model import VideoBertConfig, require_tokenizer, visual_tokenizer_from_work_dir
from videobert.model.classification import TARGETS, VideoBertForSegmentClassification
from videobert.model.tokenization import VideoBertTokenizer
from videobert.model.two_stream import VideoBertTwoStreamForSegmentClassification
from videobert.tasks.augmentation import VisualNeighbours, drop_narration
from videobert.tasks.evaluate import segment_visual_tokens
from videobert.utils.device import resolve_device
from videobert.tasks.metrics import top_k_accuracy
from videobert.tasks.peft_methods import (
    MethodOptions,
    apply_method,
    count_parameters,
    options_dict,
    save_finetuned,
)
from videobert.tasks.supervised import fit
from videobert.tokenizer.quality import segment_clip_index
from videobert.tokenizer.stages import tokens_metadata
from videobert.training.regularizers import ATTACKS, EmbeddingAttack, layerwise_parameter_groups, perturbed_embeddings
from videobert.utils.errors import ConfigError, InputError
from videobert.utils.io import atomic_open, atomic_path, read_parquet, write_json
from videobert.utils.lock import locked
from videobert.utils.stage import StageReport
from videobert.workdir import WorkDir

logger = logging.getLogger(__name__)

STAGE = "finetune"
TASKS = ("classify", "caption", "qa", "forecast")
CLASSIFY_EPOCHS = 5
CLASSIFY_LEARNING_RATE = 5e-5
TARGET_CHOICES = {"verb": ("verb",), "noun": ("noun",), "verb+noun": TARGETS}
TOP_K = (1, 5)


@dataclass
class Examples:
    """Segments of one split: visual tokens, narration (or None) and the label index of each target."""

    visual: list[np.ndarray]
    texts: list[str | None]
    labels: np.ndarray  # (examples, num_targets)

    def __len__(self) -> int:
        return len(self.visual)

    def subset(self, rows: np.ndarray) -> "Examples":
        return Examples([self.visual[i] for i in rows], [self.texts[i] for i in rows], self.labels[rows])


@locked("out")
def finetune(
    model: Path,
    work: Path,
    out: Path,
    task: str = "classify",
    target: str = "verb",
    method: str = "full",
    epochs: int | None = None,
    batch_size: int = 32,
    learning_rate: float | None = None,
    freeze_layers: int = 0,
    few_shot: int = 0,
    with_text: bool = False,
    stride: int = 1,
    token_dropout: float = 0.0,
    word_substitution: float = 0.0,
    narration_dropout: float = 0.0,
    word_dropout: float = 0.0,
    lr_decay: float = 1.0,
    adversarial: str = "none",
    attack: str = "",
    adv_eps: float = 1.0,
    adv_steps: int = 3,
    patience: int = 2,
    lora_rank: int = 8,
    adapter_size: int = 64,
    num_virtual_tokens: int = 10,
    encoder: str = "pretrained",
    decoder_layers: int = 2,
    with_template: bool = False,
    denoise_steps: int = 0,
    num_beams: int = 4,
    seed: int = 0,
    device: str = "auto",
) -> StageReport:
    """Fine-tune a pretrained VideoBERT to classify or caption annotated segments; writes metrics and the checkpoint.

    Trains on split train, stops early on the val loss and evaluates the best epoch on test. classify: top-1 /
    top-5, classification report, confusion matrix; methods other than full save only what they trained, to be
    loaded on top of MODEL. caption: a BART decoder on the VideoBERT encoder, test captions scored with BLEU-3/4,
    METEOR, ROUGE-L and CIDEr (`tasks.caption.finetune_caption`; OUT/model is a self-contained caption checkpoint).

    Args:
        model: Model directory written by `videobert pretrain`.
        work: Work directory; reads segments.parquet (verb, noun or caption, split), tokens.parquet, vocab/ and, with
            --with-text, sentences.parquet.
        out: Folder for metrics.json, the reports (classify: classification_report.txt, confusion_TARGET.png;
            caption: captions.jsonl) and the checkpoint.
        task: classify (verb / noun labels), caption (generate the segment's caption), qa (multiple-choice video
            QA by the alignment head; `videobert.tasks.qa.finetune_qa` has the open-ended variant) or forecast (the
            next step's verb and noun from the steps before it).
        target: What to predict: verb, noun, or verb+noun (two heads, losses summed).
        method: full, linear (head only), bitfit (biases), adapter (bottleneck adapters), lora, prompt (prompt
            tuning), ia3, or two-stream (the baseline: separate text and visual encoders fused by an MLP, trained
            in full; needs --with-text).
        epochs: Most passes over the training split (default 5 for classify, 30 for caption and forecast).
        batch_size: Segments per optimisation step.
        learning_rate: AdamW learning rate (default 5e-5 for classify, 5e-4 for caption; parameter-efficient
            methods usually want 1e-3 or more).
        freeze_layers: Method full: also freeze the embeddings and the lower N encoder layers.
        few_shot: Train on at most this many segments per class (per verb+noun pair for verb+noun; task caption:
            per distinct caption); 0 uses all.
        with_text: Put the segment's narration before its visual tokens.
        stride: Training augmentation: subsample each segment's visual tokens with a random stride in [1, stride]
            and a random offset (the paper uses 1-5); 1 keeps every token.
        token_dropout: Training augmentation: drop each visual token with this probability (one is always kept).
        word_substitution: Task classify, training augmentation: replace each visual token with this probability
            by a sibling in the vocabulary tree (another leaf under the same parent).
        narration_dropout: Task classify with --with-text, training augmentation: drop a segment's whole narration
            with this probability.
        word_dropout: Task classify with --with-text, training augmentation: drop each narration word with this
            probability.
        lr_decay: Task classify: layer-wise learning-rate decay; encoder layer i trains at learning_rate x
            lr_decay^(layers - i), the embeddings one step lower, the head at learning_rate (1: one rate).
        adversarial: Task classify: adversarial training against an attack on the input embeddings, fgm or pgd
            (radius --adv-eps); each step's loss is the clean plus the attacked loss (Miyato et al.). none: off.
        attack: Task classify: also report the test accuracy under this attack (fgm or pgd, radius --adv-eps);
            empty: the training attack, if any.
        adv_eps: L2 radius per example of the --adversarial and --attack perturbations of the input embeddings
            (of the words and visual words; [CLS], [SEP], [>] and padding are left as they are).
        adv_steps: Steps of a pgd attack.
        patience: Stop after this many epochs without a lower val loss.
        lora_rank: Method lora: rank of the query and value updates.
        adapter_size: Method adapter: bottleneck width of each adapter.
        num_virtual_tokens: Method prompt: number of trained prompt tokens.
        encoder: pretrained (MODEL's weights) or random (MODEL's architecture and vocabularies, weights drawn at
            random: the baseline that shows what pretraining brings; task classify needs method full); task caption
            also takes features (a random encoder over continuous clip features instead of visual words) and
            pretrained+features (MODEL's encoder and a features encoder side by side, the paper's VideoBERT + S3D)
            and random+features (its control: the word encoder random), the rows of the paper's Table 3.
        decoder_layers: Task caption: number of BART decoder layers.
        with_template: Task caption: encode the paper's template sentence before the visual tokens.
        denoise_steps: Task caption: steps of BART text-infilling on the training videos' narration first.
        num_beams: Task caption: beam width when captioning the test split (1: greedy).
        seed: Seed of initialisation, sampling, shuffling and augmentation.
        device: auto (CUDA when available), cuda or cpu.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if task in ("qa", "forecast"):
        from videobert.tasks.forecast import finetune_forecast
        from videobert.tasks.qa import finetune_qa

        stage = finetune_qa if task == "qa" else finetune_forecast
        return stage(model, work, out, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                     patience=patience, seed=seed, device=device)  # fmt: skip
    if task == "caption":
        # Imported here: the caption stage reuses this module's training helpers.
        from videobert.tasks.caption import CaptionOptions, finetune_caption

        if method != "full" or with_text:
            raise ConfigError("method and with_text apply to task classify; task caption trains the whole "
                              "encoder-decoder on the video (see with_template)")  # fmt: skip
        return finetune_caption(
            model, work, out, encoder=encoder, epochs=CaptionOptions.epochs if epochs is None else epochs,
            batch_size=batch_size, patience=patience, few_shot=few_shot,
            learning_rate=CaptionOptions.learning_rate if learning_rate is None else learning_rate,
            decoder_layers=decoder_layers, with_template=with_template, denoise_steps=denoise_steps, stride=stride,
            token_dropout=token_dropout, num_beams=num_beams, seed=seed, device=device,
        )  # fmt: skip
    epochs = CLASSIFY_EPOCHS if epochs is None else epochs
    learning_rate = CLASSIFY_LEARNING_RATE if learning_rate is None else learning_rate
    if encoder not in ("pretrained", "random"):
        raise ConfigError(f"task classify: encoder must be pretrained or random, got {encoder!r}")
    if encoder == "random" and method != "full":
        raise ConfigError("encoder random trains every weight from scratch: it needs method full (the other methods "
                          "save only what they train, to be loaded on top of MODEL's pretrained weights)")  # fmt: skip
    if target not in TARGET_CHOICES:
        raise ConfigError(f"unknown target {target!r}; choose one of {', '.join(TARGET_CHOICES)}")
    options = MethodOptions(
        method=method, freeze_layers=freeze_layers, lora_rank=lora_rank, adapter_size=adapter_size,
        num_virtual_tokens=num_virtual_tokens,
    )  # fmt: skip
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("stride", stride, 1),
                             ("few_shot", few_shot, 0), ("patience", patience, 1)):  # fmt: skip
        if value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value}")
    for name, rate in (("token_dropout", token_dropout), ("word_substitution", word_substitution),
                       ("narration_dropout", narration_dropout), ("word_dropout", word_dropout)):  # fmt: skip
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {rate}")
    if learning_rate <= 0:
        raise ConfigError(f"learning_rate must be positive, got {learning_rate}")
    if not 0 < lr_decay <= 1:
        raise ConfigError(f"lr_decay must be in (0, 1], got {lr_decay}")
    two_stream = method == "two-stream"
    if two_stream and not with_text:
        raise ConfigError("method two-stream compares late fusion of narration and video: it needs with_text")
    for name, value in (("adversarial", adversarial), ("attack", attack)):
        if value not in ATTACKS + ("",) or (name == "adversarial" and not value):
            raise ConfigError(f"{name} must be one of {', '.join(ATTACKS)}, got {value!r}")
    attack = attack or adversarial
    train_attack = None if adversarial == "none" else EmbeddingAttack(adversarial, adv_eps, adv_steps)
    test_attack = None if attack == "none" else EmbeddingAttack(attack, adv_eps, adv_steps)
    if two_stream and test_attack is not None:
        raise ConfigError("adversarial training and attacks perturb the single-stream model's input embeddings; "
                          "method two-stream has two of them")  # fmt: skip
    if (narration_dropout or word_dropout) and not with_text:
        raise ConfigError("narration_dropout and word_dropout augment the narration: they need with_text")
    torch_device = torch.device(resolve_device(device))
    targets = TARGET_CHOICES[target]
    out = Path(out)

    # ---- setup
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = VideoBertConfig.from_pretrained(model)
    require_visual_words(config, model, "fine-tuning")
    splits, label_names = load_examples(work, config, targets, with_text)
    if few_shot:
        splits["train"] = splits["train"].subset(few_shot_rows(splits["train"].labels, few_shot, rng))
    if two_stream:
        network = VideoBertTwoStreamForSegmentClassification.from_videobert(model, label_names)
    else:
        network = VideoBertForSegmentClassification.from_pretrained(model, classification_labels=label_names)
        if encoder == "random":
            fresh = VideoBertForSegmentClassification(network.config)  # same config, weights drawn with `seed`
            fresh.tokenizer, fresh.visual_tokenizer = network.tokenizer, network.visual_tokenizer
            network = fresh
    tokenizer = require_tokenizer(network, model)
    trainee = apply_method(network, options).to(torch_device)
    parameters = count_parameters(trainee)
    neighbours = VisualNeighbours(network.visual_tokenizer) if word_substitution else None
    groups = None if lr_decay == 1 else layerwise_parameter_groups(trainee, learning_rate, lr_decay,
                                                                    config.num_hidden_layers)  # fmt: skip
    # Prompt tokens take positions too: shorten the input so that prompt + input fits the position table.
    max_length = config.max_position_embeddings - (num_virtual_tokens if method == "prompt" else 0)
    layout = (config.cls_token_id, config.sep_token_id, config.pad_token_id, config.visual_separator_token_id)
    train_attack, test_attack = (None if a is None else replace(a, fixed_ids=layout)
                                 for a in (train_attack, test_attack))  # fmt: skip

    # ---- train
    def batch_loss(rows: np.ndarray) -> torch.Tensor:
        chunk = splits["train"].subset(rows)
        visual = [augment(v, stride, token_dropout, rng) for v in chunk.visual]
        if neighbours is not None:
            visual = [neighbours.substitute(v, word_substitution, rng) for v in visual]
        texts = [drop_narration(t, narration_dropout, word_dropout, rng) for t in chunk.texts]
        batch = _batch(tokenizer, texts, visual, chunk.labels, max_length, torch_device, two_stream)
        loss = trainee(**batch).loss
        if train_attack is None:
            return loss
        delta = train_attack.perturbation(trainee, lambda: trainee(**batch).loss)
        with perturbed_embeddings(trainee, delta):
            return loss + trainee(**batch).loss

    def val_loss() -> float:
        return evaluate_examples(trainee, tokenizer, splits["val"], batch_size, max_length, torch_device, two_stream)[0]

    history, best_epoch = fit(trainee, len(splits["train"]), batch_loss, val_loss, epochs=epochs,
                              batch_size=batch_size, learning_rate=learning_rate, patience=patience, rng=rng,
                              parameter_groups=groups)  # fmt: skip

    # ---- evaluate
    _, scores = evaluate_examples(trainee, tokenizer, splits["test"], batch_size, max_length, torch_device, two_stream)
    test: dict[str, dict[str, float]] = {}
    reports = []
    for column, name in enumerate(targets):
        gold = splits["test"].labels[:, column]
        accuracy = top_k_accuracy(scores[name], gold, TOP_K)
        test[name] = {f"top{k}": value for k, value in accuracy.items()}
        predicted = scores[name].argmax(axis=1)
        everything = list(range(len(label_names[name])))
        reports.append(f"== {name} ==\n" + classification_report(
            gold, predicted, labels=everything, target_names=label_names[name], zero_division=0
        ))  # fmt: skip
        write_confusion_png(
            confusion_matrix(gold, predicted, labels=everything), label_names[name], out / f"confusion_{name}.png"
        )
    with atomic_open(out / "classification_report.txt", "w", encoding="utf-8") as fh:
        fh.write("\n".join(reports))
    under_attack: dict[str, dict[str, float]] = {}
    if test_attack is not None:
        _, attacked = evaluate_examples(trainee, tokenizer, splits["test"], batch_size, max_length, torch_device,
                                        attack=test_attack)  # fmt: skip
        for column, name in enumerate(targets):
            accuracy = top_k_accuracy(attacked[name], splits["test"].labels[:, column], TOP_K)
            under_attack[name] = {f"top{k}": value for k, value in accuracy.items()}

    # ---- save
    checkpoint = save_finetuned(trainee, options, model, out)
    metrics: dict[str, Any] = {
        "model": str(model), "work": str(work), "target": target, "method": method, "encoder": encoder,
        "method_options": options_dict(options), "with_text": with_text, "few_shot": few_shot,
        "stride": stride, "token_dropout": token_dropout, "word_substitution": word_substitution,
        "narration_dropout": narration_dropout, "word_dropout": word_dropout, "lr_decay": lr_decay,
        "adversarial": adversarial, "attack": attack, "adv_eps": adv_eps, "adv_steps": adv_steps, "seed": seed,
        "trainable_parameters": parameters["trainable"], "total_parameters": parameters["total"],
        "trainable_fraction": parameters["trainable"] / parameters["total"],
        "examples": {split: len(examples) for split, examples in splits.items()},
        "labels": {name: len(names) for name, names in label_names.items()},
        "epochs_run": len(history), "best_epoch": best_epoch, "history": history, "test": test,
        **({"test_under_attack": under_attack} if under_attack else {}),
    }  # fmt: skip
    write_json(out / "metrics.json", metrics)
    return StageReport(
        STAGE,
        done=len(splits["test"]),
        outputs={
            "metrics": str(out / "metrics.json"),
            "report": str(out / "classification_report.txt"),
            "checkpoint": str(checkpoint),
        },
        stats={
            "trainable_parameters": parameters["trainable"],
            "best_epoch": best_epoch,
            **{f"{name}_{metric}": value for name, row in test.items() for metric, value in row.items()},
            **{f"{name}_{metric}_under_attack": value for name, row in under_attack.items()
               for metric, value in row.items()},
        },
    )


def load_examples(
    work: Path, config: VideoBertConfig, targets: tuple[str, ...], with_text: bool
) -> tuple[dict[str, Examples], dict[str, list[str]]]:
    """Split name (train, val, test) -> its examples, and target -> label names (module docstring)."""
    wd = WorkDir(work)
    visual_tokenizer = visual_tokenizer_from_work_dir(work, config)
    tokens_path = wd.require(wd.tokens, "tokenize")
    if tokens_metadata(tokens_path).get("vocab_hash") != visual_tokenizer.content_hash:
        raise ConfigError(f"{tokens_path} was made with another vocabulary than {wd.vocab}; run `videobert tokenize`")
    segments = load_segments(work)
    columns = {name: segments[name].to_pylist() for name in targets}
    label_names = {}
    for name in targets:
        label_names[name] = sorted({v.strip() for v in columns[name] if v is not None and v.strip()})
        if len(label_names[name]) < 2:
            raise InputError(wd.segments, f"{name}: classification needs at least 2 distinct labels")
    labelled = [all(columns[name][i] is not None and columns[name][i].strip() for name in targets)
                for i in range(segments.num_rows)]  # fmt: skip
    segments = segments.filter(pa.array(labelled))
    visual = segment_visual_tokens(tokens_path, segments)
    segments = segments.filter(pa.array([len(v) > 0 for v in visual]))
    visual = [v for v in visual if len(v)]
    texts = _narrations(wd, segments) if with_text else [None] * segments.num_rows
    index = {name: {label: i for i, label in enumerate(names)} for name, names in label_names.items()}
    labels = np.array([[index[name][segments[name][i].as_py().strip()] for name in targets]
                       for i in range(segments.num_rows)], dtype=np.int64).reshape(-1, len(targets))  # fmt: skip
    split_of = np.array(segments["split"].to_pylist(), dtype=object)
    everything = Examples(visual, texts, labels)
    splits = {split: everything.subset(np.flatnonzero(split_of == split)) for split in ("train", "val", "test")}
    for split, examples in splits.items():
        if len(examples) == 0:
            raise InputError(
                wd.segments, f"no labelled segment with video in split {split!r}; finetune needs train, val and test"
            )
    return splits, label_names


def _narrations(wd: WorkDir, segments: pa.Table) -> list[str | None]:
    """The transcript sentences whose midpoint lies in each segment's window, joined; None where there is none."""
    sentences = read_parquet(wd.require(wd.sentences, "ingest"), columns=["video", "index", "start", "end", "text"])
    sentences = sentences.sort_by([("video", "ascending"), ("index", "ascending")])
    text = sentences["text"].to_pylist()
    return [" ".join(text[i] for i in rows) or None for rows in segment_clip_index(sentences, segments)]


def few_shot_rows(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of `labels` (examples, num_targets) keeping k random examples of each class (a class is a row's label
    tuple); a class with fewer than k examples keeps them all."""
    classes: dict[tuple[int, ...], list[int]] = {}
    for row, label in enumerate(map(tuple, labels.tolist())):
        classes.setdefault(label, []).append(row)
    short = [label for label, rows in classes.items() if len(rows) < k]
    if short:
        logger.warning("%d class(es) have fewer than %d training examples; they keep all of them", len(short), k)
    chosen = [rng.choice(rows, size=min(k, len(rows)), replace=False) for rows in classes.values()]
    return np.sort(np.concatenate(chosen))


def augment(visual: np.ndarray, stride: int, token_dropout: float, rng: np.random.Generator) -> np.ndarray:
    """Training view of a segment's visual tokens: a random stride in [1, stride] from a random offset below it,
    then each token dropped with probability `token_dropout`; never empty, since the segment is seen by its video."""
    step = int(rng.integers(1, stride + 1))
    kept = visual[int(rng.integers(0, min(step, len(visual)))) :: step]
    if token_dropout > 0:
        keep = rng.random(len(kept)) >= token_dropout
        keep[rng.integers(0, len(kept))] = True
        kept = kept[keep]
    return kept


def evaluate_examples(
    model: nn.Module,
    tokenizer: VideoBertTokenizer,
    examples: Examples,
    batch_size: int,
    max_length: int,
    device: torch.device,
    two_stream: bool = False,
    attack: EmbeddingAttack | None = None,
) -> tuple[float, dict[str, np.ndarray]]:
    """One pass in eval mode: the loss averaged over examples, and target -> (examples, labels) scores
    (`two_stream`: inputs of the two-stream model; `attack`: each batch under its perturbation against the gold
    labels)."""
    model.eval()
    total = 0.0
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(examples), batch_size):
        chunk = examples.subset(np.arange(start, min(start + batch_size, len(examples))))
        batch = _batch(tokenizer, chunk.texts, chunk.visual, chunk.labels, max_length, device, two_stream)
        delta = None if attack is None else attack.perturbation(model, lambda: model(**batch).loss)
        with torch.no_grad(), nullcontext() if delta is None else perturbed_embeddings(model, delta):
            output = model(**batch)
        total += output.loss.item() * len(chunk)
        for name, logits in output.target_logits.items():
            parts.setdefault(name, []).append(logits.float().cpu().numpy())
    return total / len(examples), {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _batch(
    tokenizer: VideoBertTokenizer,
    texts: list[str | None],
    visual: list[np.ndarray],
    labels: np.ndarray | None,
    max_length: int,
    device: torch.device,
    two_stream: bool,
) -> dict[str, torch.Tensor]:
    """Model inputs of (text, visual tokens) pairs on `device`; (batch, seq) tensors and (batch, targets) labels.

    One joint sequence a pair, or with `two_stream` the text alone and the visual tokens alone (a segment without
    narration gives the text stream `[CLS] [SEP]`)."""
    if two_stream:
        text = tokenizer.batch_encode([t or "" for t in texts], max_length=max_length)
        video = tokenizer.batch_encode(None, visual, max_length=max_length)
        batch = {
            "text_input_ids": text["input_ids"], "text_attention_mask": text["attention_mask"],
            "visual_input_ids": video["input_ids"], "visual_attention_mask": video["attention_mask"],
            "visual_token_type_ids": video["token_type_ids"],
        }  # fmt: skip
    else:
        batch = tokenizer.batch_encode(texts, visual, max_length=max_length)
    if labels is not None:
        batch["labels"] = torch.from_numpy(labels)
    return {key: value.to(device) for key, value in batch.items()}


def write_confusion_png(matrix: np.ndarray, names: list[str], path: Path, cell: int = 28) -> None:
    """Draw `matrix` (gold rows, predicted columns) as a PNG: each row normalised to sum 1, darker is more, with
    the count in each non-empty cell and the label names on both axes."""
    font = ImageFont.load_default()
    margin = 8 + max(int(font.getlength(name)) for name in names)
    n = len(names)
    image = Image.new("RGB", (margin + n * cell + 8, margin + n * cell + 8), "white")
    draw = ImageDraw.Draw(image)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    for i in range(n):
        draw.text((4, margin + i * cell + cell // 3), names[i], fill="black", font=font)  # gold label, row i
        column_label = Image.new("RGB", (margin, cell), "white")
        ImageDraw.Draw(column_label).text((4, cell // 3), names[i], fill="black", font=font)
        image.paste(column_label.rotate(90, expand=True), (margin + i * cell, 0))  # predicted label, column i
        for j in range(n):
            shade = int(255 * (1 - share[i, j]))
            box = (margin + j * cell, margin + i * cell, margin + (j + 1) * cell - 1, margin + (i + 1) * cell - 1)
            draw.rectangle(box, fill=(shade, shade, 255), outline=(200, 200, 200))
            if matrix[i, j]:
                draw.text((box[0] + 4, box[1] + cell // 3), str(matrix[i, j]),
                          fill="white" if shade < 128 else "black", font=font)  # fmt: skip
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
