"""/tail over real HTTP: coalesced flushes keep every event, in order, in both formats, and
a subscriber's overflow is told in-band."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from logd._pb.logd_pb2 import Msg
from support import READ_SECRET, LogdProcess, start_logd, wait_for

pytestmark = pytest.mark.functional

FRAMES, PER_FRAME = 20, 15


@contextlib.contextmanager
def open_tail(proc: LogdProcess, accept: str | None = None) -> Iterator[http.client.HTTPResponse]:
    host, port = urllib.parse.urlsplit(proc.http_url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Authorization": READ_SECRET} | ({"Accept": accept} if accept else {})
    try:
        conn.request("GET", "/tail", headers=headers)
        response = conn.getresponse()
        assert response.status == 200
        yield response
    finally:
        conn.close()


def _burst(proc: LogdProcess) -> list[str]:
    texts = [f"e{i:03d}" for i in range(FRAMES * PER_FRAME)]
    for start in range(0, len(texts), PER_FRAME):
        proc.write(*(Msg(env="prod", svc="api", txt=t) for t in texts[start : start + PER_FRAME]))
    return texts


def test_every_subscriber_gets_a_burst_whole_and_in_order(logd: LogdProcess) -> None:
    with (
        open_tail(logd) as first,
        open_tail(logd) as second,
        open_tail(logd, accept="text/event-stream") as sse,
    ):
        wait_for(lambda: logd.info()["tail"]["subscribers"] == 3)
        texts = _burst(logd)
        for response in (first, second):
            got = [json.loads(response.readline())["txt"] for _ in texts]
            assert got == texts
        got = []
        while len(got) < len(texts):
            id_line, data, end = sse.readline(), sse.readline(), sse.readline()
            event = json.loads(data.removeprefix(b"data: "))
            assert id_line == f"id: {event['id']}\n".encode()  # what a reconnect sends back
            assert end == b"\n"  # the blank line that ends each SSE event
            got.append(event["txt"])
        assert got == texts
    assert logd.info()["tail"]["dropped"] == 0


@pytest.mark.parametrize("accept", [None, "text/event-stream"])
def test_an_overflow_is_told_in_band_before_the_lines_kept(tmp_path: Path, accept: str) -> None:
    proc = start_logd(tmp_path, "--tail-queue", "1")
    try:
        with open_tail(proc, accept) as response:
            wait_for(lambda: proc.info()["tail"]["subscribers"] == 1)
            # One datagram: its events reach the tail in one flush, with room for one.
            proc.write(*(Msg(env="prod", svc="api", txt=f"e{i}") for i in range(PER_FRAME)))
            if accept:
                assert response.readline() == b"event: dropped\n"
                assert response.readline() == f'data: {{"dropped": {PER_FRAME - 1}}}\n'.encode()
                assert response.readline() == b"\n"
                assert response.readline().startswith(b"id: ")
                assert json.loads(response.readline().removeprefix(b"data: "))["txt"] == "e0"
            else:
                assert json.loads(response.readline()) == {"dropped": PER_FRAME - 1}
                assert json.loads(response.readline())["txt"] == "e0"
        assert proc.info()["tail"]["dropped"] == PER_FRAME - 1
    finally:
        proc.stop()


def test_a_client_that_stops_reading_is_told_what_it_lost(tmp_path: Path) -> None:
    """Its connection backs up, the server falls back to writing with flow control, its
    queue fills: every event it subscribed to is then either a line or counted in-band."""
    proc = start_logd(tmp_path, "--tail-queue", "64")
    try:
        with open_tail(proc) as response:
            wait_for(lambda: proc.info()["tail"]["subscribers"] == 1)
            filler = "x" * 1000
            while not proc.info()["tail"]["dropped"]:  # not reading meanwhile
                for _ in range(50):
                    proc.write(*(Msg(env="prod", svc="api", txt=filler) for _ in range(PER_FRAME)))
            # Datagrams are handled in order: once this one is stored, all the rest are.
            proc.write(Msg(env="prod", svc="api", txt="last"))
            wait_for(lambda: proc.query(txt="last"))
            writes = proc.info()["store"]["writes"]
            lines = dropped = 0
            while lines + dropped < writes:
                line = response.readline()
                if not line.strip():
                    continue  # a keep-alive
                event = json.loads(line)
                if "dropped" in event:
                    dropped += event["dropped"]
                else:
                    assert event["txt"] in (filler, "last")
                    lines += 1
            assert lines + dropped == writes
            assert dropped == proc.info()["tail"]["dropped"] > 0
    finally:
        proc.stop()


def test_an_http_1_0_client_gets_the_stream_unchunked(logd: LogdProcess) -> None:
    host, port = urllib.parse.urlsplit(logd.http_url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET /tail HTTP/1.0\r\nAuthorization: {READ_SECRET}\r\n\r\n".encode())
        stream = sock.makefile("rb")
        assert stream.readline().startswith(b"HTTP/1.0 200")
        while stream.readline() != b"\r\n":  # the rest of the head
            pass
        wait_for(lambda: logd.info()["tail"]["subscribers"] == 1)
        texts = _burst(logd)
        assert [json.loads(stream.readline())["txt"] for _ in texts] == texts
