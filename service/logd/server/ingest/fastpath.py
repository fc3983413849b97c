"""The C engine (`_fastpath.c`, beside this file): the only module that imports it.

One call drains the UDP socket through the checks of PROTOCOL.md in C and hands
back runs of events bound for one ring, as the bytes that arrived; the store
appends a run at once. Interleaved services cost no more: a drain gathers one run
per ring (events in arrival order within each ring, rings in the order they first
came) while the store has room for every ring it may open, so that no two services
share the overflow ring out of order. Frames the C reader leaves to Python (PINGs,
read keys, encodings it does not take whole) come back checked up to their payload; the last
check (`read_payload`) runs here, so the ingest gets them as accept.py would give
them. Built with LOGD_PURE_PYTHON=1 there is no extension and `available()` is False.
"""

from __future__ import annotations

from typing import Any, Literal

from logd.server.ingest.accept import Reject, read_payload
from logd.server.ingest.replay import MacGuard
from logd.server.ingest.sink import Sink
from logd.server.ingest.writers import Writers
from logd.server.keys import Key, KeyHolder, KeyRing, Role
from logd.server.store.base import Store
from logd.server.store.memory import MemoryStore
from logd.wire import HEADER_LEN, SIGNED_LEN

# (ITEM_RUN, env, svc, data, ends, times, lvls, t_min, t_max), or a frame for Python:
# (ITEM_FRAME, frame, addr, its Key, signed_at_ns, the receive time)
Item = tuple[Any, ...]

try:
    from logd.server.ingest import _fastpath
except ImportError:  # built with LOGD_PURE_PYTHON=1
    _fastpath = None  # type: ignore[assignment]


def available() -> bool:
    return _fastpath is not None


def extension() -> Any:
    """The extension module itself (its constants are checked against the Python ones)."""
    if _fastpath is None:
        raise RuntimeError("logd was built without its C engine (LOGD_PURE_PYTHON=1)")
    return _fastpath


def replay_table(*, max_age_ns: int, capacity: int) -> MacGuard:
    return extension().ReplayTable(max_age_ns=max_age_ns, capacity=capacity)  # type: ignore[no-any-return]


def can_serve(guard: MacGuard, store: Store) -> bool:
    """The C engine needs its own replay table and a store that appends runs."""
    return (
        _fastpath is not None
        and isinstance(guard, _fastpath.ReplayTable)
        and isinstance(store, MemoryStore)
    )


class CEngine:
    name: Literal["c"] = "c"

    def __init__(
        self,
        *,
        keys: KeyHolder,
        guard: MacGuard,
        store: Store,
        max_frame: int,
        max_age_ns: int,
        max_future_ns: int,
        not_before_ns: int,
        writers_capacity: int,
    ) -> None:
        if not can_serve(guard, store):
            raise RuntimeError("the C engine needs its ReplayTable and the memory store")
        assert isinstance(store, MemoryStore)  # noqa: S101 (can_serve checked it)
        ext = extension()
        # The engine counts the frames it stores; ingest notes those it leaves to Python.
        self.writers: Writers = ext.WriterTable(capacity=writers_capacity)
        self._engine = ext.Engine(
            guard,
            max_frame=max_frame,
            max_age_ns=max_age_ns,
            max_future_ns=max_future_ns,
            not_before_ns=not_before_ns,
            writers=self.writers,
        )
        self._item_run = ext.ITEM_RUN
        self._reasons = tuple(Reject(name) for name in ext.REASONS)
        self._holder = keys
        self._ring: KeyRing | None = None
        self._keys: tuple[Key, ...] = ()
        self._store = store
        self._write_run = store.write_run
        self._held: list[Item] = []  # read past a drain's bound: the next drain's first

    def _sync_keys(self) -> None:
        """Hand the engine the current key ring when a reload swapped it."""
        ring = self._holder.ring
        if ring is self._ring:
            return
        # The engine counts frames per key slot; every drain takes those counts before it
        # returns, so none are pending under the old slots here.
        self._engine.set_keys(
            [(k.signer.key_id, *k.signer.pad_blocks(), k.role is Role.WRITE) for k in ring.keys]
        )
        self._ring, self._keys = ring, ring.keys

    def drain(self, sock: Any, now_ns: int, max_frames: int, max_events: int, sink: Sink) -> bool:
        """Store what the socket holds, at most about `max_events` events in all: frames
        left to Python count too (a few frames of 30,000 events would hold the loop for
        seconds). What is read past the bound waits, in order, for the next call; True
        while some does."""
        self._sync_keys()
        room = max_events
        if self._held:
            held, self._held = self._held, []
            room = self._take(held, room, sink)
            if self._held:
                return True
        # The rings the store has and may still open: while a drain's rings fit, the C
        # reader gathers one run per ring (none can overflow; see _fastpath.c).
        store = self._store
        items, err = self._engine.drain(
            sock.fileno(), now_ns, max_frames, room, store.free_rings, store.rings_by_names
        )
        keys = self._keys
        self._take([(*i[:3], keys[i[3]], i[4], now_ns) if i[0] != self._item_run else i
                    for i in items], room, sink)  # fmt: skip
        self._fold_counts(sink)
        if err:
            sink.recv_failed(err)
        return bool(self._held)

    def _take(self, items: list[Item], room: int, sink: Sink) -> int:
        """Store runs and finish frames until `room` events are used; hold the rest."""
        write_run, item_run, stats = self._write_run, self._item_run, sink.stats
        alerts = sink.alerts
        for at, item in enumerate(items):
            if room <= 0:
                self._held = items[at:]
                return 0
            if item[0] == item_run:
                _, env, svc, data, ends, times, lvls, t_min, t_max = item
                write_run(env, svc, data, ends, times, lvls, t_min, t_max)
                if alerts is not None:
                    alerts.run(env, svc, data, ends, lvls)
                room -= len(ends) // 4
                continue
            _, frame, addr, key, signed_at, now_ns = item
            verdict = read_payload(key, frame, frame[SIGNED_LEN:HEADER_LEN], signed_at)
            if isinstance(verdict, Reject):
                sink.reject(verdict)
                continue
            before = stats.events
            sink.accepted(verdict, addr, now_ns)
            room -= max(1, stats.events - before)
        return room

    def _fold_counts(self, sink: Sink) -> None:
        received, rejected, frames, events, key_frames = self._engine.take_counts()
        stats = sink.stats
        stats.received += received
        stats.accepted += frames  # stored by C; frames left to Python are counted there
        stats.events += events
        current = stats.keys.current
        for key, n in zip(self._keys, key_frames, strict=True):
            if n:
                current[key.signer.key_id] = current.get(key.signer.key_id, 0) + n
        for reason, n in zip(self._reasons, rejected, strict=True):
            if n:
                sink.reject(reason, n)
