"""StreamFollower: one XREAD BLOCK reader per node, fanning new events out to its TailHub.

Every node's events reach the shared streams, so a tail on any node sees them
all. The reader runs only while this node has tail subscribers. While idle it
samples the backend's clock (`TIME`) every second; when a subscriber arrives it
reads from that sample, so a tail never misses an event written after it
subscribed (it may show up to a second of earlier ones).

On one Valkey server event ids are one order across rings (ids.py), and the reader
publishes in that order: every ring read from one position, the events of a reply's
entries (each holds a run, entries.py) sorted by id, and only up to the newest event
of a ring that XREAD cut off at COUNT entries (the rest comes with the next read). So
at any moment every event up to `position()` was published and every later one will
be: a tail's history is the events up to it, its live stream the ones after, with no
gap and no duplicate. Before such a tail subscribes, `reach` brings the position up to
what the backend holds, so that its history has the newest events. A ring another
node created is learnt after each read (one HGETALL) and read up to that reply's
newest id before anything is published, so its events keep their place in the order.

In cluster mode one XREAD may only name keys of one slot, and each ring has its own
slot, so the reader instead polls: one non-blocking XREAD per ring, pipelined (the
cluster client sends one batch per node), then a pause of POLL_S when nothing came.
A ring created later is read from the reader's start: all its entries are newer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from logd._pb.logd_pb2 import Msg
from logd.server.logsetup import QuietLogger
from logd.server.store.base import StoreUnavailable
from logd.server.store.valkey.entries import count, events
from logd.server.store.valkey.ids import SEQ_BITS, entry, in_cluster, number
from logd.server.tail import TailHub
from logd.server.tasks import wait_event

if TYPE_CHECKING:
    from logd.server.store.valkey.client import Client

log = logging.getLogger(__name__)

BLOCK_MS = 1000  # also how soon a ring created by another node is followed
COUNT = 64  # entries per stream per XREAD: at most COUNT * ENTRY_DATA (1 MiB) of events each
RETRY_S = 0.5
IDLE_S = 1.0
POLL_S = 0.1  # cluster mode: pause between polls that found nothing
REACH_S = 2.0  # at most this long for the tails to be fed up to a tail's history

_Entries = list[tuple[bytes, dict[bytes, bytes]]]
_Reply = list[tuple[bytes, _Entries]]


class StreamFollower:
    def __init__(
        self,
        *,
        client: Client,
        hub: TailHub,
        streams: Callable[[], list[bytes]],
        learn: Callable[[], Awaitable[None]],
    ) -> None:
        self._client = client
        self._hub = hub
        self._streams = streams
        self._learn = learn  # merge the rings other nodes registered
        self._ordered = not isinstance(client, RedisCluster)
        self._wanted = asyncio.Event()
        # Besides cancelling: redis-py can lose a cancel that lands mid-command (logd.server.tasks).
        self._stopping = False
        self._mark: int | None = None  # the backend's clock (ms), sampled every IDLE_S when idle
        self._pos: int | None = None  # one server: the id of the last event published
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []  # reach(id)
        self._quiet = QuietLogger(log)
        self.errors = 0

    async def sample(self) -> None:
        """Note the backend's clock: where a tail that starts now reads from."""
        with contextlib.suppress(RedisError, OSError):
            self._mark = await self._now()

    async def _now(self) -> int:
        seconds, micros = await self._client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def position(self) -> int:
        """One server: the id up to which every event was published to the tails, and
        after which every event will be; a tail subscribed now has its history up to it.
        Raises StoreUnavailable when the backend's clock was never read."""
        if self._pos is None:
            if self._mark is None:
                raise StoreUnavailable("the log store is unreachable; retry later")
            self._pos = (self._mark << SEQ_BITS) - 1  # the events from that millisecond on
        return self._pos

    async def reach(self, event_id: int) -> None:
        """One server: return once `position()` is at least `event_id`, the newest stored
        (or after REACH_S). With no subscriber nothing is owed to anyone: it moves there."""
        if len(self._hub) and (self._pos is None or self._pos < event_id):
            waiter = asyncio.get_running_loop().create_future()
            pending = (event_id, waiter)
            self._waiters.append(pending)
            try:
                await asyncio.wait({waiter}, timeout=REACH_S)
            finally:
                if pending in self._waiters:  # timed out: the list holds only tails waiting
                    self._waiters.remove(pending)
        if not len(self._hub) and (self._pos is None or self._pos < event_id):
            self._pos = event_id  # a read under way publishes nothing up to it

    def wake(self) -> None:
        """A subscriber arrived: start reading if idle."""
        self._wanted.set()

    def stop(self) -> None:
        """End `run` at its next turn (at most BLOCK_MS)."""
        self._stopping = True
        self._wanted.set()

    async def close(self) -> None:
        await self._client.aclose()

    async def run(self) -> None:
        ids: dict[bytes, bytes] = {}  # cluster: each ring's last entry read
        start: bytes | None = None
        while not self._stopping:
            if not len(self._hub):
                if self._pos is not None:  # the next subscriber starts about here, not earlier
                    self._mark = self._pos >> SEQ_BITS
                ids.clear()
                start = self._pos = None
                self._wanted.clear()
                if not await wait_event(self._wanted, IDLE_S):
                    await self.sample()
                continue
            try:
                if self._ordered:
                    await self._follow_in_order()
                    continue
                if start is None:
                    start = b"%d-0" % ((self._mark or await self._now()) - 1)
                for key in self._streams():
                    ids.setdefault(key, start)
                if not ids:
                    await asyncio.sleep(BLOCK_MS / 1000)
                    continue
                replies = await self._poll(ids)
            except (RedisError, OSError, StoreUnavailable) as err:
                self.errors += 1
                self._quiet.once("tail", "tail reader cannot read the store, retrying: %s", err)
                await asyncio.sleep(RETRY_S)
                continue
            for key, entries in replies:
                for entry_id, fields in entries:
                    ids[key] = entry_id
                    for event_id, _, _, data in events(number(entry_id), fields):
                        self._hub.publish(Msg.FromString(data), in_cluster(key, event_id))
            if not replies:
                await asyncio.sleep(POLL_S)

    async def _follow_in_order(self) -> None:
        """One read of every ring from `position()`, published in id order."""
        if self._mark is None:
            self._mark = await self._now()
        pos = self.position()
        keys = self._streams()
        if not keys:
            await asyncio.sleep(BLOCK_MS / 1000)
            await self._learn()
            return
        at = entry(pos)
        reply = cast(
            _Reply,
            await self._client.xread(dict.fromkeys(keys, at), count=COUNT, block=BLOCK_MS) or [],
        )
        await self._learn()
        known = set(keys)
        new = [key for key in self._streams() if key not in known]
        if new and reply:
            # Rings learnt now: their entries up to this reply's newest existed when it was
            # read, so they go in among its entries.
            newest = entry(max(_last(entries) for _, entries in reply if entries))
            pipe = self._client.pipeline(transaction=False)
            for key in new:
                pipe.xrange(key, b"(" + at, newest, count=COUNT)
            reply += [
                (key, entries) for key, entries in zip(new, await pipe.execute(), strict=True)
            ]
        # Where a ring was cut off at COUNT, later entries of other rings wait for the next read.
        limit = min((_last(e) for _, e in reply if len(e) >= COUNT), default=None)
        published = sorted(
            (event_id, data)
            for _, entries in reply
            for entry_id, fields in entries
            for event_id, _, _, data in events(number(entry_id), fields)
        )
        publish = self._hub.publish
        for event_id, data in published:
            if limit is not None and event_id > limit:
                break
            if self._pos is None or event_id > self._pos:  # reach() may have moved it on
                publish(Msg.FromString(data), event_id)
                self._pos = event_id
        if self._waiters:
            waiting, self._waiters = self._waiters, []
            for target, waiter in waiting:
                if self._pos is not None and self._pos >= target:
                    if not waiter.done():
                        waiter.set_result(None)
                else:
                    self._waiters.append((target, waiter))

    async def _poll(self, ids: dict[bytes, bytes]) -> _Reply:
        pipe = self._client.pipeline()
        for key, last in ids.items():
            pipe.xread({key: last}, count=COUNT)
        return [ring for reply in await pipe.execute() for ring in cast(_Reply, reply or [])]


def _last(entries: _Entries) -> int:
    """The id of the newest event of the newest of these entries (an entry holds a run)."""
    entry_id, fields = entries[-1]
    return number(entry_id) + count(fields) - 1
