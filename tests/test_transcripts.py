"""Transcript parsing: exact cue times and texts from SRT / WebVTT / JSON, sentence splitting with
proportional times, clipping to the video, and errors that name the file and the problem."""
from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest

from videobert.data.transcripts import (
    Cue,
    clip_to_duration,
    load_transcript,
    normalize_text,
    parse_json,
    parse_srt,
    parse_vtt,
    read_cues,
    split_sentences,
)
from videobert.utils.errors import InputError

SRT = """1
00:00:01,000 --> 00:00:02,500
<i>Hello</i>   world

2
00:00:03,000 --> 00:00:04,250
NAR: fish &amp; chips
{\\an8}second line

3
00:01:00,000 --> 01:00:00,001
<font color="#ffffff">late</font>
"""

VTT = """WEBVTT Kind: captions

NOTE written by hand

00:00.500 --> 00:02.000 align:start position:0%
<v Alice>Hi <b>there</b>.

intro
00:00:02.000 --> 00:00:03.250
<00:00:02.100><c>second</c> cue

00:00:04.000 --> 00:00:05.000
<c> </c>
"""


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def test_srt_exact(tmp_path):
    cues = parse_srt(write(tmp_path, "a.srt", SRT))
    assert cues == [
        Cue(1.0, 2.5, "Hello world"),
        Cue(3.0, 4.25, "NAR: fish & chips second line"),
        Cue(60.0, 3600.001, "late"),
    ]


def test_srt_with_bom_crlf_and_leading_blank_line(tmp_path):
    text = "\n" + SRT.replace("\n", "\r\n")
    assert parse_srt(write(tmp_path, "b.srt", codecs.BOM_UTF8 + text.encode())) == parse_srt(write(tmp_path, "a.srt", SRT))
    utf16 = write(tmp_path, "c.srt", codecs.BOM_UTF16_LE + SRT.encode("utf-16-le"))
    assert parse_srt(utf16)[0] == Cue(1.0, 2.5, "Hello world")


def test_vtt_exact(tmp_path):
    # The cue whose text is only markup and whitespace carries no words and is dropped.
    assert parse_vtt(write(tmp_path, "a.vtt", VTT)) == [Cue(0.5, 2.0, "Hi there."), Cue(2.0, 3.25, "second cue")]


def test_json_list_and_whisper_segments(tmp_path):
    plain = [{"start": 0, "end": 1.5, "text": "crack the egg"}, {"start": 1.5, "end": 2.0, "text": " <b>whisk</b> it "}]
    whisper = {"text": "ignored", "language": "en",
               "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": 1.5, "text": " crack the egg", "tokens": [1, 2]},
                            {"id": 1, "seek": 0, "start": 1.5, "end": 2.0, "text": " whisk it"}]}
    expected = [Cue(0.0, 1.5, "crack the egg"), Cue(1.5, 2.0, "whisk it")]
    assert parse_json(write(tmp_path, "a.json", json.dumps(plain))) == expected
    assert read_cues(write(tmp_path, "b.json", json.dumps(whisper))) == expected


def test_normalize_text():
    assert normalize_text("  <i>Now</i>\n let&#39;s {\\an8}<v.loud Bob>cut  </v>") == "Now let's cut"


def test_split_sentences_proportional_times():
    # 8 + 16 characters: the boundary is at 9 * 8 / 24 = 3 s.
    assert split_sentences(Cue(0.0, 9.0, "One two. Three four five!")) == [
        Cue(0.0, 3.0, "One two."), Cue(3.0, 9.0, "Three four five!")]
    assert split_sentences(Cue(10.0, 16.0, "Ab. Cd? Ef!")) == [
        Cue(10.0, 12.0, "Ab."), Cue(12.0, 14.0, "Cd?"), Cue(14.0, 16.0, "Ef!")]
    # 15 + 10 characters over 5 s: 3 s and 2 s; closing quotes stay with their sentence.
    assert split_sentences(Cue(1.0, 6.0, 'He said "stop." Then left.')) == [
        Cue(1.0, 4.0, 'He said "stop."'), Cue(4.0, 6.0, "Then left.")]


def test_split_sentences_keeps_non_boundaries():
    for text in ("Mr. Smith adds 3.5 cups, e.g. flour.", "no sentence end here", "Wait..."):
        assert split_sentences(Cue(0.0, 1.0, text)) == [Cue(0.0, 1.0, text)]


def test_clip_to_duration():
    sentences = [Cue(0.0, 2.0, "a"), Cue(2.0, 5.0, "b"), Cue(4.0, 6.0, "c"), Cue(5.0, 7.0, "d")]
    t = clip_to_duration(sentences, 4.5)
    assert t.sentences == [Cue(0.0, 2.0, "a"), Cue(2.0, 4.5, "b"), Cue(4.0, 4.5, "c")]
    assert (t.clipped, t.dropped) == (2, 1)


def test_load_transcript_splits_then_clips(tmp_path):
    path = write(tmp_path, "a.srt", "1\n00:00:00,000 --> 00:00:09,000\nOne two. Three four five!\n")
    # Splitting comes first, so the sentences keep the narrator's timing and only the last one is cut.
    t = load_transcript(path, duration=6.0)
    assert t.sentences == [Cue(0.0, 3.0, "One two."), Cue(3.0, 6.0, "Three four five!")]
    assert (t.clipped, t.dropped) == (1, 0)
    t = load_transcript(path, duration=3.0)
    assert t.sentences == [Cue(0.0, 3.0, "One two.")] and (t.clipped, t.dropped) == (0, 1)
    assert len(load_transcript(path).sentences) == 2


def test_empty_transcript_has_no_cues(tmp_path):
    assert parse_srt(write(tmp_path, "silent.srt", "\n  \n")) == []


@pytest.mark.parametrize(
    "content, problem",
    [
        ("1\n00:00:01,000 --> 00:00:0x,000\nhello\n", "malformed SRT: line 2: bad cue timing '00:00:01,000 --> 00:00:0x,000'"),
        ("1\n00:00:01,000 --> 00:00:02,000\nhi\n\n2\n00:00:03,000 -> 00:00:04,000\nthere\n",
         "malformed SRT: line 6: bad cue timing '00:00:03,000 -> 00:00:04,000'"),
        ("1\n00:00:01,000 --> 00:00:02,000\nhi\n\n00:00:03,000 --> 00:00:04,000\nthere\n",
         "malformed SRT: line 5: cue timing without a cue number on the line before"),
        ("just some words\nin a file\n", "malformed SRT: expected a cue number, then 'HH:MM:SS,mmm --> HH:MM:SS,mmm', then text"),
        ("1\n00:00:05,000 --> 00:00:04,000\nbackwards\n", "malformed SRT: cue 1 ends (4.000 s) before it starts (5.000 s)"),
    ],
)
def test_malformed_srt(tmp_path, content, problem):
    path = write(tmp_path, "bad.srt", content)
    with pytest.raises(InputError) as info:
        parse_srt(path)
    assert info.value.path == str(path)
    assert info.value.problem.startswith(problem)
    assert str(info.value).startswith(f"{path}: malformed SRT")


def test_non_utf8_names_file_and_byte(tmp_path):
    path = write(tmp_path, "latin1.srt", "1\n00:00:00,000 --> 00:00:01,000\ncafé\n".encode("latin-1"))
    with pytest.raises(InputError) as info:
        read_cues(path)
    # "1\n" (2 bytes) + the timing line (30) + "caf" (3): the é is byte 35.
    assert str(info.value) == f"{path}: not valid UTF-8 (byte 0xe9 at offset 35)"


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("a.vtt", "00:00.000 --> 00:01.000\nno header\n", "malformed WebVTT: the first line must start with 'WEBVTT'"),
        ("b.vtt", "WEBVTT\n\n00:00:01.000 --> 00:00:0x.000\nhi\n", "malformed WebVTT: Invalid cue block"),
        ("a.json", '[{"start": 0, "end": 1, "text": "a"},]', "not valid JSON (line 1 column 38: Expecting value)"),
        ("b.json", '{"text": "no segments"}', 'malformed transcript JSON: expected a list of {"start", "end", "text"}'),
        ("c.json", '[{"start": 0, "text": "a"}]', "malformed transcript JSON: segment 1 has no 'end'"),
        ("d.json", '[{"start": 0, "end": 1, "text": "a"}, {"start": 2, "end": 1, "text": "b"}]',
         "malformed transcript JSON: cue 2 ends (1.000 s) before it starts (2.000 s)"),
        ("e.json", '[{"start": "0", "end": 1, "text": "a"}]', "malformed transcript JSON: segment 1: start/end must be seconds >= 0"),
        ("f.txt", "hello", "unsupported transcript type '.txt'"),
    ],
)
def test_malformed_vtt_and_json(tmp_path, name, content, problem):
    path = write(tmp_path, name, content)
    with pytest.raises(InputError) as info:
        read_cues(path)
    assert info.value.path == str(path)
    assert info.value.problem.startswith(problem)
