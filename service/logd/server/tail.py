"""TailHub: live fan-out of new events to subscribers, each with a bounded queue.

Ingest calls `publish` and never waits: it only appends the event to the hub's
pending list. A flush, run by the event loop at most once per `coalesce_s`,
renders each pending event's JSON once and hands the batch to every matching
subscriber; subscribers without a filter share the batch and its encoded bytes.
A subscriber that follows (its history sent) gets the batch written straight into
its connection's transport, so a flush costs one write per subscriber however many
events it carries, and wakes no task. Each subscriber's queue (then: what its
transport holds) is bounded in events and in bytes; one whose queue is full loses
events, and the loss is counted and written before its next events, so the client
is told in-band how many events it missed. While a subscriber's queue is full (or,
having lost events, it has not caught up), a flush does not run its filter nor render anything
for it: every event published meanwhile counts as missed (an upper bound for a
filtered tail), so a reader that never reads costs O(1) per flush, whatever its
filter. Events waiting for a flush are bounded too (PENDING_MAX_BYTES).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Protocol

from logd._pb.logd_pb2 import Msg
from logd.events import event_json
from logd.server.filters import Filter

# Events published within this long after a flush wait for the next one: under load a
# flush then carries many events, and each subscriber is written to once per flush
# instead of once per event. The first event after a quiet spell goes at once. 100 tails
# at 10k events/s (bench, 3 runs each): 2 ms gave p99 8.9-11.6 ms with the server's core
# 64-70 % busy, 1 ms gives 5.3-7.4 ms at 82-88 %.
COALESCE_S = 0.001

# Events waiting for the next flush: past this many bytes (serialised), publish flushes
# at once, so a burst cannot pile up Msg objects between two turns of the loop.
PENDING_MAX_BYTES = 2 * 1024 * 1024
QUEUE_BYTES = 1024 * 1024

KEEPALIVE_NDJSON = b"\n"
KEEPALIVE_SSE = b": keep-alive\n\n"


def _line(msg: Msg, event_id: int | str) -> bytes:
    return event_json(msg, str(event_id))


class TooManyTails(Exception):
    """The cap on concurrent tail subscribers is reached."""


class TailOutput(Protocol):
    """Where a following subscription writes: its connection's asyncio transport."""

    def write(self, data: bytes) -> None: ...
    def writelines(self, list_of_data: Iterable[bytes]) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def is_closing(self) -> bool: ...


class _Batch:
    """Rendered JSON lines of one flush (UTF-8) and their events' ids, and their NDJSON /
    SSE bytes (each SSE message with its `id:`), encoded at most once however many
    subscribers send them."""

    __slots__ = ("_ndjson", "_sse", "ids", "lines", "nbytes")

    def __init__(self, lines: list[bytes], ids: list[bytes]) -> None:
        self.lines = lines
        self.ids = ids
        self.nbytes = sum(map(len, lines)) + len(lines)  # as NDJSON
        self._ndjson: bytes | None = None
        self._sse: bytes | None = None

    def encoded(self, *, sse: bool) -> bytes:
        if sse:
            if self._sse is None:
                pairs = zip(self.ids, self.lines, strict=True)
                self._sse = b"".join([b"id: " + i + b"\ndata: " + x + b"\n\n" for i, x in pairs])
            return self._sse
        if self._ndjson is None:
            self._ndjson = b"\n".join([*self.lines, b""])
        return self._ndjson


def dropped_notice(dropped: int, *, sse: bool) -> bytes:
    notice = json.dumps({"dropped": dropped})
    return (f"event: dropped\ndata: {notice}\n\n" if sse else notice + "\n").encode()


def _fitting(lines: list[bytes], room: int, room_bytes: int) -> int:
    """How many of `lines`, oldest first, fit in `room` events and `room_bytes` (NDJSON)."""
    keep = 0
    for line in lines[: max(room, 0)]:
        room_bytes -= len(line) + 1
        if room_bytes < 0:
            break
        keep += 1
    return keep


class Subscription:
    """One live tail. Until `follow` attaches it to its connection (while /tail sends the
    history) a flush queues its lines here. Once it follows, a flush writes them straight
    into the connection's transport, whose buffer is then the queue: no task wakes per
    flush per subscriber, and the bounds (events, bytes) hold on what the transport has
    not yet handed to the kernel."""

    __slots__ = (
        "_batches",
        "_chunked",
        "_dropped",
        "_hub",
        "_in_flight",
        "_max_bytes",
        "_maxlen",
        "_out",
        "_queued",
        "_sse",
        "_waiter",
        "_wrote_at",
        "closed",
        "everything",
        "filter",
        "queued_bytes",
    )

    def __init__(self, hub: TailHub, flt: Filter, maxlen: int, max_bytes: int) -> None:
        self._hub = hub
        self.filter = flt
        self.everything = flt == Filter()  # no filter: skip matching on every event
        self._maxlen = maxlen
        self._max_bytes = max_bytes
        self._batches: list[_Batch] = []
        self._queued = 0  # lines in _batches
        self.queued_bytes = 0  # their bytes, as NDJSON
        self._dropped = 0
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        # Set by follow:
        self._out: TailOutput | None = None
        self._sse = False
        self._chunked = False
        self._in_flight = 0  # events written since the transport's buffer was last empty
        self._wrote_at = 0.0  # loop time of its last write: keep-alives come after a quiet spell

    @property
    def held_bytes(self) -> int:
        """What logd holds for it: its queue, or what its transport has not yet sent."""
        if self._out is None:
            return self.queued_bytes
        return self._out.get_write_buffer_size()

    def _room(self) -> tuple[int, int]:
        """Events and bytes it may take now."""
        if self._out is None:
            return self._maxlen - self._queued, self._max_bytes - self.queued_bytes
        held = self._out.get_write_buffer_size()
        if held == 0:
            self._in_flight = 0  # all it was sent is in the kernel's buffer or read
        return self._maxlen - self._in_flight, self._max_bytes - held

    @property
    def full(self) -> bool:
        """No room, or it lost events and has not caught up since: it is not keeping up, so
        a flush skips it (O(1)) until it reads again."""
        room, room_bytes = self._room()
        if room <= 0 or room_bytes <= 0:
            return True
        if not self._dropped:
            return False
        return self._out is None or self._out.get_write_buffer_size() > 0

    def _lose(self, n: int) -> None:
        self._dropped += n  # told in-band with its next write
        self._hub.dropped += n

    def _take(self, batch: _Batch) -> None:
        """Take a flush's lines, as many as there is room for."""
        n = len(batch.lines)
        room, room_bytes = self._room()
        if n > room or batch.nbytes > room_bytes:
            keep = _fitting(batch.lines, room, room_bytes)
            self._lose(n - keep)
            if not keep:
                return
            batch = _Batch(batch.lines[:keep], batch.ids[:keep])
            n = keep
        if self._out is not None:
            self._send([batch])
            self._in_flight += n
            return
        self._batches.append(batch)
        self._queued += n
        self.queued_bytes += batch.nbytes

    def _send(self, batches: list[_Batch]) -> None:
        """Write batches to the connection, a dropped notice first if events were lost."""
        out = self._out
        assert out is not None  # noqa: S101 (only once it follows)
        if out.is_closing():
            self.close()  # the client went away
            return
        dropped, self._dropped = self._dropped, 0
        parts = [dropped_notice(dropped, sse=self._sse)] if dropped else []
        parts += [b.encoded(sse=self._sse) for b in batches]  # bytes shared by all
        self._write(parts)
        self._wrote_at = asyncio.get_running_loop().time()

    def _write(self, parts: list[bytes]) -> None:
        """One write of `parts` (as one HTTP chunk when chunked), copying none of them."""
        out = self._out
        size = sum(map(len, parts))
        if not size or out is None or out.is_closing():  # empty: a chunk of 0 would end it
            return
        if self._chunked:
            out.writelines([b"%x\r\n" % size, *parts, b"\r\n"])
        elif len(parts) == 1:
            out.write(parts[0])
        else:
            out.writelines(parts)

    async def _wait(self, wait_s: float) -> None:
        """Until `wait_s` passes or it is closed."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(wait_s, _set_if_pending, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def follow(
        self, out: TailOutput, *, sse: bool, chunked: bool, keepalive_s: float
    ) -> None:
        """Write to `out` from now on (NDJSON, or SSE when `sse`; as HTTP chunks when
        `chunked`): first what was queued, then each flush's lines as they come, and a
        keep-alive after `keepalive_s` without a write. Returns once closed, by the hub
        or because the client went away."""
        loop = asyncio.get_running_loop()
        self._out, self._sse, self._chunked = out, sse, chunked
        self._wrote_at = loop.time()
        batches, self._batches = self._batches, []
        self._queued = self.queued_bytes = 0
        if batches or self._dropped:
            self._send(batches)
        while not self.closed:
            await self._wait(self._wrote_at + keepalive_s - loop.time())
            if self.closed:
                break
            if out.is_closing():
                self.close()
            elif self._dropped and not out.get_write_buffer_size():
                self._send([])  # caught up after a loss and nothing came since: tell it
            elif loop.time() - self._wrote_at >= keepalive_s:
                self._write([KEEPALIVE_SSE if sse else KEEPALIVE_NDJSON])
                self._wrote_at = loop.time()

    def close(self) -> None:
        self.closed = True
        if self._waiter is not None:
            _set_if_pending(self._waiter)
        self._hub.discard(self)


def _set_if_pending(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class TailHub:
    def __init__(
        self,
        *,
        max_subscribers: int,
        queue_len: int,
        queue_bytes: int = QUEUE_BYTES,
        coalesce_s: float = COALESCE_S,
    ) -> None:
        self.subscribers: set[Subscription] = set()  # read-only outside the hub
        self._max = max_subscribers
        self._queue_len = queue_len
        self._queue_bytes = queue_bytes
        self._coalesce_s = coalesce_s
        self._pending: list[tuple[Msg, int | str]] = []
        self._pending_bytes = 0
        self._flush_handle: asyncio.Handle | None = None
        self._last_flush = float("-inf")  # loop time
        self.published = 0
        self.dropped = 0
        self.flushes = 0

    @property
    def queued_bytes(self) -> int:
        """What all subscribers hold, as NDJSON bytes (shared batches counted for each)."""
        return sum(sub.held_bytes for sub in self.subscribers)

    def __len__(self) -> int:
        return len(self.subscribers)

    def subscribe(self, flt: Filter) -> Subscription:
        if len(self.subscribers) >= self._max:
            raise TooManyTails
        self.flush()  # what was published before it subscribed is not for it
        sub = Subscription(self, flt, self._queue_len, self._queue_bytes)
        self.subscribers.add(sub)
        return sub

    def discard(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)

    def publish(self, msg: Msg, event_id: int | str) -> None:
        """Queue one event for the next flush (O(1), whatever the subscribers)."""
        if not self.subscribers:
            return
        self._pending.append((msg, event_id))
        self._pending_bytes += msg.ByteSize()
        if self._pending_bytes >= PENDING_MAX_BYTES:
            self.flush()
            return
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            due = self._last_flush + self._coalesce_s
            if due <= loop.time():
                self._flush_handle = loop.call_soon(self.flush)
            else:
                self._flush_handle = loop.call_at(due, self.flush)

    def flush(self) -> None:
        """Hand every pending event to the subscribers it matches; each event's JSON is
        rendered at most once."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        msgs = self._pending
        if not msgs:
            return
        self._pending = []
        self._pending_bytes = 0
        self._last_flush = asyncio.get_running_loop().time()
        self.flushes += 1
        rendered: list[bytes | None] = [None] * len(msgs)
        ids = [str(event_id).encode() for _, event_id in msgs]
        shared: _Batch | None = None
        # Subscribers with the same filter (the page's default view, many tails of one
        # service) share its matching, its batch and the batch's bytes.
        groups: dict[Filter, list[Subscription]] = {}
        for sub in tuple(self.subscribers):  # a write can find a client gone and close it
            if sub.full:  # a reader that does not keep up: no matching, no rendering
                sub._lose(len(msgs))
            elif sub.everything:
                if shared is None:
                    shared = _Batch([_line(m, i) for m, i in msgs], ids)
                    rendered = list(shared.lines)
                sub._take(shared)
            else:
                groups.setdefault(sub.filter, []).append(sub)
        for flt, subs in groups.items():
            # Matched only while some subscriber of the filter has room: past that, the
            # events left unmatched count as lost for each (an upper bound), so tails that
            # fill up cost no more matching than what they can take.
            rooms = [sub._room() for sub in subs]
            room, room_bytes = max(r for r, _ in rooms), max(b for _, b in rooms)
            lines: list[bytes] = []
            line_ids: list[bytes] = []
            taken = nbytes = 0
            for m, event_id in msgs:
                if len(lines) >= room or nbytes >= room_bytes:
                    break
                taken += 1
                if flt.time_match(m.t.seconds * 1_000_000_000 + m.t.nanos) and flt.matches(m):
                    k = taken - 1
                    line = rendered[k]
                    if line is None:
                        line = rendered[k] = _line(m, event_id)
                    lines.append(line)
                    line_ids.append(ids[k])
                    nbytes += len(line) + 1
            batch = _Batch(lines, line_ids) if lines else None
            for sub in subs:
                if batch is not None:
                    sub._take(batch)
                if taken < len(msgs):
                    sub._lose(len(msgs) - taken)
        self.published += sum(line is not None for line in rendered)

    def close_all(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._pending = []
        self._pending_bytes = 0
        for sub in list(self.subscribers):
            sub.close()
