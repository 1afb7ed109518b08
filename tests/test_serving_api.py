"""The HTTP API with FastAPI's test client: search, predict, the limits (oversized, non-video, busy, timeout), the
files it serves, the page, and unknown routes."""
from __future__ import annotations

import threading
import time

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from videobert.serving.app import SearchService, ServeLimits, create_app
from videobert.serving.index import index
from videobert.utils.errors import ConfigError


@pytest.fixture(scope="module")
def index_dir(tiny_export, minicook_work, tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "index"
    index(tiny_export[1], minicook_work, out=out, window=3)
    return out


@pytest.fixture(scope="module")
def video(minicook_work):
    row = pq.read_table(minicook_work / "manifest.parquet", columns=["video", "path"]).to_pylist()[0]
    with open(row["path"], "rb") as fh:
        return row["video"], fh.read()


def client(index_dir, **limits) -> TestClient:
    return TestClient(create_app(SearchService(index_dir, limits=ServeLimits(**limits))))


def test_health_page_and_docs(index_dir):
    with client(index_dir) as c:
        health = c.get("/healthz").json()
        assert health["status"] == "ok" and health["segments"] > 0 and health["predict"] is True
        page = c.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert 'id="q"' in page.text and "/search?" in page.text
        assert set(c.get("/openapi.json").json()["paths"]) >= {"/search", "/predict", "/healthz"}
        assert c.get("/docs").status_code == 200
        assert c.get("/nothing/here").status_code == 404


def test_search_ranks_segments_with_thumbnails(index_dir):
    with client(index_dir) as c:
        body = c.get("/search", params={"q": "cut the tomato", "k": 5}).json()
        scores = [r["score"] for r in body["results"]]
        assert len(scores) == 5 and scores == sorted(scores, reverse=True)
        hit = body["results"][0]
        assert {"id", "video", "start", "end", "caption", "thumbnail", "media"} <= set(hit) and hit["end"] > hit["start"]
        thumb = c.get(hit["thumbnail"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"
        assert c.get(hit["media"]).status_code == 200
        for rerank in ("alignment", "likelihood"):
            reranked = c.get("/search", params={"q": "cut the tomato", "k": 5, "rerank": rerank}).json()["results"]
            scores = [r["rerank_score"] for r in reranked]
            assert len(scores) == 5 and scores == sorted(scores, reverse=True), rerank
        assert body["results"][0]["rerank_score"] is None
        for params in ({"q": ""}, {"q": "   "}, {"q": "x", "k": 0}, {"q": "x", "k": 51}, {"q": "x" * 501},
                       {"q": "x", "rerank": "magic"}):  # fmt: skip
            assert c.get("/search", params=params).status_code == 422, params
        for path in ("/thumbs/999999.jpg", "/media/999999", "/media/-1", "/thumbs/..%2Findex.json", "/media/index.json"):
            assert c.get(path).status_code in (404, 422), path


def test_predict_gives_the_pipeline_words_and_labels(index_dir, video, minicook_work):
    name, data = video
    with client(index_dir) as c:
        response = c.post("/predict", files={"file": ("clip.mp4", data, "video/mp4")})
    assert response.status_code == 200, response.text
    result = response.json()
    tokens = pq.read_table(minicook_work / "tokens.parquet")
    assert [c["token"] for c in result["clips"]] == tokens.filter(pc.equal(tokens["video"], name)).sort_by("clip")["token"].to_pylist()
    assert "video" not in result and len(result["windows"]) == -(-len(result["clips"]) // 3)
    assert result["windows"][0]["verb"][0]["label"] in result["labels"]["verb"]


def test_oversized_and_non_video_uploads_are_refused(index_dir, video):
    _, data = video
    with client(index_dir, max_upload_mb=len(data) / 2e6) as c:
        assert c.post("/predict", files={"file": ("clip.mp4", data, "video/mp4")}).status_code == 413
    with client(index_dir) as c:
        # A video's name and type do not make it a video: the content is decoded.
        refused = c.post("/predict", files={"file": ("clip.mp4", b"\x00\x00\x00\x18ftypmp42" + b"x" * 5000, "video/mp4")})
        assert refused.status_code == 415 and "decoded" in refused.json()["detail"]
        assert c.post("/predict", files={"file": ("notes.txt", b"hello", "text/plain")}).status_code == 415
        assert c.post("/predict").status_code == 422


def test_timeout_and_busy(index_dir, video, monkeypatch):
    _, data = video
    release = threading.Event()
    service = SearchService(index_dir, limits=ServeLimits(timeout_s=0.2, predict_workers=1, predict_queue=0))
    monkeypatch.setattr(service, "predict_file", lambda path: release.wait(10) and {"ok": True})
    with TestClient(create_app(service)) as c:
        started = time.monotonic()
        slow = c.post("/predict", files={"file": ("clip.mp4", data, "video/mp4")})
        assert slow.status_code == 504 and time.monotonic() - started < 5
        # The timed-out job still holds the only worker: the next request is turned away, not queued.
        busy = c.post("/predict", files={"file": ("clip.mp4", data, "video/mp4")})
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        assert c.get("/search", params={"q": "stir"}).status_code == 200  # searches have their own pool
        release.set()
        for _ in range(100):
            if service.predict_pool.pending == 0:
                break
            time.sleep(0.05)
        after = c.post("/predict", files={"file": ("clip.mp4", data, "video/mp4")})  # the worker is free again
        assert after.status_code == 200 and after.json() == {"ok": True}


def test_bad_limits():
    with pytest.raises(ConfigError, match="timeout_s"):
        ServeLimits(timeout_s=0)
    with pytest.raises(ConfigError, match="predict_queue"):
        ServeLimits(predict_queue=-1)
