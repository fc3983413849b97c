"""The memory budget under load (issue 13): what the read side costs ingest and memory.

Three measurements, each against a real `logd serve` fed by the C sender:

- `stuck_tails`: big events (8 KB) at a steady rate while `/tail?txt=...` subscribers
  (a filter that the events match) are connected but never read: raw sockets with a
  tiny receive buffer that never `recv`. Ingest loss (events sent vs /info
  `udp.events`), the server's RSS (sampled from /proc) and the tails' dropped count.
- `big_query`: a ring holding many big events (60 KB), then `limit=10000` queries over
  it and full scans (a `txt` that matches nothing) back to back, while the sender sends
  small events at a steady rate to another ring: ingest loss meanwhile, each answer's
  time, bytes, status and whether it ended with the truncation marker.
- `worst_mix`: an explicit `--memory-limit` with a configuration that fits it (ring size
  derived by the server), every ring filled past its capacity (one service name more
  than `--max-rings`, so the overflow ring fills too), the stuck tails, and concurrent
  big queries while big events keep coming: the peak RSS against the limit.

RSS is VmRSS sampled every `RSS_EVERY_S` by a thread of the driver, and the peak
resident size the kernel kept (VmHWM, since start-up) at the end; the larger is the peak.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.ingest import wait_drained
from bench.procs import Cores, Load, LogdServer, Sender, send, wait_for
from bench.stats import median

RSS_EVERY_S = 0.02
MATCH_ALL = "orders"  # in the filler of every event bench/sender.c writes
NOTHING = "no-such-text-qzx"
TAIL_RCVBUF = 1024  # the kernel's minimum (it doubles it, to ~2.3 KB)
CONNECT_TIMEOUT_S = 10.0
QUERY_TIMEOUT_S = 120.0
SETTLE_TIMEOUT_S = 60.0


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


class RssSampler:
    """VmRSS of `pid` every RSS_EVERY_S in a thread, for at most `max_s` seconds."""

    def __init__(self, pid: int, max_s: float) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []  # (monotonic, bytes)
        self._stop = threading.Event()
        self._max_s = max_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        until = time.monotonic() + self._max_s
        while not self._stop.is_set() and time.monotonic() < until:
            try:
                self.samples.append((time.monotonic(), _status_kib(self.pid, "VmRSS")))
            except OSError:
                return  # the server is gone
            self._stop.wait(RSS_EVERY_S)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def result(self) -> dict[str, Any]:
        values = [v for _, v in self.samples]
        hwm = _status_kib(self.pid, "VmHWM")
        return {
            "samples": len(values),
            "rss_first": values[0] if values else 0,
            "rss_peak_sampled": max(values, default=0),
            "vm_hwm": hwm,
            "rss_peak": max([hwm, *values]),
        }


@contextmanager
def stuck_tails(server: LogdServer, n: int, txt: str) -> Iterator[list[socket.socket]]:
    """`n` /tail?txt=`txt` subscriptions that never read: each socket's receive buffer is
    tiny and nothing calls recv on it, so the server's writes to it soon stall."""
    url = urllib.parse.urlsplit(server.http_url)
    addr = (url.hostname or "127.0.0.1", url.port or 80)
    query = urllib.parse.urlencode({"txt": txt})
    request = (
        f"GET /tail?{query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: {server.read_secret}\r\nAccept: application/x-ndjson\r\n\r\n"
    ).encode()
    before = server.info()["tail"]["subscribers"]
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, TAIL_RCVBUF)  # before connect
            sock.settimeout(CONNECT_TIMEOUT_S)
            sock.connect(addr)
            sock.sendall(request)
        wait_for(
            lambda: server.info()["tail"]["subscribers"] >= before + n,
            CONNECT_TIMEOUT_S,
            f"{n} stuck tails to subscribe",
        )
        yield socks
    finally:
        for sock in socks:
            sock.close()


def counters(server: LogdServer, cores: Cores) -> dict[str, Any]:
    """The server's counters once its socket is drained and it stopped making progress."""
    wait_drained(server, cores, server.udp_port)
    info = server.info()
    udp = info["udp"]
    return {
        "events": udp["events"],
        "received": udp["received"],
        "writes": info["store"]["writes"],
        "kernel_drops": udp["kernel_drops"] or 0,
        "rejected": dict(udp["rejected"]),
        "tail_dropped": info["tail"]["dropped"],
        "tail_subscribers": info["tail"]["subscribers"],
        "queries": info["queries"],
        "memory": info["memory"],
        "cpu_s": server.cpu(),
        "t": time.monotonic(),
    }


def ingest_delta(
    before: dict[str, Any], after: dict[str, Any], sent: dict[str, Any]
) -> dict[str, Any]:
    """Loss over a sending window: events sent vs events the server took (udp.events)."""
    events = after["events"] - before["events"]
    sent_events = sent["events_sent"]
    return {
        "events_sent": sent_events,
        "events_stored": events,
        "store_writes": after["writes"] - before["writes"],
        "loss": 1 - events / sent_events if sent_events else 0.0,
        "kernel_drops": after["kernel_drops"] - before["kernel_drops"],
        "rejected": {
            k: v - before["rejected"].get(k, 0)
            for k, v in after["rejected"].items()
            if v != before["rejected"].get(k, 0)
        },
        "send_errors": sent["send_errors"],
        "offered_events_per_s": sent_events / sent["elapsed_s"] if sent["elapsed_s"] else 0.0,
        "server_cpu_util": (after["cpu_s"] - before["cpu_s"]) / (after["t"] - before["t"]),
    }


def measure_stuck_tails(
    server: LogdServer,
    sender: Path,
    cores: Cores,
    *,
    tails: int,
    txt: str,
    rate: float,
    seconds: float,
    txt_len: int,
) -> dict[str, Any]:
    server.info()  # warm the HTTP path
    rss0 = server.rss()
    limit = server.info()["memory"]["limit_bytes"]
    with RssSampler(server.pid, seconds + 120) as rss, stuck_tails(server, tails, txt):
        before = counters(server, cores)
        load = Load(rate=rate, seconds=seconds, txt_len=txt_len)
        sent = send(sender, server.udp_port, server.write_secret, load, cores.load)
        after = counters(server, cores)
    out = ingest_delta(before, after, sent)
    peak = rss.result()
    out |= {
        "tails": tails,
        "txt": txt,
        "event_bytes": sent["msg_bytes"] / max(1, sent["events_sent"]),
        "tail_dropped": after["tail_dropped"] - before["tail_dropped"],
        # Each stuck tail could have been handed every event sent.
        "tail_dropped_share": (after["tail_dropped"] - before["tail_dropped"])
        / max(1, tails * sent["events_sent"]),
        "limit_bytes": limit,
        "rss_before": rss0,
        **peak,
        "rss_growth": peak["rss_peak"] - rss0,
        "rss_peak_share": peak["rss_peak"] / limit,
        "memory_after": after["memory"],
    }
    return out


@dataclass
class Answer:
    name: str
    status: int
    seconds: float
    nbytes: int
    events: int
    truncated: bool


def _tail_element(body: bytes) -> dict[str, Any] | None:
    """The last element of a JSON array answer, read without parsing the whole answer."""
    at = body.rfind(b'{"truncated"')
    if at < 0:
        return None
    try:
        value = json.loads(body[at:].rstrip().removesuffix(b"]"))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def ask(conn: http.client.HTTPConnection, name: str, params: dict[str, str], secret: str) -> Answer:
    path = "/?" + urllib.parse.urlencode(params)
    t0 = time.perf_counter()
    conn.request("GET", path, headers={"Authorization": secret})
    response = conn.getresponse()
    body = response.read()
    seconds = time.perf_counter() - t0
    marker = _tail_element(body) if response.status == 200 else None
    truncated = bool(marker and marker.get("truncated") is True)
    events = int(marker["events"]) if marker and truncated else body.count(b'"t":')
    return Answer(name, response.status, seconds, len(body), events, truncated)


def _connection(server: LogdServer) -> http.client.HTTPConnection:
    url = urllib.parse.urlsplit(server.http_url)
    return http.client.HTTPConnection(
        url.hostname or "127.0.0.1", url.port, timeout=QUERY_TIMEOUT_S
    )


def query_loop(
    server: LogdServer,
    queries: dict[str, dict[str, str]],
    until: float,
    answers: list[Answer],
    max_each: int,
) -> None:
    """The `queries` in turn, back to back, until `until` (monotonic), at most `max_each`
    rounds; each answer goes into `answers`. A failure is an answer with status 0."""
    conn = _connection(server)
    try:
        for _ in range(max_each):
            if time.monotonic() >= until:
                break
            for name, params in queries.items():
                try:
                    answers.append(ask(conn, name, params, server.read_secret))
                except (OSError, http.client.HTTPException):
                    answers.append(Answer(name, 0, 0.0, 0, 0, False))
                    conn.close()
                    conn = _connection(server)
    finally:
        conn.close()


def summarise_answers(answers: list[Answer]) -> dict[str, Any]:
    by_name: dict[str, list[Answer]] = {}
    for a in answers:
        by_name.setdefault(a.name, []).append(a)
    out: dict[str, Any] = {}
    for name, runs in by_name.items():
        ok = [a for a in runs if a.status == 200]
        out[name] = {
            "count": len(runs),
            "statuses": sorted({a.status for a in runs}),
            "status_5xx": sum(a.status >= 500 for a in runs),
            "failed": sum(a.status == 0 for a in runs),
            "refused_429": sum(a.status == 429 for a in runs),
            "median_s": median([a.seconds for a in ok]),
            "max_s": max((a.seconds for a in ok), default=float("nan")),
            "median_bytes": median([float(a.nbytes) for a in ok]),
            "median_events": median([float(a.events) for a in ok]),
            "truncated_share": sum(a.truncated for a in ok) / len(ok) if ok else 0.0,
        }
    return out


def big_queries(svc: str) -> dict[str, dict[str, str]]:
    return {
        "limit_10000": {"svc": svc, "limit": "10000"},
        "full_scan": {"txt": NOTHING, "limit": "10000"},
    }


def measure_big_query(
    server: LogdServer,
    sender: Path,
    cores: Cores,
    *,
    events: int,
    txt_len: int,
    fill_rate: float,
    rate: float,
    seconds: float,
    lead_s: float,
    max_rounds: int,
) -> dict[str, Any]:
    """Fill one ring with `events` big events, then query it while small events come."""
    bulk = "bulk"
    server.info()
    fill_load = Load(rate=fill_rate, seconds=3600, count=events, txt_len=txt_len, svc=bulk)
    start = counters(server, cores)
    filled = send(sender, server.udp_port, server.write_secret, fill_load, cores.load)
    before = counters(server, cores)
    fill = ingest_delta(start, before, filled)
    fill["event_bytes"] = filled["msg_bytes"] / max(1, filled["events_sent"])
    answers: list[Answer] = []
    with RssSampler(server.pid, seconds + 120) as rss:
        rss0 = server.rss()
        steady = Sender(
            sender,
            server.udp_port,
            server.write_secret,
            Load(rate=rate, seconds=seconds, svc="steady"),
            cores.load,
        )
        try:
            time.sleep(lead_s)
            # Queries until shortly before the sender stops: every answer is within its window.
            until = time.monotonic() + max(0.0, seconds - 2 * lead_s)
            query_loop(server, big_queries(bulk), until, answers, max_rounds)
            sent = steady.result()
        finally:
            steady.stop()
        after = counters(server, cores)
    out = ingest_delta(before, after, sent)
    peak = rss.result()
    return out | {
        "fill": fill,
        "answers": summarise_answers(answers),
        "status_5xx": sum(a.status >= 500 for a in answers),
        "failed": sum(a.status == 0 for a in answers),
        "limit_bytes": after["memory"]["limit_bytes"],
        "rss_before": rss0,
        **peak,
        "rss_growth": peak["rss_peak"] - rss0,
        "rss_peak_share": peak["rss_peak"] / after["memory"]["limit_bytes"],
        "queries_info": after["queries"],
    }


def ring_fill(info: dict[str, Any]) -> dict[str, Any]:
    store = info["store"]
    rings = store["rings"]
    other = store["rings_other"]
    nbytes = sum(r["bytes"] for r in rings) + other["bytes"]
    capacity = sum(r["capacity_bytes"] for r in rings) + other["capacity_bytes"]
    least = min((r["bytes"] / r["capacity_bytes"] for r in rings if r["capacity_bytes"]), default=0)
    return {
        "ring_count": store["ring_count"],
        "ring_bytes": nbytes,
        "ring_capacity": capacity,
        "fill": nbytes / capacity if capacity else 0.0,
        "least_full_shown": least,
        "evicted": sum(r["evicted"] for r in rings) + other["evicted"],
    }


def measure_worst_mix(
    server: LogdServer,
    sender: Path,
    cores: Cores,
    *,
    tails: int,
    max_rings: int,
    extra_keys: int,
    fill_factor: float,
    txt_len: int,
    rate: float,
    seconds: float,
    queries: int,
    max_rounds: int,
) -> dict[str, Any]:
    """Every ring filled past its capacity, then stuck tails, `queries` concurrent big
    queries and big events coming, for `seconds`."""
    info = server.info()
    memory = info["memory"]
    limit, ring_bytes = memory["limit_bytes"], memory["ring_bytes_default"]
    keys = max_rings + extra_keys  # the extra ones share the overflow ring
    base = Load(rate=rate, seconds=3600, txt_len=txt_len, keys=keys)
    probe_bytes = txt_len + 80  # about one event's serialised size
    # Enough that every key's own ring gets fill_factor times its capacity.
    fill_events = int(keys * ring_bytes * fill_factor / probe_bytes) + keys
    answers: list[Answer] = []
    with RssSampler(server.pid, 3600) as rss:
        rss0 = server.rss()
        # The rings first (no tail yet: filling them is not what is measured here).
        start = counters(server, cores)
        fill_load = replace(base, count=fill_events)
        filled = send(sender, server.udp_port, server.write_secret, fill_load, cores.load)
        fill = ingest_delta(start, counters(server, cores), filled) | ring_fill(server.info())
        with stuck_tails(server, tails, MATCH_ALL):
            before = counters(server, cores)
            mix_load = replace(base, seconds=seconds)
            running = Sender(sender, server.udp_port, server.write_secret, mix_load, cores.load)
            try:
                until = time.monotonic() + seconds
                workers = [
                    threading.Thread(
                        target=query_loop,
                        args=(server, big_queries("api-0"), until, answers, max_rounds),
                        daemon=True,
                    )
                    for _ in range(queries)
                ]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join(timeout=seconds + QUERY_TIMEOUT_S)
                sent = running.result()
            finally:
                running.stop()
            after = counters(server, cores)
    peak = rss.result()
    return {
        "limit_bytes": limit,
        "ring_bytes_default": ring_bytes,
        "reserved": memory["reserved"],
        "keys": keys,
        "tails": tails,
        "fill": fill,
        "mix": ingest_delta(before, after, sent),
        "answers": summarise_answers(answers),
        "status_5xx": sum(a.status >= 500 for a in answers),
        "failed": sum(a.status == 0 for a in answers),
        "tail_dropped": after["tail_dropped"] - start["tail_dropped"],
        "rss_before": rss0,
        **peak,
        "rss_peak_share": peak["rss_peak"] / limit,
        "memory_after": after["memory"],
        "rings_after": ring_fill(server.info()),
    }
