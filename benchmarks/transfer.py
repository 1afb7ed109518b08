"""Do the visual words mean something on a corpus? One recipe, one corpus: the held-out probes and zero-shot.

    .venv/bin/python benchmarks/transfer.py CORPUS OUT --backbone pixels
    .venv/bin/python benchmarks/transfer.py CORPUS OUT --backbone encoder --encoder-steps 1500
    .venv/bin/python benchmarks/transfer.py CORPUS OUT --backbone encoder --masked-frame-weight 0 --next-frame-weight 0
    .venv/bin/python benchmarks/transfer.py CORPUS OUT --backbone encoder --normalize video-center --pretrain-steps 3000

CORPUS is any corpus in the contract with annotations (verb/noun, split): `videobert synth` (either world) or your
own. The chain is the demo's: ingest -> (train-encoder) -> extract (15-frame clips) -> vocab (12 x 12 words) ->
tokenize -> the held-out segment probes (`tokenizer.quality.segment_token_report`: bag of visual words, continuous
features, majority class) -> with --pretrain-steps, pretraining with the demo's recipe and zero-shot verb/noun top-1
on the test split next to the language prior. Every stage resumes, so a second recipe on the same OUT re-uses the
ingest. Prints one JSON line (and writes OUT/<recipe>/result.json).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from videobert.data.ingest import ingest
from videobert.features.extract import extract
from videobert.tokenizer.quality import segment_token_report
from videobert.tokenizer.stages import tokenize, vocab


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--backbone", default="pixels", help="pixels or encoder (trained here on the corpus)")
    ap.add_argument("--normalize", default="auto")
    ap.add_argument("--center", default="none", help="none or video (vocab --center)")
    ap.add_argument("--clip-frames", type=int, default=15)
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--encoder-steps", type=int, default=1500)
    ap.add_argument("--contrast-weight", type=float, default=1.0)
    ap.add_argument("--masked-frame-weight", type=float, default=0.5)
    ap.add_argument("--next-frame-weight", type=float, default=0.5)
    ap.add_argument("--text", default="bow")
    ap.add_argument("--descriptor", default="pixels", help="pixels or none")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--pretrain-steps", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of train-encoder (1: the machine is shared)")
    ap.add_argument("--name", default=None, help="recipe folder name (default: from the options)")
    args = ap.parse_args()

    base = args.out / "ingest"
    ingest(args.corpus, base)
    encoder_desc = (f"c{args.contrast_weight:g}-m{args.masked_frame_weight:g}-n{args.next_frame_weight:g}-"
                    f"{args.text.replace('/', '_')}-d{args.descriptor}-s{args.encoder_steps}-px{args.image_size}-seed{args.seed}")
    name = args.name or (f"{args.backbone}" + (f"-{encoder_desc}" if args.backbone == "encoder" else "")
                         + f"-{args.normalize}{'-center' if args.center == 'video' else ''}-k{args.k}d{args.depth}")
    run = args.out / name
    work = run / "work"
    work.mkdir(parents=True, exist_ok=True)
    for f in ("manifest.parquet", "sentences.parquet", "segments.parquet"):
        target = work / f
        if not target.exists() and (base / f).exists():
            target.write_bytes((base / f).read_bytes())
    timings = {}
    backbone = args.backbone
    if args.backbone == "encoder":
        from videobert.training.encoder import train_encoder

        enc = args.out / f"encoder-{encoder_desc}"
        t0 = time.perf_counter()
        report = train_encoder(base, out=enc, steps=args.encoder_steps, clip_frames=args.clip_frames,
                               image_size=args.image_size, contrast_weight=args.contrast_weight,
                               masked_frame_weight=args.masked_frame_weight, next_frame_weight=args.next_frame_weight,
                               text=args.text, seed=args.seed, threads=args.threads,
                               descriptor=args.descriptor)  # fmt: skip
        timings["train_encoder_s"] = round(time.perf_counter() - t0, 1)
        timings["train_encoder_clips_per_s"] = report.stats.get("clips/s")
        backbone = f"encoder:{enc}"
    t0 = time.perf_counter()
    extracted = extract(work, backbone=backbone, clip_frames=args.clip_frames)
    timings["extract_s"] = round(time.perf_counter() - t0, 1)
    timings["extract_clips_per_s"] = round(extracted.stats.get("clips/s", 0.0), 1)
    vocab(work, k=args.k, depth=args.depth, seed=args.seed, normalize=args.normalize, center=args.center)
    tokenize(work)
    quality = segment_token_report(work)
    result = {"corpus": str(args.corpus), "recipe": name, **timings,
              **{k: quality[k] for k in ("verb_probe_tokens", "noun_probe_tokens", "verb_probe_features",
                                         "noun_probe_features", "verb_probe_chance", "noun_probe_chance") if k in quality}}
    if args.pretrain_steps:
        from videobert.pipeline import DEMO_PRETRAIN
        from videobert.tasks.evaluate import evaluate
        from videobert.training.pretrain import pretrain

        model = run / "model"
        steps = args.pretrain_steps
        pretrain(work, out=model, max_steps=steps, seed=args.seed, eval_steps=max(1, steps // 6),
                 save_steps=max(1, steps // 3), logging_steps=max(1, min(50, steps // 20)), **DEMO_PRETRAIN)
        evaluate(model, work, task="zeroshot", split="test", out=run / "zeroshot")
        zs = json.loads((run / "zeroshot" / "metrics.json").read_text())["methods"]
        for method, values in zs.items():
            for key in ("verb_top1", "noun_top1", "verb_top5", "noun_top5"):
                if key in values:
                    result[f"zeroshot_{method}_{key}"] = values[key]
    (run / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
