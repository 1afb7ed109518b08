"""Speech recognition engines behind one registry, each giving timed words for 16 kHz mono audio.

* ``pocketsphinx`` (default): CMU PocketSphinx with the US-English acoustic model, dictionary and trigram
  language model its wheel ships, so it runs offline anywhere; word times come from the decoder's
  best-path segmentation. ``pocketsphinx:<dir>`` takes another model directory laid out like the bundled
  ``en-us`` one (an acoustic model folder ``<dir>/en-us``, ``<dir>/en-us.lm.bin`` and
  ``<dir>/cmudict-en-us.dict``).
* ``hf:<model dir or hub id>``: a Whisper checkpoint through transformers' speech-recognition pipeline, with
  word times from the cross-attention alignment (``return_timestamps="word"``). A hub id is only looked up in
  the local Hugging Face cache when the machine is offline.

An engine recognises one window of at most :attr:`SpeechEngine.window_s` seconds; :func:`recognize` cuts
long audio into overlapping windows and joins the words.
"""
from __future__ import annotations

import importlib.metadata
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from videobert.speech.audio import SAMPLE_RATE, audio_windows
from videobert.utils.errors import ConfigError, InputError


@dataclass(frozen=True)
class Word:
    """A recognised word spoken from ``start`` to ``end`` seconds."""

    text: str
    start: float
    end: float


class SpeechEngine(ABC):
    engine: str
    """Registry name, recorded with every transcript."""
    model: str
    """Which model the engine runs, recorded with every transcript."""
    window_s: float
    """Longest audio the engine recognises in one go, in seconds."""

    @abstractmethod
    def words(self, samples: np.ndarray) -> list[Word]:
        """Timed words of one window of 16 kHz mono float32 samples, times from the window's start."""


# PocketSphinx marks alternative pronunciations as word(2) and emits silence, sentence and filler symbols.
_ALTERNATE = re.compile(r"\(\d+\)$")
_NON_WORD = re.compile(r"^(<.*>|\[.*\]|\+\+.*\+\+)$")


class PocketSphinxEngine(SpeechEngine):
    engine = "pocketsphinx"
    # Long utterances make the decoder's search slower and its language-model context no better.
    window_s = 30.0

    def __init__(self, model_dir: str = ""):
        import pocketsphinx

        if model_dir:
            root = Path(model_dir)
            files = {"hmm": root / "en-us", "lm": root / "en-us.lm.bin", "dict": root / "cmudict-en-us.dict"}
            missing = [p.name for p in files.values() if not p.exists()]
            if missing:
                raise InputError(root, f"not a PocketSphinx model directory (missing {', '.join(missing)})")
            kwargs = {k: str(v) for k, v in files.items()}
            self.model = str(root)
        else:
            kwargs = {}
            self.model = f"en-us (pocketsphinx {importlib.metadata.version('pocketsphinx')})"
        self._decoder = pocketsphinx.Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", **kwargs)
        self._frame_rate = float(self._decoder.config["frate"])

    def words(self, samples: np.ndarray) -> list[Word]:
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
        self._decoder.start_utt()
        self._decoder.process_raw(pcm.tobytes(), full_utt=True)
        self._decoder.end_utt()
        out = []
        for seg in self._decoder.seg():
            if _NON_WORD.match(seg.word):
                continue
            text = _ALTERNATE.sub("", seg.word)
            out.append(Word(text, seg.start_frame / self._frame_rate, (seg.end_frame + 1) / self._frame_rate))
        return out


class WhisperEngine(SpeechEngine):
    engine = "hf"
    window_s = 30.0  # Whisper's encoder sees exactly 30 s

    def __init__(self, source: str, device: str = "auto"):
        import transformers

        from videobert.features.backbones import _model_source
        from videobert.model.configuration import directory_model_type
        from videobert.utils.device import resolve_device

        if not source:
            raise ConfigError("engine 'hf:' needs a Whisper model directory or hub id, e.g. 'hf:path/to/whisper-small'")
        self.model = _model_source(source)
        if Path(self.model).is_dir() and directory_model_type(self.model) != "whisper":
            found = directory_model_type(self.model)
            raise InputError(self.model, f"model_type is {found!r}: not a Whisper speech-recognition model")
        try:
            self._pipe = transformers.pipeline(
                "automatic-speech-recognition", model=self.model, device=resolve_device(device)
            )
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(self.model, f"cannot load a Whisper model and processor ({exc})") from None

    def words(self, samples: np.ndarray) -> list[Word]:
        result = self._pipe(
            {"raw": samples, "sampling_rate": SAMPLE_RATE},
            return_timestamps="word",
            generate_kwargs={"language": "en", "task": "transcribe"},
        )
        length = samples.size / SAMPLE_RATE
        out = []
        for chunk in result.get("chunks", []):
            text = chunk["text"].strip()
            start, end = chunk["timestamp"]
            if not text or start is None:
                continue
            # The alignment may run past the audio (a word cut at the window's end): clamp to what was heard.
            start = min(float(start), length)
            end = min(float(end if end is not None else start), length)
            out.append(Word(text, start, max(start, end)))
        return out


#: scheme -> (factory(argument, device), usage shown in errors).
ENGINES: dict[str, tuple[Callable[[str, str], SpeechEngine], str]] = {
    "pocketsphinx": (lambda arg, device: PocketSphinxEngine(arg), "pocketsphinx[:<model dir>]"),
    "hf": (WhisperEngine, "hf:<Whisper model dir or hub id>"),
}


def _factory(name: str) -> tuple[Callable[[str, str], SpeechEngine], str]:
    scheme, _, arg = name.partition(":")
    if scheme not in ENGINES:
        valid = ", ".join(usage for _, usage in ENGINES.values())
        raise ConfigError(f"unknown speech engine {name!r}; valid engines: {valid}")
    return ENGINES[scheme][0], arg


def check_engine_name(name: str) -> None:
    """Raise the ConfigError of :func:`get_engine` for an unknown engine without loading a model."""
    _factory(name)


def get_engine(name: str, device: str = "auto") -> SpeechEngine:
    """Build the engine called ``name`` (``pocketsphinx``, ``pocketsphinx:<dir>``, ``hf:<dir or id>``).

    Raises:
        ConfigError: unknown engine (the message lists the valid ones).
        InputError: a model directory that does not exist or is not a model of that engine.
    """
    factory, arg = _factory(name)
    return factory(arg, device)


def recognize(engine: SpeechEngine, samples: np.ndarray, overlap_s: float = 5.0) -> list[Word]:
    """Timed words of a whole track: windows of the engine's length overlapping by ``overlap_s`` seconds, each
    word kept by the window whose keep-span holds its midpoint (:func:`audio_windows`), in time order."""
    words = []
    for first, end, keep_from, keep_until in audio_windows(samples.size, engine.window_s, overlap_s):
        offset = first / SAMPLE_RATE
        for w in engine.words(samples[first:end]):
            shifted = Word(w.text, w.start + offset, w.end + offset)
            if keep_from <= (shifted.start + shifted.end) / 2 < keep_until:
                words.append(shifted)
    return sorted(words, key=lambda w: (w.start, w.end))
