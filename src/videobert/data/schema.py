"""Column layouts of the Parquet artifacts in the work directory (DESIGN.md §3).

``video`` is always the video's path relative to the corpus root, in POSIX form: the one id that joins
every table.
"""
from __future__ import annotations

import pyarrow as pa

MANIFEST = pa.schema(
    [
        ("video", pa.string()),  # id: path relative to the corpus root
        ("path", pa.string()),  # absolute path at ingest time
        ("duration", pa.float64()),  # seconds
        ("fps", pa.float64()),
        ("width", pa.int32()),  # upright (displayed) size
        ("height", pa.int32()),
        ("num_frames", pa.int64()),
        ("rotation", pa.int16()),
        ("codec", pa.string()),
        ("container", pa.string()),
        ("num_audio_streams", pa.int32()),
        ("num_subtitle_streams", pa.int32()),
        ("size_bytes", pa.int64()),
        ("mtime", pa.float64()),
        ("transcript", pa.string()),  # sidecar path relative to the corpus root, "work:transcripts/..." for recognised speech, or null
        ("split", pa.string()),  # train | val | test, or null when no annotation says
    ]
)

SENTENCES = pa.schema(
    [
        ("video", pa.string()),
        ("index", pa.int32()),  # order within the video
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("text", pa.string()),
        ("source", pa.string()),  # transcript file it came from (relative to the corpus, or "work:..." as in MANIFEST)
    ]
)

SEGMENTS = pa.schema(
    [
        ("video", pa.string()),
        ("index", pa.int32()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("verb", pa.string()),
        ("noun", pa.string()),
        ("caption", pa.string()),
        ("split", pa.string()),
    ]
)

CLIPS = pa.schema(
    [
        ("video", pa.string()),
        ("clip", pa.int32()),  # clip index within the video
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("shard", pa.string()),  # features shard file name, relative to features/
        ("row", pa.int64()),  # row inside the shard
    ]
)

TOKENS = pa.schema(
    [
        ("video", pa.string()),
        ("clip", pa.int32()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("token", pa.int32()),  # visual word id in [0, vocab_size)
    ]
)
