"""MemoryStore: byte-bounded rings, overflow ring, per-key sizes, newest-first queries."""

from __future__ import annotations

import asyncio
from array import array

import pytest
from logd._pb.logd_pb2 import ERROR, INFO, Msg
from logd.server.filters import Filter
from logd.server.store.memory import OVERFLOW_KEY, MemoryStore, ring_key
from logd.server.store.ring import CHUNK_OVERHEAD, FILL_HITS, RECORD_OVERHEAD, SPARE_SHARE, Ring

MiB = 1024 * 1024
S = 1_000_000_000


def store(**kw: object) -> MemoryStore:
    args: dict[str, object] = {
        "ring_bytes": MiB, "ring_sizes": {}, "max_rings": 8, "max_tails": 4, "tail_queue": 16,
    }  # fmt: skip
    args.update(kw)
    return MemoryStore(**args)  # type: ignore[arg-type]


def put(s: MemoryStore, t: int, **fields: object) -> None:
    msg = Msg(**fields)  # type: ignore[arg-type]
    msg.t.FromNanoseconds(t)
    s.write(msg, t)


def query(s: MemoryStore, limit: int = 100, offset: int = 0, **params: str) -> list[Msg]:
    found = asyncio.run(s.query(Filter.from_params(params, 10**19), limit=limit, offset=offset))
    return found.events


def test_ring_evicts_oldest_first_and_stays_within_budget() -> None:
    capacity = 64 * 1024
    ring = Ring("a/b", "a", "b", capacity=capacity)
    for i in range(5000):
        ring.append(i, 0, i.to_bytes(4, "big") * 25)
        assert ring.bytes <= capacity
    kept = [t for t, _, _, _ in ring.scan(Filter())]
    assert kept == list(range(4999, 4999 - len(kept), -1))  # the newest, in order, no gaps
    assert ring.evicted == 5000 - len(kept)
    # Eviction drops one chunk (at most 1/16 of the budget and its bookkeeping) at a time.
    assert ring.bytes >= capacity - 2 * capacity // 16
    assert ring.bytes == len(kept) * (100 + RECORD_OVERHEAD) + len(ring._chunks) * CHUNK_OVERHEAD


def test_big_events_evict_many_small_ones() -> None:
    ring = Ring("a/b", "a", "b", capacity=64 * 1024)
    for i in range(2000):
        ring.append(i, 0, b"x" * 10)
    ring.append(99_999, 0, b"y" * 3000)
    assert ring.bytes <= 64 * 1024
    assert next(iter(ring.scan(Filter())))[0] == 99_999


def test_scan_finds_needles_across_chunk_boundaries_exactly() -> None:
    ring = Ring("a/b", "a", "b", capacity=160_000)  # chunks of 10,000 bytes: several
    for i in range(3000):
        msg = Msg(fn="F" if i % 7 == 0 else "G", txt=f"event {i}", lvl=5 if i % 10 == 0 else 3)
        ring.append(i, msg.lvl, msg.SerializeToString())
    assert len(ring._chunks) > 4
    assert ring.evicted == 0
    hits = [t for t, _, _, _ in ring.scan(Filter.from_params({"fn": "F"}, 0))]
    assert hits == [i for i in range(2999, -1, -1) if i % 7 == 0]
    assert [t for t, _, _, _ in ring.scan(Filter.from_params({"txt": "EVENT 12"}, 0))] == [
        i for i in range(2999, -1, -1) if "event 12" in f"event {i}"
    ]
    assert [t for t, _, _, _ in ring.scan(Filter(lvl=5))] == list(range(2990, -1, -10))
    assert [t for t, _, _, _ in ring.scan(Filter.from_params({"lvl": "5", "fn": "F"}, 0))] == list(
        range(2940, -1, -70)
    )


def test_non_ascii_text_matches_case_insensitively() -> None:
    ring = Ring("a/b", "a", "b", capacity=1 << 20)
    for i, txt in enumerate(["Ünïcode ÉVÉNEMENT", "plain", "événement"]):
        ring.append(i, 0, Msg(txt=txt).SerializeToString())
    assert [t for t, _, _, _ in ring.scan(Filter.from_params({"txt": "ÉVÉNEMENT"}, 0))] == [2, 0]


def test_rings_are_keyed_env_svc_with_placeholders() -> None:
    s = store()
    put(s, 1, env="prod", svc="api")
    put(s, 2)
    assert sorted(r.key for r in s.stats().rings) == ["-/-", "prod/api"]
    assert ring_key("", "x") == "-/x"


def test_overflow_ring_takes_keys_beyond_max_rings_and_filters_exactly() -> None:
    s = store(max_rings=2)
    for i, svc in enumerate(["a", "b", "c", "d", "c"]):
        put(s, i, env="e", svc=svc, txt=svc)
    stats = s.stats()
    assert [r.key for r in stats.rings] == ["e/a", "e/b", OVERFLOW_KEY]
    assert stats.overflow_events == 3
    assert [m.txt for m in query(s, svc="c")] == ["c", "c"]
    assert [m.txt for m in query(s, svc="d")] == ["d"]


def test_per_key_sizes_exact_then_longest_prefix() -> None:
    s = store(ring_sizes={"prod/api": 5 * MiB, "prod/*": 3 * MiB, "prod/ap*": 4 * MiB})
    assert s.capacity_for("prod/api") == 5 * MiB
    assert s.capacity_for("prod/apx") == 4 * MiB
    assert s.capacity_for("prod/web") == 3 * MiB
    assert s.capacity_for("dev/web") == MiB


def test_query_is_newest_first_across_rings_with_offset_and_limit() -> None:
    s = store()
    for i in range(10):
        put(s, i * S, env="prod", svc="api" if i % 2 else "web", txt=f"e{i}")
    assert [m.txt for m in query(s)] == [f"e{i}" for i in range(9, -1, -1)]
    assert [m.txt for m in query(s, limit=3, offset=2)] == ["e7", "e6", "e5"]
    assert [m.txt for m in query(s, svc="api", limit=2)] == ["e9", "e7"]


def test_query_filters_level_text_and_time() -> None:
    s = store()
    put(s, 1 * S, env="p", svc="a", lvl=INFO, txt="card ok")
    put(s, 2 * S, env="p", svc="a", lvl=ERROR, txt="Card declined")
    put(s, 3 * S, env="p", svc="a", lvl=INFO, txt="other")
    assert [m.txt for m in query(s, lvl="error")] == ["Card declined"]
    assert [m.txt for m in query(s, txt="card")] == ["Card declined", "card ok"]
    assert [m.txt for m in query(s, since="1970-01-01T00:00:02Z")] == ["other", "Card declined"]
    assert query(s, txt="nothing") == []


def test_query_returns_what_was_written() -> None:
    s = store()
    put(s, 5, env="p", svc="a", fn="F", txt="t", attrs={"k": "v"}, response_status=500)
    (msg,) = query(s)
    assert (msg.fn, msg.txt, dict(msg.attrs), msg.response_status) == ("F", "t", {"k": "v"}, 500)
    assert msg.t.ToNanoseconds() == 5


@pytest.mark.parametrize("size", [200, 5000, 60000])
def test_memory_accounting_bounds_every_ring(size: int) -> None:
    s = store(ring_bytes=MiB)
    for i in range(400):
        put(s, i, env="p", svc="a", txt="x" * size)
    (ring,) = s.stats().rings
    assert ring.bytes <= MiB
    assert ring.events >= 1


def test_characters_that_lower_to_ascii_are_found_in_packed_chunks() -> None:
    ring = Ring("a/b", "a", "b", capacity=1 << 20)
    texts = ["plain"] * 50 + ["\u212aelvin"] + ["plain"] * 50 + ["\u0130stanbul"] + ["x"] * 10
    for i, txt in enumerate(texts):
        ring.append(i, 0, Msg(txt=txt).SerializeToString())
    assert [t for t, _, _, _ in ring.scan(Filter.from_params({"txt": "kelvin"}, 0))] == [50]
    assert [t for t, _, _, _ in ring.scan(Filter.from_params({"txt": "istanbul"}, 0))] == []
    assert [t for t, _, _, _ in ring.scan(Filter.from_params({"txt": "i\u0307stanbul"}, 0))] == [
        101
    ]


def test_a_long_scan_gives_the_event_loop_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A query that matches nothing scans every chunk; between chunks it awaits, so other
    tasks (ingest) run while it works. SLICE_S 0: it gives the loop back after every chunk."""
    from logd.server.store import scan

    monkeypatch.setattr(scan, "SLICE_S", 0.0)
    s = store(ring_bytes=16 * MiB)
    for i in range(20_000):
        put(s, i, env="e", svc="a", txt=f"event {i} " + "x" * 90)
    chunks = len(s._all_rings()[0]._chunks)
    assert chunks > 20

    async def run() -> tuple[int, list[Msg]]:
        turns = 0
        done = asyncio.Event()

        async def other_task() -> None:
            nonlocal turns
            while not done.is_set():
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(other_task())
        found = await s.query(Filter.from_params({"txt": "absent"}, 10**19), limit=10, offset=0)
        done.set()
        await task
        return turns, found.events

    turns, events = asyncio.run(run())
    assert events == []
    assert turns >= chunks - 1  # the other task ran between the chunks


def test_a_query_survives_ingest_evicting_what_it_has_not_read_yet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writes during a query evict its oldest chunks: it skips them and returns only events
    that were stored when it began, newest first, without a gap among those it returns."""
    from logd.server.store import scan

    monkeypatch.setattr(scan, "SLICE_S", 0.0)
    s = store(ring_bytes=256 * 1024)
    for i in range(5000):
        put(s, i, env="e", svc="a", txt=f"old {i:05d}" + "o" * 40)

    async def run() -> list[Msg]:
        async def ingest() -> None:
            for i in range(5000):
                put(s, 10_000 + i, env="e", svc="a", txt=f"new {i:05d}" + "n" * 40)
                if i % 100 == 0:
                    await asyncio.sleep(0)

        task = asyncio.create_task(ingest())
        found = await s.query(Filter.from_params({"txt": "old"}, 10**19), limit=10**6, offset=0)
        await task
        return found.events

    events = asyncio.run(run())
    numbers = [int(m.txt[4:9]) for m in events]
    assert events, "the newest old events were read before they were evicted"
    assert numbers == list(range(numbers[0], numbers[0] - len(numbers), -1))
    assert numbers[0] == 4999


def test_a_cursor_takes_a_page_of_a_chunk_at_a_time_and_sees_the_chunk_as_it_was() -> None:
    """The newest 100 of a chunk of 1,000 events slice FILL_HITS records, not 1,000; events
    appended to that open chunk while the query pauses are newer than it: not seen."""
    ring = Ring("p/a", "p", "a", 1 << 20)
    for i in range(1000):
        ring.append(i, INFO, Msg(txt=str(i)).SerializeToString())

    async def run() -> list[int]:
        cursor = ring.cursor(Filter(), _no_pause)
        await cursor.fill()
        assert [hit[0] for hit in cursor.hits] == list(range(999, 999 - FILL_HITS, -1))
        ring.append(1000, INFO, Msg(txt="later").SerializeToString())
        times = []
        while cursor.hits:
            times.append(cursor.hits.popleft()[0])
            if not cursor.hits:
                await cursor.fill()
        assert cursor.done
        return times

    assert asyncio.run(run()) == list(range(999, -1, -1))


async def _no_pause() -> None:
    return None


def test_guard_against_sealed_chunks_keeping_uncounted_spare_room() -> None:
    """A ring counts its events' bytes, not what their buffers allocated: every sealed
    chunk holds at most SPARE_SHARE more than its data, whether it grew an event at a time
    (compacted when sealed) or by runs (kept: next to no spare room, no copy)."""
    one, runs = Ring("p/a", "p", "a", 8 << 20), Ring("p/b", "p", "b", 8 << 20)
    sizes = [37, 130, 5, 900, 64, 1, 300]
    for i in range(5000):
        one.append(i, INFO, b"x" * sizes[i % len(sizes)])
    for i in range(200):
        n = 1 + i % 40
        body = b"".join(b"y" * sizes[(i + k) % len(sizes)] for k in range(n))
        ends, at = array("I"), 0
        for k in range(n):
            at += sizes[(i + k) % len(sizes)]
            ends.append(at)
        runs.extend(body, ends, array("q", [i] * n), bytes([INFO]) * n, i, i)
    for ring in (one, runs):
        sealed = [c for c in ring._chunks if c.sealed]
        assert len(sealed) > 10
        for chunk in sealed:
            data = chunk.data
            allocated = data.__alloc__() if isinstance(data, bytearray) else len(data)
            assert allocated - len(data) <= len(data) * SPARE_SHARE
    assert any(isinstance(c.data, bytearray) for c in runs._chunks if c.sealed)  # not copied
