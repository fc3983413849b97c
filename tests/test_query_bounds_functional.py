"""A real logd's answers are bounded: in bytes (ending with the documented truncation marker,
never silently), and in how many run at once (429 naming the cap)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from logd._pb.logd_pb2 import Msg
from support import LogdProcess, start_logd, wait_for

KiB = 1024


def fill(proc: LogdProcess, count: int, size: int) -> None:
    for start in range(0, count, 10):
        proc.write(
            *(Msg(svc="big", txt=f"{i:05d} " + "x" * size) for i in range(start, start + 10))
        )
        if start % 200 == 190:  # let a 1 MiB receive buffer drain
            wait_for(lambda n=start + 10: proc.info()["udp"]["events"] >= n)
    wait_for(lambda: proc.info()["udp"]["events"] >= count)


def test_an_answer_past_its_bytes_ends_with_the_truncation_marker(tmp_path: Path) -> None:
    proc = start_logd(tmp_path, "--query-max-bytes", "64KiB")
    try:
        fill(proc, 100, 2000)  # ~200 KB of events
        events = proc.query(svc="big", limit="100")
        marker = events[-1]
        assert set(marker) == {"truncated", "max_bytes", "events", "until", "offset", "before"}
        assert marker["before"] == events[-2]["id"]  # the last event shown
        assert marker["truncated"] is True
        assert marker["max_bytes"] == 64 * KiB
        shown = events[:-1]
        assert marker["events"] == len(shown) > 0
        assert len(json.dumps(shown).encode()) <= 64 * KiB + len(shown) * 8
        assert [e["txt"][:5] for e in shown] == [f"{i:05d}" for i in range(99, 99 - len(shown), -1)]
        # NDJSON: the marker is the last line.
        status, body, _ = proc.get("/", {"svc": "big", "limit": "100", "format": "ndjson"})
        lines = [json.loads(x) for x in body.splitlines()]
        assert status == 200
        assert lines[-1] == marker
        # Events of one frame share a time: `offset` skips those this answer showed.
        assert marker["offset"] == sum(e["t"] == marker["until"] for e in shown) > 0
        # Paging on with `until` and `offset` gets the next, older events: no gap, no repeat.
        older = proc.query(
            svc="big", limit="100", until=marker["until"], offset=str(marker["offset"])
        )
        assert older[0]["txt"][:5] == f"{99 - len(shown):05d}"
        # Under the bound: no marker.
        few = proc.query(svc="big", limit="5")
        assert all("truncated" not in e for e in few)
        assert len(few) == 5
        assert proc.info()["queries"]["truncated"] == 3  # the first, its NDJSON twin, a page
        status, body, _ = proc.get("/", {"before": "not-an-id"})
        assert status == 400
        assert body["error"] == (
            "bad parameter 'before': expected an event id this server gave (the `id` of an event)"
        )
        # `logd query` shows what came and says on stderr how to get the rest.
        env = {**os.environ, "LOGD_HOST": proc.http_url, "LOGD_READ_SECRET": proc.read_secret}
        cli = subprocess.run(
            [sys.executable, "-m", "logd", "query", "--svc", "big", "--limit", "100"],
            capture_output=True, text=True, env=env, timeout=60, check=True,
        )  # fmt: skip
        assert len(cli.stdout.splitlines()) == len(shown)
        assert cli.stderr == (
            f"logd: the answer stopped after {len(shown)} events, at the server's "
            f"LOGD_QUERY_MAX_BYTES (65536 bytes); for older ones add --until {marker['until']} "
            f"--offset {marker['offset']}\n"
        )
        # `before` pages the same way by id, unmoved by events written meanwhile.
        fill_more = [Msg(svc="big", txt="newer")]
        proc.write(*fill_more)
        wait_for(lambda: proc.info()["store"]["writes"] == 101)
        by_id = proc.query(svc="big", limit="100", before=marker["before"])
        assert by_id == older
    finally:
        proc.stop()


def test_guard_against_queries_piling_up_past_their_cap(tmp_path: Path) -> None:
    """One answer held by a client that does not read, and the cap at 1: the next query is
    a 429 that names the cap; once the first is gone, queries are answered again."""
    proc = start_logd(tmp_path, "--max-queries", "1", "--query-max-bytes", "32MiB")
    try:
        fill(proc, 4000, 4000)  # ~16 MB: more than the sockets buffer
        host, port = proc.http_url.removeprefix("http://").split(":")
        stuck = socket.create_connection((host, int(port)))
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        request = f"GET /?limit=10000 HTTP/1.1\r\nHost: x\r\nAuthorization: {proc.read_secret}\r\n"
        stuck.sendall(request.encode() + b"\r\n")
        try:
            # The answer is being written, and waits for a client that does not read.
            wait_for(lambda: proc.info()["memory"]["used"]["queries"] > 0)
            assert proc.info()["queries"]["running"] == 1
            status, body, headers = proc.get("/", {"limit": "1"})
            assert status == 429
            assert body["error"] == "too many queries at once (LOGD_MAX_QUERIES=1); retry later"
            assert headers["Retry-After"] == "1"
            assert proc.info()["queries"]["refused"] == 1
        finally:
            stuck.close()
        wait_for(lambda: proc.info()["queries"]["running"] == 0)
        assert len(proc.query(limit="1")) == 1
        assert proc.info()["memory"]["used"]["queries"] == 0
    finally:
        proc.stop()
