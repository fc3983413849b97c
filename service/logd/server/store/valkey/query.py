"""Queries on the Valkey store: each ring read newest first with XREVRANGE, a page of
entries at a time, through the same Filter as the memory rings (level and time of each
event of an entry, `prefilter` on its stored bytes, then the exact match), merged by
event time. A range of event ids (`before=`, a tail's history) is a range of entry ids
(ids.py), widened to the entries that hold its ends and cut to it event by event.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from logd._pb.logd_pb2 import Msg
from logd.server.filters import Filter
from logd.server.store.ring import ALL_IDS, IdRange
from logd.server.store.scan import Hit
from logd.server.store.valkey.entries import newest_first
from logd.server.store.valkey.ids import entry, millisecond_start, number

if TYPE_CHECKING:
    from logd.server.store.valkey.client import Client

# Entries per XREVRANGE call: at most PAGE * ENTRY_DATA (1 MiB) of events in hand per ring.
PAGE = 64

_StreamEntry = tuple[bytes, dict[bytes, bytes]]  # replies are bytes: no decode_responses


class Cursor:
    """One ring read newest first, a page at a time, keeping only matching events;
    `name` gives an entry's event id."""

    def __init__(
        self,
        client: Client,
        key: bytes,
        flt: Filter,
        name: Callable[[bytes, int], int | str],
        ids: IdRange = ALL_IDS,
    ) -> None:
        self._client = client
        self._key = key
        self._flt = flt
        self._name = name
        self._ids = ids
        self._max = b"+" if ids[1] == ALL_IDS[1] else entry(ids[1])
        self._min = b"-" if ids[0] == 0 else millisecond_start(ids[0])
        self.hits: deque[Hit] = deque()
        self.done = ids[0] > ids[1]

    async def fill(self) -> None:
        flt, name, key = self._flt, self._name, self._key
        exact = flt.needs_message
        low, high = self._ids
        while not self.hits and not self.done:
            entries = cast(
                list[_StreamEntry],
                await self._client.xrevrange(key, self._max, self._min, count=PAGE),
            )
            self.done = len(entries) < PAGE
            if entries:
                self._max = b"(" + entries[-1][0]
            for entry_id, fields in entries:
                for event_id, t_ns, lvl, data in newest_first(number(entry_id), fields):
                    if lvl < flt.lvl or not flt.time_match(t_ns) or not low <= event_id <= high:
                        continue
                    if not exact:
                        self.hits.append((t_ns, data, None, name(key, event_id)))
                    elif flt.prefilter(data):
                        msg = Msg.FromString(data)
                        if flt.matches(msg):
                            self.hits.append((t_ns, data, msg, name(key, event_id)))
