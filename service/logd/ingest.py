"""The UDP endpoint: drain the socket, check each frame, store events, answer PINGs.

A non-blocking socket is drained in a loop of up to `drain_max` datagrams per
readiness event (asyncio's datagram transport reads one per loop iteration).
Nothing here awaits: ingest never waits for readers, disks or tails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from logd._pb.logd_pb2 import WRITE
from logd.accept import Accepted, FrameChecker, Reject, read_payload
from logd.fastpath import FastPath
from logd.keys import Key
from logd.logsetup import QuietLogger
from logd.replay_shared import SharedReplayGuard
from logd.store.base import Store
from logd.wire import HEADER_LEN, PONG_PAYLOAD, SIGNED_LEN

log = logging.getLogger("logd.ingest")

_RECV_SIZE = 65_536
# Event times are kept as signed 64-bit nanoseconds (1677-09-21 .. 2262-04-11), within
# the Timestamp range; an event time outside them gets the receive time instead.
_MIN_T_S, _MAX_T_S = -9_223_372_036, 9_223_372_035
_NS = 1_000_000_000
_DRAIN_EVENTS = 2048  # events stored per readiness event before the loop gets a turn


class KeyUsage:
    """Frames authenticated per key_id, so /info shows when writers left an old key.

    The hot path adds one to `current[key_id]`; `roll()` (once per drain) closes the
    window every `window_ns`, folding its counts into `totals`.
    """

    __slots__ = ("_previous", "_started_ns", "_window_ns", "current", "totals")

    def __init__(self, window_ns: int = 60 * 1_000_000_000) -> None:
        self._window_ns = window_ns
        self._started_ns = 0
        self._previous: dict[bytes, int] = {}
        self.current: dict[bytes, int] = {}
        self.totals: dict[bytes, int] = {}

    def roll(self, now_ns: int) -> None:
        if now_ns - self._started_ns < self._window_ns:
            return
        for key_id, n in self.current.items():
            self.totals[key_id] = self.totals.get(key_id, 0) + n
        recent = now_ns - self._started_ns < 2 * self._window_ns
        self._previous = self.current if recent else {}
        self.current = {}
        self._started_ns = now_ns

    def counts(self, key_id_hex: str) -> dict[str, int]:
        """`frames_recent`: in the last one to two windows; `frames_total`: since start."""
        key_id = bytes.fromhex(key_id_hex)
        now = self.current.get(key_id, 0)
        return {
            "frames_recent": now + self._previous.get(key_id, 0),
            "frames_total": now + self.totals.get(key_id, 0),
        }


class IngestStats:
    __slots__ = ("accepted", "events", "keys", "pongs", "received", "recv_errors", "rejected")

    def __init__(self) -> None:
        self.received = 0
        self.accepted = 0
        self.events = 0
        self.pongs = 0
        self.recv_errors = 0
        self.rejected: dict[Reject, int] = dict.fromkeys(Reject, 0)
        self.keys = KeyUsage()


def bind_udp(addr: tuple[str, int], rcvbuf: int) -> tuple[socket.socket, int]:
    """A non-blocking UDP socket bound to `addr`, and the receive buffer the kernel granted."""
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        # FORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN; otherwise the cap applies.
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), rcvbuf)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    sock.bind(addr)
    # Linux reports double the usable size (it counts bookkeeping); report what it says.
    return sock, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def kernel_drops(sock: socket.socket) -> int | None:
    """The kernel's drop counter for this socket (Linux /proc/net/udp*), or None if unknown."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) >= 13 and cols[9] == inode:
                return int(cols[-1])
    return None


class UdpIngest:
    def __init__(
        self,
        *,
        sock: socket.socket,
        checker: FrameChecker,
        store: Store,
        expire: Callable[[int], None],
        clock: Callable[[], int] = time.time_ns,
        drain_max: int = 1024,
        on_unknown_key: Callable[[], None] | None = None,
        shared_guard: SharedReplayGuard | None = None,
        fast: FastPath | None = None,
    ) -> None:
        self._sock = sock
        self._checker = checker
        self._store = store
        self._expire = expire
        self._clock = clock
        self._drain_max = drain_max
        self._on_unknown_key = on_unknown_key  # e.g. a rate-limited key reload
        # With several nodes, accepted frames wait here for the batch's check across nodes.
        self._shared_guard = shared_guard
        self._held: list[tuple[Accepted, Any, int]] = []
        self._fast = fast  # the C accept path (memory store, one node), else `checker`
        self._loop: asyncio.AbstractEventLoop | None = None
        self._quiet = QuietLogger(log)
        self.stats = IngestStats()

    @property
    def accept_path(self) -> str:
        """Which accept path runs, as /info shows: c (logd._fastpath) or python (accept.py)."""
        return "python" if self._fast is None else "c"

    @property
    def running(self) -> bool:
        return self._loop is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._drain)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._loop = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return host, port

    def kernel_drops(self) -> int | None:
        return kernel_drops(self._sock)

    def _drain(self) -> None:
        if self._fast is not None:
            self._drain_fast(self._fast)
            return
        recv = self._sock.recvfrom
        handle = self.handle
        clock = self._clock
        self._begin_drain()
        stats = self.stats
        # Also bounded in events: 1,024 frames of 16-event batches would hold the loop for
        # 100+ ms, and queries, tails and /info wait that long.
        events_max = stats.events + _DRAIN_EVENTS
        for _ in range(self._drain_max):
            if stats.events >= events_max:
                break
            try:
                data, addr = recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:
                self._recv_failed(err.errno)
                break
            handle(data, addr, clock())
        guard = self._shared_guard
        if guard is not None and self._held:
            held, self._held = self._held, []
            guard.submit(
                [(v.mac, v.signed_at_ns) for v, _, _ in held],
                lambda fresh: self._checked_across_nodes(held, fresh),
            )
        self._store.end_batch()  # a remote store sends the batch: one round trip per drain

    def _drain_fast(self, fast: FastPath) -> None:
        now = self._begin_drain()
        err, refused = fast.drain(
            self._sock.fileno(), now, self._drain_max, _DRAIN_EVENTS, self.stats, self._finish
        )
        for reason, count in refused:
            self._reject(reason, count)
        if err:
            self._recv_failed(err)
        self._store.end_batch()

    def _begin_drain(self) -> int:
        """Once per readiness event: the clock, and the time-driven upkeep."""
        now = self._clock()
        self._expire(now)
        self.stats.keys.roll(now)
        return now

    def _recv_failed(self, errno: int | None) -> None:
        self.stats.recv_errors += 1
        self._quiet.once("recv_error", "udp receive failed errno=%s", errno)

    def _finish(self, key: Key, frame: bytes, addr: Any, signed_at: int, now_ns: int) -> None:
        """A frame the C path checked up to its payload: the last check, then act."""
        verdict = read_payload(key, frame, frame[SIGNED_LEN:HEADER_LEN], signed_at)
        if isinstance(verdict, Reject):
            self._reject(verdict)
        else:
            self._act(verdict, addr, now_ns)

    def _checked_across_nodes(
        self, held: list[tuple[Accepted, Any, int]], fresh: list[bool]
    ) -> None:
        for (verdict, addr, now_ns), first in zip(held, fresh, strict=True):
            if first:
                self._act(verdict, addr, now_ns)
            else:
                self._reject(Reject.REPLAY)
        self._store.end_batch()

    def handle(self, data: bytes, addr: Any, now_ns: int) -> None:
        """Check one datagram and act on it; expected rejections are counted, not raised."""
        stats = self.stats
        stats.received += 1
        verdict = self._checker.check(data, now_ns)
        if isinstance(verdict, Reject):
            self._reject(verdict)
            return
        if self._shared_guard is not None:
            self._held.append((verdict, addr, now_ns))
            return
        self._act(verdict, addr, now_ns)

    def _reject(self, reason: Reject, count: int = 1) -> None:
        self.stats.rejected[reason] += count
        self._quiet.once(reason.value, "rejected datagram reason=%s", reason.value)
        if reason is Reject.UNKNOWN_KEY and self._on_unknown_key is not None:
            self._on_unknown_key()

    def _act(self, verdict: Accepted, addr: Any, now_ns: int) -> None:
        """Store a WRITE's events or answer a PING: the frame is accepted."""
        stats = self.stats
        stats.accepted += 1
        frames = stats.keys.current
        key_id = verdict.key.signer.key_id
        frames[key_id] = frames.get(key_id, 0) + 1
        cmd = verdict.cmd
        if cmd.name == WRITE:
            write = self._store.write
            batch = cmd.batch
            for msg in (cmd.msg, *batch) if cmd.HasField("msg") else batch:
                # The event time, checked here and not in a helper: once per event.
                t = msg.t
                if msg.HasField("t") and _MIN_T_S <= t.seconds <= _MAX_T_S and 0 <= t.nanos < _NS:
                    write(msg, t.seconds * _NS + t.nanos)
                else:
                    t.seconds, t.nanos = divmod(now_ns, _NS)
                    write(msg, now_ns)
                stats.events += 1
        else:  # PING (the checker lets nothing else through): answer with the same key.
            try:
                self._sock.sendto(verdict.key.signer.sign(PONG_PAYLOAD, now_ns), addr)
                stats.pongs += 1
            except OSError as err:
                self._quiet.once("pong_error", "could not send PONG errno=%s", err.errno)
