"""Table 3 over several seeds: how much of a captioning comparison is the encoder and how much the seed? Runs
`caption_comparison`'s recipe (`tasks.caption._caption_run`: same decoder, data and budget per encoder) for every
encoder mode and seed, and prints CIDEr (mean, min-max) per mode, and per pair of modes how many seeds the first
beats the second and the mean per-seed difference with its standard error (runs of one seed share the training
captions and shuffling, so the pairs are compared seed by seed). A single `make demo` table differs by a few tenths
of CIDEr from seed to seed on MiniCook, about as much as some modes differ; this is the measurement to quote.

    .venv/bin/python benchmarks/captioning.py MODEL WORK [--seeds 0,1,2,3,4] [--few-shot 1] [--epochs 40]

MODEL is a model directory written by `videobert pretrain` on WORK (e.g. demo_out/model and demo_out/work after
`make demo`). Java present: METEOR is scored too, but only CIDEr is summarised. Runs go to a temporary folder.
"""
from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from videobert.model.captioning import ENCODER_MODES
from videobert.tasks.caption import METHOD_NAMES, CaptionOptions, CaptionScorer, _caption_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--modes", default=",".join(ENCODER_MODES))
    parser.add_argument("--few-shot", type=int, default=1, help="training segments per distinct caption (0: all)")
    parser.add_argument("--epochs", type=int, default=40, help="most epochs (early stopping on the val loss)")
    parser.add_argument("--with-template", action="store_true")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    modes = args.modes.split(",")
    cider: dict[str, list[float]] = {mode: [] for mode in modes}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, CaptionScorer() as scorer:
        for seed in seeds:
            for mode in modes:
                options = CaptionOptions(encoder=mode, epochs=args.epochs, few_shot=args.few_shot, seed=seed,
                                         with_template=args.with_template)  # fmt: skip
                run = _caption_run(args.model, args.work, Path(tmp) / f"{seed}-{mode}", options, scorer, torch.device("cpu"))
                cider[mode].append(run["test"]["cider"])
                print(f"seed {seed} {mode}: CIDEr {run['test']['cider']:.3f} (best epoch {run['best_epoch']}, "
                      f"{run['examples']['train']} training captions)", flush=True)  # fmt: skip
    print(f"\n{len(seeds)} seeds, few_shot={args.few_shot}, epochs<={args.epochs}, {time.perf_counter() - started:.0f} s\n")
    print("| encoder | CIDEr mean | min | max |")
    print("|---|---|---|---|")
    for mode in sorted(modes, key=lambda m: -np.mean(cider[m])):
        values = np.asarray(cider[mode])
        print(f"| {METHOD_NAMES[mode]} | {values.mean():.2f} | {values.min():.2f} | {values.max():.2f} |")
    print("\n| first | second | seeds where first > second | mean difference +- standard error |")
    print("|---|---|---|---|")
    for a, b in itertools.permutations(modes, 2):
        differences = np.asarray(cider[a]) - np.asarray(cider[b])  # paired: the same seed
        wins = int((differences > 0).sum())
        error = differences.std(ddof=1) / np.sqrt(len(seeds)) if len(seeds) > 1 else float("nan")
        print(f"| {METHOD_NAMES[a]} | {METHOD_NAMES[b]} | {wins}/{len(seeds)} | {differences.mean():+.2f} +- {error:.2f} |")
    print(json.dumps({"seeds": seeds, "cider": cider}))


if __name__ == "__main__":
    main()
