"""Generation time of each world `videobert synth --world` offers, on the same corpus parameters.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/synth_worlds.py                 # 40 videos at 96x96, 2 rounds
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/synth_worlds.py --videos 10 --rounds 1
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/synth_worlds.py --source FOLDER   # RealCam too, filming FOLDER

Each round generates the corpus once per world, one world after the other, into a fresh temporary directory
(planning, rendering, H.264 encoding and writing: all of `synth`). Reported per world: the best round's wall
time and process CPU time (CPU time is steadier on a shared machine), and the ratio to the first world. RealCam
(real footage) is timed only with --source; its time includes decoding the source videos it shows.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from videobert.data.synth import synth
from videobert.data.workshop import WORLDS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--source", type=Path, help="folder of real videos for RealCam (left out when not given)")
    args = parser.parse_args()
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.rounds):
        for world, spec in WORLDS.items():
            if spec.from_source is not None and args.source is None:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                wall, cpu = time.perf_counter(), time.process_time()
                synth(Path(tmp) / world, videos=args.videos, seed=0, width=args.size, height=args.size, world=world,
                      source=args.source if spec.from_source is not None else None)
                taken = (time.perf_counter() - wall, time.process_time() - cpu)
            best[world] = min(best.get(world, taken), taken)
    first = next(iter(best.values()))
    print(f"{args.videos} videos at {args.size}x{args.size}, best of {args.rounds}")
    print("| world | wall s | CPU s | CPU ratio |")
    print("|---|---|---|---|")
    for world, (wall, cpu) in best.items():
        print(f"| {world} | {wall:.1f} | {cpu:.1f} | {cpu / first[1]:.2f} |")


if __name__ == "__main__":
    main()
