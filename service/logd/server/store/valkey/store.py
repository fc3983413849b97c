"""The Valkey/Redis store: each ring is a capped Stream that every logd node shares.

Keys: `logd:ring:{env/svc}` is one ring (a Stream of `t`, `l`, `d` = event time,
level, serialised Msg), its name in a `{hash tag}` so that cluster mode keeps it
in one slot; `logd:rings` maps each stream to its `[env, svc]` (null: overflow).

Ingest stays synchronous and O(1): `write` appends to a bounded local buffer and
`end_batch` (once per drained batch of datagrams) starts a flush that sends the
buffer in one pipeline of script calls that run `XADD ... MAXLEN ~` for each event:
on one server one call for every ring, giving each entry its id from the shared
counter (ids.py); in a cluster one call per ring. One round trip per batch, never
one per event.
While the backend is down or slow the buffer absorbs events; when it is full the
oldest go first and are counted. A background loop retries, re-registers the
rings (a restarted backend may have lost them) and refreshes the per-ring
figures /info shows. Reads that cannot reach the backend raise StoreUnavailable.

Rings are capped by count, not bytes: Streams trim by length (`MAXLEN ~`, which
trims whole macro-nodes, so a ring holds its cap or a little more). The cap is
the ring's byte budget over TYPICAL_EVENT_BYTES.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import quote

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from logd._pb.logd_pb2 import Msg
from logd.server.filters import Filter
from logd.server.logsetup import QuietLogger
from logd.server.store.base import RingBudgets, RingStats, StoreStats, StoreUnavailable
from logd.server.store.memory import OVERFLOW_KEY, ring_key
from logd.server.store.ring import ALL_IDS, IdRange
from logd.server.store.scan import Found, merge
from logd.server.store.tally import Tally
from logd.server.store.valkey import resp
from logd.server.store.valkey.client import connect, redact
from logd.server.store.valkey.count import count_stream
from logd.server.store.valkey.ids import COUNTER, SEQ_LIMIT, in_cluster, number
from logd.server.store.valkey.query import Cursor
from logd.server.store.valkey.tail import StreamFollower
from logd.server.tail import Subscription, TailHub
from logd.server.tasks import stop_tasks

log = logging.getLogger(__name__)

# A typical event (service, function, a line of text, a few attributes) serialises to
# 150-250 bytes; a stream entry adds its ID and field names. Budget / 256 = entries kept.
TYPICAL_EVENT_BYTES = 256
# Events per round trip: all that is buffered, up to this. At saturation ingest holds
# the event loop between the steps of a flush, so each round trip must take all.
PIPELINE_MAX = 10_000
BATCH_BYTES = 4 * 1024 * 1024  # and at most this many bytes of events (one event at least)
# The buffer's bound in bytes, besides --store-buffer in events: events are up to a frame
# (64 KiB), so 200,000 of them could be 13 GB while the backend is down. It counts the
# events in the buffer and those of the round trip under way; ENTRY_BYTES is what one
# buffered event costs besides its bytes (its tuple and two ints).
BUFFER_BYTES = 64 * 1024 * 1024
ENTRY_BYTES = 120
CALL_MAX = 2000  # events per script call: the backend serves other clients between calls
RETRY_S = 0.5  # between reconnection attempts while the backend is down
REFRESH_S = 1.0  # ring list and /info figures
CLOSE_S = 5.0  # a stopping node's last flush; longer outages lose the buffer (logged)
REGISTRY = b"logd:rings"
# One call per ring per batch instead of one XADD command each: redis-py spends ~50 us of
# client CPU per pipelined command, ~3 us per event packed as script arguments. One ring
# per call: cluster mode needs a call's keys in one slot.
APPEND = """
for i = 2, #ARGV, 3 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
             't', ARGV[i], 'l', ARGV[i + 1], 'd', ARGV[i + 2])
end
return (#ARGV - 1) / 3
"""
# One server: every ring of a batch in one call, each entry's id from the counter in
# KEYS[1] (ids.py): the backend's clock in ms, never going back, and a sequence. KEYS[2..]
# are the rings, ARGV[1..#KEYS-1] their MAXLEN, then (ring number, t, l, d) per event.
# Without the counter (a new backend, or one that evicted it) ids go on above the newest
# entry of the call's rings: an id at or below a ring's newest is an error, and a script
# that fails half-way keeps what it added.
APPEND_NUMBERED = """
local rings = #KEYS - 1
local ms, seq = 0, -1
local last = redis.call('GET', KEYS[1])
if last then
  local a, b = string.match(last, '(%d+)-(%d+)')
  ms, seq = tonumber(a), tonumber(b)
else
  for r = 2, #KEYS do
    local top = redis.call('XREVRANGE', KEYS[r], '+', '-', 'COUNT', 1)[1]
    if top then
      local a, b = string.match(top[1], '(%d+)-(%d+)')
      a, b = tonumber(a), tonumber(b)
      if a > ms or (a == ms and b > seq) then ms, seq = a, b end
    end
  end
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if now_ms > ms then ms, seq = now_ms, -1 end
for i = rings + 1, #ARGV, 4 do
  seq = seq + 1
  if seq >= SEQ_LIMIT then ms, seq = ms + 1, 0 end
  local r = tonumber(ARGV[i])
  redis.call('XADD', KEYS[r + 1], 'MAXLEN', '~', ARGV[r], string.format('%d-%d', ms, seq),
             't', ARGV[i + 1], 'l', ARGV[i + 2], 'd', ARGV[i + 3])
end
redis.call('SET', KEYS[1], string.format('%d-%d', ms, seq))
return (#ARGV - rings) / 4
""".replace("SEQ_LIMIT", str(SEQ_LIMIT))
BACKEND_ERRORS = (RedisError, OSError)

_Entry = tuple[bytes, int, int, bytes]  # (stream key, t_ns, level, serialised Msg)


def stream_key(ring: str) -> bytes:
    """`logd:ring:{prod/api}`; braces and other odd characters of env/svc are %-escaped."""
    return b"logd:ring:{" + quote(ring, safe="/-_.:@").encode() + b"}"


class ValkeyStore:
    def __init__(
        self,
        *,
        url: str,
        password: str | None,
        ring_bytes: int,
        ring_sizes: Mapping[str, int],
        max_rings: int,
        max_tails: int,
        tail_queue: int,
        tail_bytes: int = 1024 * 1024,
        buffer_events: int,
        buffer_bytes: int = BUFFER_BYTES,
        timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.client = connect(url, password, timeout=timeout)
        self.capacity_for = RingBudgets(ring_bytes, ring_sizes)
        self._max_rings = max_rings
        self.hub = TailHub(max_subscribers=max_tails, queue_len=tail_queue, queue_bytes=tail_bytes)
        # One server numbers events across rings (ids.py): tails have history and resume.
        self.ordered = not isinstance(self.client, RedisCluster)
        self._follower = StreamFollower(
            client=connect(url, password, timeout=timeout + 5),
            hub=self.hub,
            streams=self._keys,
            learn=self._refresh_rings,
        )
        self._buffer: deque[_Entry] = deque()
        self._buffer_max = buffer_events
        self._bytes_max = buffer_bytes
        self._bytes = 0  # of the events buffered and in the round trip under way
        self._streams: dict[tuple[str, str], bytes] = {}  # this node's (env, svc) -> stream
        self._rings: dict[bytes, tuple[str, str] | None] = {}  # every known stream -> env, svc
        self._maxlen: dict[bytes, int] = {}
        self._unregistered: set[bytes] = set()
        self._flushing: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._figures: dict[bytes, tuple[int, int, int]] = {}  # stream -> length, bytes, evicted
        self._quiet = QuietLogger(log)
        self.down = False
        self._stopping = False
        self.writes = 0
        self.overflow_events = 0
        self.flushed = 0
        self.round_trips = 0
        self.dropped = 0
        self.errors = 0
        self.last_error: str | None = None

    # --- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        """Learn the rings, then run the retry/refresh loop and the tail reader. A backend
        that is down now is not fatal: ingest buffers until it answers."""
        try:
            await self.refresh()
        except BACKEND_ERRORS as err:
            self._failed(err)
        await self._follower.sample()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._maintain(), name="logd-valkey"),
            loop.create_task(self._follower.run(), name="logd-valkey-tail"),
        ]

    async def close(self) -> None:
        """Send what is buffered (for up to CLOSE_S seconds), then disconnect."""
        self._stopping = True  # _maintain ends at its next turn even if redis-py loses the cancel
        self._follower.stop()
        await stop_tasks(self._tasks)
        await self.send_all(within_s=CLOSE_S)
        if self._buffer:
            log.error("could not send the last events to the store count=%d", len(self._buffer))
        await self.client.aclose()
        await self._follower.close()

    async def send_all(self, within_s: float | None = None) -> None:
        """Return once everything buffered so far is in the backend (retrying meanwhile), or
        after about `within_s` seconds (a round trip under way may add the client's timeout)."""
        loop = asyncio.get_running_loop()
        deadline = None if within_s is None else loop.time() + within_s

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - loop.time())

        while self._buffer and left() != 0.0:
            if self._flushing is not None:
                await asyncio.wait({self._flushing}, timeout=left())
            elif not await self._flush():
                await asyncio.sleep(min(RETRY_S, left() or RETRY_S))

    # --- writing -------------------------------------------------------------
    def write(self, msg: Msg, t_ns: int) -> None:
        key = self._streams.get((msg.env, msg.svc))
        if key is None:
            key = self._stream_for(msg.env, msg.svc)
        data = msg.SerializeToString()
        self._bytes += len(data) + ENTRY_BYTES
        buffer = self._buffer
        buffer.append((key, t_ns, msg.lvl, data))
        self.writes += 1
        if len(buffer) > self._buffer_max or self._bytes > self._bytes_max:
            self._drop_oldest()
            self._quiet.once("dropped", "store buffer full: dropping the oldest buffered events")

    def _drop_oldest(self) -> None:
        """Drop the oldest buffered events until the buffer is within both its bounds."""
        buffer = self._buffer
        while buffer and (len(buffer) > self._buffer_max or self._bytes > self._bytes_max):
            self._bytes -= len(buffer.popleft()[3]) + ENTRY_BYTES
            self.dropped += 1

    def _stream_for(self, env: str, svc: str) -> bytes:
        key = stream_key(ring_key(env, svc))
        if key not in self._rings and len(self._rings) >= self._max_rings:
            self.overflow_events += 1  # counted per event, like the memory store
            return self._register(stream_key(OVERFLOW_KEY), OVERFLOW_KEY, None)
        self._streams[env, svc] = self._register(key, ring_key(env, svc), (env, svc))
        return key

    def _register(self, key: bytes, ring: str, names: tuple[str, str] | None) -> bytes:
        if key not in self._maxlen:
            self._maxlen[key] = max(1, self.capacity_for(ring) // TYPICAL_EVENT_BYTES)
            self._rings[key] = names
            self._unregistered.add(key)
        return key

    def end_batch(self) -> None:
        if self._buffer and self._flushing is None and not self.down:
            self._flushing = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        try:
            while self._buffer and await self._flush():
                pass
        finally:
            self._flushing = None

    async def _flush(self) -> bool:
        """Send the buffer (up to PIPELINE_MAX events or BATCH_BYTES) in one round trip; False
        if it failed (the events go back to the front of the buffer)."""
        buffer = self._buffer
        batch = [buffer.popleft()]
        size = len(batch[0][3])
        while buffer and len(batch) < PIPELINE_MAX and size < BATCH_BYTES:
            batch.append(buffer.popleft())
            size += len(batch[-1][3])
        registering = list(self._unregistered)
        try:
            if self.ordered:
                commands = [
                    resp.command("HSET", REGISTRY, key, json.dumps(self._rings.get(key)))
                    for key in registering
                ]
                await resp.send(self.client, commands + self._append_numbered(batch))
            else:
                pipe = self.client.pipeline(transaction=False)
                for key in registering:
                    pipe.hset(REGISTRY, key, json.dumps(self._rings.get(key)))
                self._append_per_ring(pipe, batch)
                await pipe.execute()
        except BACKEND_ERRORS as err:
            self._failed(err)
            buffer.extendleft(reversed(batch))
            self._drop_oldest()
            return False
        self._bytes -= size + ENTRY_BYTES * len(batch)
        self._unregistered.difference_update(registering)
        self.flushed += len(batch)
        self.round_trips += 1
        return True

    def _append_numbered(self, batch: list[_Entry]) -> list[bytes]:
        """One server: one call per CALL_MAX events, every ring in it, packed here."""
        commands = []
        for start in range(0, len(batch), CALL_MAX):
            rings: dict[bytes, bytes] = {}  # stream -> its number in this call, packed
            events = []
            for key, t_ns, lvl, data in batch[start : start + CALL_MAX]:
                ring = rings.get(key)
                if ring is None:
                    ring = rings[key] = resp.bulk(b"%d" % (len(rings) + 1))
                t, level = b"%d" % t_ns, b"%d" % lvl
                events.append(
                    b"%s$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
                    % (ring, len(t), t, len(level), level, len(data), data)
                )
            head = resp.command(
                "EVAL",
                APPEND_NUMBERED,
                1 + len(rings),
                COUNTER,
                *rings,
                *(self._maxlen[key] for key in rings),
                more=4 * len(events),  # an event's four arguments
            )
            commands.append(head + b"".join(events))
        return commands

    def _append_per_ring(self, pipe: Any, batch: list[_Entry]) -> None:
        """A cluster: one call per ring (a call's keys must be in one slot)."""
        groups: dict[bytes, list[bytes | int]] = {}
        for key, t_ns, lvl, data in batch:
            args = groups.get(key)
            if args is None:
                args = groups[key] = [self._maxlen[key]]
            args += (t_ns, lvl, data)
            if len(args) > 3 * CALL_MAX:
                pipe.eval(APPEND, 1, key, *args)
                del groups[key]
        for key, args in groups.items():
            pipe.eval(APPEND, 1, key, *args)

    # --- background ----------------------------------------------------------
    async def _maintain(self) -> None:
        while not self._stopping:
            await asyncio.sleep(RETRY_S if self.down else REFRESH_S)
            try:
                await self.refresh()
            except BACKEND_ERRORS as err:
                self._failed(err)
                continue
            if self.down:
                log.info("store backend answers again; sending %d buffered events", len(self))
                self.down = False
                self._unregistered.update(self._rings)  # a restarted backend may have lost them
            self.end_batch()

    def __len__(self) -> int:
        return len(self._buffer)

    async def refresh(self) -> None:
        """Merge the shared ring list, then read each ring's length, size and evictions."""
        await self._refresh_rings()
        keys = list(self._rings)
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.xinfo_stream(key)
            pipe.memory_usage(key)
        replies = await pipe.execute(raise_on_error=False)
        figures = {}
        for i, key in enumerate(keys):
            info, size = replies[2 * i], replies[2 * i + 1]
            if isinstance(info, dict):
                length = int(info.get("length", 0))
                added = int(info.get("entries-added", length) or length)
                figures[key] = (length, int(size or 0), added - length)
        self._figures = figures

    def _failed(self, err: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(err).__name__}: {err}"
        if not self.down:
            log.error(
                "store backend %s unreachable, buffering up to %d events: %s",
                redact(self.url),
                self._buffer_max,
                self.last_error,
            )
        self.down = True

    def _keys(self) -> list[bytes]:
        return list(self._rings)

    # --- reading -------------------------------------------------------------
    async def query(
        self,
        flt: Filter,
        *,
        limit: int,
        offset: int,
        max_bytes: int | None = None,
        ids: IdRange = ALL_IDS,
    ) -> Found:
        """Matching events, newest first; `ids`: only those with ids in that range (one
        server: a cluster's ids have no order)."""
        name = _numbered if self.ordered else in_cluster
        try:
            await self._refresh_rings()
            cursors = []
            for key, names in list(self._rings.items()):
                ring_filter = flt.for_ring(*names) if names else flt
                if ring_filter is not None:
                    cursors.append(Cursor(self.client, key, ring_filter, name, ids))
            await asyncio.gather(*(c.fill() for c in cursors))
            return await merge(cursors, limit=limit, offset=offset, max_bytes=max_bytes)
        except BACKEND_ERRORS as err:
            self._failed(err)
            raise StoreUnavailable("the log store is unreachable; retry later") from None

    async def catch_up(self) -> None:
        """Before a tail with history subscribes: the tails are fed up to what is stored."""
        if not self.ordered:
            return
        try:
            last = cast(bytes | None, await self.client.get(COUNTER))
        except BACKEND_ERRORS as err:
            self._failed(err)
            raise StoreUnavailable("the log store is unreachable; retry later") from None
        if last is not None:
            await self._follower.reach(number(last))

    def last_id(self) -> int:
        """The id up to which a tail that subscribed now has its history (tail.py)."""
        return self._follower.position()

    async def evicted_after(self, flt: Filter, after: int) -> bool:
        """Whether a ring that `flt` may match trimmed events that may be newer than id
        `after`: it trimmed some and its oldest entry is newer. A Stream does not keep the
        newest id it trimmed, so a ring that trimmed only older events says so too."""
        try:
            await self._refresh_rings()
            keys = [
                key
                for key, names in self._rings.items()
                if not names or flt.for_ring(*names) is not None
            ]
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.xinfo_stream(key)
            replies = await pipe.execute(raise_on_error=False)
        except BACKEND_ERRORS as err:
            self._failed(err)
            raise StoreUnavailable("the log store is unreachable; retry later") from None
        for info in replies:
            if not isinstance(info, dict):
                continue  # no such stream (yet): nothing trimmed
            length = int(info.get("length", 0))
            if int(info.get("entries-added", length) or length) > length:
                first = info.get("first-entry")
                if not first or number(first[0]) > after + 1:
                    return True
        return False

    async def hits(self, flt: Filter, tally: Tally) -> None:
        try:
            await self._refresh_rings()
            for key, names in list(self._rings.items()):
                ring_filter = flt.for_ring(*names) if names else flt
                if ring_filter is not None:
                    await count_stream(self.client, key, names, ring_filter, tally)
        except BACKEND_ERRORS as err:
            self._failed(err)
            raise StoreUnavailable("the log store is unreachable; retry later") from None

    async def _refresh_rings(self) -> None:
        """Learn the rings other nodes created (one HGETALL)."""
        registry = cast(dict[bytes, bytes], await self.client.hgetall(REGISTRY))
        for key, value in registry.items():
            if key not in self._rings:
                names = json.loads(value)
                if names:
                    self._register(key, ring_key(*names), (names[0], names[1]))
                else:
                    self._register(key, OVERFLOW_KEY, None)
                self._unregistered.discard(key)

    def subscribe(self, flt: Filter) -> Subscription:
        if self.down:
            raise StoreUnavailable("the log store is unreachable; retry later")
        sub = self.hub.subscribe(flt)
        self._follower.wake()
        return sub

    def stats(self) -> StoreStats:
        rings = []
        for key, names in self._rings.items():
            ring = ring_key(*names) if names else OVERFLOW_KEY
            length, size, evicted = self._figures.get(key, (0, 0, 0))
            rings.append(RingStats(ring, length, size, self.capacity_for(ring), evicted))
        return StoreStats(
            writes=self.writes,
            overflow_events=self.overflow_events,
            rings=rings,
            backend=self.info(),
        )

    def info(self) -> dict[str, Any]:
        return {
            "url": redact(self.url),
            "reachable": not self.down,
            "buffered_events": len(self._buffer),
            "buffer_capacity": self._buffer_max,
            "buffered_bytes": self._bytes,
            "buffer_capacity_bytes": self._bytes_max,
            "dropped_events": self.dropped,
            "sent_events": self.flushed,
            "round_trips": self.round_trips,
            "errors": self.errors,
            "last_error": self.last_error,
            "tail_reader_errors": self._follower.errors,
            "typical_event_bytes": TYPICAL_EVENT_BYTES,
        }


def _numbered(_stream: bytes, entry_id: bytes) -> int:
    return number(entry_id)
