"""GET /hits on the Valkey store: each ring's stream read a page of entries at a time,
counted into the Tally on each event's time and level; the stored event is parsed only
when the filter or the group needs it."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from logd.server.filters import Filter
from logd.server.store.tally import Tally, level_name
from logd.server.store.valkey.entries import events
from logd.server.store.valkey.query import PAGE

if TYPE_CHECKING:
    from logd.server.store.valkey.client import Client

_StreamEntry = tuple[bytes, dict[bytes, bytes]]


async def count_stream(
    client: Client, key: bytes, names: tuple[str, str] | None, flt: Filter, tally: Tally
) -> None:
    """Count the stream's matching events; `names`: its (env, svc), None for overflow."""
    grouping = tally.grouping
    ring_group = grouping.of_ring(*names) if grouping is not None and names else None
    by_level = grouping is not None and grouping.field == "lvl"
    parse = flt.needs_message or (grouping is not None and not by_level and ring_group is None)
    newest = b"+"
    while True:
        entries = cast(list[_StreamEntry], await client.xrevrange(key, newest, b"-", count=PAGE))
        for _id, fields in entries:
            for _event_id, t_ns, lvl, data in events(0, fields):
                if lvl < flt.lvl or not flt.time_match(t_ns):
                    continue
                if not parse:
                    tally.add(t_ns, level_name(lvl) if by_level else ring_group)
                    continue
                tally.add_event(flt, t_ns, data, ring_group)
        if len(entries) < PAGE:
            return
        newest = b"(" + entries[-1][0]
