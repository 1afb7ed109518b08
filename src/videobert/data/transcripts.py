"""Timed transcripts -> sentences with start/end seconds (DESIGN.md §1 step 4).

A transcript is a sidecar file next to its video: SubRip ``.srt``, WebVTT ``.vtt`` (both parsed with
webvtt-py) or JSON, either a list of ``{"start", "end", "text"}`` or Whisper's ``{"segments": [...]}``.

From file to sentences:

1. decode the bytes as UTF-8 (a byte-order mark may select UTF-8/16/32); anything else is an error naming
   the offending byte, because guessing a legacy code page silently produces garbage text;
2. parse cues; a malformed file raises :class:`InputError` rather than losing cues, since webvtt-py
   skips blocks it cannot read;
3. normalise each cue's text (markup removed, whitespace collapsed); cues left empty are dropped;
4. split each cue into sentences at ``.``/``!``/``?``, giving each sentence a share of the cue's time
   proportional to its length in characters. Cues are never merged: a sentence that spans two cues stays
   two fragments, each with the timing the captioner gave it;
5. clip to the video: a sentence ending after the video's end is cut at the end, one starting at or after
   the end is dropped (captions are often cut from a longer programme).

Bounds, so that one odd file cannot exhaust memory: a file over ``MAX_TRANSCRIPT_BYTES`` is refused (hours of
narration take well under a megabyte), cues are put in time order whatever their order in the file, and a sentence
longer than ``MAX_SENTENCE_CHARS`` (a transcript without punctuation, a cue that never ends) is cut at word
boundaries into pieces of at most that length, each with its share of the time; the pieces are counted.
"""
from __future__ import annotations

import codecs
import html
import io
import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import webvtt
from webvtt.errors import MalformedCaptionError, MalformedFileError

from videobert.utils.errors import InputError

# Larger files are refused: hours of narration take well under a megabyte, so this is not a transcript.
MAX_TRANSCRIPT_BYTES = 16 << 20
# Longer sentences are cut into pieces (a sentence is one model input, and BERT reads 512 tokens at most).
MAX_SENTENCE_CHARS = 1000

# Preference order when a video has several sidecars with its stem.
TRANSCRIPT_EXTENSIONS = (".srt", ".vtt", ".json")

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE, whose BOM is a prefix of this one
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

_TIMESTAMP = r"\d+:[0-5]?\d:[0-5]?\d[,.]\d{1,3}"
_SRT_TIMING = re.compile(rf"^\s*{_TIMESTAMP}\s*-->\s*{_TIMESTAMP}(\s.*)?$")
# A line opening with a timestamp is meant as a cue timing even when its arrow is broken.
_SRT_TIMING_LIKE = re.compile(rf"^\s*{_TIMESTAMP}")

_TAG = re.compile(r"<[^<>]*>")  # <i>, </font>, <v Speaker>, <00:00:01.500>
_ASS_OVERRIDE = re.compile(r"\{\\[^{}]*\}")  # {\an8}: positioning codes some SRT writers emit
_SPACE = re.compile(r"\s+")

# Sentence ends: terminal punctuation, optional closing quotes/brackets, then whitespace.
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s)")
# Words whose trailing period is not a sentence end.
_ABBREVIATIONS = frozenset("mr mrs ms dr prof sr jr st vs e.g i.e approx".split())


@dataclass(frozen=True)
class Cue:
    """Text shown (or spoken) from ``start`` to ``end`` seconds: a cue, or one sentence of a cue."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    """A video's sentences, clipped to its duration, with what clipping changed."""

    sentences: list[Cue]
    clipped: int  # sentences whose end was moved back to the video's end
    dropped: int  # sentences starting at or after the video's end
    cut: int = 0  # sentences longer than MAX_SENTENCE_CHARS, cut into pieces


def read_text(path: str | Path, max_bytes: int | None = None) -> str:
    """The file's text. Raises :class:`InputError` naming the first byte that is not valid UTF-8, or when the
    file is larger than ``max_bytes``."""
    try:
        size = Path(path).stat().st_size
        if max_bytes is not None and size > max_bytes:
            limit = f"at most {max_bytes >> 20} MiB"
            raise InputError(path, f"{size / 2**20:.0f} MiB is too large for a transcript ({limit})")
        data = Path(path).read_bytes()
    except OSError as error:  # a dangling link, a link loop, no permission
        raise InputError(path, f"cannot read ({error.strerror})") from None
    bom, encoding = next(((bom, enc) for bom, enc in _BOMS if data.startswith(bom)), (b"", "utf-8"))
    try:
        return data[len(bom):].decode(encoding)
    except UnicodeDecodeError as exc:
        offset = len(bom) + exc.start
        raise InputError(path, f"not valid {encoding.upper()} (byte 0x{data[offset]:02x} at offset {offset})") from None


def normalize_text(raw: str) -> str:
    """Caption text without markup (HTML-like tags, ``{\\...}`` overrides, entities) on one line."""
    text = _ASS_OVERRIDE.sub("", _TAG.sub("", raw))
    return _SPACE.sub(" ", html.unescape(text)).strip()


def split_sentences(cue: Cue) -> list[Cue]:
    """Split a cue at sentence ends; each sentence gets time in proportion to its character count.

    ``Cue(0, 9, "One two. Three four five!")`` -> ``[Cue(0, 3, "One two."), Cue(3, 9, "Three four five!")]``
    (8 and 16 characters). The last sentence ends exactly at the cue's end."""
    pieces = []
    begin = 0
    for m in _SENTENCE_END.finditer(cue.text):
        word = cue.text[begin : m.start()].rsplit(None, 1)[-1:]
        if m.group() == "." and word and word[0].lower() in _ABBREVIATIONS:
            continue
        pieces.append(cue.text[begin : m.end()].strip())
        begin = m.end()
    pieces.append(cue.text[begin:].strip())
    pieces = [p for p in pieces if p]
    if len(pieces) <= 1:
        return [cue]
    total = sum(len(p) for p in pieces)
    span = cue.end - cue.start
    out = []
    done = 0
    t0 = cue.start
    for k, piece in enumerate(pieces):
        done += len(piece)
        t1 = cue.end if k == len(pieces) - 1 else cue.start + span * done / total
        out.append(Cue(t0, t1, piece))
        t0 = t1
    return out


def cut_long(sentence: Cue, limit: int = MAX_SENTENCE_CHARS) -> list[Cue]:
    """``sentence`` cut at word boundaries (inside a word when one is longer than ``limit``) into consecutive pieces
    of at most ``limit`` characters, each starting at the time its first character has in proportion to length."""
    text = sentence.text
    if len(text) <= limit:
        return [sentence]
    pieces = []
    begin = 0
    while begin < len(text):
        stop = len(text) if len(text) - begin <= limit else text.rfind(" ", begin + 1, begin + limit + 1)
        if stop <= begin:
            stop = begin + limit
        pieces.append((begin, stop))
        begin = stop + 1 if stop < len(text) and text[stop] == " " else stop
    span = sentence.end - sentence.start
    starts = [sentence.start + span * a / len(text) for a, _ in pieces]
    ends = starts[1:] + [sentence.end]  # each piece lasts until the next one starts
    return [Cue(t0, t1, text[a:b]) for t0, t1, (a, b) in zip(starts, ends, pieces)]


def clip_to_duration(sentences: list[Cue], duration: float) -> Transcript:
    """Cut sentences at the video's end; drop those starting at or after it."""
    kept = []
    clipped = dropped = 0
    for s in sentences:
        if s.start >= duration:
            dropped += 1
        elif s.end > duration:
            kept.append(Cue(s.start, duration, s.text))
            clipped += 1
        else:
            kept.append(s)
    return Transcript(kept, clipped, dropped)


def finite_number(value: object) -> bool:
    """A JSON number usable as seconds (``true`` is an int to Python, and NaN parses but is no time)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_order(path: str | Path, fmt: str, cues: list[Cue]) -> None:
    for k, c in enumerate(cues, start=1):
        if c.end < c.start:
            raise InputError(path, f"malformed {fmt}: cue {k} ends ({c.end:.3f} s) before it starts ({c.start:.3f} s)")


def _captions_to_cues(captions: list[webvtt.Caption]) -> list[Cue]:
    cues = []
    for c in captions:
        text = normalize_text(c.raw_text)
        if text:
            cues.append(Cue(c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000, text))
    return cues


def parse_srt(path: str | Path) -> list[Cue]:
    """Cues of a SubRip file, text normalised, in file order."""
    text = read_text(path, MAX_TRANSCRIPT_BYTES)
    if not text.strip():
        return []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        # webvtt-py silently drops a cue whose timing it cannot read or that has no cue number, or glues
        # it to the previous cue's text; losing narration unnoticed is worse than reporting the file.
        if not ("-->" in line or _SRT_TIMING_LIKE.match(line)):
            continue
        if not _SRT_TIMING.match(line):
            raise InputError(path, f"malformed SRT: line {number}: bad cue timing {line.strip()!r}")
        if number < 2 or not lines[number - 2].strip().isdigit():
            raise InputError(path, f"malformed SRT: line {number}: cue timing without a cue number on the line before")
    try:
        captions = webvtt.from_buffer(io.StringIO(text.lstrip()), format="srt").captions
    except (MalformedFileError, MalformedCaptionError) as exc:
        raise InputError(
            path, f"malformed SRT: expected a cue number, then 'HH:MM:SS,mmm --> HH:MM:SS,mmm', then text ({exc})"
        ) from None
    cues = _captions_to_cues(captions)
    _check_order(path, "SRT", cues)
    return cues


def parse_vtt(path: str | Path) -> list[Cue]:
    """Cues of a WebVTT file, text normalised (voice spans and inline timestamps removed), in file order."""
    text = read_text(path, MAX_TRANSCRIPT_BYTES)
    try:
        captions = webvtt.from_buffer(io.StringIO(text), format="vtt", strict=True).captions
    except MalformedFileError:
        raise InputError(path, "malformed WebVTT: the first line must start with 'WEBVTT'") from None
    except MalformedCaptionError as exc:
        raise InputError(path, f"malformed WebVTT: {exc}") from None
    cues = _captions_to_cues(captions)
    _check_order(path, "WebVTT", cues)
    return cues


def parse_json(path: str | Path) -> list[Cue]:
    """Cues of a JSON transcript: ``[{"start", "end", "text"}, ...]`` or ``{"segments": [...]}`` (Whisper)."""
    try:
        data = json.loads(read_text(path, MAX_TRANSCRIPT_BYTES))
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    segments = data.get("segments") if isinstance(data, dict) else data
    if not isinstance(segments, list):
        expected = 'a list of {"start", "end", "text"} or an object with a "segments" list'
        raise InputError(path, f"malformed transcript JSON: expected {expected}")
    cues = []
    for k, seg in enumerate(segments, start=1):
        if not isinstance(seg, dict):
            raise InputError(path, f"malformed transcript JSON: segment {k} is not an object")
        for key in ("start", "end", "text"):
            if key not in seg:
                raise InputError(path, f"malformed transcript JSON: segment {k} has no {key!r}")
        if not (finite_number(seg["start"]) and finite_number(seg["end"])) or seg["start"] < 0:
            raise InputError(path, f"malformed transcript JSON: segment {k}: start/end must be seconds >= 0")
        if not isinstance(seg["text"], str):
            raise InputError(path, f"malformed transcript JSON: segment {k}: text must be a string")
        text = normalize_text(seg["text"])
        if text:
            cues.append(Cue(float(seg["start"]), float(seg["end"]), text))
    _check_order(path, "transcript JSON", cues)
    return cues


_PARSERS = {".srt": parse_srt, ".vtt": parse_vtt, ".json": parse_json}


def read_cues(path: str | Path) -> list[Cue]:
    """Cues of a transcript file of any supported kind (by extension)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _PARSERS:
        expected = ", ".join(TRANSCRIPT_EXTENSIONS)
        raise InputError(path, f"unsupported transcript type {suffix!r} (expected one of {expected})")
    return _PARSERS[suffix](path)


def load_transcript(path: str | Path, duration: float | None = None) -> Transcript:
    """Sentences of a transcript file in time order, long ones cut, clipped to ``duration`` seconds when given."""
    cues = sorted(read_cues(path), key=lambda c: (c.start, c.end))  # stable: simultaneous cues keep file order
    sentences = []
    cut = 0
    for sentence in (s for cue in cues for s in split_sentences(cue)):
        pieces = cut_long(sentence)
        cut += len(pieces) > 1
        sentences += pieces
    if duration is None:
        return Transcript(sentences, 0, 0, cut)
    return replace(clip_to_duration(sentences, duration), cut=cut)
