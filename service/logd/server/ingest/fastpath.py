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

With a store shared by several nodes (Valkey), `HeldCEngine` runs the same reader
`held`: every check but the replay check across nodes, whose round trip
(SharedReplayGuard) comes after the drain; C hands back the frames that passed and
their runs (one stream entry each), and Python stores a run once its frames are found
fresh: O(frames) work here, not O(events).
"""

from __future__ import annotations

import asyncio
from array import array
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

from logd.server.ingest.accept import Reject, read_payload
from logd.server.ingest.replay import MacGuard
from logd.server.ingest.sink import Sink
from logd.server.ingest.writers import Writers
from logd.server.keys import Key, KeyHolder, KeyRing, Role
from logd.server.store.base import Store
from logd.server.store.memory import MemoryStore
from logd.server.store.valkey.entries import ENTRY_DATA, ENTRY_EVENTS
from logd.server.store.valkey.replay import SharedReplayGuard
from logd.server.store.valkey.store import ValkeyStore
from logd.wire import HEADER_LEN, SIGNED_LEN

# (ITEM_RUN, env, svc, data, ends, times, lvls, t_min, t_max), or a frame for Python:
# (ITEM_FRAME, frame, addr, its Key, signed_at_ns, the receive time). Held, a run has
# its events' frames (owners) last, a frame its index in the drain's checks.
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


def can_hold(guard: MacGuard, store: Store) -> bool:
    """HeldCEngine needs the C replay table (the local guard) and the Valkey store."""
    return (
        _fastpath is not None
        and isinstance(guard, _fastpath.ReplayTable)
        and isinstance(store, ValkeyStore)
    )


def can_serve(guard: MacGuard, store: Store) -> bool:
    """The C engine needs its own replay table and a store that appends runs."""
    return (
        _fastpath is not None
        and isinstance(guard, _fastpath.ReplayTable)
        and isinstance(store, MemoryStore)
    )


class _CSide:
    """What both C engines do on the Python side: hand over keys, fold the C counts."""

    name: Literal["c"] = "c"

    def __init__(self, keys: KeyHolder, engine: Any, writers: Writers) -> None:
        ext = extension()
        self.writers = writers
        self._engine = engine
        self._item_run = ext.ITEM_RUN
        self._reasons = tuple(Reject(name) for name in ext.REASONS)
        self._holder = keys
        self._ring: KeyRing | None = None
        self._keys: tuple[Key, ...] = ()

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


class CEngine(_CSide):
    checks_across_nodes = False

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
        writers: Writers = ext.WriterTable(capacity=writers_capacity)
        engine = ext.Engine(
            guard,
            max_frame=max_frame,
            max_age_ns=max_age_ns,
            max_future_ns=max_future_ns,
            not_before_ns=not_before_ns,
            writers=writers,
        )
        super().__init__(keys, engine, writers)
        self._store = store
        self._write_run = store.write_run
        self._held: list[Item] = []  # read past a drain's bound: the next drain's first

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


class _Checked(NamedTuple):
    """A drain whose frames came back from the check across nodes."""

    items: list[Item]
    # (mac, signed_at, slot, events or -1, sender, seq, host, svc); None: a frame left to
    # Python that its payload check refused (as accept.py, before the check across nodes)
    checks: list[tuple[Any, ...] | None]
    fresh: list[bool]
    keys: tuple[Key, ...]  # the key ring of its drain: slots index it
    now_ns: int
    sink: Sink


class HeldCEngine(_CSide):
    """The C engine for a store shared by several nodes: every check in C but the replay
    check across nodes; each drain's frames go to SharedReplayGuard in one round trip, and
    its runs are stored once the answer comes, the drains in the order they came. A frame
    another node accepted first counts as a replay and none of its events are stored."""

    checks_across_nodes = True

    def __init__(
        self,
        *,
        keys: KeyHolder,
        guard: MacGuard,
        shared_guard: SharedReplayGuard,
        store: Store,
        max_frame: int,
        max_age_ns: int,
        max_future_ns: int,
        not_before_ns: int,
        writers_capacity: int,
    ) -> None:
        if not can_hold(guard, store):
            raise RuntimeError("the held C engine needs its ReplayTable and the Valkey store")
        assert isinstance(store, ValkeyStore)  # noqa: S101 (can_hold checked it)
        ext = extension()
        writers: Writers = ext.WriterTable(capacity=writers_capacity)  # noted here, once fresh
        engine = ext.Engine(
            guard,
            max_frame=max_frame,
            max_age_ns=max_age_ns,
            max_future_ns=max_future_ns,
            not_before_ns=not_before_ns,
            writers=writers,
            held=True,
            run_events=ENTRY_EVENTS,  # a run is one stream entry: bounded as entries are
            run_bytes=ENTRY_DATA,
        )
        super().__init__(keys, engine, writers)
        self._store = store
        self._shared = shared_guard
        # Checked drains not yet stored: a drain's bound in events holds for storing too
        # (frames left to Python cost ~5 us an event), the rest waits for the next turn.
        # Each answer stores a drain's worth, so what waits is what the check under way let
        # accumulate (replay.py: bounded by the client's timeout), as on the Python path.
        self._ready: deque[_Checked] = deque()
        self._at = 0  # items of the first ready drain stored so far
        self._room = 0
        self._resuming = False

    def drain(self, sock: Any, now_ns: int, max_frames: int, max_events: int, sink: Sink) -> bool:
        """Read and check what the socket holds (about `max_events` events at most), then
        send its frames to the check across nodes; they are stored when it answers."""
        self._sync_keys()
        store = self._store
        items, checks, err = self._engine.drain(
            sock.fileno(), now_ns, max_frames, max_events, store.free_rings, store.rings_by_names
        )
        self._fold_counts(sink)
        if err:
            sink.recv_failed(err)
        if not checks:
            return False
        run = self._item_run
        events = sum(len(item[6]) if item[0] == run else 1 for item in items)  # 1: at least
        if self._shared.refuses(events):
            sink.reject(Reject.OVERLOAD, len(checks))
            return False
        keys = self._keys
        for at, item in enumerate(items):
            if item[0] != self._item_run:  # the last check first, as accept.py orders them
                _, frame, addr, slot, signed_at, check = item
                verdict = read_payload(keys[slot], frame, frame[SIGNED_LEN:HEADER_LEN], signed_at)
                if isinstance(verdict, Reject):
                    sink.reject(verdict)
                    checks[check] = None
                items[at] = (item[0], verdict, addr, check)
        self._room = max_events

        def done(answers: list[bool]) -> None:
            given = iter(answers)
            fresh = [c is not None and next(given) for c in checks]
            self._ready.append(_Checked(items, checks, fresh, keys, now_ns, sink))
            self._store_ready()

        self._shared.submit([(c[0], c[1]) for c in checks if c is not None], done, events)
        return False

    def _store_ready(self) -> None:
        """Store the checked drains, oldest first, up to a drain's bound in events."""
        self._resuming = False
        room = self._room
        while self._ready and room > 0:
            checked = self._ready[0]
            if self._at == 0:
                self._count(checked)
            room = self._store_items(checked, room)
            if self._at < len(checked.items):
                break
            self._ready.popleft()
            self._at = 0
        self._store.end_batch()
        if self._ready and not self._resuming:
            self._resuming = True
            asyncio.get_running_loop().call_soon(self._store_ready)

    def _count(self, checked: _Checked) -> None:
        """Count a drain's frames as ingest counts what it accepts (accept.py, drain.py)."""
        sink, now_ns = checked.sink, checked.now_ns
        stats = sink.stats
        current = stats.keys.current
        note = self.writers.note
        for check, first in zip(checked.checks, checked.fresh, strict=True):
            if check is None:
                continue  # refused before the check
            _, _, slot, events, sender, seq, host, svc = check
            if not first:
                sink.reject(Reject.REPLAY)
            elif events >= 0:  # read in C; a frame left to Python is counted by ingest
                stats.accepted += 1
                stats.events += events
                key_id = checked.keys[slot].signer.key_id
                current[key_id] = current.get(key_id, 0) + 1
                if sender is not None:
                    note(sender, seq, host, svc, now_ns)

    def _store_items(self, checked: _Checked, room: int) -> int:
        """Store runs and finish frames from `self._at` until `room` events are used."""
        items, fresh, sink = checked.items, checked.fresh, checked.sink
        write_run, item_run, alerts = self._store.write_run, self._item_run, sink.alerts
        every = all(fresh)
        for at in range(self._at, len(items)):
            if room <= 0:
                self._at = at
                return 0
            item = items[at]
            if item[0] == item_run:
                _, env, svc, data, ends, times, lvls, _, _, owners = item
                if not every:
                    kept = _fresh_events(data, ends, times, lvls, owners, fresh)
                    if kept is None:
                        continue
                    data, ends, times, lvls = kept
                write_run(env, svc, data, ends, times, lvls)
                if alerts is not None:
                    alerts.run(env, svc, data, ends, lvls)
                room -= len(lvls)
                continue
            _, verdict, addr, check = item
            if not fresh[check]:
                continue  # refused: counted before the check or in _count
            before = sink.stats.events
            sink.accepted(verdict, addr, checked.now_ns)
            room -= max(1, sink.stats.events - before)
        self._at = len(items)
        return room


def _fresh_events(
    data: bytes, ends: bytes, times: bytes, lvls: bytes, owners: bytes, fresh: Sequence[bool]
) -> tuple[bytes, bytes, bytes, bytes] | None:
    """The events of a run whose frames are fresh (a run where some were replays: rare,
    so per event here), or None when there are none."""
    end_at, time_at, owner_of = array("I", ends), array("q", times), array("I", owners)
    keep = [i for i, owner in enumerate(owner_of) if fresh[owner]]
    if not keep:
        return None
    parts, kept_ends = [], array("I")
    for i in keep:
        parts.append(data[end_at[i - 1] if i else 0 : end_at[i]])
        kept_ends.append((kept_ends[-1] if kept_ends else 0) + len(parts[-1]))
    return (
        b"".join(parts),
        kept_ends.tobytes(),
        array("q", (time_at[i] for i in keep)).tobytes(),
        bytes(lvls[i] for i in keep),
    )
