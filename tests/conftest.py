"""Shared fixtures: a clean environment for every test, and a real logd process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from ingest_support import IMPLS
from support import LogdProcess, start_logd


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No LOGD_* or AWS_* from the developer's shell; fake AWS credentials; a private HOME
    so dev-mode secrets never touch the real one."""
    for name in list(os.environ):
        if name.startswith(("LOGD_", "AWS_")) or name == "XDG_CONFIG_HOME":
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def logd(tmp_path: Path) -> Iterator[LogdProcess]:
    """A real `logd serve` with env secrets (support.READ_SECRET / WRITE_SECRET)."""
    proc = start_logd(tmp_path)
    yield proc
    proc.stop()


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> str:
    """The accept engine under test: every accept-path test runs on both (C skipped,
    with its reason, when the extension is not built)."""
    return str(request.param)
