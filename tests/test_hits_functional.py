"""GET /hits against a real `logd serve`: counts over time whose totals equal what GET /
returns for the same filters, the body of HTTP_API.md, and a 400 for each bad input."""

from __future__ import annotations

import http.client
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from logd._pb.logd_pb2 import ERROR, INFO, WARN, Msg
from support import LogdProcess, start_logd, wait_for

pytestmark = pytest.mark.functional
S = 1_000_000_000
Pairs = list[tuple[str, str]]
COUNT = 600


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogdProcess]:
    """600 events over the last 50 minutes, in three services and three levels, and one
    a day old in env `old`."""
    proc = start_logd(tmp_path_factory.mktemp("hits"), "--auth-fail-limit", "10000")
    now = time.time_ns()
    msgs = []
    for i in range(COUNT):
        svc, lvl = ["api", "billing", "web"][i % 3], [INFO, WARN, ERROR][i % 5 % 3]
        msg = Msg(
            env="prod", svc=svc, lvl=lvl, txt=f"event {i}", attrs={"request_id": f"r-{i % 12}"}
        )
        msg.t.FromNanoseconds(now - i * 5 * S)
        msgs.append(msg)
    old = Msg(env="old", svc="api", txt="yesterday")
    old.t.FromNanoseconds(now - 86400 * S)
    msgs.append(old)
    for start in range(0, len(msgs), 50):
        proc.write(*msgs[start : start + 50])
    wait_for(lambda: proc.info()["store"]["writes"] == COUNT + 1)
    yield proc
    proc.stop()


def hits(proc: LogdProcess, params: Pairs) -> dict[str, object]:
    status, body, headers = proc.get("/hits", params)  # type: ignore[arg-type]
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    return body  # type: ignore[no-any-return]


def query_all(proc: LogdProcess, params: Pairs) -> list[dict[str, object]]:
    status, body, _ = proc.get("/", [*params, ("limit", "10000")])  # type: ignore[arg-type]
    assert status == 200, body
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "params",
    [
        [],
        [("lvl", "warn")],
        [("svc", "api"), ("svc", "web")],
        [("svc!", "api"), ("txt!", "event 1")],
        [("attr.request_id", "r-1"), ("attr.request_id", "r-1*")],
        [("since", "20m")],
        [("since", "40m"), ("until", "10m"), ("lvl", "error")],
    ],
)
def test_hits_totals_equal_the_query(filled: LogdProcess, params: Pairs) -> None:
    events = query_all(filled, params)
    for extra in ([], [("step", "1m")], [("by", "lvl")], [("by", "svc"), ("step", "5m")]):
        body = hits(filled, params + extra)
        assert body["total"] == len(events), extra
        buckets = body["buckets"]
        assert isinstance(buckets, list)
        assert sum(b["total"] for b in buckets) == len(events)
        step = body["step_s"]
        assert isinstance(step, int)
        per_bucket = Counter(_bucket(str(e["t"]), step) for e in events)
        assert {b["t"]: b["total"] for b in buckets if b["total"]} == per_bucket
        assert [b["t"] for b in buckets] == sorted(b["t"] for b in buckets)  # oldest first


def _bucket(stamp: str, step_s: int) -> str:
    import datetime as dt

    when = dt.datetime.fromisoformat(stamp[:19] + "+00:00")
    start = int(when.timestamp()) // step_s * step_s
    return dt.datetime.fromtimestamp(start, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_body_and_the_default_step(filled: LogdProcess) -> None:
    body = hits(filled, [("since", "1h"), ("by", "lvl")])
    assert list(body) == ["step_s", "total", "buckets"]
    assert body["step_s"] == 60  # 1s and 10s give more than 300 buckets over an hour
    buckets = body["buckets"]
    assert isinstance(buckets, list)
    assert len(buckets) in (60, 61)
    first = buckets[0]
    assert list(first) == ["t", "total", "by"]
    assert first["t"].endswith(":00Z")
    by: Counter[str] = Counter()
    for bucket in buckets:
        by.update(bucket["by"])
    assert by == {"INFO": 240, "WARN": 240, "ERROR": 120}
    no_by = hits(filled, [("since", "1h")])
    assert "by" not in no_by["buckets"][0]  # type: ignore[index]


def test_by_attr_shows_the_10_largest_and_other(filled: LogdProcess) -> None:
    body = hits(filled, [("by", "attr.request_id"), ("step", "1d"), ("env", "prod")])
    groups: Counter[str] = Counter()
    for bucket in body["buckets"]:  # type: ignore[attr-defined]
        assert sum(bucket["by"].values()) == bucket["total"]
        groups.update(bucket["by"])
    assert len(groups) == 11
    assert groups["other"] == 100  # 12 request ids of 50 events: 2 of them are the rest
    assert sum(groups.values()) == COUNT


@pytest.mark.parametrize(
    ("params", "param", "expected"),
    [
        ([("by", "color")], "by", "lvl, env, svc, fn, host or attr.KEY"),
        ([("by", "pid")], "by", "lvl, env, svc, fn, host or attr.KEY"),
        ([("by", "attr.")], "by", "attr.KEY with a KEY of 1 to 256"),
        ([("step", "0s")], "step", "whole seconds from 1s to 3650d"),
        ([("step", "-1m")], "step", "whole seconds from 1s to 3650d"),
        ([("step", "1500ms")], "step", "whole seconds from 1s to 3650d"),
        ([("step", "3651d")], "step", "whole seconds from 1s to 3650d"),
        ([("step", "9" * 21 + "d")], "step", "a duration of at most 20 digits"),
        ([("step", "soon")], "step", "whole seconds from 1s to 3650d"),
        ([("step", "1s"), ("since", "3h")], "step", "at most 10000 buckets"),
        ([("step", "1s")], "step", "at most 10000 buckets"),  # the events span a day
        ([("step", "1m"), ("step", "5m")], "step", "one value"),
        ([("attr.", "x")], "attr.", "attr.KEY with a KEY of 1 to 256"),
        ([("limit", "5")], "limit", "no such parameter"),
        ([("before", "1")], "before", "no such parameter"),
        ([("lvl", "loud")], "lvl", "a level name"),
    ],
)
def test_bad_input_is_a_400_naming_the_parameter(
    filled: LogdProcess, params: Pairs, param: str, expected: str
) -> None:
    status, body, _ = filled.get("/hits", params)  # type: ignore[arg-type]
    assert status == 400, body
    assert f"bad parameter {param!r}" in body["error"]
    assert expected in body["error"]


def test_hits_needs_the_read_secret(filled: LogdProcess) -> None:
    status, body, _ = filled.get("/hits", {}, secret="wrong")
    assert status == 401
    assert "read secret" in body["error"]


def test_hits_after_a_restart_with_a_data_dir_equal_the_query(tmp_path: Path) -> None:
    """The persisted store: events written, logd stopped, started again on the same data
    dir; /hits still counts what GET / returns."""
    data = tmp_path / "data"
    proc = start_logd(tmp_path, "--data-dir", str(data), "--flush-interval", "3600")
    now = time.time_ns()
    msgs = []
    for i in range(300):
        msg = Msg(env="prod", svc=["api", "web"][i % 2], lvl=[INFO, ERROR][i % 3 % 2],
                  txt=f"e{i}", attrs={"k": f"v{i % 4}"})  # fmt: skip
        msg.t.FromNanoseconds(now - i * 7 * S)
        msgs.append(msg)
    for start in range(0, 300, 50):
        proc.write(*msgs[start : start + 50])
    wait_for(lambda: proc.info()["store"]["writes"] == 300)
    assert proc.stop() == 0
    again = start_logd(tmp_path, "--data-dir", str(data))
    try:
        for params in ([], [("svc!", "web")], [("attr.k", "v1"), ("lvl", "error")]):
            events = query_all(again, params)
            body = hits(again, [*params, ("by", "lvl"), ("step", "1m")])
            assert body["total"] == len(events) > 0
            by: Counter[str] = Counter()
            for bucket in body["buckets"]:  # type: ignore[attr-defined]
                by.update(bucket["by"])
            assert by == Counter(str(e["lvl"]) for e in events)
    finally:
        again.stop()


def test_hits_counts_against_the_query_limit(tmp_path: Path) -> None:
    """/hits is a query: past LOGD_MAX_QUERIES at once it is a 429, as GET / is."""
    import threading

    proc = start_logd(tmp_path, "--max-queries", "1")
    try:
        msgs = [Msg(svc="a", txt=f"e{i}", attrs={"k": f"v{i}"}) for i in range(20_000)]
        for start in range(0, len(msgs), 100):
            proc.write(*msgs[start : start + 100])
        wait_for(lambda: proc.info()["store"]["writes"] == len(msgs))
        statuses: list[int] = []
        slow = [("by", "attr.k"), ("attr.k", "v*")]  # parses every event: a long scan

        target = "/hits?" + urllib.parse.urlencode(slow)
        host, port = urllib.parse.urlsplit(proc.http_url).netloc.split(":")

        def busy() -> None:
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            try:
                for _ in range(20):
                    conn.request("GET", target, headers={"Authorization": proc.read_secret})
                    response = conn.getresponse()
                    response.read()
                    statuses.append(response.status)
            finally:
                conn.close()

        threads = [threading.Thread(target=busy) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert set(statuses) <= {200, 429}
        assert 429 in statuses
        assert 200 in statuses
        assert proc.get("/hits", {"step": "0s"})[0] == 400  # refused before taking a place
    finally:
        proc.stop()
