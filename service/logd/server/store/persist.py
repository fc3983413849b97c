"""Durability: the memory rings kept in segment files under the data directory.

Ingest never touches the disk. While persistence is on, `MemoryStore.write` also
appends each event to its ring's list in `store.pending` (O(1)). Every flush
interval the persister swaps those lists for empty ones and a thread writes the
batch, one segment set per ring, and fsyncs it: a crash loses at most the events
of the last interval (plus the flush in progress). On start, `load` reads the
rings back before the UDP port opens; on stop, a last flush writes everything
stored.

With a max age, what aged stays gone across a restart: a segment holds what arrived
before its last write (its mtime), so `load` skips the segments whose last write is
older than the ring's age, and the chunks it restores carry that time as their arrival
(ring.py); events that aged in memory before their flush are not written.

When the disk fails (full, read-only, gone) logd keeps serving from memory,
counts and shows the error in /info, logs it once, and retries every interval
with what it could not write, trimmed to what the ring can still hold.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from logd._pb.logd_pb2 import Msg
from logd.events import MAX_LEVEL, format_time
from logd.server.logsetup import QuietLogger
from logd.server.store.memory import OVERFLOW_KEY, RECORD_OVERHEAD, MemoryStore, Ring, ring_key
from logd.server.store.segments import (
    FILE_TIME_SLACK_NS,
    Record,
    RingFiles,
    RingId,
    list_segments,
    memory_cost,
    read_segment,
)
from logd.server.tasks import wait_event

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Loaded:
    files: RingFiles | None  # None: no segment named its ring (every header was damaged)
    # Per segment, oldest first: its records (oldest first) and when it was last written.
    segments: list[tuple[list[Record], int]]
    corrupt: int


@dataclass(frozen=True, slots=True)
class _Flushed:
    written: int
    carried: int
    bytes_on_disk: int
    error: OSError | None


def well_formed(records: list[Record]) -> tuple[list[Record], int]:
    """The records a query can read, and how many others there were: a checksum guards
    against damage, not against a record that never was an event (a bug, a hand-edited
    file), which would break every query on its ring. A level outside the enum is stored
    as none, as ingest does."""
    kept: list[Record] = []
    for t_ns, _lvl, data, event_id in records:  # the level is the event's own, as stored
        try:
            msg = Msg.FromString(data)
        except DecodeError:
            continue
        if not 0 <= msg.lvl <= MAX_LEVEL:
            msg.ClearField("lvl")
            data = msg.SerializeToString()
        kept.append((t_ns, msg.lvl, data, event_id))
    return kept, len(records) - len(kept)


def newest_within(records: list[Record], capacity: int) -> list[Record]:
    """The newest records whose memory cost fits `capacity`: what the ring would keep."""
    if memory_cost(records) <= capacity:
        return records  # the usual case, found at C speed
    total = 0
    for i in range(len(records) - 1, -1, -1):
        total += len(records[i][2]) + RECORD_OVERHEAD
        if total > capacity:
            return records[i + 1 :]
    return records


class Persister:
    def __init__(
        self,
        *,
        store: MemoryStore,
        data_dir: Path,
        interval: float,
        clock: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._store = store
        self._root = data_dir
        self._interval = interval
        self._clock = clock  # wall-clock ns, as file times are
        self._monotonic = monotonic  # the rings' clock for arrival (store/retention.py)
        # Touched only by `load` (before start) and by one flush thread at a time.
        self._files: dict[str, RingFiles] = {}
        self._carry: dict[Ring, list[Record]] = {}
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._quiet = QuietLogger(log)
        self.loaded = 0
        self.load_s = 0.0
        self.corrupt = 0
        self.flushes = 0
        self.written = 0
        self.unwritten = 0  # handed to the writer, not yet on disk (in flight or carried)
        self.shed = 0
        self.errors = 0
        self.failing = 0  # failed flushes in a row
        self.last_error: str | None = None
        self.last_flush_ns: int | None = None
        self.bytes_on_disk = 0

    # --- start-up ----------------------------------------------------------
    async def load(self) -> None:
        """Read the rings back into the store, one ring at a time (so that only one ring's
        records are ever held twice), then start collecting new events."""
        started = time.monotonic()
        try:
            names = await asyncio.to_thread(self._ring_dirs)
        except OSError as err:
            names = []
            self._failed(err)
        rings = 0
        to_monotonic = self._monotonic() - self._clock()  # file times -> the rings' clock
        for name in names:
            try:
                loaded = await asyncio.to_thread(self._read_ring, name)
            except OSError as err:
                self._failed(err)
                continue
            self.corrupt += loaded.corrupt
            if loaded.files is None:
                continue
            self._files[name] = loaded.files
            ring = loaded.files.ring
            for records, written_ns in loaded.segments:
                arrived = written_ns + to_monotonic
                self._store.restore(ring.env, ring.svc, records, arrived_ns=arrived)
                self.loaded += len(records)
            rings += any(records for records, _ in loaded.segments)
        self.bytes_on_disk = sum(f.size for f in self._files.values())
        self.load_s = time.monotonic() - started
        self._store.pending = defaultdict(list)
        log.info(
            "loaded events=%d rings=%d bytes=%d corrupt_skipped=%d seconds=%.3f dir=%s",
            self.loaded,
            rings,
            self.bytes_on_disk,
            self.corrupt,
            self.load_s,
            self._root,
        )

    def _capacity(self, ring: RingId) -> int:
        return self._store.capacity_for(_key(ring))

    def _ring_files(self, ring: RingId, budget: int) -> RingFiles:
        max_age = self._store.max_age_for(_key(ring))
        return RingFiles(self._root, ring, budget, max_age_ns=max_age, clock=self._clock)

    def _ring_dirs(self) -> list[str]:
        try:
            names = sorted(os.listdir(self._root))
        except FileNotFoundError:
            return []  # first start: the first flush makes the directory
        return [name for name in names if (self._root / name).is_dir()]

    def _read_ring(self, name: str) -> _Loaded:
        """Read one ring's segments, newest first, until the ring's budget is full."""
        files: RingFiles | None = None
        need = corrupt = 0
        chunks: list[tuple[list[Record], int]] = []
        costs: dict[int, int] = {}
        now = self._clock()
        for seq, path in reversed(list_segments(self._root / name)):
            written_ns = path.stat().st_mtime_ns + FILE_TIME_SLACK_NS
            if files is not None and files.max_age_ns and written_ns < now - files.max_age_ns:
                break  # this segment and the older ones hold only aged events
            segment = read_segment(path)
            parsed = segment.parsed
            if parsed.corrupt:
                corrupt += parsed.corrupt
                log.warning(
                    "skipped damaged records in %s count=%d first_offset=%s",
                    path,
                    parsed.corrupt,
                    parsed.first_bad,
                )
            if segment.ring is None:
                continue
            if segment.ring.dir_name() != name:
                log.warning("ignored %s: it belongs to another ring", path)
                continue
            if files is None:
                need = self._capacity(segment.ring)
                files = self._ring_files(segment.ring, need)
                if files.max_age_ns and written_ns < now - files.max_age_ns:
                    break
            costs[seq] = memory_cost(parsed.records)
            newest = newest_within(parsed.records, need)
            kept, malformed = well_formed(newest)
            if malformed:
                corrupt += malformed
                log.warning("skipped malformed records in %s count=%d", path, malformed)
            need -= memory_cost(kept)
            chunks.append((kept, written_ns))
            if len(newest) < len(parsed.records) or need <= 0:
                break
        if files is None:
            return _Loaded(None, [], corrupt)
        files.list(costs)
        return _Loaded(files, chunks[::-1], corrupt)

    # --- running -------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="logd-persist")

    async def stop(self) -> None:
        """Write everything stored (a last flush with fsync), then end the flush task."""
        self._stopping.set()
        if self._task is not None:
            await self._task
        if self.pending_events():
            log.error("could not write the last events to %s: %s", self._root, self.last_error)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            next_at = loop.time() + self._interval
            while not self._stopping.is_set() and loop.time() < next_at:
                await wait_event(self._stopping, next_at - loop.time())
            stopping = self._stopping.is_set()
            await self._flush_bounded()
            if stopping:
                return

    async def _flush_bounded(self) -> None:
        """Flush; while a slow disk holds the flush up, keep `pending` bounded."""
        task = asyncio.ensure_future(self.flush())
        while not task.done():
            await asyncio.wait({task}, timeout=self._interval)
            self.shed_excess()
        task.result()

    def shed_excess(self) -> None:
        """Drop the oldest pending events beyond what each ring can hold, so that a hung
        disk costs a bounded amount of memory."""
        for ring, records in (self._store.pending or {}).items():
            excess = len(records) - len(newest_within(records, ring.capacity))
            if excess:
                del records[:excess]
                self.shed += excess
                self._quiet.once(
                    "shed",
                    "disk too slow: events dropped from the disk queue count=%d "
                    "(shed_events in /info counts them all)",
                    excess,
                )

    def pending_events(self) -> int:
        return sum(map(len, (self._store.pending or {}).values())) + self.unwritten

    async def flush(self) -> None:
        if self.failing and not self._carry and not any((self._store.pending or {}).values()):
            return  # nothing to write proves nothing: the disk is failing until a write works
        batch: Mapping[Ring, list[Record]] = self._store.pending or {}
        self._store.pending = defaultdict(list)
        self.unwritten += sum(map(len, batch.values()))
        try:
            flushed = await asyncio.to_thread(self._write, batch)
        except Exception as err:  # a bug in the writer: report it, keep serving, retry
            log.exception("persistence flush failed")
            self.unwritten = 0  # lost with the failed writer; the error reports it
            self._failed(err)
            return
        self.written += flushed.written
        self.unwritten = flushed.carried
        self.bytes_on_disk = flushed.bytes_on_disk
        if flushed.error is not None:
            self._failed(flushed.error)
            return
        self.flushes += 1
        self.last_flush_ns = time.time_ns()
        if self.failing:
            log.info("persistence works again after %d failed flushes", self.failing)
            self.failing = 0

    def _write(self, batch: Mapping[Ring, list[Record]]) -> _Flushed:
        groups, self._carry = self._carry, {}
        for ring, records in batch.items():
            groups[ring] = groups[ring] + records if ring in groups else records
        written = 0
        error: OSError | None = None
        for ring, group in groups.items():
            if group and group[0][3] <= ring.aged_id:  # aged in memory before its flush
                group = [record for record in group if record[3] > ring.aged_id]
            records = newest_within(group, ring.capacity)
            try:
                self._files_for(ring).append(records)
            except OSError as err:
                error = error or err
                self._carry[ring] = records
            else:
                written += len(records)
        return _Flushed(
            written=written,
            carried=sum(len(records) for records in self._carry.values()),
            bytes_on_disk=sum(f.size for f in self._files.values()),
            error=error,
        )

    def _files_for(self, ring: Ring) -> RingFiles:
        ring_id = RingId(ring.env, ring.svc)
        name = ring_id.dir_name()
        files = self._files.get(name)
        if files is None:
            files = self._files[name] = self._ring_files(ring_id, ring.capacity)
        return files

    def _failed(self, err: BaseException) -> None:
        self.errors += 1
        self.last_error = _describe(err)
        if not self.failing:
            log.error(
                "cannot persist to %s, serving from memory and retrying every %gs: %s",
                self._root,
                self._interval,
                self.last_error,
            )
        self.failing += 1

    def info(self) -> dict[str, Any]:
        """What /info shows under `persistence`."""
        return {
            "data_dir": str(self._root),
            "flush_interval_s": self._interval,
            "last_flush": format_time(self.last_flush_ns) if self.last_flush_ns else None,
            "flushes": self.flushes,
            "pending_events": self.pending_events(),
            "written_events": self.written,
            "shed_events": self.shed,
            "errors": self.errors,
            "failing": self.failing > 0,
            "last_error": self.last_error,
            "bytes_on_disk": self.bytes_on_disk,
            "loaded_events": self.loaded,
            "load_s": round(self.load_s, 3),
            "corrupt_records_skipped": self.corrupt,
        }


def _key(ring: RingId) -> str:
    if ring.env is None or ring.svc is None:
        return OVERFLOW_KEY
    return ring_key(ring.env, ring.svc)


def _describe(err: BaseException) -> str:
    """One sentence, e.g. `No space left on device: /var/lib/logd/prod.api.../000000000003.seg`."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return f"{type(err).__name__}: {err}"
