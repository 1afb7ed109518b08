"""The `continual` stage: segment classification learnt over a sequence of stages, each a new label set (new verbs
or nouns) or a new corpus, and how much of the earlier stages survives each later one.

Setting: class-incremental. One classification head covers the union of every stage's labels (in stage order);
stage i trains on its own examples only, and every model is tested on every stage's test split by its argmax over
all labels, so nothing tells the model which stage a test example comes from. The same scores restricted to the
stage's own labels give the task-incremental view (the stage is known at test; only the features can be forgotten,
not which labels to favour), reported beside it as `*_within_stage`. A stage is a work directory (its
visual words must come from the model's vocabulary, as for `finetune`) and optionally the labels it keeps::

    [{"name": "verbs 1", "work": "work", "labels": ["cut", "pour"]},
     {"name": "verbs 2", "work": "work", "labels": ["stir", "peel"]}]

(`work` relative to the stages file's folder; without `labels` a stage keeps all labels of its work directory).

Strategies (`+`-joined to combine, e.g. `replay+ewc`), all trained by the same loop (`tasks.supervised.fit`: early
stopping on the stage's val loss) with the same epochs and batches:

    naive   fine-tune on each stage in turn (the baseline that forgets)
    replay  each batch also holds `replay_batch` examples drawn from a reservoir of `replay_size` earlier examples
    ewc     plus a Fisher-weighted pull towards the weights each earlier stage ended with
    lwf     plus the distillation of the previous stage's model's scores of the earlier labels, on the new batch

Metrics (Lopez-Paz and Ranzato, 2017; Chaudhry et al., 2018) on the accuracy matrix R (R[i, j]: top-1 on stage j's
test split after training stage i) and b (top-1 on stage j of the model before any stage):

    average accuracy    mean_j R[T-1, j]
    backward transfer   mean_{j<T-1} R[T-1, j] - R[j, j]        (negative: forgetting)
    forgetting          mean_{j<T-1} max_{l<T-1} R[l, j] - R[T-1, j]
    forward transfer    mean_{j>0} R[j-1, j] - b[j]

Outputs in OUT: continual.json (options, stages, labels, the matrices, the metrics, each stage's training history),
report.html (the matrix as a table, each stage's accuracy as a curve over the stages trained) and model/, the
classifier after the last stage.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videobert.model import VideoBertConfig, require_tokenizer
from videobert.model.classification import VideoBertForSegmentClassification
from videobert.report import Report
from videobert.tasks.finetune import TARGET_CHOICES, Examples, _batch, evaluate_examples, load_examples
from videobert.tasks.peft_methods import MethodOptions, apply_method
from videobert.tasks.supervised import check_training_options, fit
from videobert.training.regularizers import EWCPenalty, ReservoirBuffer, distillation_loss, fisher_diagonal
from videobert.utils.device import resolve_device
from videobert.utils.errors import ConfigError, InputError
from videobert.utils.io import write_json
from videobert.utils.stage import StageReport

logger = logging.getLogger(__name__)

STAGE = "continual"
STRATEGIES = ("naive", "replay", "ewc", "lwf")
SPLITS = ("train", "val", "test")


@dataclass
class ContinualOptions:
    """How the stages are trained one after the other."""

    strategy: str = "naive"
    """One of STRATEGIES, or several joined by `+` (module docstring)."""
    replay_size: int = 200
    """replay: examples the reservoir keeps (a uniform sample of all earlier stages' training examples)."""
    replay_batch: int = 8
    """replay: buffer examples added to each batch."""
    ewc_strength: float = 1e6
    """ewc: lambda, the weight of the Fisher-weighted penalty. The Fisher of a fine-tuned classifier is small (mean
    squared per-example gradients); 1e3 barely moved forgetting, 1e6 halved the within-stage
    forgetting on MiniCook's verb groups (BENCHMARKS.md, "Continual learning")."""
    fisher_examples: int = 200
    """ewc: training examples of a stage (the first ones, in a random order) whose squared gradients estimate its
    Fisher information, one example at a time."""
    lwf_weight: float = 1.0
    """lwf: weight of the distillation loss."""
    lwf_temperature: float = 2.0
    """lwf: softmax temperature of the distillation."""
    # A stage can be small (MiniCook's verb pairs: about 90 training segments): small batches and up to 30 epochs
    # let each stage learn its own labels before the next one (with 10 epochs of batch 16 the first stage stayed
    # near chance).
    epochs: int = 30
    """Most passes over a stage's training examples."""
    batch_size: int = 8
    """New examples per optimisation step."""
    learning_rate: float = 3e-4
    """AdamW learning rate."""
    patience: int = 3
    """Stop a stage after this many epochs without a lower val loss on it."""
    freeze_layers: int = 0
    """Freeze the embeddings and the lower N encoder layers."""
    strategies: tuple[str, ...] = field(init=False)
    """The strategies named in `strategy`."""

    def __post_init__(self) -> None:
        self.strategies = tuple(self.strategy.split("+"))
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies:
            raise ConfigError(f"unknown strategy {self.strategy!r}; choose from {', '.join(STRATEGIES)}, joined by +")
        if "naive" in self.strategies and len(self.strategies) > 1:
            raise ConfigError("strategy naive is fine-tuning alone: it does not combine with another")
        check_training_options(epochs=self.epochs, batch_size=self.batch_size, patience=self.patience,
                               learning_rate=self.learning_rate)  # fmt: skip
        for name in ("replay_size", "replay_batch", "fisher_examples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("ewc_strength", "lwf_weight", "freeze_layers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be at least 0, got {getattr(self, name)}")
        if self.lwf_temperature <= 0:
            raise ConfigError(f"lwf_temperature must be positive, got {self.lwf_temperature}")


@dataclass
class StageSpec:
    """One entry of the stages file."""

    name: str
    work: Path
    labels: list[str] | None


def continual(
    model: Path,
    stages: Path,
    out: Path,
    target: str = "verb",
    strategy: str = "naive",
    replay_size: int = ContinualOptions.replay_size,
    replay_batch: int = ContinualOptions.replay_batch,
    ewc_strength: float = ContinualOptions.ewc_strength,
    fisher_examples: int = ContinualOptions.fisher_examples,
    lwf_weight: float = ContinualOptions.lwf_weight,
    lwf_temperature: float = ContinualOptions.lwf_temperature,
    epochs: int = ContinualOptions.epochs,
    batch_size: int = ContinualOptions.batch_size,
    learning_rate: float = ContinualOptions.learning_rate,
    patience: int = ContinualOptions.patience,
    freeze_layers: int = 0,
    seed: int = 0,
    device: str = "auto",
) -> StageReport:
    """Train a segment classifier on a sequence of stages (new verbs, nouns or corpora) one after the other and
    measure what it forgets: the accuracy on every stage's test split after every stage, average accuracy,
    backward and forward transfer, forgetting.

    Class-incremental: one head over the union of all stages' labels, tested without being told the stage; the
    same scores restricted to each stage's own labels are reported beside (the stage given at test).

    Args:
        model: Model directory written by `videobert pretrain`.
        stages: JSON file: a list of stages, each {"work": DIR, "name": ..., "labels": [...]} (DIR relative to the
            file's folder; labels optional: all of DIR's labels of the target).
        out: Folder for continual.json, report.html and model/ (the classifier after the last stage).
        target: What to classify: verb or noun.
        strategy: naive, replay, ewc or lwf, or several joined by + (e.g. replay+ewc).
        replay_size: replay: earlier training examples kept in the reservoir.
        replay_batch: replay: buffer examples added to each batch.
        ewc_strength: ewc: weight of the Fisher-weighted penalty.
        fisher_examples: ewc: training examples per stage that estimate its Fisher information.
        lwf_weight: lwf: weight of the distillation from the previous stage's model.
        lwf_temperature: lwf: softmax temperature of the distillation.
        epochs: Most passes over a stage's training examples (early stopping on its val loss).
        batch_size: New examples per optimisation step.
        learning_rate: AdamW learning rate.
        patience: Stop a stage after this many epochs without a lower val loss.
        freeze_layers: Freeze the embeddings and the lower N encoder layers.
        seed: Seed of the head's initialisation, shuffling, replay sampling.
        device: auto (CUDA when available), cuda or cpu.
    """
    options = ContinualOptions(
        strategy=strategy, replay_size=replay_size, replay_batch=replay_batch, ewc_strength=ewc_strength,
        fisher_examples=fisher_examples, lwf_weight=lwf_weight, lwf_temperature=lwf_temperature, epochs=epochs,
        batch_size=batch_size, learning_rate=learning_rate, patience=patience, freeze_layers=freeze_layers,
    )  # fmt: skip
    if target not in ("verb", "noun"):
        raise ConfigError(f"continual learning classifies one target, verb or noun; got {target!r}")
    specs = read_stages(stages)
    result = run_continual(model, specs, Path(out), target, options, seed, torch.device(resolve_device(device)))
    metrics = result["metrics"]
    return StageReport(
        STAGE,
        done=len(specs),
        outputs={"metrics": str(Path(out) / "continual.json"), "report": str(Path(out) / "report.html"),
                 "model": str(Path(out) / "model")},  # fmt: skip
        stats={
            **{name: value for name, value in metrics.items() if value is not None},
            **{f"{name}_within_stage": value for name, value in result["metrics_within_stage"].items()
               if value is not None},
        },  # fmt: skip
    )


def read_stages(path: Path) -> list[StageSpec]:
    """The stages of a stages file (module docstring); `InputError` naming the file for anything malformed."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not a readable JSON file: {exc}") from exc
    if not isinstance(entries, list) or len(entries) < 2:
        raise InputError(path, "expected a JSON list of at least 2 stages")
    specs = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("work"), str):
            raise InputError(path, f"stage {i}: expected an object with a string 'work'")
        labels = entry.get("labels")
        if labels is not None and (not isinstance(labels, list) or not labels
                                   or not all(isinstance(x, str) for x in labels)):  # fmt: skip
            raise InputError(path, f"stage {i}: 'labels' must be a non-empty list of strings")
        unknown = set(entry) - {"work", "name", "labels"}
        if unknown:
            raise InputError(path, f"stage {i}: unknown key(s) {sorted(unknown)}")
        specs.append(StageSpec(str(entry.get("name", f"stage {i + 1}")), path.parent / entry["work"], labels))
    return specs


def run_continual(
    model: Path,
    specs: list[StageSpec],
    out: Path,
    target: str,
    options: ContinualOptions,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """`continual` with checked options; returns what continual.json holds."""
    # ---- setup
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = VideoBertConfig.from_pretrained(model)
    data, labels, stage_columns = stage_examples(specs, config, target)
    network = VideoBertForSegmentClassification.from_pretrained(model, classification_labels={target: labels})
    tokenizer = require_tokenizer(network, model)
    trainee = apply_method(network, MethodOptions(freeze_layers=options.freeze_layers)).to(device)
    max_length = config.max_position_embeddings
    buffer = ReservoirBuffer(options.replay_size, rng) if "replay" in options.strategies else None
    ewc = EWCPenalty(options.ewc_strength) if "ewc" in options.strategies else None
    use_lwf = "lwf" in options.strategies

    def test_accuracies() -> tuple[list[float], list[float]]:
        """Top-1 on each stage's test split over all labels, and over the stage's own labels only."""
        anywhere, within = [], []
        for splits, columns in zip(data, stage_columns):
            _, scores = evaluate_examples(trainee, tokenizer, splits["test"], options.batch_size, max_length, device)
            gold = splits["test"].labels[:, 0]
            anywhere.append(float(np.mean(scores[target].argmax(axis=1) == gold)))
            within.append(float(np.mean(columns[scores[target][:, columns].argmax(axis=1)] == gold)))
        return anywhere, within

    before, before_within = test_accuracies()
    matrix: list[list[float]] = []
    matrix_within: list[list[float]] = []
    histories = []
    teacher: torch.nn.Module | None = None
    old_labels: list[int] = []  # head columns of the labels of the stages already trained

    # ---- train, stage by stage
    for spec, splits in zip(specs, data):
        train = splits["train"]

        def batch_loss(rows: np.ndarray) -> torch.Tensor:
            chunk = train.subset(rows)
            if buffer is not None and len(buffer):
                chunk = concatenate([chunk, examples_of(buffer.sample(options.replay_batch))])
            output = trainee(**_batch(tokenizer, chunk.texts, chunk.visual, chunk.labels, max_length, device, False))
            loss = output.loss
            if ewc is not None and ewc.anchors:
                loss = loss + ewc(trainee)
            if teacher is not None:
                with torch.no_grad():
                    old = teacher(**_batch(tokenizer, chunk.texts, chunk.visual, None, max_length, device, False))
                loss = loss + options.lwf_weight * distillation_loss(
                    output.target_logits[target][:, old_labels], old.target_logits[target][:, old_labels],
                    options.lwf_temperature,
                )  # fmt: skip
            return loss

        def val_loss() -> float:
            return evaluate_examples(trainee, tokenizer, splits["val"], options.batch_size, max_length, device)[0]

        # A new stage's first losses are large (its labels' scores start far below the earlier ones): clipping keeps
        # those steps from moving the encoder further than the head needs.
        history, best_epoch = fit(trainee, len(train), batch_loss, val_loss, epochs=options.epochs,
                                  batch_size=options.batch_size, learning_rate=options.learning_rate,
                                  patience=options.patience, rng=rng, max_grad_norm=1.0)  # fmt: skip
        histories.append({"stage": spec.name, "best_epoch": best_epoch, "history": history})
        anywhere, within = test_accuracies()
        matrix.append(anywhere)
        matrix_within.append(within)
        logger.info("after %s: test top-1 per stage %s", spec.name, ", ".join(f"{a:.3f}" for a in matrix[-1]))

        # ---- remember this stage for the next ones
        if ewc is not None:
            rows = rng.permutation(len(train))[: options.fisher_examples]
            trainee.eval()  # the Fisher of the model as it predicts, without dropout noise
            ewc.consolidate(trainee, fisher_diagonal(trainee, (
                trainee(**_batch(tokenizer, [train.texts[r]], [train.visual[r]], train.labels[[r]], max_length,
                                 device, False)).loss
                for r in rows
            )))  # fmt: skip
        if buffer is not None:
            for r in range(len(train)):
                buffer.add((train.visual[r], train.texts[r], train.labels[r]))
        if use_lwf:
            teacher = copy.deepcopy(trainee).eval().requires_grad_(False)
        old_labels = sorted(set(old_labels) | set(np.unique(train.labels[:, 0]).tolist()))

    # ---- evaluate and save
    result = {
        "model": str(model), "target": target, "options": asdict(options), "seed": seed,
        "stages": [{"name": s.name, "work": str(s.work), "labels": s.labels,
                    "examples": {split: len(splits[split]) for split in SPLITS}} for s, splits in zip(specs, data)],
        "labels": labels, "accuracy_before": before, "accuracy_matrix": matrix,
        "metrics": continual_metrics(np.array(matrix), np.array(before)),
        "accuracy_before_within_stage": before_within, "accuracy_matrix_within_stage": matrix_within,
        "metrics_within_stage": continual_metrics(np.array(matrix_within), np.array(before_within)),
        "histories": histories,
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "continual.json", result)
    write_report(result, out / "report.html")
    trainee.save_pretrained(out / "model")
    return result


def stage_examples(
    specs: list[StageSpec], config: VideoBertConfig, target: str
) -> tuple[list[dict[str, Examples]], list[str], list[np.ndarray]]:
    """Each stage's examples by split, labelled by the column of the joint head; the joint head's labels (each
    stage's labels in stage order, first appearance first); and the head columns of each stage's labels."""
    labels: list[str] = []
    loaded = []
    for spec in specs:
        splits, names = load_examples(spec.work, config, TARGET_CHOICES[target], with_text=False)
        keep = names[target] if spec.labels is None else spec.labels
        missing = sorted(set(keep) - set(names[target]))
        if missing:
            raise ConfigError(f"stage {spec.name!r}: {spec.work} has no {target} label(s) {missing}")
        labels += [name for name in keep if name not in labels]
        loaded.append((splits, names[target], keep))
    column = {name: i for i, name in enumerate(labels)}
    data = []
    for spec, (splits, names, keep) in zip(specs, loaded):
        wanted = np.array([names.index(name) for name in keep])
        stage = {}
        for split in SPLITS:
            rows = np.flatnonzero(np.isin(splits[split].labels[:, 0], wanted))
            if len(rows) == 0:
                raise InputError(spec.work, f"stage {spec.name!r}: no {split} example with labels {keep}")
            examples = splits[split].subset(rows)
            examples.labels = np.array([[column[names[i]]] for i in examples.labels[:, 0]], dtype=np.int64)
            stage[split] = examples
        data.append(stage)
    return data, labels, [np.array(sorted(column[name] for name in keep)) for _, _, keep in loaded]


def examples_of(items: list[tuple[np.ndarray, str | None, np.ndarray]]) -> Examples:
    """Examples from (visual tokens, narration, label row) triples, as the replay buffer holds them."""
    return Examples([v for v, _, _ in items], [t for _, t, _ in items], np.stack([y for _, _, y in items]))


def concatenate(parts: list[Examples]) -> Examples:
    return Examples([v for p in parts for v in p.visual], [t for p in parts for t in p.texts],
                    np.concatenate([p.labels for p in parts]))  # fmt: skip


def continual_metrics(matrix: np.ndarray, before: np.ndarray) -> dict[str, float | None]:
    """Average accuracy, backward transfer, forgetting and forward transfer (module docstring) of a (stages, stages)
    accuracy matrix and the accuracies before training; transfer metrics are None with a single stage."""
    stages = matrix.shape[0]
    if matrix.shape != (stages, stages) or before.shape != (stages,):
        raise ConfigError(f"expected a square accuracy matrix and one accuracy per stage, got {matrix.shape} and "
                          f"{before.shape}")  # fmt: skip
    last = matrix[-1]
    earlier = range(stages - 1)
    return {
        "average_accuracy": float(last.mean()),
        "backward_transfer": float(np.mean([last[j] - matrix[j, j] for j in earlier])) if stages > 1 else None,
        "forgetting": float(np.mean([matrix[j:-1, j].max() - last[j] for j in earlier])) if stages > 1 else None,
        "forward_transfer": float(np.mean([matrix[j - 1, j] - before[j] for j in range(1, stages)]))
        if stages > 1 else None,
    }  # fmt: skip


def write_report(result: dict[str, Any], path: Path) -> None:
    """report.html: the metrics, the accuracy matrices and one curve per stage over the stages trained, for the
    class-incremental view and the within-stage one."""
    names = [stage["name"] for stage in result["stages"]]
    report = Report(f"continual learning: {result['options']['strategy']}")
    views = {"": f"any of the {len(result['labels'])} {result['target']} labels (the stage is not given)",
             "_within_stage": "the stage's own labels only (the stage is given)"}  # fmt: skip
    report.add_table("metrics (%)", ["metric", *(f"over {view}" for view in views.values())], [
        [name.replace("_", " "), *("-" if result["metrics" + key][name] is None else 100 * result["metrics" + key][name]
                                   for key in views)]
        for name in result["metrics"]
    ])  # fmt: skip
    for key, view in views.items():
        before, matrix = result["accuracy_before" + key], result["accuracy_matrix" + key]
        rows = [["before training", *(100 * a for a in before)]]
        rows += [[f"after {name}", *(100 * a for a in accuracies)] for name, accuracies in zip(names, matrix)]
        report.add_table(f"test top-1 (%) on each stage (columns) after each stage (rows), over {view}",
                         ["model", *names], rows)  # fmt: skip
        curves = {name: [(i, 100 * row[j]) for i, row in enumerate([before, *matrix])] for j, name in enumerate(names)}
        report.add_curves(f"test top-1 on each stage, over {view}", curves, y_label="top-1 (%)",
                          x_label="stages trained")  # fmt: skip
    report.write(path)
