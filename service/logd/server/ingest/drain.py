"""The UDP endpoint: drain the socket, store events, answer PINGs.

On each readiness event the engine (engine.py: C or Python) reads up to
`drain_max` datagrams through the checks; what it does not store itself comes
back here as `Accepted` and is acted on. Nothing here awaits: ingest never waits
for readers, disks or tails.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from logd._pb.logd_pb2 import WRITE
from logd.events import MAX_LEVEL
from logd.server.alerts.engine import AlertEngine
from logd.server.ingest.accept import Accepted, Reject
from logd.server.ingest.engine import Engine
from logd.server.ingest.stats import IngestStats
from logd.server.ingest.udp import kernel_drops
from logd.server.logsetup import QuietLogger
from logd.server.store.base import Store
from logd.server.store.valkey.replay import SharedReplayGuard
from logd.wire import PONG_PAYLOAD

log = logging.getLogger(__name__)

# Event times are kept as signed 64-bit nanoseconds (1677-09-21 .. 2262-04-11), within
# the Timestamp range; an event time outside them gets the receive time instead.
MIN_T_S, MAX_T_S = -9_223_372_036, 9_223_372_035
_NS = 1_000_000_000
DRAIN_EVENTS = 2048  # events stored per readiness event before the loop gets a turn
# Fed live, a socket holds a frame or two at each readiness event, and each wake-up pays
# epoll, the loop and the drain's fixed cost for them. So a drain that emptied the socket
# after a few frames takes it off the selector and reads again PACE_S later, while every
# paced drain finds some but fewer than PACE_FRAMES: one wake-up per millisecond of
# traffic instead of one per frame. A frame waits at most PACE_S (plus the loop's timer
# granularity, 1 ms) before it is read: within the tail's latency target (p99 <= 10 ms).
# Bound: between two reads the socket holds what comes in PACE_S; a paced drain that
# finds PACE_FRAMES or more (about 250-500k frames/s; ~0.5 MB of a default 8 MiB buffer)
# goes back to reading at each readiness event, and one that finds nothing too (the
# traffic stopped). The sender's best here is ~220k frames/s: paced.
PACE_S = 0.001
PACE_FRAMES = 512


class UdpIngest:
    def __init__(
        self,
        *,
        sock: socket.socket,
        engine: Engine,
        store: Store,
        expire: Callable[[int], None],
        clock: Callable[[], int] = time.time_ns,
        drain_max: int = 1024,
        on_unknown_key: Callable[[], None] | None = None,
        shared_guard: SharedReplayGuard | None = None,
        alerts: AlertEngine | None = None,
    ) -> None:
        self._sock = sock
        self._engine = engine
        self._store = store
        self._expire = expire
        self._clock = clock
        self._drain_max = drain_max
        self._on_unknown_key = on_unknown_key  # e.g. a rate-limited key reload
        # With several nodes, accepted frames wait here for the batch's check across nodes.
        self._shared_guard = shared_guard
        self._held: list[tuple[Accepted, Any, int]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paced: asyncio.TimerHandle | None = None  # off the selector until it runs
        self._quiet = QuietLogger(log)
        self.stats = IngestStats()
        self.alerts = alerts  # evaluates its rules on every event stored
        self.writers = engine.writers  # frames left to Python are noted in _act

    @property
    def accept_path(self) -> str:
        """Which engine runs, as /info shows: c (the extension) or python (accept.py)."""
        return self._engine.name

    @property
    def running(self) -> bool:
        return self._loop is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self.drain)

    def stop(self) -> None:
        if self._paced is not None:
            self._paced.cancel()
            self._paced = None
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._loop = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return host, port

    def kernel_drops(self) -> int | None:
        return kernel_drops(self._sock)

    def drain(self) -> None:
        """One readiness event: what the socket holds (see `_drain_once`); a few frames
        start pacing (PACE_S)."""
        few = self._drain_once()
        loop = self._loop
        if few and loop is not None and self._paced is None:
            loop.remove_reader(self._sock.fileno())
            self._paced = loop.call_later(PACE_S, self._paced_drain)

    def _paced_drain(self) -> None:
        """A read PACE_S after the last: paced again while it finds a few frames, else back
        on the selector."""
        self._paced = None
        few = self._drain_once()
        loop = self._loop
        if loop is None:
            return
        if few:
            self._paced = loop.call_later(PACE_S, self._paced_drain)
        else:
            loop.add_reader(self._sock.fileno(), self.drain)

    def _drain_once(self) -> bool:
        """What the socket holds, bounded in frames and in events (1,024 frames of 16-event
        batches would hold the loop for 100+ ms, and queries, tails and /info wait that
        long). True when it read a few frames (fewer than PACE_FRAMES) within its bounds: the
        socket is empty, and what comes next can wait for a paced read."""
        stats = self.stats
        received, events = stats.received, stats.events
        now = self._clock()
        self._expire(now)
        stats.keys.roll(now)
        more = self._engine.drain(self._sock, now, self._drain_max, DRAIN_EVENTS, self)
        if more and self._loop:
            self._loop.call_soon(self.drain)  # the rest of what was read, after a turn
        guard = self._shared_guard
        if guard is not None and self._held:
            held, self._held = self._held, []
            held_events = sum(len(v.cmd.batch) + v.cmd.HasField("msg") for v, _, _ in held)
            if guard.refuses(held_events):
                self.reject(Reject.OVERLOAD, len(held))
            else:
                guard.submit(
                    [(v.mac, v.signed_at_ns) for v, _, _ in held],
                    lambda fresh: self._checked_across_nodes(held, fresh),
                    held_events,
                )
        self._store.end_batch()  # a remote store sends the batch: one round trip per drain
        read = stats.received - received
        bounded = more or read >= self._drain_max or stats.events - events >= DRAIN_EVENTS
        return 0 < read < PACE_FRAMES and not bounded

    # --- the engine's sink -------------------------------------------------------------

    def accepted(self, verdict: Accepted, addr: Any, now_ns: int) -> None:
        if self._shared_guard is not None:
            self._held.append((verdict, addr, now_ns))
        else:
            self._act(verdict, addr, now_ns)

    def reject(self, reason: Reject, count: int = 1) -> None:
        self.stats.rejected[reason] += count
        self._quiet.once(reason.value, "rejected datagram reason=%s", reason.value)
        if reason is Reject.UNKNOWN_KEY and self._on_unknown_key is not None:
            self._on_unknown_key()

    def recv_failed(self, errno: int | None) -> None:
        self.stats.recv_errors += 1
        self._quiet.once("recv_error", "udp receive failed errno=%s", errno)

    # ---------------------------------------------------------------------------------

    def _checked_across_nodes(
        self, held: list[tuple[Accepted, Any, int]], fresh: list[bool]
    ) -> None:
        for (verdict, addr, now_ns), first in zip(held, fresh, strict=True):
            if first:
                self._act(verdict, addr, now_ns)
            else:
                self.reject(Reject.REPLAY)
        self._store.end_batch()

    def _act(self, verdict: Accepted, addr: Any, now_ns: int) -> None:
        """Store a WRITE's events or answer a PING: the frame is accepted."""
        stats = self.stats
        stats.accepted += 1
        frames = stats.keys.current
        key_id = verdict.key.signer.key_id
        frames[key_id] = frames.get(key_id, 0) + 1
        cmd = verdict.cmd
        if cmd.name == WRITE:
            write, alerts = self._store.write, self.alerts
            batch = cmd.batch
            if cmd.sender:
                first = cmd.msg if cmd.HasField("msg") else batch[0] if batch else None
                self.writers.note(
                    cmd.sender,
                    cmd.seq,
                    None if first is None else first.host,
                    None if first is None else first.svc,
                    now_ns,
                )
            for msg in (cmd.msg, *batch) if cmd.HasField("msg") else batch:
                if not 0 <= msg.lvl <= MAX_LEVEL:
                    # Not a level of the enum: stored as no level, so every store and filter
                    # (memory, Valkey, tails, the disk) sees the same event.
                    msg.ClearField("lvl")
                # The event time, checked here and not in a helper: once per event.
                t = msg.t
                if msg.HasField("t") and MIN_T_S <= t.seconds <= MAX_T_S and 0 <= t.nanos < _NS:
                    write(msg, t.seconds * _NS + t.nanos)
                else:
                    t.seconds, t.nanos = divmod(now_ns, _NS)
                    write(msg, now_ns)
                if alerts is not None:
                    alerts.event(msg, now_ns)
                stats.events += 1
        else:  # PING (the checker lets nothing else through): answer with the same key.
            try:
                self._sock.sendto(verdict.key.signer.sign(PONG_PAYLOAD, now_ns), addr)
                stats.pongs += 1
            except OSError as err:
                self._quiet.once("pong_error", "could not send PONG errno=%s", err.errno)
