"""Persistence on real files: record format, damage, rotation, names, load and flush."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections import defaultdict
from pathlib import Path

import pytest
from logd._pb.logd_pb2 import Msg
from logd.server.filters import Filter
from logd.server.store.memory import RECORD_OVERHEAD, MemoryStore
from logd.server.store.persist import Persister, newest_within
from logd.server.store.segments import (
    HEAD,
    MAGIC,
    Record,
    RingFiles,
    RingId,
    encode,
    list_segments,
    memory_cost,
    parse,
    read_segment,
)

MiB = 1024 * 1024
RECORDS: list[Record] = [
    (1, 3, b"first", 101),
    (-5, -1, b"", 102),  # an empty Msg, a negative time and an unknown level
    (2**62, 6, bytes(range(256)) * 200, 103),
    (4, 2, b"fourth", 2**64 - 1),  # the largest id
    (5, 5, b"last", 105),
]


def offsets(records: list[Record]) -> list[int]:
    """Where each record starts in `encode(records)`."""
    out, pos = [], 0
    for _t, _l, data, _id in records:
        out.append(pos)
        pos += HEAD.size + len(data)
    return out


# --- record format --------------------------------------------------------------
def test_records_round_trip() -> None:
    parsed = parse(encode(RECORDS))
    assert (parsed.records, parsed.corrupt) == (RECORDS, 0)


@pytest.mark.parametrize("cut", [1, HEAD.size - 1, HEAD.size, HEAD.size + 2])
def test_torn_tail_is_skipped_and_counted(cut: int) -> None:
    blob = encode(RECORDS)
    parsed = parse(blob[: offsets(RECORDS)[-1] + cut])
    assert (parsed.records, parsed.corrupt) == (RECORDS[:-1], 1)


def test_zero_filled_tail_is_skipped_and_counted() -> None:
    # What a power loss can leave: the file grew, its last blocks never got the data.
    parsed = parse(encode(RECORDS) + bytes(4096))
    assert (parsed.records, parsed.corrupt) == (RECORDS, 1)


@pytest.mark.parametrize("field_offset", [0, 8, 16, HEAD.size + 100])  # crc, t_ns, lvl, data
def test_bit_flip_skips_only_that_record(field_offset: int) -> None:
    blob = bytearray(encode(RECORDS))
    blob[offsets(RECORDS)[2] + field_offset] ^= 0x10
    parsed = parse(bytes(blob))
    assert (parsed.records, parsed.corrupt) == (RECORDS[:2] + RECORDS[3:], 1)


@pytest.mark.parametrize("record", [1, 2, 3])
@pytest.mark.parametrize("flip", [0x01, 0x80, 0x04])
@pytest.mark.parametrize("byte", [0, 1, 3])
def test_bit_flip_in_a_length_drops_only_that_record(record: int, flip: int, byte: int) -> None:
    """Parsing resyncs on the next intact record: nothing after the damage is lost."""
    blob = bytearray(encode(RECORDS))
    blob[offsets(RECORDS)[record] + 4 + byte] ^= flip
    parsed = parse(bytes(blob))
    assert (parsed.records, parsed.corrupt, parsed.first_bad) == (
        RECORDS[:record] + RECORDS[record + 1 :],
        1,
        offsets(RECORDS)[record],
    )


@pytest.mark.parametrize(("start", "size"), [(0, 4096), (HEAD.size, 4096), (1000, 20_000)])
def test_zeroed_block_inside_a_record_drops_only_that_record(start: int, size: int) -> None:
    """A block of zeros (a lost write) inside one record: that record alone is skipped."""
    blob = bytearray(encode(RECORDS))
    at = offsets(RECORDS)[2] + start
    blob[at : at + size] = bytes(size)
    parsed = parse(bytes(blob))
    assert (parsed.records, parsed.corrupt, parsed.first_bad) == (
        RECORDS[:2] + RECORDS[3:],
        1,
        offsets(RECORDS)[2],
    )


def test_two_damaged_records_count_two() -> None:
    blob = bytearray(encode(RECORDS))
    blob[offsets(RECORDS)[0] + 5] ^= 0x40  # a length
    blob[offsets(RECORDS)[3] + 20] ^= 0x01  # a data bit
    parsed = parse(bytes(blob))
    assert (parsed.records, parsed.corrupt) == ([RECORDS[1], RECORDS[2], RECORDS[4]], 2)


def test_segment_names_its_ring(tmp_path: Path) -> None:
    ring = RingId("prod", "api")
    files = RingFiles(tmp_path, ring, MiB)
    files.append(RECORDS)
    [(_seq, path)] = list_segments(files.path)
    segment = read_segment(path)
    assert (segment.ring, segment.parsed.records) == (ring, RECORDS)


@pytest.mark.parametrize("damage", [b"NOTLOGD!", MAGIC + b"\x00" * 30])
def test_segment_with_a_bad_header_is_not_trusted(tmp_path: Path, damage: bytes) -> None:
    path = tmp_path / "000000000001.seg"
    path.write_bytes(damage + encode(RECORDS))
    segment = read_segment(path)
    assert (segment.ring, segment.parsed.records, segment.parsed.corrupt) == (None, [], 1)


@pytest.mark.parametrize(
    "name",
    [b"[1, 2]", b'{"env": 5, "svc": "a"}', b'{"env": "a", "svc": null}', b"null",
     b'{"env": ["x"], "svc": {}}', b'{"env": "a"}', b"\xff\xfe"],
)  # fmt: skip
def test_segment_with_a_checksummed_but_malformed_header_is_not_trusted(
    tmp_path: Path, name: bytes
) -> None:
    path = tmp_path / "000000000001.seg"
    path.write_bytes(MAGIC + encode([(0, 0, name, 0)]) + encode(RECORDS))
    segment = read_segment(path)
    assert (segment.ring, segment.parsed.records, segment.parsed.corrupt) == (None, [], 1)


# --- segments on disk --------------------------------------------------------------
def disk_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for _seq, path in list_segments(directory))


def read_back(directory: Path) -> list[Record]:
    return [r for _seq, path in list_segments(directory) for r in read_segment(path).parsed.records]


def test_rotation_keeps_disk_within_budget_and_everything_memory_holds(tmp_path: Path) -> None:
    files = RingFiles(tmp_path, RingId("prod", "api"), MiB)
    written: list[Record] = []
    for batch in range(60):
        records = [(batch * 1000 + i, 3, os.urandom(900 + batch), batch * 1000 + i + 1)
                   for i in range(50)]  # fmt: skip
        files.append(records)
        written += records
        on_disk = read_back(files.path)
        assert on_disk == written[-len(on_disk) :]  # the newest, in order, no gap
        assert len(on_disk) >= len(newest_within(written, MiB))  # all the ring can hold
        # Within budget + one segment, counted as the ring counts (RECORD_OVERHEAD per
        # event); on disk a record takes HEAD.size instead, a little more.
        assert memory_cost(on_disk) <= MiB + files.segment_max + 1000 + RECORD_OVERHEAD
        extra = max(0, HEAD.size - RECORD_OVERHEAD) * len(on_disk) + 100 * len(
            list_segments(files.path)
        )
        assert disk_bytes(files.path) <= memory_cost(on_disk) + extra  # 100: a segment header
    assert len(list_segments(files.path)) <= 10  # rotated and deleted, not one big file


def test_a_new_process_starts_a_new_segment(tmp_path: Path) -> None:
    RingFiles(tmp_path, RingId("a", "b"), MiB).append(RECORDS[:2])
    files = RingFiles(tmp_path, RingId("a", "b"), MiB)
    files.append(RECORDS[2:])
    assert [seq for seq, _path in list_segments(files.path)] == [1, 2]
    assert read_back(files.path) == RECORDS


HOSTILE = [
    ("../x", "y"), ("..", ".."), (".", "."), ("", ""), ("-", "-"), ("", "-"), ("a/b", "c"),
    ("a", "b/c"), ("a.b", "c"), ("a", "b.c"), ("日本", "サービス"), ("\x00", "/etc/passwd"),
    ("x" * 10_000, "y"), ("x" * 10_000, "y" * 10_001), ("prod", "api"), ("Prod", "api"),
]  # fmt: skip


def test_hostile_ring_keys_give_safe_distinct_names(tmp_path: Path) -> None:
    names = [RingId(env, svc).dir_name() for env, svc in HOSTILE] + [RingId(None, None).dir_name()]
    assert len(set(names)) == len(names)
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9_.-]{1,255}", name), name
        assert name not in (".", "..")


@pytest.mark.parametrize(("env", "svc"), HOSTILE)
def test_hostile_ring_keys_stay_inside_the_data_dir(tmp_path: Path, env: str, svc: str) -> None:
    root = tmp_path / "data"
    files = RingFiles(root, RingId(env, svc), MiB)
    files.append(RECORDS[:1])
    assert [p.parent for p in root.iterdir()] == [root]
    [(_seq, path)] = list_segments(files.path)
    assert read_segment(path).ring == RingId(env, svc)


# --- the persister with a real store ---------------------------------------------------
def new_store(**kw: int) -> MemoryStore:
    args = {"ring_bytes": MiB, "max_rings": 8, "max_tails": 4, "tail_queue": 16} | kw
    return MemoryStore(ring_sizes={}, **args)


def put(store: MemoryStore, env: str, svc: str, txt: str, t: int) -> None:
    msg = Msg(env=env, svc=svc, txt=txt)
    msg.t.FromNanoseconds(t)
    store.write(msg, t)


async def everything(store: MemoryStore) -> list[Msg]:
    return (await store.query(Filter.from_params({}, 10**19), limit=10**6, offset=0)).events


def test_flush_then_load_restores_every_ring_in_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        first = new_store(max_rings=2)  # the third key spills into the overflow ring
        persister = Persister(store=first, data_dir=tmp_path, interval=60)
        await persister.load()
        for i in range(300):
            put(first, ["prod", "dev", "../etc"][i % 3], ["api", "日本"][i % 2], f"e{i}", i + 1)
        await persister.flush()
        assert (persister.written, persister.info()["pending_events"]) == (300, 0)
        second = new_store(max_rings=2)
        reloaded = Persister(store=second, data_dir=tmp_path, interval=60)
        await reloaded.load()
        assert reloaded.loaded == 300
        assert await everything(second) == await everything(first)
        assert sorted((r.key, r.events) for r in second.stats().rings) == sorted(
            (r.key, r.events) for r in first.stats().rings
        )

    asyncio.run(scenario())


def test_load_keeps_only_what_the_ring_can_hold(tmp_path: Path) -> None:
    records = [(i, 3, Msg(env="a", svc="b", txt=f"{i:08d}" * 50).SerializeToString(), i + 1)
               for i in range(20_000)]  # fmt: skip
    RingFiles(tmp_path, RingId("a", "b"), 64 * MiB).append(records)

    async def scenario() -> None:
        store = new_store()
        persister = Persister(store=store, data_dir=tmp_path, interval=60)
        await persister.load()
        fits = len(newest_within(records, MiB))
        [ring] = store.stats().rings
        assert ring.events >= fits * 0.9  # the ring evicts whole chunks (1/16 of its budget)
        restored = [m.SerializeToString() for m in await everything(store)]
        assert restored[::-1] == [data for _t, _l, data, _id in records[-ring.events :]]
        assert persister.loaded == fits  # the older segments are not even read

    asyncio.run(scenario())


def test_damage_is_skipped_counted_and_logged_at_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = RingFiles(tmp_path, RingId("a", "b"), MiB)
    records = [(i, 3, Msg(env="a", svc="b", txt=f"e{i}").SerializeToString(), i + 1)
               for i in range(10)]  # fmt: skip
    files.append(records)
    [(_seq, path)] = list_segments(files.path)
    with path.open("ab") as f:
        f.write(encode([(99, 3, b"torn", 1)])[:-2])

    async def scenario() -> Persister:
        persister = Persister(store=new_store(), data_dir=tmp_path, interval=60)
        await persister.load()
        return persister

    with caplog.at_level(logging.WARNING, logger="logd.server.store.persist"):
        persister = asyncio.run(scenario())
    assert (persister.loaded, persister.info()["corrupt_records_skipped"]) == (10, 1)
    assert "skipped damaged records" in caplog.text


def test_checksummed_but_malformed_records_and_headers_are_skipped_at_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """CRC-valid garbage (a bug, or a hand-edited file) never stops start-up nor breaks a
    query on its ring: each such record is skipped, counted and logged."""
    files = RingFiles(tmp_path, RingId("a", "b"), MiB)
    good = [(i, 3, Msg(env="a", svc="b", txt=f"e{i}").SerializeToString(), i + 1)
            for i in range(4)]  # fmt: skip
    files.append([good[0], (1, 3, b"\xff\xff\xff", 10), good[1], (2, 3, b"\x0a\x05ab", 11),
                  *good[2:]])  # fmt: skip
    odd = tmp_path / "odd"  # a ring directory whose only segment has a malformed header
    odd.mkdir()
    (odd / "000000000001.seg").write_bytes(
        MAGIC + encode([(0, 0, b'{"env": 1, "svc": 2}', 0)]) + encode(good)
    )

    async def scenario() -> tuple[Persister, list[Msg], list[Msg]]:
        store = new_store()
        persister = Persister(store=store, data_dir=tmp_path, interval=60)
        await persister.load()
        return (
            persister,
            await everything(store),
            (
                await store.query(Filter.from_params({"txt": "e"}, 10**19), limit=100, offset=0)
            ).events,
        )

    with caplog.at_level(logging.WARNING, logger="logd.server.store.persist"):
        persister, found, matched = asyncio.run(scenario())
    assert [m.txt for m in found] == ["e3", "e2", "e1", "e0"]
    assert [m.txt for m in matched] == ["e3", "e2", "e1", "e0"]
    assert (persister.loaded, persister.info()["corrupt_records_skipped"]) == (4, 3)
    assert caplog.text.count("skipped") == 2


def test_unwritable_dir_keeps_the_events_and_retries(tmp_path: Path) -> None:
    # Root ignores file modes, so a read-only directory would not stop these tests when
    # they run as root; a data directory whose parent is a regular file fails for anyone.
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")

    async def scenario() -> None:
        store = new_store()
        persister = Persister(store=store, data_dir=blocker / "data", interval=60)
        await persister.load()
        assert persister.errors == 1  # listing the data dir failed already
        for i in range(100):
            put(store, "a", "b", f"e{i}", i + 1)
        await persister.flush()
        info = persister.info()
        assert (info["errors"], info["failing"], info["pending_events"]) == (2, True, 100)
        assert "Not a directory" in info["last_error"]
        blocker.unlink()
        blocker.mkdir()
        put(store, "a", "b", "e100", 101)
        await persister.flush()
        info = persister.info()
        assert (info["failing"], info["pending_events"], info["written_events"]) == (False, 0, 101)
        again = new_store()
        await Persister(store=again, data_dir=blocker / "data", interval=60).load()
        assert await everything(again) == await everything(store)

    asyncio.run(scenario())


def test_unwritten_events_are_trimmed_to_what_the_ring_holds(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")

    async def scenario() -> None:
        store = new_store()
        persister = Persister(store=store, data_dir=blocker / "data", interval=60)
        await persister.load()
        for _ in range(3):
            for i in range(5000):
                put(store, "a", "b", "x" * 200, i + 1)
            await persister.flush()
        [ring] = store.stats().rings
        assert ring.events <= persister.info()["pending_events"] < 15_000

    asyncio.run(scenario())


def test_pending_is_shed_beyond_what_each_ring_holds(tmp_path: Path) -> None:
    store = new_store()
    persister = Persister(store=store, data_dir=tmp_path, interval=60)
    store.pending = defaultdict(list)
    for i in range(10_000):
        put(store, "a", "b", "x" * 500, i + 1)
        put(store, "c", "d", "y", i + 1)
    [big, small] = store.pending.values()
    room = len(newest_within(big, MiB))
    newest = big[-1]
    persister.shed_excess()
    assert (len(big), len(small), persister.shed) == (room, 10_000, 10_000 - room)
    assert big[-1] == newest
    assert persister.pending_events() == room + 10_000
