"""The embedded store: a map of byte-bounded rings (store/ring.py) keyed `env/svc`.

Writes are O(1) on the event loop, with no locks: asyncio runs one thing at a
time. Queries merge the rings' newest-first scans by event time. Rings with a max age
(LOGD_RING_MAX_AGE, `rings:` entries) lose their aged chunks at each `sweep`
(store/retention.py runs it; ring.py says how).
"""

from __future__ import annotations

from array import array
from collections import defaultdict
from collections.abc import Iterable, Mapping

from logd._pb.logd_pb2 import Msg
from logd.server.filters import Filter
from logd.server.store.base import RingBudgets, RingStats, StoreStats
from logd.server.store.count import count_rings
from logd.server.store.ring import ALL_IDS, RECORD_OVERHEAD, EventIds, IdRange, Ring
from logd.server.store.scan import Cursor, Found, Yielder, merge
from logd.server.store.tally import Tally
from logd.server.tail import Subscription, TailHub

__all__ = ["OVERFLOW_KEY", "RECORD_OVERHEAD", "MemoryStore", "Ring", "ring_key"]

PLACEHOLDER = "-"
OVERFLOW_KEY = "_overflow"

_Record = tuple[int, int, bytes, int]  # (t_ns, lvl, serialised Msg, id; 0: none kept)


def ring_key(env: str, svc: str) -> str:
    return f"{env or PLACEHOLDER}/{svc or PLACEHOLDER}"


class MemoryStore:
    def __init__(
        self,
        *,
        ring_bytes: int,
        ring_sizes: Mapping[str, int],
        max_rings: int,
        max_tails: int,
        tail_queue: int,
        tail_bytes: int = 1024 * 1024,
        ring_max_age_ns: int = 0,
        ring_max_ages_ns: Mapping[str, int] | None = None,
    ) -> None:
        self.capacity_for = RingBudgets(ring_bytes, ring_sizes)
        # Max age per ring key (0: none), resolved as the byte budgets are.
        self.max_age_for = RingBudgets(ring_max_age_ns, ring_max_ages_ns or {})
        self._aging: list[Ring] = []  # the rings with a max age: what `sweep` visits
        self.ids = EventIds()  # one counter for every ring: ids in arrival order
        self._max_rings = max_rings
        self._rings: dict[tuple[str, str], Ring] = {}
        self._overflow: Ring | None = None
        self.hub = TailHub(max_subscribers=max_tails, queue_len=tail_queue, queue_bytes=tail_bytes)
        self.writes = 0
        self.overflow_events = 0
        # Events not yet on disk, per ring, while persistence is on (persist.py).
        self.pending: defaultdict[Ring, list[_Record]] | None = None

    def _ring_for(self, env: str, svc: str, events: int = 1) -> Ring:
        if len(self._rings) < self._max_rings:
            key = ring_key(env, svc)
            ring = self._rings[env, svc] = self._new_ring(key, env, svc)
            return ring
        self.overflow_events += events
        return self._overflow_ring()

    def _overflow_ring(self) -> Ring:
        if self._overflow is None:
            self._overflow = self._new_ring(OVERFLOW_KEY, None, None)
        return self._overflow

    def _new_ring(self, key: str, env: str | None, svc: str | None) -> Ring:
        max_age = self.max_age_for(key)
        ring = Ring(key, env, svc, self.capacity_for(key), self.ids, max_age_ns=max_age)
        if max_age:
            self._aging.append(ring)
        return ring

    def sweep(self, now_ns: int, first: int = 0, count: int | None = None) -> bool:
        """Retention by age: evict what arrived more than its ring's max age before
        `now_ns` (time.monotonic_ns), in `count` of the rings with a max age from the `first`
        (None: all); whether some are left after them. O(rings) plus the chunks evicted."""
        stop = len(self._aging) if count is None else first + count
        for ring in self._aging[first:stop]:
            ring.sweep(now_ns)
        return stop < len(self._aging)

    def write(self, msg: Msg, t_ns: int) -> None:
        ring = self._rings.get((msg.env, msg.svc))
        if ring is None:
            ring = self._ring_for(msg.env, msg.svc)
        data = msg.SerializeToString()
        lvl = msg.lvl
        event_id = self.ids.next
        ring.append(t_ns, lvl, data)
        if self.pending is not None:  # O(1); the persister writes these in batches
            self.pending[ring].append((t_ns, lvl, data, event_id))
        self.writes += 1
        if self.hub.subscribers:  # checked here: most writes have no live tail to feed
            self.hub.publish(msg, event_id)

    def write_run(
        self,
        env: str,
        svc: str,
        data: bytes,
        ends: bytes,
        times: bytes,
        lvls: bytes,
        t_min: int,
        t_max: int,
    ) -> None:
        """Store events for one ring that arrived back to back (the C accept path): their
        bytes, end offsets in `data` (uint32) and times (int64) in native byte order, and
        levels, one byte each; `t_min`/`t_max` bound the times."""
        ends_at = array("I")
        ends_at.frombytes(ends)
        count = len(ends_at)
        ring = self._rings.get((env, svc))
        if ring is None:
            ring = self._ring_for(env, svc, count)
        at = array("q")
        at.frombytes(times)
        first_id = self.ids.next
        ring.extend(data, ends_at, at, lvls, t_min, t_max)
        self.writes += count
        if self.pending is None and not self.hub.subscribers:
            return
        records = [data[start:end] for start, end in zip((0, *ends_at), ends_at, strict=False)]
        if self.pending is not None:
            ids = range(first_id, first_id + count)
            self.pending[ring].extend(zip(at, lvls, records, ids, strict=True))
        if self.hub.subscribers:
            for event_id, record in enumerate(records, first_id):
                self.hub.publish(Msg.FromString(record), event_id)

    def end_batch(self) -> None:
        """Nothing to send: the rings are here."""

    async def query(
        self,
        flt: Filter,
        *,
        limit: int,
        offset: int,
        max_bytes: int | None = None,
        ids: IdRange = ALL_IDS,
    ) -> Found:
        pause = Yielder()
        cursors: list[Cursor] = []
        for ring in self._all_rings():
            ring_filter = flt.for_ring(ring.env, ring.svc)
            if ring_filter is not None:
                cursors.append(ring.cursor(ring_filter, pause, ids))
        return await merge(cursors, limit=limit, offset=offset, max_bytes=max_bytes)

    @property
    def free_rings(self) -> int:
        """Ring slots still free; past them, new env/svc keys share the overflow ring."""
        return max(0, self._max_rings - len(self._rings))

    @property
    def rings_by_names(self) -> Mapping[tuple[str, str], Ring]:
        """The rings by (env, svc), read-only (the C engine looks keys up in it)."""
        return self._rings

    def last_id(self) -> int:
        """The id of the newest event stored so far: later ones reach live tails."""
        return self.ids.next - 1

    def evicted_after(self, flt: Filter, after: int) -> bool:
        """Whether a ring that `flt` may match evicted events newer than id `after`."""
        return any(r.evicted_id > after for r in self._all_rings() if flt.for_ring(r.env, r.svc))

    async def hits(self, flt: Filter, tally: Tally) -> None:
        """Count the matching events into `tally` (GET /hits), giving the loop back."""
        await count_rings(self._all_rings(), flt, tally, Yielder())

    def restore(
        self,
        env: str | None,
        svc: str | None,
        records: Iterable[_Record],
        arrived_ns: int | None = None,
    ) -> None:
        """Put back events loaded from disk, oldest first (env None: the overflow ring), that
        all arrived by `arrived_ns` (None: the next sweep stamps them, ring.py).
        Tails, `writes` and `pending` do not see them."""
        if env is None or svc is None:
            ring = self._overflow_ring()
        else:
            found = self._rings.get((env, svc))
            ring = found if found is not None else self._ring_for(env, svc)
        last = ring.last_id
        for t_ns, lvl, data, event_id in records:
            # An event keeps the id it had, unless the disk kept none (a LOGDSEG1 file) or
            # it would not follow the ring's last one: then it gets a new one, which is
            # above every id of an earlier run.
            kept = event_id if event_id > last else None
            ring.append(t_ns, lvl, data, kept)
            last = ring.last_id
            if last >= self.ids.next:
                self.ids.next = last + 1  # new events go on above every id loaded
        if arrived_ns is not None:
            ring.stamp(arrived_ns)

    def subscribe(self, flt: Filter) -> Subscription:
        return self.hub.subscribe(flt)

    def _all_rings(self) -> list[Ring]:
        rings = list(self._rings.values())
        if self._overflow is not None:
            rings.append(self._overflow)
        return rings

    def stats(self) -> StoreStats:
        return StoreStats(
            writes=self.writes,
            overflow_events=self.overflow_events,
            rings=[_ring_stats(r) for r in self._all_rings()],
        )


def _ring_stats(r: Ring) -> RingStats:
    return RingStats(
        r.key,
        len(r),
        r.bytes,
        r.capacity,
        r.evicted,
        evicted_bytes=r.evicted_bytes,
        aged=r.aged,
        aged_bytes=r.aged_bytes,
    )
