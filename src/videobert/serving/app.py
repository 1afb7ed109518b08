"""`videobert serve`: an HTTP API (FastAPI) and a search page over an index (`serving.index`) and its exported model,
on onnxruntime (no PyTorch).

Endpoints
    ``GET /``                    the search page (static HTML + JS calling the API)
    ``GET /search?q=&k=&rerank=`` text -> the k best segments by embedding similarity; ``rerank=alignment``
                                 re-orders the best `rerank_pool` by the alignment head (one pass per candidate),
                                 ``rerank=likelihood`` by the masked-word likelihood (one pass per query word piece
                                 and candidate; `tasks.retrieval` explains both)
    ``POST /predict``            a video upload (multipart field ``file``) -> visual words and zero-shot verb / noun
                                 per window (`serving.onnx_predict`)
    ``GET /thumbs/{id}.jpg``, ``GET /media/{id}``  a segment's thumbnail and its video (for the page's player)
    ``GET /healthz``, ``GET /docs`` (OpenAPI)

Limits a public endpoint needs (`ServeLimits`)
    * uploads: a Content-Length is required and checked before the body is read (411 / 413), the bytes are
      counted again while copying (413); the file is judged by decoding it, never by its name (415), and gets a
      name chosen by the server; a video longer than `max_video_seconds` is refused (413);
    * work runs in two bounded pools, one for searches and one for predictions, so uploads cannot starve search;
      a request that finds its pool's workers and queue full gets 429 with Retry-After at once;
    * each request waits at most `timeout_s` (504). A timed-out job keeps its worker until it ends (threads cannot
      be killed), and so keeps counting against the pool: a slow job never lets more work in than the pool allows;
    * clients name segments by id only: files served are the index's thumbnails and the indexed videos;
    * `serve` binds to 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from videobert.data.video import probe
from videobert.serving.index import THUMBS_DIR, SegmentIndex
from videobert.serving.onnx_predict import predict_video
from videobert.serving.runtime import OnnxVideoBert
from videobert.utils.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("static") / "index.html"
UPLOAD_CHUNK = 1 << 20


@dataclass(frozen=True)
class ServeLimits:
    """What one server accepts and how much work it takes on at once."""

    max_upload_mb: float = 50.0
    """Largest upload accepted by POST /predict, in MB (10^6 bytes)."""
    max_video_seconds: float = 600.0
    """Longest uploaded video accepted."""
    timeout_s: float = 30.0
    """Longest a request waits for its result before 504."""
    search_workers: int = 2
    """Searches run at the same time."""
    search_queue: int = 64
    """Searches waiting for a worker before 429."""
    predict_workers: int = 1
    """Predictions run at the same time."""
    predict_queue: int = 4
    """Predictions waiting for a worker before 429."""
    max_k: int = 50
    """Most results one search returns."""
    max_query_chars: int = 500
    """Longest query text."""
    rerank_pool: int = 50
    """Candidates a rerank re-orders (the best by embedding)."""

    def __post_init__(self) -> None:
        for name in ("max_upload_mb", "max_video_seconds", "timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("search_workers", "predict_workers", "max_k", "max_query_chars", "rerank_pool"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("search_queue", "predict_queue"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more, got {getattr(self, name)!r}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1e6)


class Busy(Exception):
    """The pool's workers and queue are full (HTTP 429)."""


class BoundedPool:
    """A thread pool that takes at most `workers + queue` jobs at once and refuses more (`Busy`) instead of queueing
    without bound. A job holds its place until it ends, even after its caller stopped waiting."""

    def __init__(self, name: str, workers: int, queue: int):
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix=f"videobert-{name}")
        self.capacity = workers + queue
        self.pending = 0
        self.lock = threading.Lock()

    def submit(self, fn: Callable[[], Any]) -> Future:
        with self.lock:
            if self.pending >= self.capacity:
                raise Busy
            self.pending += 1
        future = self.executor.submit(fn)
        future.add_done_callback(self._release)
        return future

    def _release(self, _: Future) -> None:
        with self.lock:
            self.pending -= 1

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class SearchService:
    """The index, the model that embeds queries and runs predictions, and the limits: what the API calls."""

    def __init__(self, index_dir: str | os.PathLike, model: str | os.PathLike | None = None,
                 limits: ServeLimits = ServeLimits()):  # fmt: skip
        self.index = SegmentIndex.load(index_dir)
        self.limits = limits
        model = Path(model) if model is not None else Path(self.index.meta["model"])
        self.runner = OnnxVideoBert(model, precision=self.index.meta["precision"])
        if self.runner.meta["model_sha256"] != self.index.meta["model_sha256"]:
            raise ConfigError(f"{model} is not the model {index_dir} was built with ({self.index.meta['model']})")
        recorded = self.runner.meta.get("labels")
        self.labels = self.runner.label_sets() if recorded else None
        self.search_pool = BoundedPool("search", limits.search_workers, limits.search_queue)
        self.predict_pool = BoundedPool("predict", limits.predict_workers, limits.predict_queue)

    def health(self) -> dict[str, Any]:
        meta = self.index.meta
        return {
            "status": "ok", "segments": len(self.index), "videos": meta["videos"], "model": meta["model"],
            "precision": meta["precision"], "window_clips": meta["window"], "predict": self.labels is not None,
        }  # fmt: skip

    def search(self, query: str, k: int, rerank: str = "none") -> list[dict[str, Any]]:
        """The k best segments for `query`, best first, with their metadata and scores."""
        pool = k if rerank == "none" else max(k, self.limits.rerank_pool)
        similarity, ids = self.index.search(self.runner.embed(texts=[query]), pool)  # (1, pool) each
        found = ids[0] >= 0
        similarity, ids = similarity[0][found], ids[0][found]
        rows = self.index.rows(ids)
        if rerank != "none" and rows:
            words = [r["tokens"] for r in rows]
            if rerank == "alignment":
                rerank_scores = self.runner.alignment([query] * len(rows), words)
            else:
                rerank_scores = self.runner.likelihood(query, words)
            order = np.argsort(-rerank_scores, kind="stable")[:k]
            rows = [dict(rows[i], rerank_score=float(rerank_scores[i])) for i in order]
            similarity = similarity[order]
        results = []
        for row, score in zip(rows, similarity):
            segment_id = row["id"]
            results.append({
                "id": segment_id, "video": row["video"], "start": row["start"], "end": row["end"],
                "caption": row["caption"], "score": float(score), "rerank_score": row.get("rerank_score"),
                "thumbnail": f"/thumbs/{segment_id}.jpg" if row["thumbnail"] else None,
                "media": f"/media/{segment_id}",
            })  # fmt: skip
        return results

    def predict_file(self, path: Path) -> dict[str, Any]:
        """Predictions for the uploaded video at `path`; `InputError` when it is not a video or too long."""
        info = probe(path, verify=False)  # decoding, not the name, decides what the file is
        if info.duration > self.limits.max_video_seconds:
            raise VideoTooLong(f"{info.duration:.0f} s is longer than the {self.limits.max_video_seconds:g} s accepted")
        result = predict_video(self.runner, path, self.labels, window=self.index.meta["window"])
        result.pop("video")  # the server's temporary name means nothing to the client
        return result

    def segment_file(self, segment_id: int, kind: Literal["thumbnail", "media"]) -> Path | None:
        """The thumbnail or the video of an indexed segment; None when there is no such segment or file."""
        if not 0 <= segment_id < len(self.index):
            return None
        row = self.index.rows(np.asarray([segment_id]))[0]
        if kind == "thumbnail":
            path = self.index.directory / THUMBS_DIR / row["thumbnail"] if row["thumbnail"] else None
        else:
            path = Path(row["path"]) if row["path"] else None
        return path if path is not None and path.is_file() else None

    def close(self) -> None:
        self.search_pool.shutdown()
        self.predict_pool.shutdown()


class VideoTooLong(Exception):
    """An uploaded video longer than the server accepts (HTTP 413)."""


def create_app(service: SearchService) -> FastAPI:
    """The FastAPI application over `service` (module docstring)."""
    limits = service.limits

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        service.close()

    app = FastAPI(
        title="videobert",
        summary="Text -> video segment search and predictions on new videos with an exported VideoBERT.",
        lifespan=lifespan,
    )
    app.state.service = service

    async def run(pool: BoundedPool, fn: Callable[[], Any], cleanup: Callable[[], None] | None = None) -> Any:
        """`fn()` in `pool` within the timeout; `cleanup()` once the job is over (run, failed, or never started)."""
        try:
            future = pool.submit(fn)
        except Busy:
            if cleanup is not None:
                cleanup()
            raise HTTPException(429, "server busy: too many requests in progress; retry later",
                                headers={"Retry-After": "1"}) from None  # fmt: skip
        if cleanup is not None:
            future.add_done_callback(lambda _: cleanup())
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), limits.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"no result within {limits.timeout_s:g} s") from None

    @app.middleware("http")
    async def upload_size(request: Request, call_next):
        # Before the body is read: a declared size over the cap is refused without reading it.
        if request.url.path == "/predict" and request.method == "POST":
            declared = request.headers.get("content-length")
            if declared is None or not declared.isdigit():
                return JSONResponse({"detail": "a Content-Length header is required"}, status_code=411)
            if int(declared) > limits.max_upload_bytes:
                return JSONResponse(
                    {"detail": f"upload larger than {limits.max_upload_mb:g} MB"}, status_code=413
                )
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return service.health()

    @app.get("/search")
    async def search(
        q: str = Query(..., min_length=1, max_length=limits.max_query_chars, description="Text to search for."),
        k: int = Query(10, ge=1, le=limits.max_k, description="Number of results."),
        rerank: Literal["none", "alignment", "likelihood"] = Query(
            "none", description="Re-order the best by the alignment head or by the masked-word likelihood."
        ),
    ) -> dict[str, Any]:
        if not q.strip():
            raise HTTPException(422, "the query is empty")
        results = await run(service.search_pool, lambda: service.search(q, k, rerank))
        return {"query": q, "k": k, "rerank": rerank, "results": results}

    @app.post("/predict")
    async def predict(file: UploadFile = File(..., description="A short video (anything FFmpeg decodes).")) -> dict[str, Any]:
        if service.labels is None:
            raise HTTPException(503, "the model was exported without candidate labels (export --work)")
        directory = Path(tempfile.mkdtemp(prefix="videobert-upload-"))
        path = directory / "upload"  # the client's file name is never used
        try:
            size = 0
            with open(path, "wb") as fh:
                while chunk := await file.read(UPLOAD_CHUNK):
                    size += len(chunk)
                    if size > limits.max_upload_bytes:
                        raise HTTPException(413, f"upload larger than {limits.max_upload_mb:g} MB")
                    fh.write(chunk)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise

        try:
            # The upload is removed when the job is over, not when the request is: it may outlive a timed-out request.
            return await run(service.predict_pool, lambda: service.predict_file(path),
                             cleanup=lambda: shutil.rmtree(directory, ignore_errors=True))  # fmt: skip
        except InputError as exc:
            raise HTTPException(415, f"not a video that can be decoded: {exc.problem}") from None
        except VideoTooLong as exc:
            raise HTTPException(413, str(exc)) from None

    @app.get("/thumbs/{segment_id}.jpg", include_in_schema=False)
    def thumbnail(segment_id: int) -> Any:
        path = service.segment_file(segment_id, "thumbnail")
        if path is None:
            raise HTTPException(404, "no such thumbnail")
        return FileResponse(path, media_type="image/jpeg")

    @app.get("/media/{segment_id}", include_in_schema=False)
    def media(segment_id: int) -> Any:
        path = service.segment_file(segment_id, "media")
        if path is None:
            raise HTTPException(404, "no such segment video")
        return FileResponse(path)

    return app


def serve(
    index: Path,
    *,
    model: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_mb: float = 50.0,
    timeout: float = 30.0,
    search_workers: int = 2,
    search_queue: int = 64,
    predict_workers: int = 1,
    predict_queue: int = 4,
) -> None:
    """Serve an index over HTTP: text search of its segments, predictions on uploaded videos, a search page at /.

    Runs until interrupted. Binds to 127.0.0.1 (this machine only) unless --host says otherwise.

    Args:
        index: Index directory written by `videobert index`.
        model: Export directory (default: the one the index was built with; it must be the same model).
        host: Address to listen on; 0.0.0.0 makes the server reachable from other machines.
        port: TCP port.
        max_upload_mb: Largest upload POST /predict accepts, in MB.
        timeout: Seconds a request waits for its result before 504.
        search_workers: Searches run at the same time.
        search_queue: Searches waiting for a worker; more get 429.
        predict_workers: Predictions run at the same time.
        predict_queue: Predictions waiting for a worker; more get 429.
    """
    import uvicorn

    limits = ServeLimits(
        max_upload_mb=max_upload_mb, timeout_s=timeout, search_workers=search_workers, search_queue=search_queue,
        predict_workers=predict_workers, predict_queue=predict_queue,
    )  # fmt: skip
    if not _is_loopback(host):
        logger.warning("listening on %s: the server is reachable from other machines", host)
    service = SearchService(index, model, limits)
    print(f"videobert: {len(service.index)} segments, http://{host}:{port}/ (docs at /docs)", flush=True)
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning", timeout_keep_alive=5)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
