"""Retention by age end to end: a real `logd serve` with a max age of 1 s."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from logd._pb.logd_pb2 import Msg
from support import LogdProcess, start_logd, wait_for

pytestmark = pytest.mark.functional

FAR_PAST = -(2**62)  # event times a hostile writer may send (within what int64 ns holds)
FAR_FUTURE = 2**62


def send(proc: LogdProcess, env: str, svc: str, texts: list[str], t_ns: int | None = None) -> None:
    msgs = []
    for text in texts:
        msg = Msg(env=env, svc=svc, txt=text)
        msg.t.FromNanoseconds(time.time_ns() if t_ns is None else t_ns)
        msgs.append(msg)
    proc.write(*msgs)


def texts(proc: LogdProcess, **params: str) -> list[str]:
    return sorted(e["txt"] for e in proc.query(limit="1000", **params))


def by_age(info: dict[str, Any]) -> dict[str, int]:
    return info["store"]["evicted_by"]["age"]  # type: ignore[no-any-return]


def test_events_older_than_the_max_age_leave_queries_and_are_counted(tmp_path: Path) -> None:
    (tmp_path / "logdrc.yml").write_text("rings:\n  'keep/*': {max_age: 1h}\n")
    proc = start_logd(tmp_path, "--ring-max-age", "1s")
    try:
        send(proc, "prod", "api", [f"e{i}" for i in range(10)])
        # A writer's own times neither keep an event nor take others with it.
        send(proc, "prod", "api", ["future"], FAR_FUTURE)
        send(proc, "prod", "api", ["past"], FAR_PAST)
        send(proc, "keep", "api", ["kept"])
        wait_for(lambda: proc.info()["store"]["writes"] == 13)
        assert len(texts(proc, env="prod")) == 12
        started = time.monotonic()
        wait_for(lambda: texts(proc, env="prod") == [], timeout=10)
        # Gone within about age * 17/16 plus two sweeps (1/16 s each here).
        assert time.monotonic() - started < 5
        assert texts(proc) == ["kept"]
        info = proc.info()
        assert by_age(info)["events"] == 12
        assert by_age(info)["bytes"] > 12 * 10
        assert info["store"]["evicted_by"]["bytes"]["events"] == 0
        [ring] = [r for r in info["store"]["rings"] if r["key"] == "prod/api"]
        assert ring["events"] == 0
        assert ring["evicted"] == ring["evicted_by"]["age"]["events"] == 12
        _, metrics, _ = proc.get("/metrics", secret="")
        assert 'logd_evicted_events_total{reason="age"} 12' in metrics
        assert 'logd_evicted_events_total{reason="bytes"} 0' in metrics
        # New events after the eviction are kept for their own age.
        send(proc, "prod", "api", ["later"])
        wait_for(lambda: texts(proc, env="prod") == ["later"])
    finally:
        proc.stop()


def test_what_aged_while_logd_was_down_does_not_come_back(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = start_logd(tmp_path, "--ring-max-age", "1s", "--data-dir", str(data))
    try:
        send(proc, "prod", "api", ["before the restart"])
        wait_for(lambda: texts(proc) == ["before the restart"])
    finally:
        assert proc.stop() == 0  # the last flush writes it
    time.sleep(1.1)  # past the age (plus the file time's slack) while logd is down
    again = start_logd(tmp_path, "--ring-max-age", "1s", "--data-dir", str(data))
    try:
        assert texts(again) == []
        assert again.info()["persistence"]["loaded_events"] == 0
    finally:
        again.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ring-max-age", "10x"], "--ring-max-age has a bad value: expected a duration"),
        (
            ["--ring-max-age", "1d", "--store-url", "redis://127.0.0.1:1/0"],
            "ring_max_age and a ring's max_age (retention by age) need the memory store",
        ),
    ],
)
def test_a_bad_max_age_stops_start_up_with_one_sentence(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "logd", "serve", *args],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("logd: " + message)
