"""Segment files: the on-disk form of one ring (record format, names, reading, appending).

A ring lives in its own directory under the data directory as numbered
append-only segments (`000000000001.seg`, ...). A segment is MAGIC, a header
record naming the ring (JSON `{"env": ..., "svc": ...}`, both null for the
overflow ring), then one record per event:

    crc32 u32 | length u32 | t_ns i64 | lvl i32 | id u64 | length bytes: the serialised Msg

little-endian; the CRC covers everything after itself, length included. `id` is the
event's id, so a restart gives the events back the ids readers saw (LOGDSEG1 files, from
before ids, have no `id` field: their events get new ids at load). CRC-32
is enough because it guards against accidents, not attackers: a torn write, the
zero-filled blocks a power loss can leave, a flipped bit. It catches every error
burst up to 32 bits and misses random damage with probability 2**-32 per record;
whoever can write the data directory could forge any checksum anyway.

Everything here blocks: the persister calls it through `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

from logd.server.store.memory import RECORD_OVERHEAD
from logd.server.store.ring import AGE_SLICES

MAGIC = b"LOGDSEG2"
HEAD = struct.Struct("<IIqiQ")  # crc, length, t_ns, lvl, id
OLD_MAGIC, OLD_HEAD = b"LOGDSEG1", struct.Struct("<IIqi")  # before ids: still read
_CRC = struct.Struct("<I")
_BODY = struct.Struct("<IqiQ")  # what the CRC covers before the data
MAX_RECORD = 1 << 20  # far above one event (a datagram); a larger length is damage
SEGMENTS_PER_BUDGET = 8  # rotate at 1/8 of the budget: deleting one frees that much
MIN_SEGMENT = 64 * 1024
_WEIGHT = max(HEAD.size, RECORD_OVERHEAD)  # per record beside its bytes, for rotation
_DATA = itemgetter(2)
OVERFLOW_DIR = "_overflow"
_SEGMENT_NAME = re.compile(r"^(\d{12})\.seg$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
# A file's mtime comes from the kernel's coarse clock, up to a tick (<= 10 ms) behind the
# time of the write: a segment read back counts as written this much later, so that its
# events never look older than they are.
FILE_TIME_SLACK_NS = 20_000_000

# (t_ns, lvl, serialised Msg, id), as the memory ring keeps it; id 0: none kept (LOGDSEG1)
Record = tuple[int, int, bytes, int]


@dataclass(frozen=True, slots=True)
class RingId:
    """Which ring a directory holds: env and svc, or both None for the overflow ring."""

    env: str | None
    svc: str | None

    def dir_name(self) -> str:
        """A safe, unique directory name: a readable slug plus a hash of the exact key.

        Only `[A-Za-z0-9_-]` and two dots: never `..`, `/` or a NUL, at most 114
        characters; the hash keeps `("a/b", "c")` and `("a", "b/c")` apart.
        """
        if self.env is None or self.svc is None:
            return OVERFLOW_DIR  # has no dot, so no keyed name can equal it
        exact = json.dumps([self.env, self.svc]).encode()
        digest = hashlib.blake2b(exact, digest_size=16).hexdigest()
        return f"{_slug(self.env)}.{_slug(self.svc)}.{digest}"

    def header(self) -> bytes:
        name = json.dumps({"env": self.env, "svc": self.svc}).encode()
        return MAGIC + encode([(0, 0, name, 0)])


def _slug(text: str) -> str:
    return _UNSAFE.sub("_", text[:32]) or "-"


def encode(records: Sequence[Record]) -> bytearray:
    out = bytearray()
    body, crc_head, crc32 = _BODY.pack, _CRC.pack, zlib.crc32
    for t_ns, lvl, data, event_id in records:
        head = body(len(data), t_ns, lvl, event_id)
        out += crc_head(crc32(data, crc32(head)))
        out += head
        out += data
    return out


@dataclass(slots=True)
class Parsed:
    """Records read from a buffer, and the damage skipped on the way."""

    records: list[Record] = field(default_factory=list)
    corrupt: int = 0  # damaged records skipped; a torn or unreadable tail counts as one
    first_bad: int | None = None  # byte offset of the first damage

    def damaged(self, pos: int) -> None:
        self.corrupt += 1
        if self.first_bad is None:
            self.first_bad = pos


def parse(buf: bytes, pos: int = 0, head: struct.Struct = HEAD) -> Parsed:
    """Every intact record from `pos` on. Damage costs only the records it touched: a
    record whose checksum fails is skipped alone when its length leads to an intact record
    (a flipped data bit); otherwise (a flipped length bit, a zeroed block) parsing resyncs
    on the next offset where two intact records follow each other, or one ends the file.
    Each damaged stretch counts once; what no intact record follows is a lost tail."""
    out = Parsed()
    append, unpack, crc32 = out.records.append, head.unpack_from, zlib.crc32
    view, size, hl = memoryview(buf), len(buf), head.size
    while pos + hl <= size:
        crc, length, t_ns, lvl, *event_id = unpack(buf, pos)
        end = pos + hl + length
        if length <= MAX_RECORD and end <= size and crc32(view[pos + 4 : end]) == crc:
            append((t_ns, lvl, buf[pos + hl : end], event_id[0] if event_id else 0))
            pos = end
            continue
        out.damaged(pos)
        if length <= MAX_RECORD and end <= size and (end == size or _starts_run(buf, end, head)):
            pos = end  # the length holds: only this record's bytes are bad
            continue
        found = _resync(buf, pos + 1, head)
        if found is None:
            return out  # nothing intact follows: the rest of the file is lost
        pos = found
    if pos < size:  # a torn header
        out.damaged(pos)
    return out


def _starts_run(buf: bytes, pos: int, head: struct.Struct) -> bool:
    """Whether an intact record starts at `pos` and is followed by another or ends the file:
    two checksums in a row, so damage is not mistaken for a record (2**-64 per offset)."""
    end = _intact_end(buf, pos, head)
    return end is not None and (end == len(buf) or _intact_end(buf, end, head) is not None)


def _resync(buf: bytes, pos: int, head: struct.Struct) -> int | None:
    """The first offset from `pos` where records start again (see `_starts_run`)."""
    unpack, size, hl = head.unpack_from, len(buf), head.size
    for at in range(pos, size - hl + 1):
        length = unpack(buf, at)[1]  # most offsets fail here, before any checksum
        if length <= MAX_RECORD and at + hl + length <= size and _starts_run(buf, at, head):
            return at
    return None


def _intact_end(buf: bytes, pos: int, head: struct.Struct = HEAD) -> int | None:
    """Where the record at `pos` ends, or None when it is torn or fails its checksum."""
    if pos + head.size > len(buf):
        return None
    crc, length = head.unpack_from(buf, pos)[:2]
    end: int = pos + head.size + length
    if length > MAX_RECORD or end > len(buf) or zlib.crc32(memoryview(buf)[pos + 4 : end]) != crc:
        return None
    return end


@dataclass(slots=True)
class Segment:
    ring: RingId | None  # None: the header is unreadable, so nothing in it can be trusted
    parsed: Parsed


def read_segment(path: Path) -> Segment:
    buf = path.read_bytes()
    head = HEAD if buf.startswith(MAGIC) else OLD_HEAD if buf.startswith(OLD_MAGIC) else None
    if head is None:
        return Segment(None, Parsed(corrupt=1, first_bad=0))
    end = _intact_end(buf, len(MAGIC), head)
    if end is None:
        return Segment(None, Parsed(corrupt=1, first_bad=len(MAGIC)))
    ring = _ring_of(buf[len(MAGIC) + head.size : end])
    if ring is None:  # checksummed, yet not a header logd writes: trust nothing in it
        return Segment(None, Parsed(corrupt=1, first_bad=len(MAGIC)))
    return Segment(ring, parse(buf, end, head))


def _ring_of(header: bytes) -> RingId | None:
    """The ring a header names: `{"env": str, "svc": str}`, or both null; else None."""
    try:
        name = json.loads(header)
    except ValueError:  # not UTF-8, or not JSON
        return None
    if not isinstance(name, dict) or "env" not in name or "svc" not in name:
        return None
    env, svc = name["env"], name["svc"]
    if isinstance(env, str) and isinstance(svc, str):
        return RingId(env, svc)
    return RingId(None, None) if env is None and svc is None else None


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """(seq, path) of the segments in a ring directory, oldest first."""
    found = []
    for name in os.listdir(directory):
        match = _SEGMENT_NAME.match(name)
        if match:
            found.append((int(match.group(1)), directory / name))
    return sorted(found)


@dataclass(slots=True)
class _Seg:
    seq: int
    size: int  # bytes on disk
    cost: int  # what its events cost the memory ring (RECORD_OVERHEAD each)
    started_ns: int = 0  # when this process made it (0: found on disk)
    written_ns: int = 0  # its last write: after every event in it arrived

    @property
    def fill(self) -> int:
        """How full it is, for rotation: by disk or by memory cost, whichever is more."""
        return max(self.size, self.cost)


def memory_cost(records: Sequence[Record]) -> int:
    """What `records` cost the memory ring; map/itemgetter keep the loop in C."""
    return sum(map(len, map(_DATA, records))) + RECORD_OVERHEAD * len(records)


class RingFiles:
    """One ring's segments on disk: the newest events worth `budget` of ring memory, plus
    at most one segment (1/8 of the budget).

    Old segments go once the newer ones hold a whole budget of what the ring counts
    (its size + RECORD_OVERHEAD per event), so the disk always has everything
    the ring can hold. A record takes HEAD.size on disk beside its bytes, a little
    more than in memory: with very small events the files outgrow the budget by
    that ratio. A process never appends to a segment it did not start, nor to one
    whose last write failed (its tail may be torn). Not thread-safe: the persister
    uses it from one flush at a time.

    With a max age, a segment takes writes for at most 1/AGE_SLICES of it, and a segment
    whose last write is older than the age goes (its events have all aged), so that the
    disk keeps what the memory ring keeps by age too.
    """

    def __init__(
        self,
        root: Path,
        ring: RingId,
        budget: int,
        max_age_ns: int = 0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.ring = ring
        self.path = root / ring.dir_name()
        self.budget = budget
        self.max_age_ns = max_age_ns
        self._clock = clock
        self.segment_max = max(budget // SEGMENTS_PER_BUDGET, MIN_SEGMENT)
        self._segments: list[_Seg] = []  # oldest first
        self._next_seq = 1
        self._listed = False
        self._active = False  # whether the newest segment takes appends

    @property
    def size(self) -> int:
        return sum(seg.size for seg in self._segments)

    def list(self, costs: Mapping[int, int] | None = None) -> None:
        """Find the segments already on disk (a missing directory holds none). `costs`:
        the memory cost of those the loader read; others count their size (more)."""
        try:
            found = list_segments(self.path)
        except FileNotFoundError:
            found = []
        costs = costs or {}
        self._segments = []
        for seq, path in found:
            stat = path.stat()
            size = stat.st_size
            written = stat.st_mtime_ns + FILE_TIME_SLACK_NS
            self._segments.append(_Seg(seq, size, costs.get(seq, size), written_ns=written))
        self._next_seq = max(self._next_seq, found[-1][0] + 1 if found else 1)
        self._listed = True
        self._active = False

    def append(self, records: Sequence[Record]) -> None:
        """Write `records` (oldest first) and fsync them; then drop segments beyond the budget.
        On OSError nothing of this call counts as written."""
        if not self._listed:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.list()
        start = 0
        if self._active and self.max_age_ns:  # a segment spans at most 1/AGE_SLICES of it
            opened_for = self._clock() - self._segments[-1].started_ns
            self._active = opened_for < self.max_age_ns // AGE_SLICES
        while start < len(records):
            if not self._active:
                self._new_segment()
            room = self.segment_max - self._segments[-1].fill
            end = len(records)
            if sum(map(len, map(_DATA, records[start:]))) + _WEIGHT * (end - start) > room:
                end, size = start, 0  # it rotates within this batch: find where
                while end == start or size < room:
                    size += _WEIGHT + len(records[end][2])
                    end += 1
            self._write(records[start:end])
            start = end
            if self._segments[-1].fill >= self.segment_max:
                self._active = False
        self._drop_oldest()

    def _segment_path(self, seq: int) -> Path:
        return self.path / f"{seq:012d}.seg"

    def _new_segment(self) -> None:
        seq = self._next_seq
        self._next_seq += 1  # even on failure: a half-made file must not block the name
        path = self._segment_path(seq)
        header = self.ring.header()
        fd = os.open(path, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, header)
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        finally:
            os.close(fd)
        _fsync_dir(self.path)  # the new name survives a power loss too
        now = self._clock()
        self._segments.append(_Seg(seq, len(header), 0, started_ns=now, written_ns=now))
        self._active = True

    def _write(self, records: Sequence[Record]) -> None:
        segment = self._segments[-1]
        blob = encode(records)
        fd = os.open(self._segment_path(segment.seq), _OPEN_FLAGS)
        try:
            _write_all(fd, blob)
            os.fsync(fd)
        except OSError:
            self._active = False
            with contextlib.suppress(OSError):
                os.ftruncate(fd, segment.size)  # drop what got through: it is written again
            raise
        finally:
            os.close(fd)
        segment.size += len(blob)
        segment.cost += memory_cost(records)
        segment.written_ns = self._clock()

    def _drop_oldest(self) -> None:
        """Delete the oldest segments while the newer ones still hold a whole budget, or
        while every event in them has aged."""
        rest = sum(seg.cost for seg in self._segments)
        horizon = self._clock() - self.max_age_ns if self.max_age_ns else -1
        while len(self._segments) > 1 and (
            rest - self._segments[0].cost >= self.budget or self._segments[0].written_ns < horizon
        ):
            oldest = self._segments.pop(0)
            rest -= oldest.cost
            with contextlib.suppress(FileNotFoundError):
                self._segment_path(oldest.seq).unlink()


def _write_all(fd: int, blob: bytes | bytearray) -> None:
    view = memoryview(blob)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
