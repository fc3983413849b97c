"""One real ingest on a real UDP socket, on either engine (C or Python), with a fixed clock.

Every behavioural test of the accept path takes the `impl` fixture (conftest.py) and
builds a `Rig` with it, so the same assertions hold for the C engine the default
deployment runs and for accept.py, its specification.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable

import pytest
from logd._pb.logd_pb2 import Msg
from logd.server.filters import Filter
from logd.server.ingest.accept import Reject
from logd.server.ingest.drain import UdpIngest
from logd.server.ingest.engine import Impl, available, make_engine, replay_guard
from logd.server.keys import KeyHolder, KeyRing, Role, Stage
from logd.server.store import MemoryStore

S = 1_000_000_000
NOW = 1_800_000_000 * S
ACCEPTED = "accepted"

IMPLS = [
    pytest.param("python", id="python"),
    pytest.param(
        "c",
        id="c",
        marks=pytest.mark.skipif(
            not available(), reason="the C engine is not built (LOGD_PURE_PYTHON=1)"
        ),
    ),
]


def key_ring(read: bytes, write: bytes, old_write: bytes | None = None) -> KeyRing:
    secrets = {(Role.READ, Stage.CURRENT): read, (Role.WRITE, Stage.CURRENT): write}
    if old_write is not None:
        secrets[(Role.WRITE, Stage.PREVIOUS)] = old_write
    return KeyRing.from_secrets(secrets)


class Rig:
    """A UdpIngest on its own socket and engine, fed by a sender socket."""

    def __init__(
        self,
        impl: Impl,
        ring: KeyRing,
        *,
        max_frame: int = 65_507,
        max_age_ns: int = S,
        max_future_ns: int = S // 4,
        capacity: int = 100_000,
        max_rings: int = 64,
        ring_bytes: int = 1 << 24,
        host: str = "127.0.0.1",
        not_before_ns: int = -(2**63),  # a process started at this time: engine.restart_floor
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.sender = socket.socket(family, socket.SOCK_DGRAM)
        self.sender.bind((host, 0))
        self.keys = KeyHolder(ring)
        self.guard = replay_guard(max_age_ns=max_age_ns, capacity=capacity, impl=impl)
        self.store = MemoryStore(ring_bytes=ring_bytes, ring_sizes={}, max_rings=max_rings,
                                 max_tails=1, tail_queue=1)  # fmt: skip
        self.now = NOW
        self.reloads = 0  # on_unknown_key calls (logd's key reload)
        engine = make_engine(
            impl=impl, keys=self.keys, guard=self.guard, store=self.store, max_frame=max_frame,
            max_age_ns=max_age_ns, max_future_ns=max_future_ns, not_before_ns=not_before_ns,
            clock=lambda: self.now,
        )  # fmt: skip
        assert engine.name == impl
        self.ingest = UdpIngest(sock=self.sock, engine=engine, store=self.store,
                                expire=self.guard.expire, clock=lambda: self.now,
                                on_unknown_key=self._reload)  # fmt: skip

    def _reload(self) -> None:
        self.reloads += 1

    def close(self) -> None:
        self.sock.close()
        self.sender.close()

    def feed(self, datagrams: Iterable[bytes], *, within_s: float = 5.0) -> None:
        """Send the datagrams, then drain until ingest has received every one of them."""
        stats = self.ingest.stats
        target = stats.received
        for d in datagrams:
            self.sender.sendto(d, self.sock.getsockname())
            target += 1
        deadline = time.monotonic() + within_s
        while stats.received < target:
            assert time.monotonic() < deadline, f"received {stats.received} of {target}"
            self.ingest.drain()

    def check(self, frame: bytes, now: int | None = None) -> Reject | str:
        """What ingest did with one datagram: the reason it refused it, or ACCEPTED."""
        if now is not None:
            self.now = now
        before = dict(self.ingest.stats.rejected)
        accepted = self.ingest.stats.accepted
        self.feed([frame])
        grew = [r for r, n in self.ingest.stats.rejected.items() if n > before[r]]
        if grew:
            assert len(grew) == 1
            assert self.ingest.stats.accepted == accepted
            return grew[0]
        assert self.ingest.stats.accepted == accepted + 1
        return ACCEPTED

    def stored(self) -> list[tuple[str, list[tuple[int, Msg]]]]:
        rings = []
        for ring in self.store._all_rings():
            events = [(t_ns, msg or Msg.FromString(data)) for t_ns, data, msg, _ in
                      ring.scan(Filter())]  # fmt: skip
            rings.append((ring.key, events))
        return sorted(rings, key=lambda r: r[0])

    def texts(self) -> list[str]:
        return [msg.txt for _, events in self.stored() for _, msg in events]

    def counts(self) -> dict[str, object]:
        s = self.ingest.stats
        return {
            "received": s.received, "accepted": s.accepted, "events": s.events,
            "pongs": s.pongs, "rejected": dict(s.rejected), "keys": dict(s.keys.current),
            "guard": len(self.guard), "overflow": self.store.overflow_events,
        }  # fmt: skip
