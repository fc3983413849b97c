"""The C accept path's Python side (service/logd/_fastpath.c): keys in, runs of events out.

With the memory store, one call drains the UDP socket through the checks of
PROTOCOL.md in C and hands back runs of events bound for one ring, as the bytes
that arrived; the store appends a run at once. Frames the C reader leaves to
Python (PINGs, read keys, encodings it does not take whole) come back checked up
to their payload, and ingest finishes them as accept.py would. Built without the
extension (LOGD_PURE_PYTHON=1), logd runs accept.py for every frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from logd.accept import Reject
from logd.keys import Key, KeyHolder, KeyRing, Role
from logd.replay import MacGuard, ReplayGuard
from logd.store.memory import MemoryStore

if TYPE_CHECKING:
    from logd.ingest import IngestStats

try:
    from logd import _fastpath
except ImportError:  # built with LOGD_PURE_PYTHON=1
    _fastpath = None  # type: ignore[assignment]

# The engine counts the first six reasons; the payload checks happen in Python.
_C_REASONS = tuple(Reject)[:6]

OnFrame = Callable[[Key, bytes, Any, int, int], None]  # key, frame, addr, signed_at, now


def available() -> bool:
    return _fastpath is not None


def replay_guard(*, max_age_ns: int, capacity: int) -> MacGuard:
    """The C table when the extension is built (the engine needs it), else ReplayGuard."""
    if _fastpath is not None:
        return _fastpath.ReplayTable(max_age_ns=max_age_ns, capacity=capacity)
    return ReplayGuard(max_age_ns=max_age_ns, capacity=capacity)


class FastPath:
    def __init__(
        self,
        *,
        keys: KeyHolder,
        guard: MacGuard,
        store: MemoryStore,
        max_frame: int,
        max_age_ns: int,
        max_future_ns: int,
    ) -> None:
        if _fastpath is None or not isinstance(guard, _fastpath.ReplayTable):
            raise RuntimeError("the C accept path needs logd._fastpath and its ReplayTable")
        self._engine = _fastpath.Engine(
            guard, max_frame=max_frame, max_age_ns=max_age_ns, max_future_ns=max_future_ns
        )
        self._holder = keys
        self._ring: KeyRing | None = None
        self._keys: tuple[Key, ...] = ()
        self._store = store

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

    def drain(
        self,
        fd: int,
        now_ns: int,
        max_frames: int,
        max_events: int,
        stats: IngestStats,
        on_frame: OnFrame,
    ) -> tuple[int, list[tuple[Reject, int]]]:
        """Read up to `max_frames` datagrams (fewer once `max_events` are stored) and store
        their events; `on_frame` gets the frames left to Python, in order. What the engine
        counted goes into `stats` but for its refusals, returned as (reason, count) with 0
        or the errno of a failed receive: ingest counts, logs and acts on those."""
        self._sync_keys()
        items, err = self._engine.drain(fd, now_ns, max_frames, max_events)
        write_run = self._store.write_run
        keys = self._keys
        for item in items:
            if item[0] == _fastpath.ITEM_RUN:
                _, env, svc, data, ends, times, lvls, t_min, t_max = item
                write_run(env, svc, data, ends, times, lvls, t_min, t_max)
            else:
                _, frame, addr, slot, signed_at = item
                on_frame(keys[slot], frame, addr, signed_at, now_ns)
        received, rejected, frames, events, key_frames = self._engine.take_counts()
        stats.received += received
        stats.accepted += frames  # stored by C; frames left to Python are counted there
        stats.events += events
        current = stats.keys.current
        for key, n in zip(keys, key_frames, strict=True):
            if n:
                current[key.signer.key_id] = current.get(key.signer.key_id, 0) + n
        return err, [(reason, n) for reason, n in zip(_C_REASONS, rejected, strict=True) if n]
