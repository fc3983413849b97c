"""bench/ui_tail.py keeps working: one short run in headless Chromium prints its table with
every row, and the page's weight (its numbers mean nothing in a smoke run)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from ui_support import require_browser

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.functional, pytest.mark.timeout(180)]


def test_smoke_run_prints_every_row_and_the_page_weight() -> None:
    require_browser()
    subprocess.run(["make", "-s", "bench/build/sender"], cwd=REPO, check=True)
    result = subprocess.run(
        [sys.executable, "-m", "bench.ui_tail", "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for name in ("no events (reference)", "1,000 events/s |", "paused (read, held, not drawn)"):
        assert name in out
    row = re.search(r"\| 1,000 events/s \| ([\d.]+) \| \d+ \| (\d+) / (\d+) \|", out)
    assert row, out
    assert float(row.group(1)) > 0
    assert int(row.group(2)) > int(row.group(3)), "more events held than rows drawn"
    weight = re.search(r"first load: ([\d,]+) bytes transferred", out)
    assert weight, out
    assert int(weight.group(1).replace(",", "")) > 10_000
    assert "index.html" in out
    assert "app.js" in out
    assert "app.css" in out
