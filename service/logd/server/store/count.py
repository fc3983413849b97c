"""GET /hits on the memory rings: matching events counted into a Tally, chunk by chunk,
giving the event loop back between chunks as queries do (scan.Yielder).

Where a chunk's events need no parsing (the filter is only level and time, and the group
is the level or the ring's own env/svc), counting is done on the chunk's level array: a
chunk inside the time range whose events all fall in one bucket costs one C-level
`bytes.count` per level. Other chunks are counted event by event, and only what the
filter or the group needs is parsed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable

from logd.events import MAX_LEVEL
from logd.server.filters import Filter
from logd.server.store.ring import Chunk, Ring
from logd.server.store.tally import Tally, level_name

_LEVEL_BYTES = [bytes([lvl]) for lvl in range(MAX_LEVEL + 1)]
_NAMES = [level_name(lvl) for lvl in range(256)]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_RUNS = 64  # bucket boundaries inside one chunk worth splitting it at


async def count_rings(
    rings: Iterable[Ring], flt: Filter, tally: Tally, pause: Callable[[], Awaitable[None]]
) -> None:
    """Count every matching event of `rings` into `tally`."""
    grouping = tally.grouping
    for ring in rings:
        ring_filter = flt.for_ring(ring.env, ring.svc)
        if ring_filter is None:
            continue
        group = grouping.of_ring(ring.env, ring.svc) if grouping is not None else None
        for chunk in list(ring._chunks):  # a snapshot: ingest may add and evict meanwhile
            if not chunk.dead:
                count_chunk(chunk, ring_filter, tally, group)
            await pause()


def count_chunk(chunk: Chunk, flt: Filter, tally: Tally, ring_group: str | None) -> None:
    """Count the chunk's matching events; `ring_group`: the group of all of them, when the
    ring's key says it (by env or svc)."""
    since = flt.since_ns if flt.since_ns is not None else INT64_MIN
    until = flt.until_ns if flt.until_ns is not None else INT64_MAX
    if chunk.t_max < since or chunk.t_min > until or not len(chunk):
        return
    grouping = tally.grouping
    by_level = grouping is not None and grouping.field == "lvl"
    parse = flt.needs_message or (grouping is not None and not by_level and ring_group is None)
    if not parse:
        group = None if by_level else ring_group
        if (
            since <= chunk.t_min
            and chunk.t_max <= until
            and _count_runs(chunk, flt.lvl, tally, group, by_level)
        ):
            return
        _count_times(chunk, flt.lvl, since, until, tally, ring_group, by_level)
        return
    times, lvls = chunk.times, chunk.lvls
    lvl_min = flt.lvl
    for i in chunk.candidates(flt):
        t_ns = times[i]
        if lvls[i] < lvl_min or not since <= t_ns <= until:
            continue
        tally.add_event(flt, t_ns, chunk.record(i), ring_group)


def _count_runs(
    chunk: Chunk, lvl_min: int, tally: Tally, group: str | None, by_level: bool
) -> bool:
    """Count a chunk that lies inside the time range by runs of events in one bucket, at C
    speed; False when its times are not in order across a bucket boundary (count them one
    by one then)."""
    first, last = tally.bucket(chunk.t_min), tally.bucket(chunk.t_max)
    if first == last:
        _count_levels(chunk, 0, len(chunk), chunk.t_min, lvl_min, tally, group, by_level)
        return True
    if last - first > MAX_RUNS:
        return False
    times = chunk.times.tolist()
    if times != sorted(times):  # two C-level passes; events mostly arrive in time order
        return False
    step, start = tally.step_ns, 0
    for idx in range(first + 1, last + 1):
        cut = bisect_left(times, idx * step, start)
        if cut > start:
            _count_levels(chunk, start, cut, times[start], lvl_min, tally, group, by_level)
        start = cut
    if start < len(times):
        _count_levels(chunk, start, len(times), times[start], lvl_min, tally, group, by_level)
    return True


def _count_levels(
    chunk: Chunk,
    start: int,
    end: int,
    t_ns: int,
    lvl_min: int,
    tally: Tally,
    group: str | None,
    by_level: bool,
) -> None:
    """Events start..end of the chunk are all in the bucket of `t_ns`: count them by level
    at C speed (one bytes.count per level)."""
    if not by_level and not lvl_min:
        tally.add(t_ns, group, end - start)
        return
    lvls = chunk.lvls
    if start == 0 and end == len(lvls):  # the usual case: the whole chunk
        counts = list(map(lvls.count, _LEVEL_BYTES))
    else:
        counts = [lvls.count(b, start, end) for b in _LEVEL_BYTES]
    high = end - start - sum(counts)  # levels past the enum (ingest stores none): above any
    if not by_level:
        kept = sum(counts[lvl_min:]) + high
        if kept:
            tally.add(t_ns, group, kept)
        return
    for lvl in range(lvl_min, MAX_LEVEL + 1):
        if counts[lvl]:
            tally.add(t_ns, _NAMES[lvl], counts[lvl])
    if high:
        tally.add(t_ns, _NAMES[MAX_LEVEL + 1], high)


def _count_times(
    chunk: Chunk,
    lvl_min: int,
    since: int,
    until: int,
    tally: Tally,
    group: str | None,
    by_level: bool,
) -> None:
    """Event by event on the time and level arrays (no parsing)."""
    add = tally.add
    names = _NAMES
    for t_ns, lvl in zip(chunk.times, chunk.lvls, strict=True):
        if lvl >= lvl_min and since <= t_ns <= until:
            add(t_ns, names[lvl] if by_level else group)
