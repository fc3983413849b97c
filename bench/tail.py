"""Tail latency: write -> received by `/tail` subscribers over HTTP.

Each event's txt carries `sent=<ns>`, the time the sender signed its frame. A
client process (this module's `main`) holds the subscriptions open with plain
HTTP/1.1 and counts every line it reads; for the oldest line of each read it records
`arrival - sent`. It runs on the
load core beside the sender, so its own delays are part of what is measured.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any, cast

import uvloop

from bench.ingest import Snap
from bench.procs import Cores, Load, LogdServer, pin, send, stop_pid, wait_for
from bench.stats import percentiles

_SENT = re.compile(rb"sent=(\d+)")
CONNECT_TIMEOUT_S = 10.0


class _TailStream(asyncio.Protocol):
    """One /tail stream, read in `data_received`: each chunk is stamped on arrival and
    its lines' `sent=` times become samples, with no task or future per read."""

    def __init__(self, request: bytes, samples: list[int]) -> None:
        self._request = request
        self._samples = samples
        self._buf = b""  # the head until it is complete, then a partial line
        self.head: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lines = 0
        self.last_line = 0.0  # monotonic

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(self._request)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        data = self._buf + data
        if not self.head.done():
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self._buf = data
                return
            self.head.set_result(data[: end + 4])
            data = data[end + 4 :]
        cut = data.rfind(b"\n") + 1
        self._buf = data[cut:]
        lines = data.count(b"sent=", 0, cut)  # once per event line (not in keep-alives)
        if lines:
            # The oldest line of each read is its latest: one sample per read keeps the
            # client cheap at 100 tails x 10k events/s, and can only overstate latency.
            sent = _SENT.search(data, 0, cut)
            if sent:
                self._samples.append(now - int(sent.group(1)))
            self.lines += lines
            self.last_line = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_exception(exc or ConnectionError("/tail closed before its head"))
        self.closed.set_result(None)


async def _subscribe(url: str, secret: str, samples: list[int], until: float, idle_s: float) -> int:
    """Read one /tail stream until `until` (monotonic), or until it has been quiet for
    `idle_s` after its first line; returns the lines seen."""
    parts = urllib.parse.urlsplit(url)
    request = (
        f"GET /tail HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: {secret}\r\n"
        "Accept: application/x-ndjson\r\n\r\n"
    ).encode()
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    transport, stream = await loop.create_connection(
        lambda: _TailStream(request, samples), host, port
    )
    try:
        head = await asyncio.wait_for(stream.head, CONNECT_TIMEOUT_S)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError("/tail answered " + repr(head.splitlines()[0]))
        while (left := until - time.monotonic()) > 0 and not stream.closed.done():
            if stream.lines and time.monotonic() - stream.last_line >= idle_s:
                break
            await asyncio.sleep(min(left, idle_s / 10))
    finally:
        transport.close()
    return stream.lines


async def _client(
    url: str, secret: str, subscribers: int, seconds: float, idle_s: float
) -> dict[str, Any]:
    samples: list[int] = []
    cpu0 = time.process_time()
    until = time.monotonic() + seconds
    counts = await asyncio.gather(
        *(_subscribe(url, secret, samples, until, idle_s) for _ in range(subscribers))
    )
    p50, p99 = percentiles([s / 1e6 for s in samples], 50, 99)
    return {
        "lines": list(counts),
        "reads": len(samples),  # reads that carried event lines: about the server's writes
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": max(samples) / 1e6 if samples else float("nan"),
        "client_cpu_s": time.process_time() - cpu0,
    }


def main() -> None:
    """`python -m bench.tail URL SUBSCRIBERS SECONDS IDLE_S` (secret in LOGD_READ_SECRET)."""
    url, subscribers = sys.argv[1], int(sys.argv[2])
    seconds, idle_s = float(sys.argv[3]), float(sys.argv[4])
    secret = os.environ["LOGD_READ_SECRET"]
    # uvloop, as the server: the client shares its core with the sender, and the plain
    # selector loop's cost per read (~35 us) would be most of what it measures at 100 tails.
    result = uvloop.run(_client(url, secret, subscribers, seconds, idle_s))
    print(json.dumps(result), flush=True)


def measure(
    server: LogdServer, sender: Path, cores: Cores, *, rate: float, seconds: float, subscribers: int
) -> dict[str, Any]:
    """`subscribers` tails on a server that receives `rate` events/s for `seconds`."""
    grace = 1.5  # after the last event, for the tails to deliver it
    env = dict(os.environ, LOGD_READ_SECRET=server.read_secret)
    args = [sys.executable, "-m", "bench.tail", server.http_url, str(subscribers)]
    connect = CONNECT_TIMEOUT_S
    client = subprocess.Popen(
        [*args, str(connect + seconds + grace), str(grace)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).parent.parent,
    )
    try:
        pin(client.pid, cores.load)
        wait_for(
            lambda: server.info()["tail"]["subscribers"] >= subscribers,
            connect,
            "the tail subscribers to connect",
        )
        load = Load(rate=rate, seconds=seconds)
        first = Snap.take(server, cores)
        sent = send(sender, server.udp_port, server.write_secret, load, cores.load)
        # The server's side over the sending time: is it the server that falls behind?
        on_server = first.delta(Snap.take(server, cores))
        out, _ = client.communicate(timeout=connect + seconds + grace + 30)
    finally:
        stop_pid(client)
    if client.returncode != 0:
        raise RuntimeError(f"the tail client failed with exit code {client.returncode}")
    result: dict[str, Any] = json.loads(out)
    expected = sent["frames_sent"] * subscribers
    result["delivered"] = sum(result["lines"]) / expected if expected else 0.0
    result["dropped"] = server.info()["tail"]["dropped"]
    result["events_per_s"] = sent["frames_sent"] / sent["elapsed_s"]
    result["server"] = on_server
    result["ingest_loss"] = 1 - on_server["stored"] / max(1, sent["frames_sent"])
    return result


if __name__ == "__main__":
    main()
