"""Speech recognition on the real speech of /work/shared/realvideo: word error rate against the reference text, the
error of the recognised word times against the GRID forced alignment, and the real-time factor (recognition seconds
per second of audio, audio decoding excluded).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/asr.py /work/shared/realvideo/subtitles_asr [--asr pocketsphinx hf:DIR]
        [--espeak 40]

With --espeak N, also the first N cooking captions of tests/data/cooking_captions.tsv spoken by espeak-ng (a formant
synthesiser: `apt-get install espeak-ng`): instructional English with a known text, in a voice no engine was
trained on.

References: each GRID clip's .srt holds its spoken sentence and grid_*.align the word timings (GRID units: 1/25000 s);
the NASA clip's .srt holds the broadcaster's captions (speaker labels such as "NAR:" removed).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from pathlib import Path

import jiwer

from videobert.data.transcripts import load_transcript
from videobert.speech.audio import SAMPLE_RATE, decode_audio
from videobert.speech.engines import get_engine, recognize

_SPEAKER = re.compile(r"^[A-Z]+:\s*")
_PUNCTUATION = re.compile(r"[^\w\s']")


def normalise(text: str) -> str:
    text = text.replace("\u2019", "'")
    return " ".join(_PUNCTUATION.sub(" ", _SPEAKER.sub("", text)).lower().split())


def reference(video: Path) -> str:
    return normalise(" ".join(s.text for s in load_transcript(video.with_suffix(".srt")).sentences))


def align_words(path: Path) -> list[tuple[str, float, float]]:
    """(word, start s, end s) of a GRID .align file, silences left out."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(w, int(a) / 25000, int(b) / 25000) for a, b, w in rows if w not in ("sil", "sp")]


def timing_error(words, truth) -> tuple[float, int]:
    """Mean |start error| and |end error| (s) over the recognised words that match a reference word."""
    out = jiwer.process_words(" ".join(w for w, _, _ in truth), " ".join(normalise(w.text) for w in words))
    errors = []
    for chunk in out.alignments[0]:
        if chunk.type == "equal":
            for i, j in zip(range(chunk.ref_start_idx, chunk.ref_end_idx), range(chunk.hyp_start_idx, chunk.hyp_end_idx)):
                errors += [abs(words[j].start - truth[i][1]), abs(words[j].end - truth[i][2])]
    return (sum(errors) / len(errors) if errors else float("nan")), len(errors) // 2


def espeak_captions(count: int) -> list[tuple[str, Path]]:
    """(caption, wav file) for the first `count` hand-labelled cooking captions, spoken by espeak-ng."""
    table = Path(__file__).parents[1] / "tests" / "data" / "cooking_captions.tsv"
    captions = [line.split("\t")[0] for line in table.read_text().splitlines() if line and not line.startswith("#")]
    folder = Path(tempfile.mkdtemp())
    out = []
    for k, caption in enumerate(captions[:count]):
        wav = folder / f"{k:03d}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), caption], check=True)
        out.append((caption, wav))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--asr", nargs="+", default=["pocketsphinx"])
    parser.add_argument("--espeak", type=int, default=0, help="also N cooking captions spoken by espeak-ng")
    args = parser.parse_args()
    spoken = espeak_captions(args.espeak) if args.espeak else []
    videos = sorted(p for p in args.folder.iterdir() if p.suffix in (".mpg", ".mp4") and p.with_suffix(".srt").is_file())
    for name in args.asr:
        t0 = time.perf_counter()
        engine = get_engine(name, device="cpu")
        print(f"\n## {name} ({engine.model}), loaded in {time.perf_counter() - t0:.1f} s")
        print("| clip | reference | recognised | WER |\n|---|---|---|---|")
        groups: dict[str, tuple[list[str], list[str]]] = {"GRID": ([], []), "NASA": ([], [])}
        audio = compute = 0.0
        for video in videos:
            samples = decode_audio(video)
            t0 = time.perf_counter()
            words = recognize(engine, samples)
            compute += time.perf_counter() - t0
            audio += samples.size / SAMPLE_RATE
            ref, hyp = reference(video), normalise(" ".join(w.text for w in words))
            refs, hyps = groups["GRID" if video.name.startswith("grid") else "NASA"]
            refs.append(ref)
            hyps.append(hyp)
            print(f"| {video.name} | {ref} | {hyp} | {100 * jiwer.wer(ref, hyp):.0f} % |")
            if video.with_suffix(".align").is_file():
                truth = align_words(video.with_suffix(".align"))
                error, matched = timing_error(words, truth)
                # Where speech starts and stops does not depend on recognising the words right.
                span = (abs(words[0].start - truth[0][1]) + abs(words[-1].end - truth[-1][2])) / 2 if words else float("nan")
                print(f"|  | word times vs {video.with_suffix('.align').name}: mean error {1000 * error:.0f} ms over "
                      f"{matched} matched words (start and end); speech start/end error {1000 * span:.0f} ms | | |")
        if spoken:
            refs, hyps = [], []
            for caption, wav in spoken:
                samples = decode_audio(wav)
                t0 = time.perf_counter()
                words = recognize(engine, samples)
                compute += time.perf_counter() - t0
                audio += samples.size / SAMPLE_RATE
                refs.append(normalise(caption))
                hyps.append(normalise(" ".join(w.text for w in words)))
            groups["espeak-ng cooking captions"] = (refs, hyps)
            for ref, hyp in list(zip(refs, hyps))[:5]:
                print(f"| espeak-ng | {ref} | {hyp} | {100 * jiwer.wer(ref, hyp):.0f} % |")
        for group, (refs, hyps) in groups.items():
            if refs:
                print(f"\n{group}: WER {100 * jiwer.wer(refs, hyps):.1f} % over {sum(len(r.split()) for r in refs)} "
                      f"reference words, {len(refs)} clips")
        print(f"real-time factor {compute / audio:.3f} ({compute:.1f} s for {audio:.1f} s of audio)")


if __name__ == "__main__":
    main()
