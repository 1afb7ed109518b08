"""``videobert extract`` with the ``pixels`` backbone (or ``--backbone encoder:DIR``) against raw PyAV decoding of the same videos, in one run.

    .venv/bin/python benchmarks/extract.py                  # 20 generated 10 s videos, 320x240 H.264
    .venv/bin/python benchmarks/extract.py --corpus DIR     # the videos under DIR instead
    .venv/bin/python benchmarks/extract.py --workers 4

* raw: every frame of every video decoded with ``container.decode(stream)``, FFmpeg threads on
  (``thread_type = "AUTO"``), no pixel conversion, one video after the other (see benchmarks/decode.py).
* extract: the whole stage, ``extract(work, backbone="pixels", workers=...)`` from a manifest to committed
  shards and clips.parquet: decoder processes started, clips cut at 20 fps x 30 frames, scaled to 32x32, the
  descriptor computed in batches, features written.

Both are timed ``--repeat`` times, alternating, best kept; extract starts from an empty work directory each
time. Clips/s for raw decoding counts the clips extract writes for the same videos, so the ratio is raw time
/ extract time. Target: extract >= 0.7 x raw.
"""
from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from decode import CLIP_FRAMES, FPS, corpus_from_args, machine, raw_decode
from videobert.data.schema import MANIFEST
from videobert.data.video import ClipDecoder, probe
from videobert.features.backbones import get_backbone
from videobert.features.extract import extract
from videobert.utils.io import write_parquet


def write_manifest(work: Path, paths: list[Path]) -> None:
    rows = []
    for p in paths:
        info = probe(p, verify=False)
        rows.append({"video": p.name, "path": str(p.resolve()), "duration": info.duration, "fps": info.fps,
                     "width": info.width, "height": info.height, "num_frames": info.num_frames})
    write_parquet(work / "manifest.parquet", rows, schema=MANIFEST)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", help="folder of videos (default: generate a corpus in a temp dir)")
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backbone", default="pixels",
                        help="pixels, or encoder:DIR (a trained clip encoder; e.g. from `videobert train-encoder`)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="videobert-bench-") as tmp:
        paths, corpus = corpus_from_args(args, str(Path(tmp) / "corpus"))
        manifest_dir = Path(tmp) / "manifest"
        manifest_dir.mkdir()
        write_manifest(manifest_dir, paths)
        raw_s = extract_s = float("inf")
        for rep in range(args.repeat):
            t0 = time.perf_counter()
            for p in paths:
                raw_decode(p)
            raw_s = min(raw_s, time.perf_counter() - t0)

            work = Path(tmp) / f"work{rep}"
            work.mkdir()
            shutil.copy(manifest_dir / "manifest.parquet", work)
            t0 = time.perf_counter()
            report = extract(work, backbone=args.backbone, workers=args.workers, batch_size=args.batch_size)
            extract_s = min(extract_s, time.perf_counter() - t0)
            clips = report.stats["clips extracted"]
            assert report.failed == 0, report

        # The descriptor alone (CPU time, so other load on the machine does not count), on the clips of
        # the first videos, for the breakdown.
        backbone = get_backbone(args.backbone)
        decoder = ClipDecoder(fps=FPS, clip_frames=CLIP_FRAMES, size=backbone.clip_size)
        sample = np.stack([c.frames for p in paths[:4] for c in decoder.clips(p)])  # (N, 30, H, W, 3)
        backbone(sample[: args.batch_size])
        t0 = time.process_time()
        for start in range(0, len(sample), args.batch_size):
            backbone(sample[start : start + args.batch_size])
        per_clip_ms = (time.process_time() - t0) / len(sample) * 1e3

    print(f"\n{clips} clips; {args.backbone} backbone alone: {per_clip_ms:.2f} ms CPU per clip\n")
    print(f"| date | machine | corpus | workers | raw decode clips/s | extract ({args.backbone}) clips/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {datetime.date.today()} | {machine()} | {corpus} | {args.workers} | {clips / raw_s:.1f} "
          f"| {clips / extract_s:.1f} | {raw_s / extract_s:.2f} |")
    print(f"\ncommand: python benchmarks/extract.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
