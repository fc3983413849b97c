"""Ring: a FIFO of serialised events bounded in bytes, packed into chunks.

Events are packed back to back into chunks of up to 64 KiB: one bytes object
per chunk, with per-event end offsets, times, levels and ids in compact arrays. A
stored event costs its serialised size plus 21 bytes (RECORD_OVERHEAD), not a
few Python objects, and a query can search a whole chunk with one C-level
`bytes.find` before it parses anything. The oldest chunk is dropped when the
ring is over budget, so memory never exceeds `capacity` and at least
`capacity - chunk size` worth of the newest events are kept.

Retention by age (`max_age_ns`) drops a chunk once every event in it arrived more than
the age ago. Arrival is on the server's monotonic clock (a wall-clock step must not age
anything early), never an event's `t`: a writer sets `t`, so a far-future one would keep
its chunk forever and a far-past one would take other events with it. Ingest reads no
clock for it: `sweep`, run every second or so, stamps each chunk
that changed since the last sweep with that sweep's time, which is after its newest
event arrived, and evicts from the oldest end while the stamp is older than the age. A
chunk also stops taking events once it has been open 1/16 of the age, so an event goes at
most about max_age * 17/16 (plus two sweeps) after it arrived, and never before max_age.
"""

from __future__ import annotations

import time
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from itertools import islice

from logd._pb.logd_pb2 import Msg
from logd.server.filters import LOWERS_TO_ASCII, Filter
from logd.server.store.packed import shifted
from logd.server.store.scan import Hit
from logd.server.store.search import containing

RECORD_OVERHEAD = 21  # end offset (4) + time (8) + level (1) + id (8) beside its bytes
CHUNK_OVERHEAD = 400  # the chunk's own objects: bytes and array headers, slots
MAX_CHUNK = 64 * 1024
FILL_HITS = 128  # hits a cursor takes from its chunk at a time (a page is 100 by default)
UNSEEN = 2**63 - 1  # a chunk no sweep has stamped yet: too new to be aged
AGE_SLICES = 16  # a chunk takes events for at most 1/16 of the ring's max age
SPARE_SHARE = 1 / 64  # a sealed chunk's spare room past this share of its data: compacted


class Chunk:
    __slots__ = (
        "arrived", "data", "dead", "ends", "ids", "lowers_to_ascii", "lvls", "opened", "sealed",
        "seen", "t_max", "t_min", "times",
    )  # fmt: skip

    def __init__(self) -> None:
        self.data: bytes | bytearray = bytearray()
        self.ends = array("I")
        self.times = array("q")
        self.ids = array("Q")
        self.lvls: bytes | bytearray = bytearray()
        self.t_min = 2**63 - 1
        self.t_max = -(2**63)
        self.dead = False  # evicted: a query that still lists it skips it
        self.sealed = False  # full: it takes no more events
        # Arrival, as Ring.stamp saw it: `arrived` is after the newest event came (UNSEEN:
        # not stamped yet), `opened` the first stamp, `seen` how many events it had then.
        self.arrived = self.opened = UNSEEN
        self.seen = -1
        # Which LOWERS_TO_ASCII sequences the sealed chunk holds: found by its first
        # case-insensitive search, not on the ingest path.
        self.lowers_to_ascii: tuple[bytes, ...] | None = None

    def __len__(self) -> int:
        return len(self.ends)

    def seal(self) -> None:
        """Take no more events. Data grown by runs (the C engine's) has next to no spare
        room and is kept as it is: copying every chunk into exact-size bytes took a third
        of batched ingest into fresh memory (8 rings, page faults on the copies). Data
        grown an event at a time has up to 1/8 spare: compacted into exact-size bytes when
        over SPARE_SHARE, so the room a ring does not count stays within RING_SLACK."""
        data = self.data
        if isinstance(data, bytearray) and data.__alloc__() - len(data) > len(data) * SPARE_SHARE:
            self.data = bytes(data)
        self.lvls = bytes(self.lvls)  # 1 byte an event: cheap to compact
        self.sealed = True

    def special(self) -> tuple[bytes, ...]:
        """The LOWERS_TO_ASCII sequences in this chunk, remembered once it is sealed."""
        if self.lowers_to_ascii is not None:
            return self.lowers_to_ascii
        found = _lowers_to_ascii(self.data)
        if self.sealed:  # it will not change
            self.lowers_to_ascii = found
        return found

    def record(self, i: int) -> bytes:
        return bytes(self.data[self.ends[i - 1] if i else 0 : self.ends[i]])

    def candidates(self, flt: Filter) -> Iterator[int]:
        """Indexes of events that may match, newest first, found at C speed where possible."""
        searches = _searches(flt, self)
        if searches is not None:
            found: set[int] = set()
            for needle, folded in searches:
                whole = needle in flt.whole
                found.update(containing(self.data, self.ends, needle, folded=folded, whole=whole))
            return iter(sorted(found, reverse=True))
        if flt.lvl:
            return self._at_least(flt.lvl)
        return iter(range(len(self.ends) - 1, -1, -1))

    def _at_least(self, lvl: int) -> Iterator[int]:
        marks = self.lvls.translate(_LEVEL_MARKS[lvl])
        pos = marks.rfind(b"\x01")
        while pos >= 0:
            yield pos
            pos = marks.rfind(b"\x01", 0, pos)


_COUNT_MAX = 4096
_IOTA = array("Q", range(_COUNT_MAX))  # 0, 1, ...: a run's ids are these plus its first


def _counting(first: int, n: int) -> bytes:
    """first, first + 1, ..., first + n - 1 as uint64 bytes (`shifted` _IOTA): for runs
    of hundreds of events array.extend(range) took twice as long (for a run of one it
    is 0.4 us quicker)."""
    if n > _COUNT_MAX:
        return array("Q", range(first, first + n)).tobytes()
    return shifted(_IOTA[:n], first)


def _marks(lvl: int) -> bytes:
    return bytes(int(v >= lvl) for v in range(256))


_LEVEL_MARKS = [_marks(lvl) for lvl in range(256)]


def _lowers_to_ascii(data: bytes | bytearray) -> tuple[bytes, ...]:
    if data.isascii():  # most logs: one fast pass instead of a search per sequence
        return ()
    return tuple(seq for seq in LOWERS_TO_ASCII if seq in data)


def _searches(flt: Filter, chunk: Chunk) -> list[tuple[bytes, bool]] | None:
    """Substring searches (needle, folded) whose hits cover every possible match (None:
    check every event).

    One term's strings must appear as they are: the term whose shortest string is longest
    is searched, one search per OR'd value (Filter.search). Else a text needle is searched
    case-insensitively (folded: as in the lowered chunk, exact per
    filters.lowered_bytes_can_match); events holding one of the few characters that lower
    to ASCII are added to be checked.
    """
    if flt.search:
        return [(needle, False) for needle in flt.search]
    if flt.text_search:
        return [
            *((needle, True) for needle in flt.text_search),
            *((seq, False) for seq in chunk.special()),
        ]
    return None


IdRange = tuple[int, int]  # event ids from .. to, both included
ALL_IDS: IdRange = (0, 2**64 - 1)


class EventIds:
    """The server's event ids: one counter for all its rings, so ids increase in arrival
    order. It starts at the boot time in milliseconds times 2**20, so a restarted server
    goes on above the ids it gave before (unless it took more than a million events per
    millisecond); with a data dir, above every id it loaded too."""

    __slots__ = ("next",)

    def __init__(self, start: int | None = None) -> None:
        self.next = start if start is not None else (time.time_ns() // 1_000_000) << 20


class Ring:
    """A FIFO of events bounded in bytes; the oldest chunk goes first."""

    __slots__ = (
        "_chunk_bytes", "_chunk_size", "_chunks", "_ids", "aged", "aged_bytes", "aged_id",
        "bytes", "capacity", "env", "events", "evicted", "evicted_bytes", "evicted_id", "key",
        "max_age_ns", "svc",
    )  # fmt: skip

    def __init__(
        self,
        key: str,
        env: str | None,
        svc: str | None,
        capacity: int,
        ids: EventIds | None = None,
        max_age_ns: int = 0,
    ) -> None:
        self._ids = ids if ids is not None else EventIds()
        self.evicted_id = -1  # the newest id evicted: a reader after it missed events
        self.max_age_ns = max_age_ns  # 0: kept until the byte budget needs the room
        self.key = key
        self.env = env  # None: the overflow ring, which mixes keys
        self.svc = svc
        self.capacity = capacity
        self.bytes = 0
        self.events = 0
        # Evicted for any reason (events, and bytes as `bytes` counts them); of which by age.
        self.evicted = self.evicted_bytes = 0
        self.aged = self.aged_bytes = 0
        self.aged_id = -1  # the newest id evicted by age
        # At most 1/16 of the budget per chunk, so dropping one keeps ~94% of the events.
        self._chunk_size = max(1, min(MAX_CHUNK, capacity // 16))
        self._chunk_bytes = self._chunk_size  # the open chunk's; 0 once it has been open long
        self._chunks: deque[Chunk] = deque()

    def __len__(self) -> int:
        return self.events

    @property
    def last_id(self) -> int:
        """The id of the newest event held, or -1."""
        chunks = self._chunks
        return chunks[-1].ids[-1] if chunks and chunks[-1].ids else -1

    def append(self, t_ns: int, lvl: int, data: bytes, event_id: int | None = None) -> None:
        """Store one event; its id is the next of the store's unless given (a reload)."""
        chunks = self._chunks
        chunk = chunks[-1] if chunks else None
        if chunk is None or (len(chunk.data) + len(data) > self._chunk_bytes and chunk.ends):
            if chunk is not None:
                chunk.seal()
            chunk = Chunk()
            chunks.append(chunk)
            self.bytes += CHUNK_OVERHEAD
            self._chunk_bytes = self._chunk_size
        # The hot path of every write: appends to the open chunk, inlined on purpose.
        chunk.data += data  # the open chunk holds a bytearray
        chunk.ends.append(len(chunk.data))
        chunk.times.append(t_ns)
        if event_id is None:
            ids = self._ids
            event_id = ids.next
            ids.next += 1
        chunk.ids.append(event_id)
        chunk.lvls.append(lvl if 0 <= lvl < 256 else 0)  # type: ignore[union-attr]
        if t_ns < chunk.t_min:
            chunk.t_min = t_ns
        if t_ns > chunk.t_max:
            chunk.t_max = t_ns
        self.bytes += len(data) + RECORD_OVERHEAD
        self.events += 1
        if self.bytes > self.capacity:
            self._evict()

    def extend(
        self, data: bytes, ends: array[int], times: array[int], lvls: bytes, t_min: int, t_max: int
    ) -> None:
        """Append events stored back to back in `data` (`ends`: each one's end offset),
        as `append` would one by one; `t_min`/`t_max` bound their times."""
        chunks = self._chunks
        count = len(ends)
        start = offset = 0
        while start < count:
            chunk = chunks[-1] if chunks else None
            room = self._chunk_bytes - len(chunk.data) if chunk is not None else 0
            stop = bisect_right(ends, offset + room, start, count)
            if chunk is None or (stop == start and chunk.ends):
                if chunk is not None:
                    chunk.seal()
                chunks.append(Chunk())
                self.bytes += CHUNK_OVERHEAD
                self._chunk_bytes = self._chunk_size
                continue
            stop = max(stop, start + 1)  # an empty chunk takes an event of any size
            end = ends[stop - 1]
            chunk.ends.frombytes(shifted(ends[start:stop], len(chunk.data) - offset))
            chunk.data += memoryview(data)[offset:end]  # the open chunk holds a bytearray
            chunk.times.extend(times[start:stop])
            ids = self._ids
            chunk.ids.frombytes(_counting(ids.next, stop - start))
            ids.next += stop - start
            chunk.lvls += lvls[start:stop]
            chunk.t_min = min(chunk.t_min, t_min)  # bounds of the run: wider is still correct
            chunk.t_max = max(chunk.t_max, t_max)
            self.bytes += end - offset + RECORD_OVERHEAD * (stop - start)
            self.events += stop - start
            start, offset = stop, end
        self._evict()

    def _evict(self) -> None:
        chunks = self._chunks
        while self.bytes > self.capacity and len(chunks) > 1:
            self._drop_oldest()

    def _drop_oldest(self) -> int:
        """Evict the oldest chunk; the bytes it held."""
        old = self._chunks.popleft()
        old.dead = True
        if old.ids:
            self.evicted_id = old.ids[-1]
        size = len(old.data) + RECORD_OVERHEAD * len(old) + CHUNK_OVERHEAD
        self.bytes -= size
        self.evicted += len(old)
        self.evicted_bytes += size
        self.events -= len(old)
        return size

    def stamp(self, now_ns: int) -> None:
        """Note that every event held arrived by `now_ns`: the chunks that changed since the
        last stamp take it (the newest first; older ones are sealed and stamped already)."""
        for chunk in reversed(self._chunks):
            if chunk.seen == len(chunk):
                break
            chunk.seen = len(chunk)
            chunk.arrived = now_ns
            if chunk.opened == UNSEEN:
                chunk.opened = now_ns

    def sweep(self, now_ns: int) -> None:
        """Retention by age at `now_ns`: stamp, close an open chunk that has taken events
        for 1/AGE_SLICES of the age, and evict the chunks whose stamp is older than the
        age, the oldest first (chunks are in arrival order)."""
        max_age = self.max_age_ns
        if not max_age:
            return
        self.stamp(now_ns)
        chunks = self._chunks
        if chunks and now_ns - chunks[-1].opened >= max_age // AGE_SLICES:
            self._chunk_bytes = 0  # the next event opens a new chunk
        while chunks and chunks[0].arrived < now_ns - max_age:
            old = chunks[0]
            if old.ids:
                self.aged_id = old.ids[-1]
            self.aged += len(old)
            self.aged_bytes += self._drop_oldest()

    def scan(self, flt: Filter) -> Iterator[Hit]:
        """Matching events, newest first. Consume it without awaiting in between."""
        for chunk in reversed(self._chunks):
            yield from chunk_hits(chunk, flt)

    def cursor(
        self, flt: Filter, pause: Callable[[], Awaitable[None]], ids: IdRange = ALL_IDS
    ) -> RingCursor:
        """Matching events with ids in `ids`, newest first, found by `fill()` (at most a
        chunk, FILL_HITS, at a time), which awaits `pause()` between steps: the ring may
        change meanwhile (see RingCursor)."""
        return RingCursor(list(self._chunks), flt, pause, ids)


class RingCursor:
    """A query's view of a ring: the chunks it had when the query began. Ingest may evict
    some before the query reaches them; those are skipped (their events are gone), and
    events appended since are not seen (they are newer than the query). A chunk's hits
    are taken FILL_HITS at a time: the newest 100 of a chunk of 500 events slice and
    match 100 records, not 500."""

    __slots__ = ("_chunks", "_current", "_flt", "_ids", "_pause", "done", "hits")

    def __init__(
        self,
        chunks: list[Chunk],
        flt: Filter,
        pause: Callable[[], Awaitable[None]],
        ids: IdRange = ALL_IDS,
    ) -> None:
        self._chunks = chunks  # oldest first; taken from the end
        self._flt = flt
        self._ids = ids
        self._pause = pause
        self._current: Iterator[Hit] | None = None  # the hits of the chunk being read
        self.hits: deque[Hit] = deque()
        self.done = False

    async def fill(self) -> None:
        chunks = self._chunks
        while not self.hits and (chunks or self._current is not None):
            if self._current is None:
                chunk = chunks.pop()
                if chunk.dead:
                    continue
                self._current = chunk_hits(chunk, self._flt, self._ids)
            taken = list(islice(self._current, FILL_HITS))
            if len(taken) < FILL_HITS:
                self._current = None  # the chunk is read
            self.hits.extend(taken)
            await self._pause()
        self.done = not chunks and self._current is None


def chunk_hits(chunk: Chunk, flt: Filter, ids: IdRange = ALL_IDS) -> Iterator[Hit]:
    """The chunk's matching events with ids in `ids`, newest first, found as they are
    taken (a chunk only grows: what it held when this began stays as it was)."""
    since = flt.since_ns if flt.since_ns is not None else -(2**63)
    until = flt.until_ns if flt.until_ns is not None else 2**63 - 1
    if chunk.t_max < since or chunk.t_min > until:
        return
    lo, hi = ids
    if ids != ALL_IDS and (not chunk.ids or chunk.ids[-1] < lo or chunk.ids[0] > hi):
        return  # ids grow within a chunk
    exact = flt.needs_message
    lvl_min = flt.lvl
    times, lvls, ids_of = chunk.times, chunk.lvls, chunk.ids
    for i in chunk.candidates(flt):
        t_ns = times[i]
        if lvls[i] < lvl_min or not since <= t_ns <= until or not lo <= ids_of[i] <= hi:
            continue
        data = chunk.record(i)
        if not exact:
            yield t_ns, data, None, ids_of[i]
            continue
        if not flt.prefilter(data):
            continue
        msg = Msg.FromString(data)
        if flt.matches(msg):
            yield t_ns, data, msg, ids_of[i]
