"""scan.merge: newest first across rings by event time, ties to the ring listed first,
limit, offset and the byte bound; fed by cursors that find their hits a few at a time."""

from __future__ import annotations

import asyncio
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st
from logd._pb.logd_pb2 import Msg
from logd.server.store.scan import Hit, merge


class ListCursor:
    """A ring's hits (newest first) handed out `step` at a time, as a ring's chunks are."""

    def __init__(self, ring: int, times: list[int], step: int) -> None:
        self._left = [
            (t, Msg(txt=f"{ring}-{k}").SerializeToString(), None, f"{ring}-{k}")
            for k, t in enumerate(sorted(times, reverse=True))
        ]
        self._step = step
        self.hits: deque[Hit] = deque()
        self.done = False

    async def fill(self) -> None:
        self.hits.extend(self._left[: self._step])
        del self._left[: self._step]
        self.done = not self._left


rings = st.lists(st.lists(st.integers(0, 20), max_size=25), max_size=5)


@given(rings, st.integers(1, 4), st.integers(0, 60), st.integers(0, 10))
@settings(max_examples=300, deadline=None)
def test_merge_is_newest_first_ties_to_the_first_ring(
    times: list[list[int]], step: int, limit: int, offset: int
) -> None:
    want = sorted(
        (
            (t, ring, k)
            for ring, ts in enumerate(times)
            for k, t in enumerate(sorted(ts, reverse=True))
        ),
        key=lambda e: (-e[0], e[1], e[2]),
    )[offset : offset + limit]
    cursors = [ListCursor(ring, ts, step) for ring, ts in enumerate(times)]
    found = asyncio.run(merge(cursors, limit=limit, offset=offset))
    assert found.ids == [f"{ring}-{k}" for _, ring, k in want]
    assert [m.txt for m in found.events] == found.ids
    assert not found.truncated


def test_merge_stops_at_the_byte_bound_with_at_least_one_event() -> None:
    cursors = [ListCursor(0, [5, 4, 3], 1), ListCursor(1, [5, 2], 2)]
    size = len(Msg(txt="0-0").SerializeToString())
    found = asyncio.run(merge(cursors, limit=10, offset=0, max_bytes=2 * size))
    assert found.ids == ["0-0", "1-0"]
    assert found.truncated
    assert found.nbytes == 2 * size
    tiny = asyncio.run(merge([ListCursor(0, [1, 0], 1)], limit=10, offset=0, max_bytes=1))
    assert tiny.ids == ["0-0"]
    assert tiny.truncated
