"""One query over many rings: each ring read newest first through a cursor, merged by
event time, bounded in events and in bytes, giving the event loop back while it works.

A cursor holds the hits it has found so far (`hits`, newest first) and finds more with
`fill()`: the memory rings one chunk at a time, Valkey one page per round trip. The
merge awaits between steps once it has held the loop for SLICE_S, so ingest keeps its
rate during a scan of any length.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from logd._pb.logd_pb2 import Msg

SLICE_S = 0.002  # the longest the event loop is held between two awaits of a query

# (t_ns, serialised Msg, the message when already parsed, the event's id)
Hit = tuple[int, bytes, Msg | None, int | str]


class Cursor(Protocol):
    hits: deque[Hit]
    done: bool

    async def fill(self) -> None:
        """Find more hits, or set `done`."""
        ...


@dataclass(frozen=True, slots=True)
class Found:
    events: list[Msg]  # newest first
    ids: list[str]  # each event's id, beside it
    truncated: bool  # more matched, past max_bytes
    nbytes: int  # the events' serialised bytes


class Yielder:
    """Gives the event loop back once SLICE_S has passed since the last time."""

    __slots__ = ("_since",)

    def __init__(self) -> None:
        self._since = time.perf_counter()

    async def __call__(self) -> None:
        if time.perf_counter() - self._since >= SLICE_S:
            await asyncio.sleep(0)
            self._since = time.perf_counter()


async def merge(
    cursors: Sequence[Cursor], *, limit: int, offset: int, max_bytes: int | None = None
) -> Found:
    """Newest first across rings by event time: `limit` events after skipping `offset`,
    fewer when their serialised bytes would pass `max_bytes` (then `truncated`)."""
    for c in cursors:
        if not c.hits:
            await c.fill()
    heap = [(-c.hits[0][0], i) for i, c in enumerate(cursors) if c.hits]
    heapq.heapify(heap)
    out: list[Msg] = []
    ids: list[str] = []
    held = 0
    room = max_bytes if max_bytes is not None else 1 << 62
    while heap and len(out) < limit:
        _, i = heapq.heappop(heap)
        cursor = cursors[i]
        hits = cursor.hits
        # Take this ring's hits while they are newer than every other ring's next one: one
        # heap step per run of events instead of one per event (one ring: a single run).
        bound = -heap[0][0] if heap else None
        while hits and len(out) < limit:
            _t_ns, data, msg, event_id = hits.popleft()
            if offset:
                offset -= 1
            else:
                held += len(data)
                if held > room and out:
                    return Found(out, ids, truncated=True, nbytes=held - len(data))
                out.append(msg if msg is not None else Msg.FromString(data))
                ids.append(str(event_id))
            if not hits:
                await cursor.fill()
            if hits and bound is not None and hits[0][0] <= bound:
                break  # another ring's event is as new: the heap decides (ties as before)
        if hits:
            heapq.heappush(heap, (-hits[0][0], i))
    return Found(out, ids, truncated=False, nbytes=held)
