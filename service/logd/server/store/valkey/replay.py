"""SharedReplayGuard: a frame accepted by one logd node is a replay on every other.

A load balancer may send a client's frames (or an attacker's copies of them) to
any node, and each node's ReplayGuard only knows what it saw. So after the local
checks pass (size, key, MAC, time, local guard: synchronous, per frame), the
frames of one drained batch are checked together against the backend in one
round trip: `SET logd:mac:{tag}:<mac> "" NX PX <ttl>` for each, run by one script
call (packed by resp.py; in a cluster one call per hash tag, pipelined). The first
node to set a MAC wins, atomically; a node whose SET finds the key treats the frame
as a replay. One check is in flight at a time: the batches submitted meanwhile go
together in the next, and every batch is handed back in the order it came.

TTL: the MAC must be remembered as long as any node could still find the frame
fresh: `signed_at + max_age - now`, plus `max_future` as the clock skew allowed
between nodes. Cost per frame (measured on a local redis-server): one SET in the
batch's single round trip, one backend key of ~100-175 bytes for about
`max_age + max_future`, 10-20 us of this node's CPU, and one round trip of
latency (two when it waits for the check under way): ingest acts on the batch when
the reply comes.

If the backend does not answer (or the store already knows it is down: then
without waiting for it), the frames are accepted on the local guard alone
(counted as `unchecked` in /info): ingest keeps going through an outage,
at the price that within that outage a copy sent to another node within
`max_age` would be accepted there too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from logd.server.logsetup import QuietLogger
from logd.server.store.valkey import resp
from logd.server.tasks import STOP_S

if TYPE_CHECKING:
    from logd.server.store.valkey.client import Client

log = logging.getLogger(__name__)

PREFIX = b"logd:mac:"
# MACs are spread over 16 hash tags (`logd:mac:{7}:<mac>`) so that a cluster shares the
# load, and each script call touches one slot, as cluster mode requires.
SLOTS = 16
CHECK_MAX = 10_000  # frames a script call (the backend serves other clients between calls)
# One call per batch on one server (per tag in a cluster): redis-py spends ~50 us of
# client CPU per pipelined command. The answer is one string, "1" (fresh) or "0" per
# frame: one reply to parse, not one per frame.
CLAIM = """
local fresh = {}
for i = 1, #KEYS do
  fresh[i] = redis.call('SET', KEYS[i], '', 'NX', 'PX', ARGV[i]) and '1' or '0'
end
return table.concat(fresh)
"""
FRESH = ord("1")
_TAGS = [b"%s{%d}:" % (PREFIX, tag) for tag in range(SLOTS)]  # `logd:mac:{7}:` of each tag


class SharedReplayGuard:
    def __init__(
        self,
        *,
        client: Client,
        max_age_ns: int,
        max_future_ns: int,
        offline: Callable[[], bool] = lambda: False,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._client = client
        self._offline = offline  # the store knows the backend is down: do not wait for it
        self._keep_ns = max_age_ns + max_future_ns
        self._clock = clock
        # One check in flight at a time; batches submitted meanwhile wait and all go together
        # in the next round trip: fewer, bigger calls under load, one connection, and the
        # batches handed back in the order they came. What waits is what arrived during the
        # round trip under way, itself bounded by the client's timeout.
        self._queued: list[tuple[Sequence[tuple[bytes, int]], Callable[[list[bool]], None]]] = []
        self._running: asyncio.Task[None] | None = None
        self._quiet = QuietLogger(log)
        self.checked = 0
        self.replays = 0
        self.unchecked = 0
        self.round_trips = 0

    def submit(
        self, frames: Sequence[tuple[bytes, int]], done: Callable[[list[bool]], None]
    ) -> None:
        """Check (mac, signed_at_ns) pairs; `done` gets, in order, True for each frame that
        no node accepted before. Returns at once; `done` runs on the event loop, in the
        order of the calls (at once while the backend is known to be down and no check
        is under way)."""
        if self._running is None and self._offline():
            self._unchecked(len(frames), "the store backend is down")
            done([True] * len(frames))
            return
        self._queued.append((frames, done))
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._queued:
                taken, self._queued = self._queued, []
                fresh = await self._check([f for frames, _ in taken for f in frames])
                at = 0
                for frames, done in taken:
                    done(fresh[at : at + len(frames)])
                    at += len(frames)
        finally:
            self._running = None

    async def _check(self, frames: list[tuple[bytes, int]]) -> list[bool]:
        """One round trip for the frames; all fresh, unchecked, when the backend is away."""
        if self._offline():
            self._unchecked(len(frames), "the store backend is down")
            return [True] * len(frames)
        try:
            if isinstance(self._client, RedisCluster):
                fresh = await self._claim_per_slot(frames)
            else:
                fresh = await self._claim(frames)
        except (RedisError, OSError) as err:
            self._unchecked(len(frames), err)
            return [True] * len(frames)
        self.round_trips += 1
        self.checked += len(fresh)
        self.replays += fresh.count(False)
        return fresh

    def _key_and_ttl(self, mac: bytes, signed_at: int, now: int) -> tuple[bytes, int]:
        slot = mac[0] % SLOTS
        ttl_ms = max(1, -(-(signed_at + self._keep_ns - now) // 1_000_000))
        return b"%s{%d}:%s" % (PREFIX, slot, mac), ttl_ms

    async def _claim(self, frames: Sequence[tuple[bytes, int]]) -> list[bool]:
        """One server: one call per CHECK_MAX frames, packed here (resp.py), in one write;
        keys and ttls in comprehensions, no call per frame: this is per frame on the node."""
        keep = self._keep_ns - self._clock()
        commands = []
        for start in range(0, len(frames), CHECK_MAX):
            part = frames[start : start + CHECK_MAX]
            keys = [_TAGS[mac[0] % SLOTS] + mac for mac, _ in part]
            ttls = [b"%d" % max(1, -(-(signed_at + keep) // 1_000_000)) for _, signed_at in part]
            head = resp.command("EVAL", CLAIM, len(part), more=2 * len(part))
            commands.append(head + b"".join([resp.bulk(arg) for arg in keys + ttls]))
        replies = await resp.send(self._client, commands)
        return [first == FRESH for claimed in replies for first in claimed]

    async def _claim_per_slot(self, frames: Sequence[tuple[bytes, int]]) -> list[bool]:
        """A cluster: one call per hash tag (a call's keys must be in one slot)."""
        now = self._clock()
        groups: dict[int, tuple[list[int], list[bytes], list[int]]] = {}
        for i, (mac, signed_at) in enumerate(frames):
            key, ttl = self._key_and_ttl(mac, signed_at, now)
            group = groups.get(mac[0] % SLOTS)
            if group is None:
                group = groups[mac[0] % SLOTS] = ([], [], [])
            group[0].append(i)
            group[1].append(key)
            group[2].append(ttl)
        pipe = self._client.pipeline(transaction=False)
        for _, keys, ttls in groups.values():
            pipe.eval(CLAIM, len(keys), *keys, *ttls)
        replies = await pipe.execute()
        fresh = [False] * len(frames)
        for (indexes, _, _), claimed in zip(groups.values(), replies, strict=True):
            for i, first in zip(indexes, claimed, strict=True):
                fresh[i] = first == FRESH
        return fresh

    def _unchecked(self, frames: int, why: object) -> None:
        self.unchecked += frames
        self._quiet.once(
            "unchecked", "replay check across nodes unavailable, local guard only: %s", why
        )

    async def close(self) -> None:
        """Wait for the checks in flight and queued (their frames are then stored), for a
        bounded time: each is one round trip, limited by the client's timeout."""
        if self._running is not None:
            await asyncio.wait({self._running}, timeout=STOP_S)

    def info(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "replays": self.replays,
            "unchecked": self.unchecked,
            "round_trips": self.round_trips,
        }
