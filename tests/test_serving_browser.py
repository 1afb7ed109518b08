"""The search page in headless Chromium against a real `videobert serve` on 127.0.0.1 (benchmarks/search_page.py):
a query renders result cards with thumbnails. Skipped where no Chromium is installed."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from videobert.serving.index import index

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "search_page.py"


@pytest.mark.skipif(not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
                    reason="no Chromium (apt-get install -y chromium)")  # fmt: skip
def test_search_page_shows_results_in_a_browser(tiny_export, minicook_work, tmp_path):
    out = tmp_path / "index"
    index(tiny_export[1], minicook_work, out=out)
    shot = tmp_path / "page.png"
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), "--query", "peel the carrot", "--screenshot", str(shot)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "12 result cards, 12 with thumbnails" in done.stdout and 'segments for "peel the carrot"' in done.stdout
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
