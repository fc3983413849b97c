"""Ingest measurements: saturation, offered-rate steps, batched frames, and the bare
receivers that the per-frame cost is compared with (a Python `recv_into` loop and a C
`recvmmsg` loop, bench/bare_recv.*).

At saturation the sender runs flat out and the server's socket buffer is kept
small (`sat_rcvbuf`), so that queued frames stay fresh (a frame queued longer
than max_age is refused as stale, and cheaper to refuse than to store). The
offered-rate steps run with a large buffer, as a deployment would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, cast

from bench.procs import (
    Cores,
    Load,
    LogdServer,
    Sender,
    core_busy_seconds,
    cpu_seconds,
    favour,
    pin,
    send,
    stop_pid,
    udp_rx_queue,
    wait_for,
)

BARE_RECV = Path(__file__).with_name("bare_recv.py")
BARE_RECV_C = Path(__file__).parent / "build" / "bare_recv"  # `make bench` builds it
IDLE_S = 0.3  # no progress for this long: the server has taken all it will take
DRAIN_TIMEOUT_S = 10.0
PLAIN = Load()  # the frames of a fill unless asked otherwise: one event of 100 bytes of txt


@dataclass(frozen=True)
class Snap:
    """One reading of the server's counters and CPU."""

    t: float  # wall clock (time.time()) when the server read its counters
    cpu: float
    core_busy: float
    received: int
    stored: int
    kernel_drops: int
    rejected: dict[str, int]

    @classmethod
    def take(cls, server: LogdServer, cores: Cores) -> Snap:
        info = server.info()
        udp = info["udp"]
        return cls(
            t=server.started_wall + info["uptime_s"],
            cpu=server.cpu(),
            core_busy=core_busy_seconds(cores.server),
            received=udp["received"],
            stored=info["store"]["writes"],
            kernel_drops=udp["kernel_drops"] or 0,
            rejected=dict(udp["rejected"]),
        )

    def delta(self, later: Snap) -> dict[str, Any]:
        seconds = later.t - self.t
        cpu = later.cpu - self.cpu
        return {
            "seconds": seconds,
            "cpu_s": cpu,
            "server_core_util": cpu / seconds,
            # Time other processes took on the server's core: noise from a shared machine.
            "others_on_server_core": max(0.0, (later.core_busy - self.core_busy - cpu) / seconds),
            "received": later.received - self.received,
            "stored": later.stored - self.stored,
            "kernel_drops": later.kernel_drops - self.kernel_drops,
            "rejected": {
                k: v - self.rejected.get(k, 0)
                for k, v in later.rejected.items()
                if v != self.rejected.get(k, 0)
            },
        }


def saturate(
    server: LogdServer, sender: Path, cores: Cores, load: Load, warmup_s: float
) -> dict[str, Any]:
    """Flat-out load; counters and CPU read over `load.seconds` after `warmup_s`.

    The sender runs until the second reading is in (a busy server answers late)."""
    flat_out = replace(load, rate=0, seconds=warmup_s + load.seconds + 120)
    running = Sender(sender, server.udp_port, server.write_secret, flat_out, cores.load)
    try:
        time.sleep(warmup_s)
        first = Snap.take(server, cores)
        time.sleep(load.seconds)
        d = first.delta(Snap.take(server, cores))
        sent = running.finish()
    finally:
        running.stop()
    d["offered_frames_per_s"] = sent["frames_sent"] / sent["elapsed_s"]
    d["frames_per_s"] = d["received"] / d["seconds"]
    d["events_per_s"] = d["stored"] / d["seconds"]
    d["cpu_us_per_frame"] = 1e6 * d["cpu_s"] / max(1, d["received"])
    d["cpu_us_per_event"] = 1e6 * d["cpu_s"] / max(1, d["stored"])
    return d


def wait_drained(server: LogdServer, cores: Cores, port: int) -> tuple[Snap, float]:
    """Wait until the socket queue is empty and the server stopped making progress;
    returns the last reading and when progress was last seen."""
    last = Snap.take(server, cores)
    progress_at = time.time()
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = Snap.take(server, cores)
        if now.received != last.received:
            progress_at = now.t
        last = now
        if udp_rx_queue(port) == 0 and now.t - progress_at >= IDLE_S:
            break
    return last, progress_at


def rate_step(
    server: LogdServer, sender: Path, cores: Cores, load: Load, max_loss: float, max_lag_s: float
) -> dict[str, Any]:
    """One offered rate: how much of it was stored, and how long the server lagged behind."""
    before, _ = wait_drained(server, cores, server.udp_port)
    sent = send(sender, server.udp_port, server.write_secret, load, cores.load)
    sent_end = time.time()
    after, progress_at = wait_drained(server, cores, server.udp_port)
    d = before.delta(after)
    frames = sent["frames_sent"]
    d["target_frames_per_s"] = load.rate
    d["offered_frames_per_s"] = frames / sent["elapsed_s"]
    d["sent"] = frames
    d["loss"] = 1 - d["stored"] / frames if frames else 0.0
    d["unaccounted"] = frames - d["received"] - d["kernel_drops"]
    d["lag_s"] = max(0.0, progress_at - sent_end)
    # Short steps can hide an overload in a big buffer; a server that is still busy long
    # after the sender stopped was not keeping up.
    d["kept_up"] = d["loss"] <= max_loss and d["lag_s"] <= max_lag_s
    return d


def rate_steps(
    server: LogdServer,
    sender: Path,
    cores: Cores,
    rates: list[float],
    seconds: float,
    max_loss: float,
    max_lag_s: float,
    before_step: Callable[[], object],
) -> dict[str, Any]:
    steps = []
    for rate in rates:
        before_step()
        load = Load(rate=rate, seconds=seconds)
        steps.append(rate_step(server, sender, cores, load, max_loss, max_lag_s))
    kept = [s["offered_frames_per_s"] for s in steps if s["kept_up"]]
    return {"steps": steps, "no_loss_frames_per_s": max(kept) if kept else 0.0}


class BareLoop:
    """bench/bare_recv.py (or, `c`, bench/bare_recv.c) pinned to the server's core;
    `stop()` returns its packet count."""

    def __init__(self, cores: Cores, rcvbuf: int, *, c: bool = False) -> None:
        command = [str(BARE_RECV_C)] if c else [sys.executable, str(BARE_RECV)]
        self.proc = subprocess.Popen(
            [*command, str(rcvbuf)],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own autogroup, as the server's: see procs.favour()
        )
        self.out = cast(IO[str], self.proc.stdout)  # a pipe: stdout=PIPE
        try:
            pin(self.proc.pid, cores.server)
            favour(self.proc.pid)
            self.port = int(self.out.readline().split()[1])
        except BaseException:
            stop_pid(self.proc, signal.SIGKILL)
            raise
        self.pid = self.proc.pid

    def drained(self) -> None:
        wait_for(lambda: udp_rx_queue(self.port) == 0, DRAIN_TIMEOUT_S, "the bare loop to drain")

    def stop(self) -> int:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stop:
                wait_for(
                    lambda: (
                        stop.sendto(b"stop", ("127.0.0.1", self.port))
                        and self.proc.poll() is not None
                    ),
                    DRAIN_TIMEOUT_S,
                    "the bare loop to stop",
                )
            return int(json.loads(self.out.readline())["packets"])
        finally:
            stop_pid(self.proc, signal.SIGKILL)


def bare_reference(
    sender: Path, cores: Cores, load: Load, rcvbuf: int, *, c: bool = False
) -> dict[str, Any]:
    """The bare loop (`c`: the C recvmmsg one) fed live by the same sender flat out, as
    `saturate` feeds logd. The sender cannot keep it busy, so it also waits and wakes up:
    see `busy`."""
    loop = BareLoop(cores, rcvbuf, c=c)
    try:
        cpu0, busy0, t0 = cpu_seconds(loop.pid), core_busy_seconds(cores.server), time.monotonic()
        sent = send(sender, loop.port, "bare-reference-needs-no-real-secret", load, cores.load)
        loop.drained()
        cpu1, busy1, t1 = cpu_seconds(loop.pid), core_busy_seconds(cores.server), time.monotonic()
    finally:
        packets = loop.stop()
    cpu = cpu1 - cpu0
    return {
        "seconds": t1 - t0,
        "sent": sent["frames_sent"],
        "packets": packets,
        "cpu_s": cpu,
        "cpu_us_per_packet": 1e6 * cpu / max(1, packets),
        # Below 1 the loop waited for packets: the sender, not the loop, was the limit.
        "busy": cpu / (t1 - t0),
        "others_on_server_core": max(0.0, (busy1 - busy0 - cpu) / (t1 - t0)),
    }


def fill_while_stopped(
    pid: int,
    sender: Path,
    port: int,
    secret: str,
    packets: int,
    cores: Cores,
    load: Load = PLAIN,
) -> dict[str, Any]:
    """Stop `pid` (SIGSTOP) while the sender queues `packets` frames of `load` in its socket
    buffer, then let it go: it is kept busy until it has drained them. The sender's result."""
    os.kill(pid, signal.SIGSTOP)
    try:
        return send(sender, port, secret, replace(load, seconds=600, count=packets), cores.load)
    finally:
        os.kill(pid, signal.SIGCONT)


def logd_drain(
    server: LogdServer,
    sender: Path,
    cores: Cores,
    *,
    packets: int,
    rounds: int,
    load: Load = PLAIN,
) -> dict[str, Any]:
    """logd kept busy, measured as the bare loop is (bare_drain): stopped while the sender
    fills its socket buffer, then measured while it empties it. Once the sender can no
    longer keep logd saturated, this is its cost per frame at saturation; the flat-out
    figure then includes waking up for short bursts. The server must run with a max_age
    longer than a fill takes, so that no queued frame is refused as stale. `load`: what the
    frames hold (its rate, duration and count are the fill's)."""
    total: dict[str, float] = {"cpu_s": 0.0, "received": 0, "stored": 0}
    frame_bytes = 0
    for _ in range(rounds):
        before, _ = wait_drained(server, cores, server.udp_port)
        sent = fill_while_stopped(
            server.pid, sender, server.udp_port, server.write_secret, packets, cores, load
        )
        frame_bytes += sent["frame_bytes"]
        after, _ = wait_drained(server, cores, server.udp_port)
        d = before.delta(after)
        for key in total:
            total[key] += d[key]
    return {
        "sent": packets * rounds,
        **total,
        "cpu_us_per_frame": 1e6 * total["cpu_s"] / max(1, total["received"]),
        "bytes_per_frame": frame_bytes / (packets * rounds),
    }


def bare_drain(
    sender: Path, cores: Cores, *, packets: int, rounds: int, rcvbuf: int
) -> dict[str, Any]:
    """The bare loop kept busy, as a saturated server is: stopped (SIGSTOP) while the
    sender fills its socket buffer, then timed while it empties it, `rounds` times."""
    loop = BareLoop(cores, rcvbuf)
    cpu = 0.0
    try:
        for _ in range(rounds):
            before = cpu_seconds(loop.pid)  # drained, so idle until the fill ends
            fill_while_stopped(
                loop.pid, sender, loop.port, "bare-reference-needs-no-real-secret", packets, cores
            )
            loop.drained()
            cpu += cpu_seconds(loop.pid) - before
    finally:
        received = loop.stop()
    return {
        "sent": packets * rounds,
        "packets": received,
        "cpu_s": cpu,
        "cpu_us_per_packet": 1e6 * cpu / max(1, received),
    }
