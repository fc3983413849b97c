"""Overload soak: high-rate ingest while 20 tails (some never reading) and queries run.

`make test` runs a short version; `make soak` runs it for minutes (SOAK_SECONDS).
Afterwards: RSS within the budgets plus a fixed overhead, every reading tail got
every event or was told how many it missed, every datagram is accounted for,
and the server still answers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from support import READ_SECRET, WRITE_SECRET, LogdProcess, start_logd, wait_for

pytestmark = pytest.mark.functional

SECONDS = float(os.environ.get("SOAK_SECONDS", "4"))
RING_BYTES = 2 * 1024 * 1024
RINGS = 4
FIXED_OVERHEAD = 120 * 1024 * 1024  # interpreter, aiohttp, protobuf, guard, buffers


class TailReader(threading.Thread):
    """Reads one NDJSON tail, counting events and in-band dropped notices."""

    def __init__(self, proc: LogdProcess, *, reads: bool) -> None:
        super().__init__(daemon=True)
        host, port = urllib.parse.urlsplit(proc.http_url).netloc.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.sock.sendall(
            f"GET /tail HTTP/1.1\r\nHost: x\r\nAuthorization: {READ_SECRET}\r\n\r\n".encode()
        )
        self.reads = reads
        self.events = 0
        self.dropped = 0
        self.done = threading.Event()

    def run(self) -> None:
        if not self.reads:
            return
        buffer = b""
        while not self.done.is_set():
            try:
                chunk = self.sock.recv(1 << 16)
            except (TimeoutError, OSError):
                return
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.startswith(b'{"dropped"'):
                    self.dropped += json.loads(line)["dropped"]
                elif line.startswith(b"{"):
                    self.events += 1

    def close(self) -> None:
        self.done.set()
        self.sock.close()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_soak(tmp_path: Path) -> None:
    proc = start_logd(
        tmp_path, "--ring-bytes", str(RING_BYTES), "--tail-queue", "256", "--max-tails", "20",
        "--udp-rcvbuf", "8MiB", "--replay-capacity", "2000000",
    )  # fmt: skip
    tails = [TailReader(proc, reads=i % 4 != 0) for i in range(20)]  # 5 never read
    try:
        for tail in tails:
            tail.start()
        wait_for(lambda: proc.info()["tail"]["subscribers"] == 20)
        writer = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("soak_writer.py")), "127.0.0.1",
             str(proc.udp_addr[1]), WRITE_SECRET, str(SECONDS)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        query_codes: list[int] = []
        while writer.poll() is None:
            query_codes.append(proc.get("/", {"txt": "event 7", "limit": "10"})[0])
            time.sleep(0.05)
        sent = int(writer.communicate(timeout=30)[0])
        udp = wait_for(
            lambda: (u := proc.info()["udp"])["received"] + (u["kernel_drops"] or 0) >= sent and u
        )
        info = proc.info()
        stored = info["store"]["writes"]
        readers = [t for t in tails if t.reads]
        wait_for(lambda: all(t.events + t.dropped >= stored for t in readers), timeout=60)
        rss = rss_bytes(proc.proc.pid)
        assert proc.get("/healthz", secret="")[0] == 200
    finally:
        for tail in tails:
            tail.close()
        exit_code = proc.stop()

    # Every datagram is accounted for. All were valid: the only refusal allowed is `stale`,
    # when an overloaded machine leaves frames queued in the socket buffer past max_age.
    assert udp["received"] + udp["kernel_drops"] == sent
    assert udp["received"] == udp["accepted"] + udp["rejected"]["stale"]
    assert sum(udp["rejected"].values()) == udp["rejected"]["stale"]
    assert stored == udp["accepted"]
    # Every reading tail got each event or was told it missed it.
    for tail in readers:
        assert tail.events + tail.dropped == stored
    assert set(query_codes) == {200}
    assert rss <= RINGS * RING_BYTES + FIXED_OVERHEAD
    assert exit_code == 0
    print(
        f"\nsoak {SECONDS:.0f}s: sent={sent} ({sent / SECONDS:,.0f}/s) stored={stored} "
        f"kernel_drops={udp['kernel_drops']} stale={udp['rejected']['stale']} "
        f"tail_dropped={info['tail']['dropped']} "
        f"queries={len(query_codes)} rss={rss / 2**20:.0f}MiB"
    )
