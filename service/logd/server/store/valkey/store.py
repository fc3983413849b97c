"""The Valkey/Redis store: each ring is a capped Stream that every logd node shares.

Keys: `logd:ring:{env/svc}` is one ring, a Stream whose entries each hold a run of
events (entries.py), its name in a `{hash tag}` so that cluster mode keeps it in one
slot; `logd:size:{env/svc}`, in the same slot, counts the ring's events, bytes and
evicted events, and `logd:runs:{env/svc}` lists its entries' sizes for trimming;
`logd:rings` maps each stream to its `[env, svc]` (null: overflow).

Ingest stays synchronous and O(1) per event: `write` (one event) and `write_run` (a
run of one ring from the C engine, as its bytes) append to a bounded local buffer,
and `end_batch` (once per drained batch of datagrams) starts a flush that sends the
buffer in one round trip of script calls: on one server one call for every ring,
numbering the events from the shared counter (ids.py); in a cluster one call per
ring. Each run becomes one stream entry (single events of a ring are packed into
runs here), so the backend's work is per run, not per event.
While the backend is down or slow the buffer absorbs events; when it is full the
oldest go first and are counted. A background loop retries, re-registers the
rings (a restarted backend may have lost them) and refreshes the per-ring
figures /info shows. Reads that cannot reach the backend raise StoreUnavailable.

Rings are capped in events and in bytes, never past either: a ring over its byte
budget over TYPICAL_EVENT_BYTES events, or over its byte budget of entry payload (the
events' bytes, times, levels and offsets), loses its oldest entries until it is 1/16
below both, so that trims are rare; the newest entry always stays.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import sys
from array import array
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
from logd.server.store.packed import shifted
from logd.server.store.ring import ALL_IDS, IdRange
from logd.server.store.scan import Found, merge
from logd.server.store.tally import Tally
from logd.server.store.valkey import resp
from logd.server.store.valkey.client import connect, redact
from logd.server.store.valkey.count import count_stream
from logd.server.store.valkey.entries import ENTRY_DATA, ENTRY_EVENTS, little, pack
from logd.server.store.valkey.ids import COUNTER, SEQ_LIMIT, in_cluster, number
from logd.server.store.valkey.query import Cursor
from logd.server.store.valkey.tail import StreamFollower
from logd.server.tail import Subscription, TailHub
from logd.server.tasks import stop_tasks

log = logging.getLogger(__name__)

# A typical event (service, function, a line of text, a few attributes) serialises to
# 150-250 bytes; its time, level and offset add 13. Budget / 256 = events kept.
TYPICAL_EVENT_BYTES = 256
# Events per round trip: all that is buffered, up to this. At saturation ingest holds
# the event loop between the steps of a flush, so each round trip must take all.
PIPELINE_MAX = 10_000
BATCH_BYTES = 4 * 1024 * 1024  # and at most this many bytes of events (one run at least)
# The buffer's bound in bytes, besides --store-buffer in events: events are up to a frame
# (64 KiB), so 200,000 of them could be 13 GB while the backend is down. It counts the
# runs in the buffer and those of the round trip under way; RUN_BYTES is what one
# buffered run costs besides its bytes (its tuple and its bytes objects).
BUFFER_BYTES = 64 * 1024 * 1024
RUN_BYTES = 200
# Round trips start at least this far apart: the backend's and this node's cost is mostly
# per call (Lua's, redis-py's, the syscalls), so calls carrying 2 ms of events instead of
# what came during one round trip cost each side about a third less per event (measured:
# bench/valkey_ingest.py). Events wait up to this long more before readers see them; the
# buffer's bounds hold meanwhile as they do during a slow round trip.
FLUSH_GAP_S = 0.002
CALL_MAX = 2000  # events per script call: the backend serves other clients between calls
RETRY_S = 0.5  # between reconnection attempts while the backend is down
REFRESH_S = 1.0  # ring list and /info figures
CLOSE_S = 5.0  # a stopping node's last flush; longer outages lose the buffer (logged)
REGISTRY = b"logd:rings"
# One script for both: on one server one call for every ring of a batch (each event
# numbered from the shared counter), in a cluster one call per ring with the ring's own
# counter (a call's keys must be in one slot). KEYS: the counter, the rings' streams,
# their size hashes, then their run lists; ARGV: each ring's cap in events, then in
# bytes, then three per run: (ring number, events, its packed `z`, entries.py). The run
# list (`id events bytes` per entry) is what a trim reads: Valkey's Lua hashes every
# byte of every string it is handed, so reading old entries whole to learn their size
# cost the backend as much again as storing them. A run is one entry whose id is
# its first event's; it never spans two milliseconds (ids.py). Without the counter (a
# new backend, or one that evicted it) ids go on above the newest event of the call's
# rings: an id at or below a ring's newest is an error, and a script that fails
# half-way keeps what it added. redis-py spends ~50 us of client CPU per pipelined
# command: one call per batch (resp.py packs it), never one command per event.
APPEND = """
local rings = (#KEYS - 1) / 3
local function held(fields)
  for j = 1, #fields, 2 do
    if fields[j] == 'n' then return tonumber(fields[j + 1]) end
  end
  return 1
end
-- A ring past either cap drops its oldest entries until it is 1/16 below both (so that
-- trims are rare, each a few calls); the newest entry stays.
local function trim(stream, size, runs, cap_n, cap_b, n, b)
  n = redis.call('HINCRBY', size, 'events', n)
  b = redis.call('HINCRBY', size, 'bytes', b)
  if n <= cap_n and b <= cap_b then return end
  cap_n, cap_b = cap_n - math.floor(cap_n / 16), cap_b - math.floor(cap_b / 16)
  local kept = redis.call('LLEN', runs) - 1
  local gone_n, gone_b, gone, cut = 0, 0, 0, nil
  while (n - gone_n > cap_n or b - gone_b > cap_b) and gone < kept do
    for _, run in ipairs(redis.call('LRANGE', runs, gone, gone + 63)) do
      if gone >= kept or (n - gone_n <= cap_n and b - gone_b <= cap_b) then break end
      local id, rn, rb = string.match(run, '(%S+) (%d+) (%d+)')
      gone_n, gone_b, gone, cut = gone_n + tonumber(rn), gone_b + tonumber(rb), gone + 1, id
    end
  end
  if cut then
    local a, c = string.match(cut, '(%d+)-(%d+)')
    redis.call('XTRIM', stream, 'MINID', string.format('%d-%d', tonumber(a), tonumber(c) + 1))
    redis.call('LTRIM', runs, gone, -1)
    redis.call('HINCRBY', size, 'events', -gone_n)
    redis.call('HINCRBY', size, 'bytes', -gone_b)
    redis.call('HINCRBY', size, 'evicted', gone_n)
  end
end
local ms, seq = 0, -1
local last = redis.call('GET', KEYS[1])
if last then
  local a, b = string.match(last, '(%d+)-(%d+)')
  ms, seq = tonumber(a), tonumber(b)
else
  for r = 2, rings + 1 do
    local top = redis.call('XREVRANGE', KEYS[r], '+', '-', 'COUNT', 1)[1]
    if top then
      local a, b = string.match(top[1], '(%d+)-(%d+)')
      a, b = tonumber(a), tonumber(b) + held(top[2]) - 1
      if a > ms or (a == ms and b > seq) then ms, seq = a, b end
    end
  end
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if now_ms > ms then ms, seq = now_ms, -1 end
local added, bytes, sizes, total = {}, {}, {}, 0
for i = 2 * rings + 1, #ARGV, 3 do
  local r, n = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  seq = seq + 1
  if seq + n > SEQ_LIMIT then ms, seq = ms + 1, 0 end
  local id = string.format('%d-%d', ms, seq)
  redis.call('XADD', KEYS[r + 1], id, 'n', ARGV[i + 1], 'z', ARGV[i + 2])
  local size = #ARGV[i + 2]
  sizes[r] = sizes[r] or {}
  table.insert(sizes[r], string.format('%s %d %d', id, n, size))
  seq = seq + n - 1
  added[r], bytes[r] = (added[r] or 0) + n, (bytes[r] or 0) + size
  total = total + n
end
for r, n in pairs(added) do
  redis.call('RPUSH', KEYS[2 * rings + r + 1], unpack(sizes[r]))
  trim(KEYS[r + 1], KEYS[rings + r + 1], KEYS[2 * rings + r + 1], tonumber(ARGV[r]),
       tonumber(ARGV[rings + r]), n, bytes[r])
end
redis.call('SET', KEYS[1], string.format('%d-%d', ms, seq))
return total
""".replace("SEQ_LIMIT", str(SEQ_LIMIT))
BACKEND_ERRORS = (RedisError, OSError)

# (stream key, events, their bytes, ends, times, levels): a run for one entry
# (entries.py); ends (uint32) and times (int64) little-endian.
_Run = tuple[bytes, int, bytes, bytes, bytes, bytes]
_ONE_END, _ONE_TIME = struct.Struct("<I").pack, struct.Struct("<q").pack


def stream_key(ring: str) -> bytes:
    """`logd:ring:{prod/api}`; braces and other odd characters of env/svc are %-escaped."""
    return b"logd:ring:{" + quote(ring, safe="/-_.:@").encode() + b"}"


def size_key(stream: bytes) -> bytes:
    """`logd:size:{prod/api}`: the ring's events, bytes and evicted events (in its slot)."""
    return b"logd:size:" + stream.removeprefix(b"logd:ring:")


def runs_key(stream: bytes) -> bytes:
    """`logd:runs:{prod/api}`: `id events bytes` of each of the ring's entries, oldest
    first, for trimming (in its slot)."""
    return b"logd:runs:" + stream.removeprefix(b"logd:ring:")


def ring_counter(stream: bytes) -> bytes:
    """`logd:last:{prod/api}`: a cluster ring's own id counter (in its slot)."""
    return b"logd:last:" + stream.removeprefix(b"logd:ring:")


OVERFLOW_STREAM = stream_key(OVERFLOW_KEY)


def _cost(run: _Run) -> int:
    """What a buffered run holds in memory, for the buffer's bound in bytes."""
    return len(run[2]) + len(run[3]) + len(run[4]) + len(run[5]) + RUN_BYTES


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
        self._buffer: deque[_Run] = deque()
        self._buffer_max = buffer_events
        self._bytes_max = buffer_bytes
        self._events = 0  # buffered
        self._bytes = 0  # of the runs buffered and in the round trip under way
        self._streams: dict[tuple[str, str], bytes] = {}  # this node's (env, svc) -> stream
        self._rings: dict[bytes, tuple[str, str] | None] = {}  # every known stream -> env, svc
        self._caps: dict[bytes, tuple[int, int]] = {}  # stream -> its caps: events, bytes
        self._unregistered: set[bytes] = set()
        self._flushing: asyncio.Task[None] | None = None
        self._flushed_at = 0.0  # when the last round trip started (the loop's clock)
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
            log.error("could not send the last events to the store count=%d", self._events)
        await self.client.aclose()
        await self._follower.close()

    async def send_all(self, within_s: float | None = None) -> None:
        """Return once everything buffered so far is in the backend (retrying meanwhile), or
        after about `within_s` seconds (a round trip under way may add the client's timeout)."""
        loop = asyncio.get_running_loop()
        deadline = None if within_s is None else loop.time() + within_s

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - loop.time())

        # A flush under way holds runs it took from the buffer: they are not in yet, and
        # they come back to the buffer if its round trip fails.
        while (self._buffer or self._flushing is not None) and left() != 0.0:
            if self._flushing is not None:
                await asyncio.wait({self._flushing}, timeout=left())
            elif not await self._flush():
                await asyncio.sleep(min(RETRY_S, left() or RETRY_S))

    # --- writing -------------------------------------------------------------
    def write(self, msg: Msg, t_ns: int) -> None:
        data = msg.SerializeToString()
        self._push(
            (self._key(msg.env, msg.svc, 1), 1, data, _ONE_END(len(data)), _ONE_TIME(t_ns),
             bytes((msg.lvl,)))
        )  # fmt: skip

    def write_run(self, env: str, svc: str, data: bytes, ends: bytes, times: bytes,
                  lvls: bytes) -> None:  # fmt: skip
        """Events of one ring that arrived back to back (the C engine): their bytes, end
        offsets in `data` (uint32) and times (int64) in native order, and levels, a byte
        each. The C engine bounds its runs to ENTRY_EVENTS and ENTRY_DATA (one event at
        least): each becomes one entry."""
        n = len(lvls)
        if sys.byteorder == "big":
            ends, times = little(array("I", ends)), little(array("q", times))
        self._push((self._key(env, svc, n), n, data, ends, times, lvls))

    @property
    def room(self) -> int:
        """Events the buffer takes before it drops any: while the backend answers but takes
        events slower than they come, ingest refuses new frames past this before their
        check across nodes (replay.py) instead of checking them and dropping older events
        for them. Checks of events the buffer then dropped took most of an overloaded
        redis-server, and what it stored fell to a third of what it could. While the
        backend is down checks cost it nothing, so nothing is refused and the oldest go."""
        if self.down:
            return sys.maxsize
        if self._bytes >= self._bytes_max:
            return 0
        return max(0, self._buffer_max - self._events)

    @property
    def free_rings(self) -> int:
        """Rings this node may still open (the C engine gathers runs while none overflow)."""
        return max(0, self._max_rings - len(self._rings))

    @property
    def rings_by_names(self) -> dict[tuple[str, str], bytes]:
        """(env, svc) -> stream of the rings this node writes, looked up by the C engine."""
        return self._streams

    def _push(self, run: _Run) -> None:
        self._buffer.append(run)
        self._events += run[1]
        self._bytes += _cost(run)
        self.writes += run[1]
        if self._events > self._buffer_max or self._bytes > self._bytes_max:
            self._drop_oldest()
            self._quiet.once("dropped", "store buffer full: dropping the oldest buffered events")

    def _drop_oldest(self) -> None:
        """Drop the oldest buffered runs until the buffer is within both its bounds."""
        buffer = self._buffer
        while buffer and (self._events > self._buffer_max or self._bytes > self._bytes_max):
            run = buffer.popleft()
            self._events -= run[1]
            self._bytes -= _cost(run)
            self.dropped += run[1]

    def _key(self, env: str, svc: str, n: int) -> bytes:
        """The stream of (env, svc); `n` events counted as overflow when it is that ring."""
        key = self._streams.get((env, svc))
        if key is not None:
            return key
        key = stream_key(ring_key(env, svc))
        if key not in self._rings and len(self._rings) >= self._max_rings:
            self.overflow_events += n  # counted per event, like the memory store
            return self._register(OVERFLOW_STREAM, OVERFLOW_KEY, None)
        self._streams[env, svc] = self._register(key, ring_key(env, svc), (env, svc))
        return key

    def _register(self, key: bytes, ring: str, names: tuple[str, str] | None) -> bytes:
        if key not in self._caps:
            budget = self.capacity_for(ring)
            self._caps[key] = (max(1, budget // TYPICAL_EVENT_BYTES), budget)
            self._rings[key] = names
            self._unregistered.add(key)
        return key

    def end_batch(self) -> None:
        if self._buffer and self._flushing is None and not self.down:
            self._flushing = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._buffer:
                wait = self._flushed_at + FLUSH_GAP_S - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._flushed_at = loop.time()
                if not await self._flush():
                    break
        finally:
            self._flushing = None

    async def _flush(self) -> bool:
        """Send the buffer (up to PIPELINE_MAX events or BATCH_BYTES) in one round trip; False
        if it failed (the runs go back to the front of the buffer)."""
        buffer = self._buffer
        batch = [buffer.popleft()]
        events, size = batch[0][1], _cost(batch[0])
        while buffer and events < PIPELINE_MAX and size < BATCH_BYTES:
            batch.append(buffer.popleft())
            events += batch[-1][1]
            size += _cost(batch[-1])
        self._events -= events
        registering = list(self._unregistered)
        try:
            if self.ordered:
                commands: list[bytes | list[bytes]] = [
                    resp.command("HSET", REGISTRY, key, json.dumps(self._rings.get(key)))
                    for key in registering
                ]
                commands += self._append_numbered(batch)
                await resp.send(self.client, commands)
            else:
                pipe = self.client.pipeline(transaction=False)
                for key in registering:
                    pipe.hset(REGISTRY, key, json.dumps(self._rings.get(key)))
                self._append_per_ring(pipe, batch)
                await pipe.execute()
        except BACKEND_ERRORS as err:
            self._failed(err)
            buffer.extendleft(reversed(batch))
            self._events += events
            self._drop_oldest()
            return False
        self._bytes -= size
        self._unregistered.difference_update(registering)
        self.flushed += events
        self.round_trips += 1
        return True

    def _append_numbered(self, batch: list[_Run]) -> list[list[bytes]]:
        """One server: one call per CALL_MAX events or so, every ring in it, packed here."""
        commands = []
        for runs in _calls(batch):
            numbers: dict[bytes, bytes] = {}  # stream -> its number in this call, packed
            args: list[bytes] = []
            for key, n, z in _entries(runs):
                ring = numbers.get(key)
                if ring is None:
                    ring = numbers[key] = resp.bulk(b"%d" % (len(numbers) + 1))
                args.append(_packed(ring, n, z))
            keys = list(numbers)
            head = resp.command(
                "EVAL", APPEND, 1 + 3 * len(keys), COUNTER, *keys, *map(size_key, keys),
                *map(runs_key, keys),
                *(self._caps[key][0] for key in keys), *(self._caps[key][1] for key in keys),
                more=3 * len(args),  # an entry's three arguments, in one chunk
            )  # fmt: skip
            commands.append([head, *args])
        return commands

    def _append_per_ring(self, pipe: Any, batch: list[_Run]) -> None:
        """A cluster: one call per ring (a call's keys must be in one slot), its own counter."""
        for runs in _calls(batch):
            groups: dict[bytes, list[bytes | int]] = {}
            for key, n, z in _entries(runs):
                args = groups.get(key)
                if args is None:
                    args = groups[key] = [*self._caps[key]]
                args += (1, n, z)
            for key, args in groups.items():
                pipe.eval(APPEND, 4, ring_counter(key), key, size_key(key), runs_key(key), *args)

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
        return self._events

    async def refresh(self) -> None:
        """Merge the shared ring list, then read each ring's events, size and evictions."""
        await self._refresh_rings()
        keys = list(self._rings)
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(size_key(key), [b"events", b"evicted"])
            pipe.memory_usage(key)
        replies = await pipe.execute(raise_on_error=False)
        figures = {}
        for i, key in enumerate(keys):
            counts, size = replies[2 * i], replies[2 * i + 1]
            if isinstance(counts, list):
                length, evicted = (int(n or 0) for n in counts)
                figures[key] = (length, int(size or 0), evicted)
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
            "buffered_events": self._events,
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


def _numbered(_stream: bytes, event_id: int) -> int:
    return event_id


def _calls(batch: list[_Run]) -> list[list[_Run]]:
    """The batch in script calls of about CALL_MAX events (one run at least): the backend
    serves other clients between calls."""
    calls, start, events = [], 0, 0
    for i, run in enumerate(batch):
        events += run[1]
        if events >= CALL_MAX:
            calls.append(batch[start : i + 1])
            start, events = i + 1, 0
    if start < len(batch):
        calls.append(batch[start:])
    return calls


def _entries(runs: list[_Run]) -> list[tuple[bytes, int, bytes]]:
    """A call's runs as its entries (stream, events, `z`), in arrival order: runs of one
    ring in a row (single events of the Python path; the C engine's runs of a ring in
    successive drains) join into entries of up to ENTRY_EVENTS and ENTRY_DATA, and a run
    past them is an entry alone. Ids follow this order (ids.py)."""
    entries: list[list[_Run]] = []
    n = size = 0  # of the last entry
    for run in runs:
        last = entries[-1] if entries else None
        if (
            last is not None
            and run[0] == last[0][0]
            and n + run[1] <= ENTRY_EVENTS
            and size + len(run[2]) <= ENTRY_DATA
        ):
            last.append(run)
            n, size = n + run[1], size + len(run[2])
        else:
            entries.append([run])
            n, size = run[1], len(run[2])
    return [_packed_entry(entry) for entry in entries]


def _packed_entry(runs: list[_Run]) -> tuple[bytes, int, bytes]:
    """Runs of one ring as one entry: their events back to back, each run's end offsets
    moved past the bytes before it (little-endian, as entries hold them)."""
    ends, at = [], 0
    for run in runs:
        ends.append(shifted(array("I", run[3]), at, "little") if at else run[3])
        at += len(run[2])
    times, lvls, data = [run[4] for run in runs], [run[5] for run in runs], [run[2] for run in runs]
    return runs[0][0], sum(run[1] for run in runs), pack(times + lvls + ends + data)


def _packed(ring: bytes, n: int, z: bytes) -> bytes:
    """An entry's three script arguments in RESP, `ring` its ring's number already packed."""
    return ring + resp.bulk(b"%d" % n) + resp.bulk(z)
