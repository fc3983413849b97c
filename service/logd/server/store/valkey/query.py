"""Queries on the Valkey store: each ring read newest first with XREVRANGE, a page at a
time, through the same Filter as the memory rings (level and time on the entry's
fields, `prefilter` on the stored bytes, then the exact match), merged by event time.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, cast

from logd._pb.logd_pb2 import Msg
from logd.server.filters import Filter
from logd.server.store.scan import Hit
from logd.server.store.valkey.client import event_id

if TYPE_CHECKING:
    from logd.server.store.valkey.client import Client

PAGE = 500  # entries per XREVRANGE call

_StreamEntry = tuple[bytes, dict[bytes, bytes]]  # replies are bytes: no decode_responses


class Cursor:
    """One ring read newest first, a page at a time, keeping only matching events."""

    def __init__(self, client: Client, key: bytes, flt: Filter) -> None:
        self._client = client
        self._key = key
        self._flt = flt
        self._max = b"+"
        self.hits: deque[Hit] = deque()
        self.done = False

    async def fill(self) -> None:
        flt = self._flt
        exact = flt.needs_message
        while not self.hits and not self.done:
            entries = cast(
                list[_StreamEntry],
                await self._client.xrevrange(self._key, self._max, b"-", count=PAGE),
            )
            self.done = len(entries) < PAGE
            if entries:
                self._max = b"(" + entries[-1][0]
            for entry_id, fields in entries:
                t_ns, lvl, data = int(fields[b"t"]), int(fields[b"l"]), fields[b"d"]
                if lvl < flt.lvl or not flt.time_match(t_ns):
                    continue
                if not exact:
                    self.hits.append((t_ns, data, None, event_id(self._key, entry_id)))
                elif flt.prefilter(data):
                    msg = Msg.FromString(data)
                    if flt.matches(msg):
                        self.hits.append((t_ns, data, msg, event_id(self._key, entry_id)))
