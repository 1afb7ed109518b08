"""Visual words vs continuous clip features vs both (CBT): one pretraining recipe per visual input, same model size,
budget and data, then zero-shot classification (against the language prior), text-to-video retrieval and the held-out
masked-clip accuracy (noise-contrastive top-1 among the batch's clips), plus the pretraining step throughput of each
input as a ratio to words, timed in the same process in interleaved rounds (so a busy machine slows all alike):
the median over rounds of each round's ratio. With ``--caption-seeds``, each pretrained model also gets a captioner
(encoder `pretrained`: the VideoBERT reads its own input, words, features or both; `tasks.caption._caption_run`, the
recipe of `benchmarks/captioning.py`) per seed, and the test CIDEr is compared seed by seed (paired).

    .venv/bin/python benchmarks/cbt.py WORK [--modes words,features,both] [--steps 1500] [--split test] [--out DIR]
    .venv/bin/python benchmarks/cbt.py WORK --steps 0 --throughput-rounds 20      # the throughput ratios only
    .venv/bin/python benchmarks/cbt.py WORK --caption-seeds 0,1,2,3,4 --out DIR     # + captioning CIDEr over seeds

WORK is a work directory with features, vocabulary and tokens (e.g. demo_out/work after `make demo`). The recipe is
the demo's (`pipeline.DEMO_PRETRAIN`: a 2x256 BERT from scratch over a narration WordPiece vocabulary). Models and
evaluations go to DIR (default: a temporary folder); the table is printed as Markdown and written to DIR/cbt.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from videobert.pipeline import DEMO_PRETRAIN
from videobert.tasks.caption import CaptionOptions, CaptionScorer, _caption_run
from videobert.tasks.evaluate import evaluate
from videobert.training.data import PretrainDataConfig
from videobert.training.pretrain import PretrainConfig, PretrainRecipe, run_pretraining

DATA_FIELDS = {f.name for f in dataclasses.fields(PretrainDataConfig)}


def recipe_config(mode: str, steps: int, seed: int) -> PretrainConfig:
    """The demo's pretraining recipe with visual input `mode`."""
    data = {k: v for k, v in DEMO_PRETRAIN.items() if k in DATA_FIELDS} | {"seed": seed}
    rest = {k: v for k, v in DEMO_PRETRAIN.items() if k not in DATA_FIELDS}
    return PretrainConfig(**rest, visual_input=mode, data=data, max_steps=steps, device="cpu",
                          save_steps=steps, eval_steps=0, logging_steps=max(1, steps // 10))  # fmt: skip


def step_seconds(work: Path, out: Path, modes: list[str], steps: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per optimizer step (forward, backward, AdamW, collation included) of each mode in each of `rounds`
    rounds of `steps` steps, after two warm-up steps. In a round every mode trains on the same batches (the streams
    share their seed), in a random order, so that a busy machine slows the modes of a round alike."""
    runs = {}
    for mode in modes:
        recipe = PretrainRecipe(work, out / f"throughput-{mode}", recipe_config(mode, 10_000, 0))
        recipe.setup()
        trainer = recipe.trainer
        model = trainer.model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        runs[mode] = (trainer, model, optimizer, iter(trainer.get_train_dataloader()))

    def step(mode: str) -> None:
        trainer, model, optimizer, batches = runs[mode]
        loss = trainer.compute_loss(model, next(batches))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for mode in modes:
        for _ in range(2):
            step(mode)
    order = random.Random(0)
    for _ in range(rounds):
        for mode in order.sample(modes, len(modes)):
            start = time.perf_counter()
            for _ in range(steps):
                step(mode)
            times[mode].append((time.perf_counter() - start) / steps)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path)
    parser.add_argument("--modes", default="words,features,both")
    parser.add_argument("--steps", type=int, default=1500, help="pretraining steps per visual input (0: timing only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="test", help="annotation split of zero-shot and retrieval")
    parser.add_argument("--throughput-steps", type=int, default=4, help="steps per timed round (0: no timing)")
    parser.add_argument("--throughput-rounds", type=int, default=10)
    parser.add_argument("--caption-seeds", default="", help="captioning seeds, e.g. 0,1,2,3,4 (empty: none)")
    parser.add_argument("--caption-epochs", type=int, default=40, help="most captioning epochs (early stopping)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    modes = args.modes.split(",")
    out = args.out or Path(tempfile.mkdtemp(prefix="videobert-cbt-"))
    out.mkdir(parents=True, exist_ok=True)

    results: dict[str, dict] = {}
    for mode in modes if args.steps else ():
        started = time.perf_counter()
        model = out / mode
        run_pretraining(args.work, model, recipe_config(mode, args.steps, args.seed))
        trained = json.loads((model / "metrics.json").read_text())
        zeroshot = evaluate(model, args.work, task="zeroshot", split=args.split, device="cpu")
        retrieval = evaluate(model, args.work, task="retrieval", split=args.split, device="cpu")
        zs = json.loads(Path(zeroshot.outputs["metrics"]).read_text())["methods"]
        rt = json.loads(Path(retrieval.outputs["metrics"]).read_text())["methods"]
        results[mode] = {
            "zeroshot": zs,
            "text_to_video_r1": {method: rt[method]["text_to_video"]["r1"] for method in rt},
            "eval": trained["eval"],
            "minutes": (time.perf_counter() - started) / 60,
        }
    if args.throughput_steps:
        seconds = step_seconds(args.work, out, modes, args.throughput_steps, args.throughput_rounds)
        for mode in modes:
            entry = results.setdefault(mode, {})
            entry["step_seconds"] = statistics.median(seconds[mode])
            if "words" in seconds:
                # The median over rounds of the per-round ratio: each round's modes ran under the same load.
                entry["throughput_vs_words"] = statistics.median(
                    w / m for w, m in zip(seconds["words"], seconds[mode])
                )  # fmt: skip
    caption_seeds = [int(s) for s in args.caption_seeds.split(",") if s]
    if caption_seeds and args.steps:
        with CaptionScorer() as scorer:
            for mode in modes:
                results[mode]["cider"] = [
                    _caption_run(out / mode, args.work, out / f"caption-{mode}-{seed}",
                                 CaptionOptions(encoder="pretrained", epochs=args.caption_epochs, seed=seed), scorer,
                                 torch.device("cpu"))["test"]["cider"]
                    for seed in caption_seeds
                ]  # fmt: skip
    (out / "cbt.json").write_text(json.dumps(results, indent=2))

    print(f"\n{args.work}, {args.steps} steps, seed {args.seed}, split {args.split} (models in {out})\n")
    print("| visual input | verb top-1 / top-5 | noun top-1 / top-5 | prior verb / noun top-1 | text->video R@1 "
          "(alignment / embedding / likelihood) | held-out masked clip top-1 | step throughput vs words |")
    print("|---|---|---|---|---|---|---|")
    for mode, r in results.items():
        if "zeroshot" not in r:
            print(f"| {mode} | | | | | | {r['throughput_vs_words']:.2f}x ({r['step_seconds']:.3f} s a step) |")
            continue
        v, p = r["zeroshot"]["videobert"], r["zeroshot"]["language_prior"]
        t2v = r["text_to_video_r1"]
        nce = r["eval"].get("nce_accuracy")
        ratio = r.get("throughput_vs_words")
        print(f"| {mode} | {v['verb_top1']:.3f} / {v['verb_top5']:.3f} | {v['noun_top1']:.3f} / {v['noun_top5']:.3f} "
              f"| {p['verb_top1']:.3f} / {p['noun_top1']:.3f} | {t2v['alignment']:.3f} / {t2v['embedding']:.3f} / "
              f"{t2v['likelihood']:.3f} | {'-' if nce is None else f'{nce:.3f}'} | "
              f"{'-' if ratio is None else f'{ratio:.2f}x'} |")
    if caption_seeds and args.steps:
        print(f"\nCaptioning CIDEr, test split, seeds {caption_seeds} (encoder pretrained)\n")
        print("| visual input | CIDEr mean | min | max | seeds ahead of words | mean difference to words +- s.e. |")
        print("|---|---|---|---|---|---|")
        for mode, r in results.items():
            cider = np.asarray(r["cider"])
            paired = cider - np.asarray(results["words"]["cider"]) if "words" in results else None
            error = paired.std(ddof=1) / np.sqrt(len(cider)) if paired is not None and len(cider) > 1 else float("nan")
            versus = "-" if paired is None or mode == "words" else f"{int((paired > 0).sum())}/{len(cider)}"
            difference = "-" if paired is None or mode == "words" else f"{paired.mean():+.2f} +- {error:.2f}"
            print(f"| {mode} | {cider.mean():.2f} | {cider.min():.2f} | {cider.max():.2f} | {versus} | {difference} |")


if __name__ == "__main__":
    main()
