"""Forgetting on MiniCook's verbs learnt in groups, and the robust fine-tuning options, over seeds.

    .venv/bin/python benchmarks/continual.py DIR [--seeds 0,1,2] [--tables continual,adversarial,augmentation,layers]

DIR holds (and reuses on later runs) a generated MiniCook corpus, its work directory (clips of 0.75 s, 12 x 12
visual words) and a small VideoBERT pretrained on it with the demo's recipe; the runs go to DIR/runs (a fine-tuning
run already there is reused: delete DIR/runs to start over). Tables, as Markdown on stdout:

- continual: the 8 verbs in 4 stages of 2 (`videobert continual`, class-incremental), naive vs replay vs EWC vs LwF
  and replay+LwF: average accuracy, forgetting and backward transfer, over all labels and within the stage's own
  (mean and range over seeds);
- adversarial: verb top-1 clean and under an FGM attack (ATTACKS), standard vs adversarial training against it;
- augmentation: few-shot verb fine-tuning (--few-shot per verb) with each augmentation alone;
- layers: layer-wise learning-rate decay and frozen lower layers.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videobert.data.ingest import ingest
from videobert.data.synth import VERBS, synth
from videobert.features.extract import extract
from videobert.tasks.continual import continual
from videobert.tasks.finetune import finetune
from videobert.tokenizer.stages import tokenize, vocab
from videobert.training.pretrain import pretrain
from videobert.utils.io import read_json

VIDEOS, SIZE, PRETRAIN_STEPS = 120, 64, 600
PRETRAIN = dict(init="scratch:2x128", text_vocab=300, learning_rate=1e-3, content_word_weight=8.0, text_weight=0.1,
                video_weight=0.1, text_video_weight=0.8, negative_prob=0.25, batch_size=32)  # fmt: skip
GROUPS = [list(VERBS[i : i + 2]) for i in range(0, len(VERBS), 2)]
STRATEGIES = {"naive": {}, "replay": {}, "ewc (lambda 1e3)": {"ewc_strength": 1e3}, "ewc": {}, "lwf": {},
              "replay+lwf": {}}
ADV_EPS = 0.2
ADVERSARIAL = dict(learning_rate=3e-4, batch_size=16, patience=3)
ATTACKS = ("fgm",)  # pgd costs 2-3x more per step on a shared CPU


def prepare(root: Path) -> tuple[Path, Path]:
    """The work directory and the pretrained model in `root`, built when missing."""
    corpus, work, model = root / "corpus", root / "work", root / "model"
    if not (model / "config.json").exists():
        synth(corpus, videos=VIDEOS, seed=0, width=SIZE, height=SIZE)
        ingest(corpus, work)
        extract(work, backbone="pixels", clip_frames=15)
        vocab(work, k=12, depth=2, seed=0)
        tokenize(work)
        pretrain(work, out=model, max_steps=PRETRAIN_STEPS, seed=0, device="cpu", eval_steps=0, **PRETRAIN)
    return work, model


def summary(values: list[float]) -> str:
    v = 100 * np.asarray(values)
    return f"{v.mean():.1f} ({v.min():.1f}-{v.max():.1f})"


def continual_table(work: Path, model: Path, runs: Path, seeds: list[int], epochs: int) -> None:
    stages = runs / "verb_groups.json"
    stages.parent.mkdir(parents=True, exist_ok=True)
    stages.write_text(json.dumps([{"name": f"verbs {'+'.join(g)}", "work": str(work), "labels": g} for g in GROUPS]))
    print(f"\n### Continual: {len(GROUPS)} stages of 2 verbs, {epochs} epochs at most per stage, seeds {seeds}\n")
    print("| strategy | average accuracy | forgetting | backward transfer | within stage: average accuracy | "
          "within stage: forgetting | seconds per run |")
    print("|---|---|---|---|---|---|---|")
    for strategy, extra in STRATEGIES.items():
        rows: dict[str, list[float]] = {}
        started = time.perf_counter()
        for seed in seeds:
            out = runs / "continual" / f"{strategy.split()[0]}-{len(extra)}-{seed}"
            continual(model, stages, out, strategy=strategy.split()[0], epochs=epochs, seed=seed, device="cpu",
                      **extra)  # fmt: skip
            result = read_json(out / "continual.json")
            for key in ("metrics", "metrics_within_stage"):
                for name, value in result[key].items():
                    rows.setdefault(f"{key}.{name}", []).append(value)
        seconds = (time.perf_counter() - started) / len(seeds)
        cells = [summary(rows[name]) for name in ("metrics.average_accuracy", "metrics.forgetting",
                                                  "metrics.backward_transfer", "metrics_within_stage.average_accuracy",
                                                  "metrics_within_stage.forgetting")]  # fmt: skip
        print(f"| {strategy} | {' | '.join(cells)} | {seconds:.0f} |", flush=True)


def finetune_runs(work: Path, model: Path, out: Path, seeds: list[int], **options: Any) -> list[dict[str, Any]]:
    results = []
    for seed in seeds:
        folder = out / f"seed{seed}"
        if not (folder / "metrics.json").exists():
            finetune(model, work, folder, target="verb", seed=seed, device="cpu", **options)
        results.append(read_json(folder / "metrics.json"))
    return results


def adversarial_table(work: Path, model: Path, runs: Path, seeds: list[int], epochs: int) -> None:
    print(f"\n### Adversarial training (eps {ADV_EPS} on the input embeddings), {epochs} epochs, seeds {seeds}\n")
    print("| attack at test | training | clean top-1 | top-1 under the attack |")
    print("|---|---|---|---|")
    for attack in ATTACKS:
        for training in ("none", attack):
            results = finetune_runs(work, model, runs / "adversarial" / f"{training}-{attack}", seeds, epochs=epochs,
                                    adversarial=training, attack=attack, adv_eps=ADV_EPS, **ADVERSARIAL)
            clean = [r["test"]["verb"]["top1"] for r in results]
            attacked = [r["test_under_attack"]["verb"]["top1"] for r in results]
            print(f"| {attack.upper()} | {'standard' if training == 'none' else training.upper()} | "
                  f"{summary(clean)} | {summary(attacked)} |", flush=True)  # fmt: skip


def augmentation_table(work: Path, model: Path, runs: Path, seeds: list[int], epochs: int, shots: int) -> None:
    variants = {
        "none": {}, "stride 1-3": {"stride": 3}, "visual-word dropout 0.2": {"token_dropout": 0.2},
        "neighbour substitution 0.2": {"word_substitution": 0.2},
        "with narration": {"with_text": True},
        "with narration, narration dropout 0.5": {"with_text": True, "narration_dropout": 0.5},
        "with narration, word dropout 0.3": {"with_text": True, "word_dropout": 0.3},
    }  # fmt: skip
    print(f"\n### Augmentation: few-shot ({shots} per verb), {epochs} epochs, seeds {seeds}; verb top-1 on test\n")
    print("| augmentation | verb top-1 |")
    print("|---|---|")
    for name, options in variants.items():
        results = finetune_runs(work, model, runs / "augmentation" / name.replace(" ", "_"), seeds, epochs=epochs,
                                few_shot=shots, learning_rate=5e-4, patience=epochs, **options)  # fmt: skip
        print(f"| {name} | {summary([r['test']['verb']['top1'] for r in results])} |", flush=True)


def layers_table(work: Path, model: Path, runs: Path, seeds: list[int], epochs: int, shots: int) -> None:
    print(f"\n### Layer-wise learning-rate decay and frozen layers: few-shot ({shots} per verb), seeds {seeds}\n")
    print("| lr decay | frozen lower layers | verb top-1 |")
    print("|---|---|---|")
    for decay in (1.0, 0.5):
        for frozen in (0, 1):
            results = finetune_runs(work, model, runs / "layers" / f"{decay}-{frozen}", seeds, epochs=epochs,
                                    few_shot=shots, learning_rate=5e-4, patience=epochs, lr_decay=decay,
                                    freeze_layers=frozen)  # fmt: skip
            print(f"| {decay} | {frozen} | {summary([r['test']['verb']['top1'] for r in results])} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tables", default="continual,adversarial,augmentation,layers")
    parser.add_argument("--epochs", type=int, default=30, help="most epochs per stage / fine-tuning run")
    parser.add_argument("--few-shot", type=int, default=5, help="training segments per verb (augmentation, layers)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    work, model = prepare(args.root)
    print(f"corpus and model ready after {time.perf_counter() - started:.0f} s", flush=True)
    runs = args.root / "runs"
    tables = args.tables.split(",")
    if "continual" in tables:
        continual_table(work, model, runs, seeds, args.epochs)
    if "adversarial" in tables:
        adversarial_table(work, model, runs, seeds, args.epochs)
    if "augmentation" in tables:
        augmentation_table(work, model, runs, seeds, args.epochs, args.few_shot)
    if "layers" in tables:
        layers_table(work, model, runs, seeds, args.epochs, args.few_shot)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
