"""Event ids on the Valkey store: the stream entry ids, read as one number.

On one Valkey server the append script (store.py) numbers every event of every ring
from one counter, `logd:last`: `ms-seq`, the backend's clock in milliseconds (never
going back) and a sequence within that millisecond, so ids increase in the order the
backend stored the events, across rings and nodes, and no two are equal. An id is
sent as `ms << SEQ_BITS | seq`, a whole number like the memory store's, and read back
into a stream range for `after=`, `before=` and a tail's history. A stream entry holds
a run of events (entries.py): its id is its first event's, the others follow it, and
a run never spans two milliseconds, so the entry holding an event is at or after
`ms-0` of that event's millisecond.

A cluster has no place every ring's append can reach atomically (each ring is in
its own slot), so there each ring numbers its events from its own counter
(`logd:last:{env/svc}`) and an event id is that number and its ring's crc32: unique,
but with no order across rings.
"""

from __future__ import annotations

import zlib

SEQ_BITS = 20  # sequence numbers within one millisecond: the script moves on to the next past it
SEQ_LIMIT = 1 << SEQ_BITS
COUNTER = b"logd:last"  # the last id given: "ms-seq"


def number(entry_id: bytes) -> int:
    """The event id of a stream entry id `ms-seq` (one Valkey server)."""
    ms, _, seq = entry_id.partition(b"-")
    return int(ms) << SEQ_BITS | int(seq)


def entry(event_id: int) -> bytes:
    """The stream entry id of an event id, for XRANGE bounds."""
    return b"%d-%d" % (event_id >> SEQ_BITS, event_id & (SEQ_LIMIT - 1))


def millisecond_start(event_id: int) -> bytes:
    """The lowest entry id that an entry holding `event_id` may have (a range's start)."""
    return b"%d-0" % (event_id >> SEQ_BITS)


def in_cluster(stream: bytes, event_id: int) -> str:
    """An event's id in a cluster: its number in its ring and the ring, unique across rings."""
    return f"{entry(event_id).decode()}-{zlib.crc32(stream):08x}"
