"""TailHub: live fan-out of new events to subscribers, each with a bounded queue.

Ingest calls `publish` and never waits: it only appends the event to the hub's
pending list. A flush, run by the event loop at most once per `coalesce_s`,
renders each pending event's JSON once and hands the batch to every matching
subscriber; subscribers without a filter share the batch and its encoded bytes,
so a flush costs one wake-up and one write per subscriber however many events
it carries. Each subscriber's queue is bounded in events and in bytes; one whose
queue is full loses events, and the loss is counted and handed to it with its
next read, so the client can be told in-band how many events it missed. While a
subscriber's queue is full, a flush does not run its filter nor render anything
for it: every event published meanwhile counts as missed (an upper bound for a
filtered tail), so a reader that never reads costs O(1) per flush, whatever its
filter. Events waiting for a flush are bounded too (PENDING_MAX_BYTES).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from logd._pb.logd_pb2 import Msg
from logd.events import msg_to_json
from logd.server.filters import Filter

# Events published within this long after a flush wait for the next one: under load a
# flush then carries many events, and each subscriber is woken (and written to) once per
# flush instead of once per event. The first event after a quiet spell goes at once.
COALESCE_S = 0.002

# Events waiting for the next flush: past this many bytes (serialised), publish flushes
# at once, so a burst cannot pile up Msg objects between two turns of the loop.
PENDING_MAX_BYTES = 2 * 1024 * 1024
QUEUE_BYTES = 1024 * 1024

_render: Callable[[object], str] = json.JSONEncoder(ensure_ascii=False).encode
KEEPALIVE_NDJSON = b"\n"
KEEPALIVE_SSE = b": keep-alive\n\n"


def _line(msg: Msg, event_id: int | str) -> bytes:
    return _render(msg_to_json(msg, str(event_id))).encode()


class TooManyTails(Exception):
    """The cap on concurrent tail subscribers is reached."""


class TailClosed(Exception):
    """The hub closed this subscription (the server is shutting down)."""


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
            self._ndjson = b"\n".join(self.lines) + b"\n"
        return self._ndjson


def dropped_notice(dropped: int, *, sse: bool) -> bytes:
    notice = json.dumps({"dropped": dropped})
    return (f"event: dropped\ndata: {notice}\n\n" if sse else notice + "\n").encode()


class Subscription:
    __slots__ = (
        "_batches",
        "_dropped",
        "_hub",
        "_max_bytes",
        "_maxlen",
        "_queued",
        "_waiter",
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

    @property
    def full(self) -> bool:
        """No room, or it lost events since it last read: it is not keeping up, so a flush
        skips it (O(1)) until it reads again."""
        return (
            self._dropped > 0
            or self._queued >= self._maxlen
            or self.queued_bytes >= self._max_bytes
        )

    def _lose(self, n: int) -> None:
        self._dropped += n
        self._hub.dropped += n
        self._wake()  # tell it about the loss

    def _take(self, batch: _Batch) -> None:
        """Queue a flush's lines for this subscriber, as many as there is room for."""
        n = len(batch.lines)
        if self._queued + n > self._maxlen or self.queued_bytes + batch.nbytes > self._max_bytes:
            room, room_bytes = self._maxlen - self._queued, self._max_bytes - self.queued_bytes
            keep = 0
            for line in batch.lines[: max(room, 0)]:
                room_bytes -= len(line) + 1
                if room_bytes < 0:
                    break
                keep += 1
            self._lose(n - keep)
            if not keep:
                return
            batch = _Batch(batch.lines[:keep], batch.ids[:keep])
            n = keep
        self._batches.append(batch)
        self._queued += n
        self.queued_bytes += batch.nbytes
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            _set_if_pending(self._waiter)

    async def _wait(self, wait_s: float) -> None:
        if self._batches or self._dropped or self.closed:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(wait_s, _set_if_pending, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def next_chunk(self, wait_s: float, *, sse: bool) -> bytes:
        """Wait up to `wait_s` for events; return the bytes of a stream (NDJSON, or SSE
        when `sse`): a dropped notice first if events were lost, then the queued lines; a
        keep-alive if nothing came."""
        await self._wait(wait_s)
        if self.closed:
            raise TailClosed
        batches, self._batches = self._batches, []
        self._queued = self.queued_bytes = 0
        dropped, self._dropped = self._dropped, 0
        if not dropped and len(batches) == 1:
            return batches[0].encoded(sse=sse)  # the common case: bytes shared by all
        parts = [dropped_notice(dropped, sse=sse)] if dropped else []
        parts += [b.encoded(sse=sse) for b in batches]
        if not parts:
            return KEEPALIVE_SSE if sse else KEEPALIVE_NDJSON
        return b"".join(parts)

    def close(self) -> None:
        self.closed = True
        self._wake()
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
        return sum(sub.queued_bytes for sub in self.subscribers)

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
        for sub in self.subscribers:
            if sub.full:  # a reader that does not keep up: no matching, no rendering
                sub._lose(len(msgs))
                continue
            if sub.everything:
                if shared is None:
                    shared = _Batch([_line(m, i) for m, i in msgs], ids)
                    rendered = list(shared.lines)
                sub._take(shared)
                continue
            flt = sub.filter
            lines: list[bytes] = []
            line_ids: list[bytes] = []
            for k, (m, event_id) in enumerate(msgs):
                if flt.time_match(m.t.seconds * 1_000_000_000 + m.t.nanos) and flt.matches(m):
                    line = rendered[k]
                    if line is None:
                        line = rendered[k] = _line(m, event_id)
                    lines.append(line)
                    line_ids.append(ids[k])
            if lines:
                sub._take(_Batch(lines, line_ids))
        self.published += sum(line is not None for line in rendered)

    def close_all(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._pending = []
        self._pending_bytes = 0
        for sub in list(self.subscribers):
            sub.close()
