"""How much of the step labels do the visual words keep, as a function of clip length and vocabulary size? For each
clip length (frames at 20 fps) the clips of WORK's videos are re-extracted with the `pixels` backbone into a
temporary work directory, then for each k a k x k vocabulary is fitted and the held-out segment probes of
`tokenizer.quality.segment_token_report` are printed: bag of visual words against the continuous clip features.

    .venv/bin/python benchmarks/clip_length.py WORK [--frames 30,20,15,10] [--k 12,16]

WORK is a work directory after `ingest` with annotated segments (e.g. demo_out/work after `make demo`); it is only
read. About 10 s per clip length on the 160-video demo corpus.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from videobert.features.extract import extract
from videobert.tokenizer.quality import segment_token_report
from videobert.tokenizer.stages import tokenize, vocab

INPUTS = ("manifest.parquet", "segments.parquet", "sentences.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path)
    parser.add_argument("--frames", default="30,20,15,10", help="clip lengths in frames at 20 fps")
    parser.add_argument("--k", default="12,16", help="branching factors of depth-2 vocabularies")
    args = parser.parse_args()
    print("| clip frames (s) | visual words | verb: words | verb: features | noun: words | noun: features |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for frames in (int(f) for f in args.frames.split(",")):
            work = Path(tmp) / f"clips{frames}"
            work.mkdir()
            for name in INPUTS:
                shutil.copy(args.work / name, work / name)
            extract(work, backbone="pixels", clip_frames=frames)
            for k in (int(k) for k in args.k.split(",")):
                vocab(work, k=k, depth=2, seed=0, overwrite=True)
                tokenize(work)
                r = segment_token_report(work)
                print(f"| {frames} ({frames / 20:g}) | {k * k} | {100 * r['verb_probe_tokens']:.1f} | "
                      f"{100 * r['verb_probe_features']:.1f} | {100 * r['noun_probe_tokens']:.1f} | "
                      f"{100 * r['noun_probe_features']:.1f} |", flush=True)  # fmt: skip
            shutil.rmtree(work)


if __name__ == "__main__":
    main()
