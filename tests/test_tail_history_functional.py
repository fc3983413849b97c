"""Tail history and resume on a real logd: `n=` backlog, `since=`, `after=ID` and the
`Last-Event-ID` header, with no gap and no duplicate between the history and the live
stream, and an in-band notice when events after the id are gone. Every case runs on the
memory store and on a Valkey store (a real redis-server)."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from logd._pb.logd_pb2 import Msg
from redis_support import RedisServer
from support import READ_SECRET, LogdProcess, start_logd, wait_for

pytestmark = pytest.mark.functional


@pytest.fixture(params=["memory", "valkey"])
def store_args(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """The `logd serve` arguments of the store under test."""
    if request.param == "memory":
        yield []
        return
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield ["--store-url", server.url]
    finally:
        server.stop()


@pytest.fixture
def logd(tmp_path: Path, store_args: list[str]) -> Iterator[LogdProcess]:
    proc = start_logd(tmp_path, *store_args)
    yield proc
    proc.stop()


@contextmanager
def tail(
    proc: LogdProcess, query: str = "", headers: dict[str, str] | None = None
) -> Iterator[http.client.HTTPResponse]:
    host, port = urllib.parse.urlsplit(proc.http_url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(
            "GET", "/tail" + query, headers={"Authorization": READ_SECRET} | (headers or {})
        )
        yield conn.getresponse()
    finally:
        conn.close()


def write(proc: LogdProcess, *texts: str, svc: str = "api") -> None:
    before = proc.info()["udp"]["events"]
    for text in texts:
        proc.write(Msg(env="prod", svc=svc, txt=text))
    stored(proc, before + len(texts))


def stored(proc: LogdProcess, events: int = 0) -> None:
    """Wait until `events` were accepted (a read of the socket may wait a millisecond or
    two: ingest/drain.py paces them), and what was accepted is stored (on Valkey: in the
    backend)."""
    wait_for(lambda: proc.info()["udp"]["events"] >= events)
    target = proc.info()["udp"]["events"]

    def done() -> bool:
        store = proc.info()["store"]
        backend = store["backend"]
        return bool(
            store["writes"] >= target and (backend is None or backend["sent_events"] >= target)
        )

    wait_for(done)


def lines(response: http.client.HTTPResponse, n: int) -> list[dict[str, object]]:
    return [json.loads(response.readline()) for _ in range(n)]


def test_n_sends_the_newest_matching_events_oldest_first_then_follows(logd: LogdProcess) -> None:
    write(logd, *(f"e{i}" for i in range(5)))
    wait_for(lambda: len(logd.query()) == 5)
    with tail(logd, "?n=3&svc=api") as response:
        assert response.status == 200
        backlog = lines(response, 3)
        assert [e["txt"] for e in backlog] == ["e2", "e3", "e4"]
        write(logd, "live")
        (live,) = lines(response, 1)
        assert live["txt"] == "live"
    ids = [int(str(e["id"])) for e in [*backlog, live]]
    assert ids == sorted(set(ids))  # increasing, no duplicate


def test_no_gap_and_no_duplicate_while_events_keep_coming(logd: LogdProcess) -> None:
    """A writer sends the whole time the tail connects: every event shows once, in order."""
    stop = threading.Event()
    sent: list[str] = []

    def writer() -> None:
        for i in range(400):
            if stop.is_set():
                break
            sent.append(f"w{i:04d}")
            logd.write(Msg(env="prod", svc="api", txt=sent[-1]))
            time.sleep(0.002)  # about a second in all: the tail connects in the middle

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        wait_for(lambda: len(sent) >= 50)
        with tail(logd, f"?n={10_000}") as response:
            assert thread.is_alive()  # the writer goes on while the tail starts
            thread.join()
            wait_for(lambda: logd.info()["store"]["writes"] == len(sent))
            got = [str(e["txt"]) for e in lines(response, len(sent))]
    finally:
        stop.set()
        thread.join()
    assert got == sent


def test_after_an_id_resumes_with_the_held_events_after_it(logd: LogdProcess) -> None:
    write(logd, "a", "b", "c", "d")
    events = list(reversed(logd.query()))
    assert [e["txt"] for e in events] == ["a", "b", "c", "d"]
    with tail(logd, f"?after={events[1]['id']}") as response:
        assert [e["txt"] for e in lines(response, 2)] == ["c", "d"]
        write(logd, "e")
        assert [e["txt"] for e in lines(response, 1)] == ["e"]
    # What a browser's EventSource sends back when it reconnects: the last SSE id.
    headers = {"Accept": "text/event-stream", "Last-Event-ID": str(events[2]["id"])}
    with tail(logd, "", headers) as response:
        assert response.readline() == f"id: {events[3]['id']}\n".encode()
        assert json.loads(response.readline().removeprefix(b"data: "))["txt"] == "d"
        assert response.readline() == b"\n"
        assert response.readline().startswith(b"id: ")
        assert json.loads(response.readline().removeprefix(b"data: "))["txt"] == "e"


def test_since_sends_the_backlog_from_then(logd: LogdProcess) -> None:
    write(logd, "old one", "old two")
    with tail(logd, "?since=1h") as response:
        assert [e["txt"] for e in lines(response, 2)] == ["old one", "old two"]


def test_a_resume_after_evicted_events_is_told_in_band(
    tmp_path: Path, store_args: list[str]
) -> None:
    proc = start_logd(tmp_path, "--ring-bytes", "1MiB", "--max-rings", "4", *store_args)
    # ~1.6 MB through a 1 MiB ring, or 5,000 entries through a stream capped at 1 MiB / 256
    # = 4,096 entries: "first" is evicted.
    total, size, frame = (5000, 10, 100) if store_args else (400, 4000, 10)
    try:
        write(proc, "first")
        (first,) = proc.query()
        for start in range(0, total, frame):
            proc.write(*(Msg(env="prod", svc="api", txt=f"{i:04d} " + "x" * size)
                         for i in range(start, start + frame)))  # fmt: skip
            wait_for(lambda n=start + frame + 1: proc.info()["store"]["writes"] >= n)
        stored(proc)
        wait_for(lambda: proc.info()["store"]["rings"][0]["evicted"] > 0)  # Valkey: every 1 s
        with tail(proc, f"?after={first['id']}&n=2") as response:
            assert json.loads(response.readline()) == {"gap": True}
            assert [str(e["txt"])[:5] for e in lines(response, 2)] == [
                f"{total - 2:04d} ",
                f"{total - 1:04d} ",
            ]
        with tail(proc, f"?after={first['id']}", {"Accept": "text/event-stream"}) as response:
            assert response.readline() == b"event: gap\n"
            assert response.readline() == b'data: {"gap": true}\n'
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("query", "headers", "needle"),
    [
        ("?n=-1", {}, "'n': expected a whole number from 0 to 10000"),
        ("?n=10001", {}, "'n': expected a whole number from 0 to 10000"),
        ("?n=%C2%B2", {}, "'n'"),  # a Unicode digit
        ("?after=abc", {}, "'after': expected an event id"),
        ("?after=" + "9" * 30, {}, "'after'"),
        ("", {"Last-Event-ID": "x1"}, "'Last-Event-ID': expected an event id"),
    ],
)
def test_guard_against_bad_history_asks(
    logd: LogdProcess, query: str, headers: dict[str, str], needle: str
) -> None:
    with tail(logd, query, headers) as response:
        body = json.loads(response.read())
    assert response.status == 400
    assert needle in body["error"]
    assert logd.info()["tail"]["subscribers"] == 0
