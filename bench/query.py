"""Query and memory measurements over one ring filled with ~100-byte events.

The sender fills the ring (batched frames, paced below saturation so nothing is
lost); the RSS growth of the server over the fill is the memory cost, and the
queries then run over HTTP with a keep-alive connection, timed end to end.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.procs import Cores, Load, LogdServer, send, wait_for
from bench.stats import percentiles

MARKER = "needle-1pct"  # bench/sender.c puts it in every `marker_every`-th event's txt
NOTHING = "no-such-text-qzx"
# Matches nothing either, but made of what every event's text is full of (sender.c's
# FILLER has "region=eu-west-1"): no rare byte for the search to skip ahead on.
NOTHING_COMMON = "region=us-east-2"
EVERY = 100  # 1 % of the events carry the marker, 1 % are errors

LIMIT = 100
TAIL_BACKLOG = 1000
# name -> (query parameters, the share of the ring's events that match)
QUERIES: dict[str, tuple[dict[str, str], float]] = {
    "newest_100": ({"limit": str(LIMIT)}, 1.0),
    "txt_1pct": ({"txt": MARKER, "limit": str(LIMIT)}, 1 / EVERY),
    "full_scan_txt": ({"txt": NOTHING, "limit": str(LIMIT)}, 0.0),
    "full_scan_txt_common": ({"txt": NOTHING_COMMON, "limit": str(LIMIT)}, 0.0),
    "full_scan_fn": ({"fn": NOTHING, "limit": str(LIMIT)}, 0.0),
    "full_scan_attr": ({"attr.request_id": NOTHING, "limit": str(LIMIT)}, 0.0),
    "lvl_error": ({"lvl": "error", "limit": str(LIMIT)}, 1 / EVERY),
}


def fill(
    server: LogdServer, sender: Path, cores: Cores, *, events: int, rate: float, batch: int
) -> dict[str, Any]:
    """Send `events` events at `rate` events/s; the server's RSS before and after."""
    server.info()  # warm the HTTP path so its first-use allocations are not counted
    rss0 = server.rss()
    frames = math.ceil(events / batch)
    load = Load(
        rate=max(1.0, rate / batch),
        seconds=3600,
        count=frames,
        batch=batch,
        marker_every=EVERY,
        error_every=EVERY,
    )
    t0 = time.monotonic()
    sent = send(sender, server.udp_port, server.write_secret, load, cores.load)
    stored = wait_for(
        lambda: _settled_writes(server, sent["events_sent"]), 30, "the fill to be stored"
    )
    seconds = time.monotonic() - t0
    rss1 = server.rss()
    msg_bytes = sent["msg_bytes"] * stored / max(1, sent["events_sent"])
    growth = rss1 - rss0
    return {
        "events_sent": sent["events_sent"],
        "events_stored": stored,
        "fill_seconds": seconds,
        "rss_before": rss0,
        "rss_after": rss1,
        "rss_growth_per_1m": growth * 1_000_000 / max(1, stored),
        "payload_bytes_per_event": msg_bytes / max(1, stored),
        "rss_over_payload": growth / msg_bytes if msg_bytes else 0.0,
    }


def _settled_writes(server: LogdServer, expected: int) -> int | None:
    """Store writes once they reach `expected`, or once they stop growing (some were lost)."""
    before = server.info()["store"]["writes"]
    if before >= expected:
        return int(before)
    time.sleep(0.5)
    after = server.info()["store"]["writes"]
    return int(after) if after == before and after > 0 else None


def run_queries(server: LogdServer, reps: dict[str, int], stored: int) -> dict[str, Any]:
    """Each query `reps[name]` times; `stored` events (sequence 0.. n-1) are in the ring."""
    headers = {"Authorization": server.read_secret}
    out: dict[str, Any] = {}
    with _connection(server) as conn:
        for name, (params, share) in QUERIES.items():
            want = min(LIMIT, math.ceil(stored * share))
            path = "/?" + urllib.parse.urlencode(params)
            first, times_ms = _timed(conn, path, headers, reps[name], f"query {name}")
            returned = len(first)
            p50, p99 = percentiles(times_ms, 50, 99)
            out[name] = {
                "params": params,
                "reps": len(times_ms),
                "returned": returned,
                "expected": want,
                "as_expected": returned == want,
                "p50_ms": p50,
                "p99_ms": p99,
            }
    return out


def run_hits(server: LogdServer, reps: int, stored: int) -> dict[str, Any]:
    """`GET /hits?by=lvl` over the whole ring, `reps` times: its total must be `stored`."""
    headers = {"Authorization": server.read_secret}
    with _connection(server) as conn:
        first, times_ms = _timed(conn, "/hits?by=lvl", headers, reps, "/hits")
    total = first["total"]
    p50, p99 = percentiles(times_ms, 50, 99)
    return {
        "reps": reps,
        "total": total,
        "returned": total,
        "expected": stored,
        "as_expected": total == stored,
        "p50_ms": p50,
        "p99_ms": p99,
    }


def run_tail_backlog(server: LogdServer, reps: int) -> dict[str, Any]:
    """`/tail?n=1000` on the full ring: the time to the first event's bytes, and to the
    last of the backlog (a new connection each time, as a tail opens one)."""
    first_ms: list[float] = []
    all_ms: list[float] = []
    short = 0  # answers with fewer lines than the backlog asked for
    path = f"/tail?n={TAIL_BACKLOG}"
    for i in range(reps + 1):
        with _connection(server) as conn:
            t0 = time.perf_counter()
            conn.request(
                "GET",
                path,
                headers={"Authorization": server.read_secret, "Accept": "application/x-ndjson"},
            )
            response = conn.getresponse()
            if response.status != 200:
                raise RuntimeError(f"/tail answered {response.status}")
            line = response.readline()
            first = (time.perf_counter() - t0) * 1000
            lines = 1
            while lines < TAIL_BACKLOG and line:
                line = response.readline()
                lines += 1
            done = (time.perf_counter() - t0) * 1000
            short += lines != TAIL_BACKLOG or not line.startswith(b"{")
        if i:
            first_ms.append(first)
            all_ms.append(done)
    return {
        "reps": reps,
        "returned": f"{short} short answers",
        "expected": "none",
        "as_expected": short == 0,
        "first_byte_p50_ms": percentiles(first_ms, 50)[0],
        "first_byte_p99_ms": percentiles(first_ms, 99)[0],
        "backlog_p50_ms": percentiles(all_ms, 50)[0],
    }


def _timed(
    conn: http.client.HTTPConnection, path: str, headers: dict[str, str], reps: int, what: str
) -> tuple[Any, list[float]]:
    """GET `path` `reps` + 1 times on one connection: the first answer (parsed JSON; that
    request warms up and is not timed) and the others' times in ms."""
    times_ms: list[float] = []
    first: Any = None
    for i in range(reps + 1):
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - t0) * 1000
        if response.status != 200:
            raise RuntimeError(f"{what} answered {response.status}: {body[:200]!r}")
        if i:
            times_ms.append(elapsed)
        else:
            first = json.loads(body)
    return first, times_ms


@contextlib.contextmanager
def _connection(server: LogdServer) -> Iterator[http.client.HTTPConnection]:
    url = urllib.parse.urlsplit(server.http_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=120)
    try:
        yield conn
    finally:
        conn.close()
