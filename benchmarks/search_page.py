"""The search page in a real browser: starts `videobert serve` on 127.0.0.1, opens `/?q=QUERY` in headless Chromium
(the page runs the search from its URL, as after typing the query and pressing Search), checks that result cards with
thumbnails and captions were rendered, and saves a screenshot.

    apt-get install -y chromium
    .venv/bin/python benchmarks/search_page.py INDEX --query "cut the tomato" --screenshot docs/search_page.png

Exits 0 when the page showed results, 1 when it did not, 2 when no Chromium is installed.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def headless(browser: str, url: str, *extra: str) -> subprocess.CompletedProcess:
    """One headless Chromium run on `url`; the virtual-time budget lets the page's fetch and rendering finish."""
    profile = tempfile.mkdtemp(prefix="videobert-chromium-")
    try:
        return subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
             "--virtual-time-budget=10000", "--window-size=1100,800", *extra, url],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("--query", default="cut the tomato")
    parser.add_argument("--screenshot", type=Path, default=Path("search_page.png"))
    args = parser.parse_args()
    browser = find_browser()
    if browser is None:
        print("no Chromium found (apt-get install -y chromium)", file=sys.stderr)
        return 2

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "videobert.cli", "serve", str(args.index), "--host", "127.0.0.1", "--port", str(port)],
        env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        url = f"{base}/?{urllib.parse.urlencode({'q': args.query})}"
        dom = headless(browser, url, "--dump-dom").stdout
        cards = len(re.findall(r'class="hit"', dom))
        thumbnails = len(re.findall(r'<img [^>]*src="/thumbs/\d+\.jpg"', dom))
        status = re.search(r'<div id="status">([^<]*)</div>', dom)
        print(f"{browser}: {cards} result cards, {thumbnails} with thumbnails; status line: "
              f"{status.group(1) if status else '?'!r}")  # fmt: skip
        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
        shot = headless(browser, url, f"--screenshot={args.screenshot.resolve()}")
        print(f"screenshot: {args.screenshot} ({'written' if args.screenshot.is_file() else shot.stderr[-300:]})")
        return 0 if cards > 0 and thumbnails == cards else 1
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
