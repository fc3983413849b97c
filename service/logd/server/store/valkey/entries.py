"""The stream entries of a ring: one entry holds a run of events, read back one by one.

An entry is what one append call added to one ring: `n` (its events) and `z`, one LZ4
block (with its size before it, as `lz4.block` writes it) of the events' times (int64
ns), levels (a byte each), end offsets (uint32: where each event's bytes end) and bytes
back to back, numbers little-endian. One entry per run instead of one per event: the
backend's cost is per XADD and per script argument, so a run of 40 events costs it
about what one event did. Compressed, because what remains is per byte: Valkey's Lua
hashes every byte of every argument, then the backend copies it thrice (measured:
a third of its CPU per event gone). Event ids follow from the entry's (ids.py): the
i-th event of entry `ms-seq` is `(ms << 20 | seq) + i`. Entries written before this
(`t`, `l`, `e`, `d` uncompressed; or one event, `t` and `l` as decimal text, `d`)
still read.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator

import lz4.block

# An entry holds at most this many events and, past its first, this many bytes of them
# (uncompressed): a query's page of entries (query.py) and a trim (store.py) stay bounded
# per entry. A call's runs of one ring join up to these (store.py).
ENTRY_EVENTS = 256
ENTRY_DATA = 16 * 1024
# LZ4 encodes at most 255 bytes per byte of its block (a run of one byte): a `z` whose size
# prefix says more is not one that lz4 wrote, and nothing that size is allocated for it.
LZ4_RATIO_MAX = 255

_Fields = dict[bytes, bytes]


def native(packed: bytes, code: str) -> array[int]:
    """Little-endian numbers as an array (swapped on a big-endian node)."""
    out = array(code, packed)
    if sys.byteorder == "big":
        out.byteswap()
    return out


def pack(parts: list[bytes]) -> bytes:
    """An entry's `z` of its parts: the times, then levels, then ends (little-endian), then
    the events' bytes, each part maybe in pieces."""
    return lz4.block.compress(b"".join(parts))  # type: ignore[no-any-return]


def unpack(z: bytes) -> bytes:
    """What `pack` packed (ValueError if `z` cannot be LZ4's)."""
    if len(z) < 4 or int.from_bytes(z[:4], "little") > LZ4_RATIO_MAX * len(z):
        raise ValueError("a stream entry's `z` is not one logd wrote")
    try:
        return lz4.block.decompress(z)  # type: ignore[no-any-return]
    except lz4.block.LZ4BlockError:
        raise ValueError("a stream entry's `z` is not one logd wrote") from None


def events(first_id: int, fields: _Fields) -> Iterator[tuple[int, int, int, bytes]]:
    """(event id, t_ns, level, serialised Msg) of each event of an entry, oldest first."""
    if b"n" not in fields:  # one event, as entries were before runs
        yield first_id, int(fields[b"t"]), int(fields[b"l"]), fields[b"d"]
        return
    if b"z" in fields:
        n = int(fields[b"n"])
        packed = unpack(fields[b"z"])
        times, lvls = native(packed[: 8 * n], "q"), packed[8 * n : 9 * n]
        ends, data, start = native(packed[9 * n : 13 * n], "I"), packed, 13 * n
    else:  # uncompressed, as entries were before `z`
        times, lvls = native(fields[b"t"], "q"), fields[b"l"]
        ends, data, start = native(fields[b"e"], "I"), fields[b"d"], 0
    base = start  # the events' bytes start here in `data`
    for i, end in enumerate(ends):
        yield first_id + i, times[i], lvls[i], data[start : base + end]
        start = base + end


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
