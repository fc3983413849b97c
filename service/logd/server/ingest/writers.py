"""The table of recent writers: frames and lost frames per `sender` (PROTOCOL.md, "Loss
accounting and origin"). Pure: the clock is an argument.

The Python engine's table is `WriterTable`; the C engine keeps its own in C
(`_fastpath.WriterTable`), with the same rule and the same promises (both are checked
against each other by tests/test_writers.py). The rule, per sender:

- the first frame seen sets the highest seq and counts nothing (the server cannot tell
  a writer it has not heard of, or has forgotten, from one whose first frames were lost);
- a frame with a seq more than one above the highest counts `seq - highest - 1` lost;
- a later frame with a seq counted as lost takes one off, once: the seqs counted as lost
  are remembered in a bitmap of the WINDOW seqs below the highest; a late frame older than
  that is not taken off (its loss stays counted);
- a seq at or below the highest that was not counted as lost changes nothing.

Bounded: at most `capacity` writers (CAPACITY by default), the least recently heard
forgotten first; each holds its sender (8 bytes), host and svc (at most MAX_NAME bytes
each: accept.py refuses longer ones), a few counters and the bitmap (WINDOW bits): about
700 bytes each in Python, 450 in C (with its index), so under 3 MB for the whole table:
within the memory budget's fixed part (budget.FIXED_BYTES).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Protocol

from logd.events import format_time

SENDER_LEN = 8
WINDOW = 1024  # seqs below the highest whose loss a late frame can still take off
CAPACITY = 4096  # writers held; past this the least recently heard is forgotten
TOP = 10  # writers shown in /info, those with the most loss
U64 = 2**64 - 1  # totals saturate here (a hostile writer can claim 2**64 - 2 lost alone)
_MASK = (1 << WINDOW) - 1

# (sender, host, svc, frames, lost, last_seen_ns): one writer, as both tables list them
Entry = tuple[bytes, str, str, int, int, int]


class Writers(Protocol):
    """A table of writers as ingest and /info use it: WriterTable or the C engine's."""

    @property
    def capacity(self) -> int: ...
    @property
    def frames(self) -> int: ...
    @property
    def lost(self) -> int: ...
    @property
    def forgotten(self) -> int: ...
    @property
    def malformed(self) -> int: ...
    def __len__(self) -> int: ...
    def note(self, sender: bytes, seq: int, host: str | None, svc: str | None, now_ns: int) -> None:
        """One accepted WRITE frame carrying `sender`; host and svc of its first event (None
        for a WRITE without events: the writer's are kept)."""
        ...

    def entries(self) -> Iterable[Entry]: ...
    def most_lost(self, n: int) -> list[Entry]:
        """The `n` writers with the most loss, then the most recently heard, then the larger
        sender: the most first."""
        ...


class WriterTable:
    __slots__ = ("_writers", "capacity", "forgotten", "frames", "lost", "malformed")

    def __init__(self, capacity: int = CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("the writers table needs a capacity of at least 1")
        self.capacity = capacity
        self.frames = 0  # frames counted, of every writer ever held
        self.lost = 0  # frames lost, of every writer ever held, less those filled late
        self.forgotten = 0  # writers dropped to make room
        self.malformed = 0  # frames whose sender is not 8 bytes, or whose seq is 0
        # sender -> [highest, frames, lost, window, last_seen_ns, host, svc], oldest first
        self._writers: OrderedDict[bytes, list[Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._writers)

    def note(self, sender: bytes, seq: int, host: str | None, svc: str | None, now_ns: int) -> None:
        if len(sender) != SENDER_LEN or seq == 0:
            self.malformed += 1  # its events are stored; only the accounting skips it
            return
        self.frames += 1
        writers = self._writers
        w = writers.get(sender)
        if w is None:
            if len(writers) >= self.capacity:
                writers.popitem(last=False)
                self.forgotten += 1
            writers[sender] = [seq, 1, 0, 0, now_ns, host or "", svc or ""]
            return
        writers.move_to_end(sender)
        w[1] += 1
        w[4] = now_ns
        if host is not None:
            w[5], w[6] = host, svc or ""
        highest = w[0]
        if seq > highest:
            gap = seq - highest - 1
            if gap >= WINDOW:
                w[3] = _MASK
            else:  # bit i: seq (highest - 1 - i) was counted lost and has not come
                w[3] = ((w[3] << (gap + 1)) | ((1 << gap) - 1)) & _MASK
            w[0] = seq
            w[2] += gap
            self.lost = min(U64, self.lost + gap)
        elif seq < highest:
            bit = 1 << (highest - 1 - seq) if highest - 1 - seq < WINDOW else 0
            if w[3] & bit:
                w[3] &= ~bit
                w[2] -= 1
                self.lost = max(0, self.lost - 1)

    def entries(self) -> Iterable[Entry]:
        for sender, (_, frames, lost, _, seen, host, svc) in self._writers.items():
            yield sender, host, svc, frames, lost, seen

    def most_lost(self, n: int) -> list[Entry]:
        best = heapq.nlargest(n, self._writers.items(), key=lambda i: (i[1][2], i[1][4], i[0]))
        return [(sender, w[5], w[6], w[1], w[2], w[4]) for sender, w in best]


def writers_info(table: Writers, top: int = TOP) -> dict[str, Any]:
    """/info's `udp.writers`: the totals, and the `top` writers with the most loss (then the
    most recently heard)."""
    return {
        "tracked": len(table),
        "capacity": table.capacity,
        "frames": table.frames,
        "lost": table.lost,
        "forgotten": table.forgotten,
        "malformed": table.malformed,
        "most_lost": [
            {
                "sender": sender.hex(),
                "host": host,
                "svc": svc,
                "frames": frames,
                "lost": lost,
                "last_seen": format_time(seen),
            }
            for sender, host, svc, frames, lost, seen in table.most_lost(top)
        ],
    }
