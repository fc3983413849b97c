"""TailHub: live fan-out of new events to subscribers, each with a bounded queue.

Ingest calls `publish` and never waits: a subscriber whose queue is full loses
the event, and the loss is counted and handed to it with its next read, so the
client can be told in-band how many events it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque

from logd._pb.logd_pb2 import Msg
from logd.events import msg_to_json
from logd.filters import Filter


class TooManyTails(Exception):
    """The cap on concurrent tail subscribers is reached."""


class TailClosed(Exception):
    """The hub closed this subscription (the server is shutting down)."""


class Subscription:
    __slots__ = (
        "_dropped",
        "_hub",
        "_lines",
        "_maxlen",
        "_wakeup",
        "closed",
        "everything",
        "filter",
    )

    def __init__(self, hub: TailHub, flt: Filter, maxlen: int) -> None:
        self._hub = hub
        self.filter = flt
        self.everything = flt == Filter()  # no filter: skip matching on every event
        self._maxlen = maxlen
        self._lines: deque[str] = deque()
        self._dropped = 0
        self._wakeup = asyncio.Event()
        self.closed = False

    def offer(self, line: str) -> None:
        if len(self._lines) >= self._maxlen:
            self._dropped += 1
            self._hub.dropped += 1
        else:
            self._lines.append(line)
        self._wakeup.set()

    async def next_batch(self, wait_s: float) -> tuple[list[str], int]:
        """Wait up to `wait_s` for events; return the queued JSON lines and how many were
        dropped. Both empty means nothing happened (time for a keep-alive)."""
        if not self._lines and not self._dropped and not self.closed:
            # asyncio.timeout, not wait_for: wait_for wraps the wait in a new task, and
            # this runs once per subscriber per ingest burst.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._wakeup.wait()
        if self.closed:
            raise TailClosed
        self._wakeup.clear()
        lines = list(self._lines)
        self._lines.clear()
        dropped, self._dropped = self._dropped, 0
        return lines, dropped

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()
        self._hub.discard(self)


class TailHub:
    def __init__(self, *, max_subscribers: int, queue_len: int) -> None:
        self.subscribers: set[Subscription] = set()  # read-only outside the hub
        self._max = max_subscribers
        self._queue_len = queue_len
        self.published = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.subscribers)

    def subscribe(self, flt: Filter) -> Subscription:
        if len(self.subscribers) >= self._max:
            raise TooManyTails
        sub = Subscription(self, flt, self._queue_len)
        self.subscribers.add(sub)
        return sub

    def discard(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)

    def publish(self, msg: Msg) -> None:
        """Offer one event to every matching subscriber; renders its JSON at most once."""
        if not self.subscribers:
            return
        line: str | None = None
        t_ns = msg.t.seconds * 1_000_000_000 + msg.t.nanos
        for sub in self.subscribers:
            if not sub.everything and not (sub.filter.time_match(t_ns) and sub.filter.matches(msg)):
                continue
            if line is None:
                line = json.dumps(msg_to_json(msg), ensure_ascii=False)
                self.published += 1
            sub.offer(line)

    def close_all(self) -> None:
        for sub in list(self.subscribers):
            sub.close()
