"""Retention by age: rings, the memory store, the data dir and the config, on a fixed clock
(every sweep is given its time: nothing here sleeps)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from logd._pb.logd_pb2 import Msg
from logd.cli.output import format_info
from logd.errors import ConfigError
from logd.server.config import Config
from logd.server.filters import Filter
from logd.server.http.routes import evicted_by
from logd.server.store.memory import OVERFLOW_KEY, MemoryStore
from logd.server.store.persist import Persister
from logd.server.store.retention import SWEEP_BATCH, AgeSweeper, sweep_interval
from logd.server.store.ring import CHUNK_OVERHEAD, RECORD_OVERHEAD, Ring
from logd.server.store.segments import RingFiles, RingId, list_segments

MiB = 1024 * 1024
S = 1_000_000_000
T0 = 1_800_000_000 * S  # the fixed clock's start (epoch ns)
AGE = 60 * S
FAR_PAST, FAR_FUTURE = -(2**62), 2**62  # event times a writer may send


def event(i: int, size: int = 100) -> bytes:
    return Msg(env="a", svc="b", txt=f"{i:08d}".ljust(size, "x")).SerializeToString()


def ids_held(ring: Ring) -> list[int]:
    return [i for chunk in ring._chunks for i in chunk.ids]


# --- the ring ------------------------------------------------------------------------
def test_a_chunk_goes_once_everything_in_it_arrived_more_than_the_age_ago() -> None:
    ring = Ring("a/b", "a", "b", capacity=MiB, max_age_ns=AGE)
    for i in range(10):
        ring.append(T0, 0, event(i))
    ring.sweep(T0)  # stamps: all ten arrived by T0
    ring.sweep(T0 + AGE)  # exactly the age: nothing is older than it
    assert len(ring) == 10
    ring.sweep(T0 + AGE + 1)
    assert (len(ring), ring.bytes, ring.aged, ring.evicted) == (0, 0, 10, 10)
    assert (
        ring.aged_bytes
        == ring.evicted_bytes
        == 10 * (len(event(0)) + RECORD_OVERHEAD) + (CHUNK_OVERHEAD)
    )
    assert ring.aged_id == ring.evicted_id == 9 + ring._ids.next - 10


def test_events_not_yet_seen_by_a_sweep_are_never_aged() -> None:
    ring = Ring("a/b", "a", "b", capacity=MiB, max_age_ns=AGE)
    ring.append(T0, 0, event(0))
    ring.sweep(T0 + 10 * AGE)  # the first sweep to see it: it arrived by now, not before
    assert len(ring) == 1
    ring.sweep(T0 + 11 * AGE + 1)
    assert len(ring) == 0


def test_newer_events_survive_and_only_whole_aged_chunks_go() -> None:
    ring = Ring("a/b", "a", "b", capacity=MiB, max_age_ns=AGE)
    now = T0
    for i in range(200):  # one event a second, swept every second
        ring.append(now, 0, event(i))
        ring.sweep(now)
        now += S
    # The open chunk closes after AGE/16 (3.75 s): a chunk holds at most 5 s of events.
    assert max(len(chunk) for chunk in ring._chunks) == 5
    held = ids_held(ring)
    first_id = ring._ids.next - 200
    # Everything that arrived within the age of the last sweep (now - S) is held...
    assert held[-61:] == list(range(first_id + 139, first_id + 200))
    # ...and what is held beyond it is at most one chunk's span (AGE/16 + a sweep) older.
    oldest_kept = held[0] - first_id
    assert 139 - 5 <= oldest_kept <= 139
    assert ring.aged == oldest_kept == ring.evicted


def test_an_idle_ring_loses_its_open_chunk_too() -> None:
    ring = Ring("a/b", "a", "b", capacity=MiB, max_age_ns=AGE)
    ring.append(T0, 0, event(0))
    ring.sweep(T0)
    ring.sweep(T0 + AGE + 1)
    assert len(ring._chunks) == 0
    ring.append(T0 + AGE + 2, 0, event(1))  # and takes new events in a new chunk
    assert len(ring) == 1
    assert ring.bytes == len(event(1)) + RECORD_OVERHEAD + CHUNK_OVERHEAD


def test_byte_evictions_are_counted_apart_from_age() -> None:
    ring = Ring("a/b", "a", "b", capacity=64 * 1024, max_age_ns=AGE)
    for i in range(2000):  # ~250 KB into a 64 KiB ring: the budget evicts
        ring.append(T0, 0, event(i))
    ring.sweep(T0)
    by_bytes = ring.evicted
    assert by_bytes > 0
    assert ring.aged == 0
    assert ring.evicted_bytes > 0
    ring.sweep(T0 + AGE + 1)
    assert ring.aged == 2000 - by_bytes
    assert ring.evicted == 2000
    assert ring.evicted_bytes - ring.aged_bytes > 0  # the budget's part


@pytest.mark.parametrize("t", [FAR_PAST, FAR_FUTURE, 0, T0 + 365 * 86_400 * S])
def test_the_event_time_a_writer_sets_neither_keeps_nor_drops_anything(t: int) -> None:
    ring = Ring("a/b", "a", "b", capacity=MiB, max_age_ns=AGE)
    ring.append(T0, 0, event(0))  # an honest event
    ring.append(t, 0, event(1))  # a hostile one beside it
    ring.sweep(T0)
    ring.sweep(T0 + AGE)
    assert len(ring) == 2  # a far-past t takes nothing with it early
    ring.sweep(T0 + AGE + 1)
    assert len(ring) == 0  # a far-future t keeps nothing alive


def test_runs_from_the_c_path_age_as_single_events_do() -> None:
    from array import array

    ring = Ring("a/b", "a", "b", capacity=MiB, max_age_ns=AGE)
    data = b"".join(event(i) for i in range(100))
    ends = array("I", [len(event(0)) * (i + 1) for i in range(100)])
    times = array("q", [FAR_FUTURE] * 100)
    ring.extend(data, ends, times, bytes(100), FAR_FUTURE, FAR_FUTURE)
    ring.sweep(T0)
    ring.sweep(T0 + AGE // 8)  # the open chunk has been open past AGE/16: it closes
    ring.extend(data, ends, times, bytes(100), FAR_FUTURE, FAR_FUTURE)
    ring.sweep(T0 + AGE // 8)
    ring.sweep(T0 + AGE + 1)
    assert len(ring) == 100
    assert ring.aged == 100


def test_a_ring_without_a_max_age_keeps_everything_its_budget_holds() -> None:
    ring = Ring("a/b", "a", "b", capacity=MiB)
    ring.append(FAR_PAST, 0, event(0))
    ring.sweep(T0)
    ring.sweep(T0 + 10**6 * AGE)
    assert len(ring) == 1
    assert ring.aged == 0


# --- the memory store ------------------------------------------------------------------
def new_store(default: int = 0, ages: dict[str, int] | None = None, **kw: int) -> MemoryStore:
    args = {"ring_bytes": MiB, "max_rings": 8, "max_tails": 4, "tail_queue": 16} | kw
    return MemoryStore(ring_sizes={}, ring_max_age_ns=default, ring_max_ages_ns=ages or {}, **args)


def put(store: MemoryStore, env: str, svc: str, txt: str, t: int = T0) -> None:
    msg = Msg(env=env, svc=svc, txt=txt)
    msg.t.FromNanoseconds(t)
    store.write(msg, t)


async def held(store: MemoryStore) -> list[str]:
    found = await store.query(Filter.from_params({}, 10**19), limit=1000, offset=0)
    return sorted(m.txt for m in found.events)


def texts(store: MemoryStore) -> list[str]:
    return asyncio.run(held(store))


def test_each_ring_takes_its_age_from_its_exact_key_a_prefix_or_the_default() -> None:
    store = new_store(AGE, {"prod/api": 10 * AGE, "prod/*": 5 * AGE, "dev/*": 0}, max_rings=4)
    for env, svc in [("prod", "api"), ("prod", "web"), ("dev", "x"), ("qa", "y")]:
        put(store, env, svc, f"{env}/{svc}")
    put(store, "one", "more", "overflow")  # the fifth key: the overflow ring, default age
    store.sweep(T0)
    store.sweep(T0 + AGE + 1)
    assert texts(store) == ["dev/x", "prod/api", "prod/web"]
    store.sweep(T0 + 5 * AGE + 1)
    assert texts(store) == ["dev/x", "prod/api"]
    store.sweep(T0 + 10 * AGE + 1)
    assert texts(store) == ["dev/x"]  # 0: no max age (the config refuses 0s)
    aged = {r.key: r.aged for r in store.stats().rings}
    assert aged == {"prod/api": 1, "prod/web": 1, "dev/x": 0, "qa/y": 1, OVERFLOW_KEY: 1}


def test_info_counts_evictions_by_reason() -> None:
    store = new_store(AGE, ring_bytes=64 * 1024)
    for i in range(2000):
        put(store, "a", "b", f"{i:08d}".ljust(100, "x"))
    store.sweep(T0)
    store.sweep(T0 + AGE + 1)
    rings = store.stats().rings
    by = evicted_by(rings)
    assert by["bytes"]["events"] + by["age"]["events"] == 2000
    assert by["bytes"]["events"] > 0
    assert by["age"]["events"] > 0
    assert by["age"]["bytes"] == rings[0].aged_bytes > 0
    assert by["bytes"]["bytes"] == rings[0].evicted_bytes - rings[0].aged_bytes > 0


def test_logd_info_says_how_many_a_max_age_evicted() -> None:
    ring = {"key": "a/b", "events": 1, "bytes": 1, "capacity_bytes": 2, "evicted": 7}
    aged = ring | {"evicted_by": {"bytes": {"events": 2}, "age": {"events": 5}}}
    assert "evicted 7 (5 by age)" in format_info({"store": {"rings": [aged]}})
    assert "evicted 7\n" in format_info({"store": {"rings": [ring]}}) + "\n"
    assert "by age" not in format_info({"store": {"rings": [ring | {"evicted_by": None}]}})


def test_the_sweeper_evicts_with_no_new_event_and_stops_promptly() -> None:
    times = iter([T0, T0, T0 + AGE + 1])  # the clock each sweep reads, then the last one
    store = new_store(AGE)
    put(store, "a", "b", "old")

    async def scenario() -> None:
        swept_late = asyncio.Event()

        def clock() -> int:
            now = next(times, None)
            if now is None:
                swept_late.set()
                return T0 + AGE + 1
            return now

        sweeper = AgeSweeper(store, interval_s=0.01, clock=clock)
        sweeper.start()
        await asyncio.wait_for(swept_late.wait(), 5)
        await asyncio.wait_for(sweeper.stop(), 2)

    asyncio.run(scenario())
    assert texts(store) == []
    assert sweep_interval(1) == 1 / 16
    assert sweep_interval(86400) == 1.0
    assert sweep_interval(0.1) == 0.05


def test_a_sweep_of_many_rings_gives_the_event_loop_back_between_batches() -> None:
    store = new_store(AGE, max_rings=SWEEP_BATCH * 3)
    for i in range(SWEEP_BATCH * 3):
        put(store, "a", f"svc-{i}", "old")
    store.sweep(T0)  # stamped: all arrived by T0
    assert store.sweep(T0, 0, SWEEP_BATCH)  # more rings are left after the first batch
    assert not store.sweep(T0, 2 * SWEEP_BATCH, SWEEP_BATCH)
    seen: list[int] = []

    async def scenario() -> None:
        sweeper = AgeSweeper(store, interval_s=60, clock=lambda: T0 + AGE + 1)

        async def watch() -> None:
            while sweeper.sweeps == 0:
                seen.append(sum(r.aged for r in store.stats().rings))
                await asyncio.sleep(0)

        watcher = asyncio.ensure_future(watch())
        sweeper.start()
        await asyncio.wait_for(watcher, 5)
        await sweeper.stop()

    asyncio.run(scenario())
    assert texts(store) == []
    # The watcher ran while some rings were swept and others not yet.
    assert any(0 < n < SWEEP_BATCH * 3 for n in seen)


# --- the data dir ------------------------------------------------------------------
def test_what_aged_does_not_come_back_after_a_restart(tmp_path: Path) -> None:
    now = [T0]

    async def scenario() -> None:
        first = new_store(AGE)
        persister = Persister(store=first, data_dir=tmp_path, interval=60, clock=lambda: now[0])
        await persister.load()
        put(first, "a", "b", "old")
        await persister.flush()
        [(_, old_segment)] = list_segments(tmp_path / RingId("a", "b").dir_name())
        os.utime(old_segment, ns=(now[0], now[0]))  # as if written at T0
        now[0] += AGE // 8  # the segment has taken writes for AGE/16: the next one rotates
        put(first, "a", "b", "new")
        await persister.flush()
        segments = list_segments(tmp_path / RingId("a", "b").dir_name())
        assert len(segments) == 2
        os.utime(segments[1][1], ns=(now[0], now[0]))
        now[0] = T0 + AGE + S  # "old" has aged, "new" has not
        second = new_store(AGE)

        def monotonic(wall: int) -> int:  # the restarted process's: it booted 5 s ago
            return wall - now[0] + 5 * S

        reloaded = Persister(
            store=second,
            data_dir=tmp_path,
            interval=60,
            clock=lambda: now[0],
            monotonic=lambda: monotonic(now[0]),
        )
        await reloaded.load()
        assert await held(second) == ["new"]
        assert reloaded.loaded == 1
        # The restored chunk arrived by its segment's time, on the rings' clock: it goes an
        # age after it, and not before.
        written = T0 + AGE // 8
        second.sweep(monotonic(now[0]))
        second.sweep(monotonic(written + AGE - S))
        assert await held(second) == ["new"]
        second.sweep(monotonic(written + AGE + S))
        assert await held(second) == []

    asyncio.run(scenario())


def test_events_that_aged_before_their_flush_are_not_written(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = new_store(AGE)
        persister = Persister(store=store, data_dir=tmp_path, interval=60, clock=lambda: T0)
        await persister.load()
        put(store, "a", "b", "aged")
        store.sweep(T0)
        store.sweep(T0 + AGE + 1)
        put(store, "a", "b", "fresh")
        await persister.flush()
        assert persister.written == 1
        for _, path in list_segments(tmp_path / RingId("a", "b").dir_name()):
            os.utime(path, ns=(T0, T0))  # written at the fixed clock's time
        second = new_store(AGE)
        clocks = {"clock": lambda: T0, "monotonic": lambda: T0}
        await Persister(store=second, data_dir=tmp_path, interval=60, **clocks).load()
        assert await held(second) == ["fresh"]

    asyncio.run(scenario())


def test_segments_rotate_and_go_by_age(tmp_path: Path) -> None:
    now = [T0]
    files = RingFiles(tmp_path, RingId("a", "b"), MiB, max_age_ns=AGE, clock=lambda: now[0])
    record = (T0, 3, event(0), 1)
    for step in range(40):  # one write every AGE/32: a segment every other write
        now[0] = T0 + step * AGE // 32
        files.append([record])
    kept = list_segments(files.path)
    # Segments last written more than AGE ago are gone; a 1 MiB budget alone keeps all.
    assert 16 <= len(kept) <= 18
    files.append([record])
    now[0] += 2 * AGE
    files.append([record])
    assert len(list_segments(files.path)) == 1


# --- the config ------------------------------------------------------------------------
def load(tmp_path: Path, env: dict[str, str] | None = None, **argv: str) -> Config:
    return Config.load(file=None, environ=env or {}, argv=argv, cwd=tmp_path)


def test_max_age_default_and_per_ring_from_flag_env_and_file(tmp_path: Path) -> None:
    assert load(tmp_path).ring_max_age is None  # off by default
    assert load(tmp_path).ring_max_age_ns == 0
    assert load(tmp_path, ring_max_age="15m").ring_max_age == 900
    assert load(tmp_path, {"LOGD_RING_MAX_AGE": "7d"}).ring_max_age_ns == 7 * 86400 * S
    (tmp_path / "logdrc.yml").write_text(
        "ring_max_age: 30s\n"
        "rings:\n"
        "  prod/api: {bytes: 256MiB, max_age: 7d}\n"
        "  'dev/*': {max_age: 1.5h}\n"
        "  qa/x: 2MiB\n"
    )
    c = load(tmp_path)
    assert c.ring_max_age == 30
    assert c.rings == {"prod/api": 256 * MiB, "qa/x": 2 * MiB}  # plain sizes still work
    assert c.ring_max_ages_ns == {"prod/api": 7 * 86400 * S, "dev/*": 5400 * S}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("ring_max_age: 10x\n", "ring_max_age in"),
        ("ring_max_age: 0s\n", "ring_max_age in"),
        ("ring_max_age: 60\n", "ring_max_age in"),  # a duration has a unit
        ("ring_max_age: 3651d\n", "ring_max_age in"),
        ("rings:\n  a/b: {max_age: soon}\n", "['a/b'].max_age has a bad value"),
        ("rings:\n  a/b: {max_age: 500ms}\n", "['a/b'].max_age has a bad value"),
        ("rings:\n  a/b: {bytes: 2MiB, age: 1d}\n", "['a/b'] has an unknown key 'age'"),
        ("rings:\n  a/b: {}\n", "['a/b'] must give bytes, max_age or both"),
        ("rings:\n  a/b: {bytes: lots}\n", "rings in"),
        ("ring_max_age: 1d\nstore_url: redis://127.0.0.1:1/0\n", "need the memory store"),
        ("rings:\n  a/b: {max_age: 1d}\nstore_url: redis://127.0.0.1:1/0\n", "memory store"),
    ],
)
def test_bad_max_ages_stop_with_one_sentence_naming_them(
    tmp_path: Path, content: str, needle: str
) -> None:
    (tmp_path / "logdrc.yml").write_text(content)
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    message = str(err.value)
    assert needle in message
    assert "\n" not in message


@pytest.mark.parametrize("value", ["", "1", "-1m", "1e9d", "9" * 30 + "s", "1 d"])
def test_bad_max_age_flag_and_env_values_name_them(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="--ring-max-age has a bad value: expected a dur"):
        load(tmp_path, ring_max_age=value)
    if value:  # an empty variable counts as unset
        with pytest.raises(ConfigError, match="LOGD_RING_MAX_AGE has a bad value"):
            load(tmp_path, {"LOGD_RING_MAX_AGE": value})
