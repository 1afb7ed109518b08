"""Load test of `videobert serve` on this machine only: it starts the server on 127.0.0.1 (a free port), runs
concurrent clients against /search and /predict for a fixed time, stops the server and prints requests/s, latency
percentiles, the status codes and the server's memory over the run. It stops by itself after --seconds.

    .venv/bin/python benchmarks/load_test.py INDEX VIDEO                      # 32 search + 4 predict clients, 60 s
    .venv/bin/python benchmarks/load_test.py INDEX VIDEO --seconds 20         # shorter

INDEX is a directory written by `videobert index`, VIDEO a short video for the uploads. Each client sends its next
request as soon as the previous one is answered (closed loop); search queries cycle through MiniCook-style
captions. Any status other than 200 counts as an error except 429 (the server turning work away on purpose when its
pools are full). Memory: the server's resident set size, sampled every second from /proc (Linux).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

QUERIES = [f"{verb} the {noun}" for verb in ("cut", "peel", "stir", "pour", "wash", "fry", "roll", "add")
           for noun in ("tomato", "carrot", "egg", "onion", "apple")]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def client(base: str, kind: str, deadline: float, video: bytes, seed: int, log: list) -> None:
    """Closed loop until `deadline`: (kind, status, seconds) appended to `log` per request."""
    rng = np.random.default_rng(seed)
    with httpx.Client(base_url=base, timeout=60) as http:
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                if kind == "search":
                    status = http.get("/search", params={"q": QUERIES[rng.integers(len(QUERIES))], "k": 10}).status_code
                else:
                    status = http.post("/predict", files={"file": ("clip.mp4", video, "video/mp4")}).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            log.append((kind, status, time.monotonic() - started))
            if status == 429:
                time.sleep(0.5)  # honour Retry-After loosely: a polite client backs off


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("video", type=Path)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--search-clients", type=int, default=32)
    parser.add_argument("--predict-clients", type=int, default=4)
    args = parser.parse_args()
    if not 0 < args.seconds <= 600:
        sys.exit("--seconds must be in (0, 600]")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    server = subprocess.Popen(
        [sys.executable, "-m", "videobert.cli", "serve", str(args.index), "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise SystemExit("the server did not come up within a minute")
        video = args.video.read_bytes()
        memory: list[float] = [rss_mb(server.pid)]
        log: list = []
        deadline = time.monotonic() + args.seconds
        threads = [threading.Thread(target=client, args=(base, "search", deadline, video, i, log))
                   for i in range(args.search_clients)]  # fmt: skip
        threads += [threading.Thread(target=client, args=(base, "predict", deadline, video, 1000 + i, log))
                    for i in range(args.predict_clients)]  # fmt: skip
        started = time.monotonic()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(1.0)
            memory.append(rss_mb(server.pid))
        elapsed = time.monotonic() - started
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()

    print(f"# {datetime.date.today()} {platform.node()}: {os.cpu_count()} CPUs; server and clients on this machine")
    print(f"# {shlex.join([sys.executable.rsplit('/', 1)[-1], *sys.argv])}")
    print(f"{elapsed:.1f} s, {args.search_clients} search clients, {args.predict_clients} predict clients")
    print("| endpoint | requests | requests/s | p50 ms | p95 ms | p99 ms | 200 | 429 | other |")
    print("|---|---|---|---|---|---|---|---|---|")
    errors = 0
    for kind in ("search", "predict"):
        rows = [(status, seconds) for k, status, seconds in log if k == kind]
        ok = np.asarray([seconds for status, seconds in rows if status == 200]) * 1e3
        counts = Counter(status for status, _ in rows)
        other = sum(n for status, n in counts.items() if status not in (200, 429))
        errors += other
        p = np.percentile(ok, [50, 95, 99]) if len(ok) else [float("nan")] * 3
        print(f"| /{kind} | {len(rows)} | {counts[200] / elapsed:.1f} | {p[0]:.0f} | {p[1]:.0f} | {p[2]:.0f} | "
              f"{counts[200]} | {counts[429]} | {other} |")  # fmt: skip
        if other:
            print(f"  other statuses: {dict((s, n) for s, n in counts.items() if s not in (200, 429))}")
    first, peak, last = memory[0], max(memory), memory[-1]
    print(f"server RSS: {first:.0f} MB at start, {memory[min(2, len(memory) - 1)]:.0f} MB after 2 s, "
          f"{peak:.0f} MB peak, {last:.0f} MB at the end ({len(memory)} samples)")
    print(f"errors other than 429: {errors}")


if __name__ == "__main__":
    main()
