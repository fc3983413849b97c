"""StreamFollower: one XREAD BLOCK reader per node, fanning new events out to its TailHub.

Every node's events reach the shared streams, so a tail on any node sees them
all. The reader runs only while this node has tail subscribers. While idle it
samples the backend's clock (`TIME`) every second; when a subscriber arrives it
reads from that sample, so a tail never misses an event written after it
subscribed (it may show up to a second of earlier ones). A ring another node
creates later is read from that same start: all its entries are newer.

In cluster mode one XREAD may only name keys of one slot, and each ring has its own
slot, so the reader instead polls: one non-blocking XREAD per ring, pipelined (the
cluster client sends one batch per node), then a pause of POLL_S when nothing came.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from logd._pb.logd_pb2 import Msg
from logd.server.logsetup import QuietLogger
from logd.server.store.valkey.client import event_id
from logd.server.tail import TailHub
from logd.server.tasks import wait_event

if TYPE_CHECKING:
    from logd.server.store.valkey.client import Client

log = logging.getLogger(__name__)

BLOCK_MS = 1000  # also how soon a ring created by another node is followed
COUNT = 1000  # entries per stream per XREAD
RETRY_S = 0.5
IDLE_S = 1.0
POLL_S = 0.1  # cluster mode: pause between polls that found nothing

_Reply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]


class StreamFollower:
    def __init__(self, *, client: Client, hub: TailHub, streams: Callable[[], list[bytes]]) -> None:
        self._client = client
        self._hub = hub
        self._streams = streams
        self._wanted = asyncio.Event()
        # Besides cancelling: redis-py can lose a cancel that lands mid-command (logd.server.tasks).
        self._stopping = False
        self._mark: bytes | None = None  # the backend's clock, sampled every IDLE_S when idle
        self._quiet = QuietLogger(log)
        self.errors = 0

    async def sample(self) -> None:
        """Note the backend's clock: where a tail that starts now reads from."""
        with contextlib.suppress(RedisError, OSError):
            self._mark = await self._now()

    async def _now(self) -> bytes:
        """A stream ID just below the backend's clock now (IDs are its milliseconds)."""
        seconds, micros = await self._client.time()
        return f"{seconds * 1000 + micros // 1000 - 1}-0".encode()

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
        ids: dict[bytes, bytes] = {}
        start: bytes | None = None
        while not self._stopping:
            if not len(self._hub):
                ids.clear()
                start = None
                self._wanted.clear()
                if not await wait_event(self._wanted, IDLE_S):
                    await self.sample()
                continue
            try:
                if start is None:
                    start = self._mark or await self._now()
                for key in self._streams():
                    ids.setdefault(key, start)
                if not ids:
                    await asyncio.sleep(BLOCK_MS / 1000)
                    continue
                replies = await self._read(ids)
            except (RedisError, OSError) as err:
                self.errors += 1
                self._quiet.once("tail", "tail reader cannot read the store, retrying: %s", err)
                await asyncio.sleep(RETRY_S)
                continue
            for key, entries in replies:
                for entry_id, fields in entries:
                    ids[key] = entry_id
                    self._hub.publish(Msg.FromString(fields[b"d"]), event_id(key, entry_id))
            if not replies and isinstance(self._client, RedisCluster):
                await asyncio.sleep(POLL_S)

    async def _read(self, ids: dict[bytes, bytes]) -> _Reply:
        if not isinstance(self._client, RedisCluster):
            reply = await self._client.xread(ids, count=COUNT, block=BLOCK_MS)  # type: ignore[arg-type]  # bytes keys work
            return cast(_Reply, reply or [])
        pipe = self._client.pipeline()
        for key, last in ids.items():
            pipe.xread({key: last}, count=COUNT)
        return [ring for reply in await pipe.execute() for ring in cast(_Reply, reply or [])]
