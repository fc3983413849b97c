"""SharedReplayGuard: a frame accepted by one logd node is a replay on every other.

A load balancer may send a client's frames (or an attacker's copies of them) to
any node, and each node's ReplayGuard only knows what it saw. So after the local
checks pass (size, key, MAC, time, local guard: synchronous, per frame), the
frames of one drained batch are checked together against the backend in one
round trip: `HSETNX logd:mac:{tag}:<bucket> <mac> ""` for each, run by one script
call (packed by resp.py; in a cluster one call per hash tag, pipelined). The first
node to set a MAC wins, atomically; a node whose HSETNX finds the field treats the
frame as a replay. One check is in flight at a time: the batches submitted meanwhile
go together in the next, and every batch is handed back in the order it came.

Buckets: a MAC goes in the hash of its frame's signing time, BUCKET_NS wide (the time
is in the frame, so every node picks the same bucket). A bucket must be remembered as
long as any node could still find one of its frames fresh: until its end plus
`max_age` plus `max_future` (the clock skew allowed between nodes); each call extends
its buckets' expiry to that, never shortens it. A MAC is then kept at most BUCKET_NS
longer than it must be, as a field of a hash instead of a key with its own expiry:
HSETNX took 1.5 us of the backend's CPU where `SET NX PX` took 2.0 us, and nothing is
left for the expiry cycle to delete one by one (redis-server 0.65 -> 0.56 us per event
of 16-event frames, bench/valkey_ingest.py). Cost per frame (measured on a local
redis-server): one HSETNX in the batch's single round trip, ~90 backend bytes (a key
took ~160) for about `max_age + max_future + BUCKET_NS`, 10-20 us of this node's CPU,
and one round trip of latency (two when it waits for the check under way): ingest acts
on the batch when the reply comes.

If the backend does not answer (or the store already knows it is down: then
without waiting for it), the frames are accepted on the local guard alone
(counted as `unchecked` in /info): ingest keeps going through an outage,
at the price that within that outage a copy sent to another node within
`max_age` would be accepted there too.
"""

from __future__ import annotations

import asyncio
import logging
import sys
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
# In a cluster MACs are spread over 16 hash tags (`logd:mac:{7}:<bucket>`) so that its
# nodes share the load, and each script call touches one slot, as cluster mode
# requires; one server has one tag, so that a call touches fewest buckets.
SLOTS = 16
BUCKET_NS = 250_000_000
CHECK_MAX = 10_000  # frames a script call (the backend serves other clients between calls)
# One call per batch on one server (per tag in a cluster): redis-py spends ~50 us of
# client CPU per pipelined command. KEYS: the call's buckets; ARGV: each bucket's expiry
# (ms from now), then two per frame: its bucket's number and its MAC. The answer is one
# string, "1" (fresh) or "0" per frame: one reply to parse, not one per frame.
CLAIM = """
local fresh, buckets = {}, #KEYS
for i = buckets + 1, #ARGV, 2 do
  local first = redis.call('HSETNX', KEYS[tonumber(ARGV[i])], ARGV[i + 1], '')
  fresh[#fresh + 1] = first == 1 and '1' or '0'
end
for b = 1, buckets do
  local keep = tonumber(ARGV[b])
  if redis.call('PTTL', KEYS[b]) < keep then redis.call('PEXPIRE', KEYS[b], keep) end
end
return table.concat(fresh)
"""
FRESH = ord("1")
# A submitted batch: its frames (mac, signed_at_ns), its callback and its events.
_Queued = tuple[Sequence[tuple[bytes, int]], Callable[[list[bool]], None], int]


class SharedReplayGuard:
    def __init__(
        self,
        *,
        client: Client,
        max_age_ns: int,
        max_future_ns: int,
        offline: Callable[[], bool] = lambda: False,
        room: Callable[[], int] = lambda: sys.maxsize,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._client = client
        self._offline = offline  # the store knows the backend is down: do not wait for it
        self._room = room  # events the store takes before it drops any (ValkeyStore.room)
        self._pending = 0  # events of the frames submitted and not yet handed back
        self._keep_ns = max_age_ns + max_future_ns
        self._clock = clock
        # One check in flight at a time; batches submitted meanwhile wait and all go together
        # in the next round trip: fewer, bigger calls under load, one connection, and the
        # batches handed back in the order they came. What waits is what arrived during the
        # round trip under way, itself bounded by the client's timeout.
        self._queued: list[_Queued] = []
        self._running: asyncio.Task[None] | None = None
        self._quiet = QuietLogger(log)
        self.checked = 0
        self.replays = 0
        self.unchecked = 0
        self.round_trips = 0

    def refuses(self, events: int) -> bool:
        """Whether frames of `events` events that passed the local checks are refused now,
        unchecked, as Reject.OVERLOAD: with the events of the checks under way and queued,
        they would pass the store's room (ValkeyStore.room), so they would only push
        older events out of its buffer after costing the backend a check each."""
        return self._pending + events > self._room()

    def submit(
        self,
        frames: Sequence[tuple[bytes, int]],
        done: Callable[[list[bool]], None],
        events: int = 0,
    ) -> None:
        """Check (mac, signed_at_ns) pairs, frames of `events` events; `done` gets, in
        order, True for each frame that no node accepted before. Returns at once; `done`
        runs on the event loop, in the order of the calls (at once while the backend is
        known to be down and no check is under way)."""
        if self._running is None and self._offline():
            self._unchecked(len(frames), "the store backend is down")
            done([True] * len(frames))
            return
        self._pending += events
        self._queued.append((frames, done, events))
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._queued:
                taken, self._queued = self._queued, []
                fresh = await self._check([f for frames, _, _ in taken for f in frames])
                at = 0
                for frames, done, events in taken:
                    self._pending -= events
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

    async def _claim(self, frames: Sequence[tuple[bytes, int]]) -> list[bool]:
        """One server: one call per CHECK_MAX frames, packed here (resp.py), in one write."""
        now = self._clock()
        commands = []
        for start in range(0, len(frames), CHECK_MAX):
            keys, args = self._call(frames[start : start + CHECK_MAX], b"0", now)
            head = resp.command("EVAL", CLAIM, len(keys), *keys, more=len(args))
            commands.append(head + b"".join([resp.bulk(arg) for arg in args]))
        replies = await resp.send(self._client, commands)
        return [first == FRESH for claimed in replies for first in claimed]

    async def _claim_per_slot(self, frames: Sequence[tuple[bytes, int]]) -> list[bool]:
        """A cluster: one call per hash tag (a call's keys must be in one slot)."""
        now = self._clock()
        groups: dict[int, list[int]] = {}  # tag -> its frames, by index
        for i, (mac, _) in enumerate(frames):
            groups.setdefault(mac[0] % SLOTS, []).append(i)
        pipe = self._client.pipeline(transaction=False)
        for tag, indexes in groups.items():
            keys, args = self._call([frames[i] for i in indexes], b"%d" % tag, now)
            pipe.eval(CLAIM, len(keys), *keys, *args)
        replies = await pipe.execute()
        fresh = [False] * len(frames)
        for indexes, claimed in zip(groups.values(), replies, strict=True):
            for i, first in zip(indexes, claimed, strict=True):
                fresh[i] = first == FRESH
        return fresh

    def _call(
        self, frames: Sequence[tuple[bytes, int]], tag: bytes, now: int
    ) -> tuple[list[bytes], list[bytes]]:
        """One script call's keys (its buckets) and arguments: each bucket's expiry in ms,
        then each frame's bucket number and MAC. The local guard let through only frames
        signed within max_age before now and max_future after: a few buckets."""
        numbers: dict[int, bytes] = {}  # bucket -> its number in this call
        pairs: list[bytes] = []
        for mac, signed_at in frames:
            bucket = signed_at // BUCKET_NS
            number = numbers.get(bucket)
            if number is None:
                number = numbers[bucket] = b"%d" % (len(numbers) + 1)
            pairs += (number, mac)
        keys = [b"%s{%s}:%d" % (PREFIX, tag, bucket) for bucket in numbers]
        keep = [
            b"%d" % max(1, -(-((bucket + 1) * BUCKET_NS + self._keep_ns - now) // 1_000_000))
            for bucket in numbers
        ]
        return keys, keep + pairs

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
