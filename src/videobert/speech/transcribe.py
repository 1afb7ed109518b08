"""The ``transcribe`` stage: speech recognition for the videos of a corpus that have an audio track and no
transcript, written as timed sentences into the work directory (never into the corpus), where ``ingest``
reads them like a sidecar.

One JSON file a video, ``WORK/transcripts/<video id>.json``: ``{"engine", "model", "audio_seconds",
"segments": [{"start", "end", "text", "words": [{"word", "start", "end"}]}]}`` (the ``segments`` layout of a
JSON sidecar). Words become sentences at pauses and at a length limit, since neither engine punctuates
reliably (:func:`group_sentences`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from videobert.speech.audio import SAMPLE_RATE, decode_audio, has_audio, is_silent
from videobert.speech.engines import Word, check_engine_name, get_engine, recognize
from videobert.utils.errors import ConfigError, ErrorLog, InputError
from videobert.utils.lock import locked
from videobert.utils.io import write_json
from videobert.utils.stage import StageReport
from videobert.workdir import WorkDir

STAGE = "transcribe"
_SENTENCE_END = (".", "!", "?")


@dataclass(frozen=True)
class SentenceRules:
    """Where a stream of timed words is cut into sentences."""

    max_pause: float = 0.6
    """A silence at least this long (seconds) between two words ends a sentence: speakers pause between
    sentences far more than between words (about 0.1-0.2 s)."""
    max_words: int = 20
    """A sentence is cut after this many words: an unpunctuated monologue still gets sentences of a size the
    pretraining's text-video pairs expect."""
    max_seconds: float = 10.0
    """A sentence is cut once it spans this long."""

    def __post_init__(self) -> None:
        if self.max_pause <= 0 or self.max_words < 1 or self.max_seconds <= 0:
            raise ConfigError(f"sentence rules must be positive, got {self}")


def group_sentences(words: list[Word], rules: SentenceRules = SentenceRules()) -> list[dict[str, Any]]:
    """Timed words (in time order) -> sentence segments ``{"start", "end", "text", "words"}``. A sentence ends
    at a pause of ``max_pause`` or more, after a word ending in ``.``/``!``/``?`` (Whisper punctuates), or when
    it reaches ``max_words`` words or ``max_seconds``."""
    sentences: list[list[Word]] = []
    for w in words:
        current = sentences[-1] if sentences else None
        if (
            current is None
            or w.start - current[-1].end >= rules.max_pause
            or current[-1].text.endswith(_SENTENCE_END)
            or len(current) >= rules.max_words
            or w.end - current[0].start > rules.max_seconds
        ):
            sentences.append([w])
        else:
            current.append(w)
    return [
        {"start": round(s[0].start, 3), "end": round(s[-1].end, 3), "text": " ".join(w.text for w in s),
         "words": [{"word": w.text, "start": round(w.start, 3), "end": round(w.end, 3)} for w in s]}
        for s in sentences
    ]  # fmt: skip


@locked("work")
def transcribe(
    corpus: Path,
    work: Path,
    asr: str = "pocketsphinx",
    overwrite: bool = False,
    overlap: float = 5.0,
    max_pause: float = 0.6,
    max_words: int = 20,
    only_with_audio: bool = False,
    device: str = "auto",
) -> StageReport:
    """Recognise the speech of every video that has an audio track and no transcript of its own.

    Args:
        corpus: Corpus folder (read only: transcripts go into the work directory).
        work: Work directory; transcripts/<video>.json are written there and read by `videobert ingest`.
        asr: Speech engine: pocketsphinx (offline, bundled US-English model), pocketsphinx:<model dir>, or
            hf:<Whisper model dir or hub id>.
        overwrite: Recognise again videos that already have a recognised transcript in the work directory.
        overlap: Seconds shared by consecutive windows of long audio.
        max_pause: A pause of at least this many seconds ends a sentence.
        max_words: Most words in a sentence.
        only_with_audio: Leave videos without an audio stream alone instead of reporting each as an error (a corpus
            that mixes silent footage with narrated footage).
        device: auto (CUDA when available), cuda or cpu; used by hf engines.
    """
    from videobert.data.ingest import scan_corpus

    corpus = Path(corpus)
    if not corpus.is_dir():
        raise InputError(corpus, "corpus folder does not exist" if not corpus.exists() else "corpus is not a folder")
    if overlap < 0:
        raise ConfigError(f"overlap must be >= 0 seconds, got {overlap}")
    rules = SentenceRules(max_pause=max_pause, max_words=max_words)
    check_engine_name(asr)  # a typo fails now, even when there is nothing to recognise
    wd = WorkDir(work).ensure()
    log = ErrorLog(wd.errors, stage=STAGE)
    log.clear_stage()

    videos, unreadable = scan_corpus(corpus)
    for name, problem in unreadable:  # a link loop, a file that vanished: one line each, the rest goes on
        log.record(name, problem)
    todo = [v for v in videos if v.transcript is None and (overwrite or not wd.transcript_of(v.video).is_file())]
    if only_with_audio:
        todo = [v for v in todo if has_audio(v.path)]
    subtitled = sum(v.transcript is not None for v in videos)
    skipped = sum(v.transcript is None and wd.transcript_of(v.video).is_file() for v in videos) if not overwrite else 0
    if not todo:
        return StageReport(STAGE, skipped=skipped, failed=log.count, outputs={"transcripts": str(wd.transcripts)},
                           stats={"videos_with_own_transcript": subtitled})  # fmt: skip
    engine = get_engine(asr, device)  # loaded only when there is work: Whisper takes seconds to load

    done = words = 0
    audio_seconds = compute_seconds = 0.0
    for v in tqdm(todo, desc=STAGE, unit="video"):
        try:
            samples = decode_audio(v.path)
            if is_silent(samples):
                raise InputError(v.path, "audio track is silent: no speech to transcribe")
            t0 = time.perf_counter()
            recognised = recognize(engine, samples, overlap_s=overlap)
            compute_seconds += time.perf_counter() - t0
        except InputError as exc:
            log.record(v.video, exc)
            continue
        except Exception as exc:  # an engine failing on one file must not stop the batch
            log.record(v.video, InputError(v.path, f"speech recognition failed ({type(exc).__name__}: {exc})"))
            continue
        seconds = samples.size / SAMPLE_RATE
        write_json(wd.transcript_of(v.video), {
            "engine": engine.engine, "model": engine.model, "audio_seconds": round(seconds, 3),
            "segments": group_sentences(recognised, rules),
        })  # fmt: skip
        done += 1
        words += len(recognised)
        audio_seconds += seconds
    return StageReport(
        STAGE, done=done, skipped=skipped, failed=log.count,
        outputs={"transcripts": str(wd.transcripts)},
        stats={"engine": engine.engine, "model": engine.model, "words": words, "audio_seconds": audio_seconds,
               "real_time_factor": compute_seconds / audio_seconds if audio_seconds else 0.0,
               "videos_with_own_transcript": subtitled},
    )  # fmt: skip

