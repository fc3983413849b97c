"""The stream entries of a ring: one entry holds a run of events, read back one by one.

An entry is what one append call added to one ring: `n` (its events), `t` (their times,
int64 ns), `l` (their levels, a byte each), `e` (where each event's bytes end in `d`,
uint32) and `d` (the serialised events back to back); numbers little-endian. One entry
per run instead of one per event: the backend's cost is per XADD and per script
argument, so a run of 40 events costs it about what one event did. Event ids follow
from the entry's (ids.py): the i-th event of entry `ms-seq` is `(ms << 20 | seq) + i`.
Entries of one event written before runs (`t`, `l` as decimal text, `d`) still read.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator

# An entry holds at most this many events and, past its first, this many bytes of them:
# a query's page of entries (query.py) and a trim (store.py) stay bounded per entry.
ENTRY_EVENTS = 256
ENTRY_DATA = 16 * 1024

_Fields = dict[bytes, bytes]


def native(packed: bytes, code: str) -> array[int]:
    """Little-endian numbers as an array (swapped on a big-endian node)."""
    out = array(code, packed)
    if sys.byteorder == "big":
        out.byteswap()
    return out


def events(first_id: int, fields: _Fields) -> Iterator[tuple[int, int, int, bytes]]:
    """(event id, t_ns, level, serialised Msg) of each event of an entry, oldest first."""
    if b"n" not in fields:  # one event, as entries were before runs
        yield first_id, int(fields[b"t"]), int(fields[b"l"]), fields[b"d"]
        return
    data, lvls = fields[b"d"], fields[b"l"]
    start = 0
    times = native(fields[b"t"], "q")
    for i, end in enumerate(native(fields[b"e"], "I")):
        yield first_id + i, times[i], lvls[i], data[start:end]
        start = end


def newest_first(first_id: int, fields: _Fields) -> list[tuple[int, int, int, bytes]]:
    """The same events, newest first (queries and /hits read rings that way)."""
    out = list(events(first_id, fields))
    out.reverse()
    return out


def count(fields: _Fields) -> int:
    """How many events an entry holds."""
    return int(fields.get(b"n", 1))


def little(values: array[int]) -> bytes:
    """An array's numbers little-endian, as entries hold them."""
    if sys.byteorder == "big":
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()
