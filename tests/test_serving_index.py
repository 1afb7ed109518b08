"""`videobert index`: segments of every video embedded by the export, searchable; incremental (new videos only, the
same index as a build from scratch), atomic generations, refused for another model setup."""
from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from videobert.serving.index import INDEX_FILE, SegmentIndex, index
from videobert.serving.runtime import OnnxVideoBert
from videobert.utils.errors import ConfigError
from videobert.utils.io import read_json

WINDOW = 3


@pytest.fixture(scope="module")
def full_index(tiny_export, minicook_work, tmp_path_factory):
    out = tmp_path_factory.mktemp("index") / "full"
    report = index(tiny_export[1], minicook_work, out=out, window=WINDOW)
    return out, report


def _partial_work(work, tmp_path, videos: int):
    """A copy of `work` whose tokens.parquet keeps only the first `videos` videos (sorted)."""
    partial = tmp_path / "partial"
    shutil.copytree(work, partial)
    tokens = pq.read_table(work / "tokens.parquet")
    keep = sorted(set(tokens["video"].to_pylist()))[:videos]
    pq.write_table(tokens.filter(pc.is_in(tokens["video"], value_set=pa.array(keep))), partial / "tokens.parquet")
    return partial


def test_every_window_is_indexed_with_metadata(full_index, minicook_work):
    out, report = full_index
    loaded = SegmentIndex.load(out)
    tokens = pq.read_table(minicook_work / "tokens.parquet")
    videos = sorted(set(tokens["video"].to_pylist()))
    per_video = [tokens.filter(pc.equal(tokens["video"], v)).num_rows for v in videos]
    assert len(loaded) == sum(-(-n // WINDOW) for n in per_video) == report.stats["segments"]
    assert report.done == len(videos) and report.failed == 0
    rows = loaded.rows(np.arange(len(loaded)))
    assert [r["id"] for r in rows] == list(range(len(loaded)))
    first = tokens.filter(pc.equal(tokens["video"], videos[0])).sort_by("clip")
    assert rows[0]["video"] == videos[0] and rows[0]["start"] == 0.0
    assert rows[0]["tokens"] == first["token"].to_pylist()[:WINDOW] and rows[0]["end"] == first["end"][WINDOW - 1].as_py()
    assert sum(bool(r["caption"]) for r in rows) > len(rows) // 2
    thumb = Image.open(out / "thumbs" / rows[0]["thumbnail"])
    assert thumb.format == "JPEG" and thumb.size == (64, 64)  # the 64x64 corpus is below the thumbnail height


def test_a_segment_finds_itself(full_index, tiny_export):
    out, _ = full_index
    loaded = SegmentIndex.load(out)
    runner = OnnxVideoBert(tiny_export[1])
    rows = loaded.rows(np.arange(0, len(loaded), 7))
    similarity, ids = loaded.search(runner.embed(visual_tokens=[r["tokens"] for r in rows]), 1)
    for row, (score,), (found,) in zip(rows, similarity, ids):
        # Identical windows (same words) tie; any of them is the right answer.
        assert loaded.rows(np.asarray([found]))[0]["tokens"] == row["tokens"] and score == pytest.approx(1.0, abs=1e-5)
    text_scores, text_ids = loaded.search(runner.embed(texts=["cut the tomato"]), 5)
    assert (np.diff(text_scores[0]) <= 0).all() and len(set(text_ids[0].tolist())) == 5


def test_incremental_add_equals_a_build_from_scratch(full_index, tiny_export, minicook_work, tmp_path):
    out = tmp_path / "incremental"
    first = index(tiny_export[1], _partial_work(minicook_work, tmp_path, 10), out=out, window=WINDOW)
    assert first.done == 10 and read_json(out / INDEX_FILE)["generation"] == 1
    before = SegmentIndex.load(out).segments
    second = index(tiny_export[1], minicook_work, out=out, window=WINDOW)
    assert second.skipped == 10 and second.done == 20 and second.stats["new segments"] == second.stats["segments"] - before.num_rows
    meta = read_json(out / INDEX_FILE)
    assert meta["generation"] == 2 and sorted(p.name for p in out.glob("segments-*")) == ["segments-2.faiss", "segments-2.parquet"]
    grown, scratch = SegmentIndex.load(out), SegmentIndex.load(full_index[0])
    assert grown.segments.slice(0, before.num_rows).equals(before)  # old segments kept as they were
    assert grown.segments.drop(["thumbnail"]).equals(scratch.segments.drop(["thumbnail"]))
    query = OnnxVideoBert(tiny_export[1]).embed(texts=["peel the carrot", "stir"])
    a, b = grown.search(query, 8), scratch.search(query, 8)
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    assert (a[1] == b[1]).all()
    again = index(tiny_export[1], minicook_work, out=out, window=WINDOW)  # nothing new: nothing rewritten
    assert again.done == 0 and read_json(out / INDEX_FILE)["generation"] == 2


def test_another_setup_is_refused(full_index, tiny_export, minicook_work):
    out, _ = full_index
    with pytest.raises(ConfigError, match="window"):
        index(tiny_export[1], minicook_work, out=out, window=WINDOW + 1)
    with pytest.raises(ConfigError, match="precision"):
        index(tiny_export[1], minicook_work, out=out, window=WINDOW, precision="int8")
    with pytest.raises(ConfigError, match="window must be"):
        index(tiny_export[1], minicook_work, out=out, window=0)
