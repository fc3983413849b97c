"""ValkeyStore faults against a real redis-server: down or restarted backend, bounded
buffer, 503-worthy reads; plus its settings and key names."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sys
from array import array
from collections.abc import Callable, Iterator
from itertools import accumulate
from pathlib import Path

import pytest
from logd._pb.logd_pb2 import Msg
from logd.errors import ConfigError
from logd.server.config import Config
from logd.server.filters import Filter
from logd.server.store.base import StoreUnavailable
from logd.server.store.valkey import entries, ids, tail
from logd.server.store.valkey import store as valkey
from logd.server.store.valkey.replay import BUCKET_NS, CHECK_MAX, PREFIX, SLOTS, SharedReplayGuard
from logd.server.store.valkey.store import ValkeyStore, redact, stream_key
from redis_support import RedisClusterNodes, RedisServer
from support import tail_batch

MiB = 1024 * 1024
S = 1_000_000_000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path / "redis")
    yield srv
    srv.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes(tmp_path / "cluster").start()
    yield nodes
    nodes.stop()


def make(
    server: RedisServer | RedisClusterNodes, buffer_events: int = 1000, tail_queue: int = 16
) -> ValkeyStore:
    return ValkeyStore(
        url=server.url, password=None, buffer_events=buffer_events, ring_bytes=MiB,
        ring_sizes={}, max_rings=8, max_tails=4, tail_queue=tail_queue, timeout=0.5,
    )  # fmt: skip


def put(s: ValkeyStore, i: int) -> None:
    msg = Msg(env="p", svc="a", txt=f"e{i}")
    msg.t.FromNanoseconds(i)
    s.write(msg, i)
    s.end_batch()


async def until(condition: Callable[[], bool]) -> None:
    """Poll a condition the store changes from its own tasks (no event to wait on)."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - the store exposes counters, not events
            await asyncio.sleep(0.02)


async def texts(s: ValkeyStore) -> list[str]:
    return [m.txt for m in (await s.query(Filter(), limit=100, offset=0)).events]


def test_backend_down_buffers_then_flushes_when_it_answers(server: RedisServer) -> None:
    async def main() -> None:
        s = make(server)
        await s.start()  # nothing listens yet: not fatal
        try:
            assert s.info()["reachable"] is False
            for i in range(5):
                put(s, i)
            assert s.info()["buffered_events"] == 5
            with pytest.raises(StoreUnavailable, match="unreachable"):
                await texts(s)
            with pytest.raises(StoreUnavailable):
                s.subscribe(Filter())
            await asyncio.to_thread(server.start)
            await until(lambda: s.info()["buffered_events"] == 0)
            assert s.info()["reachable"] is True
            assert await texts(s) == [f"e{i}" for i in range(4, -1, -1)]
        finally:
            await s.close()

    asyncio.run(main())


def test_a_restarted_backend_gets_the_events_written_while_it_was_away(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis", persist=True).start()

    async def main() -> None:
        s = make(server)
        await s.start()
        try:
            put(s, 0)
            await s.send_all()
            await asyncio.to_thread(server.stop)
            for i in range(1, 4):
                put(s, i)
            await until(lambda: s.info()["reachable"] is False)
            await asyncio.to_thread(server.start)
            await until(lambda: s.info()["buffered_events"] == 0)
            assert await texts(s) == ["e3", "e2", "e1", "e0"]
            await s.refresh()
            assert [r.key for r in s.stats().rings] == ["p/a"]
        finally:
            await s.close()

    try:
        asyncio.run(main())
    finally:
        server.stop()


def test_the_buffer_is_bounded_in_bytes_too(server: RedisServer) -> None:
    """Big events while the backend is down: the buffer holds at most its bytes (the oldest
    go, counted), whatever its bound in events; what it kept is sent, in order."""

    async def main() -> None:
        s = ValkeyStore(
            url=server.url, password=None, buffer_events=100_000, buffer_bytes=MiB,
            ring_bytes=MiB, ring_sizes={}, max_rings=8, max_tails=4, tail_queue=16, timeout=0.5,
        )  # fmt: skip
        await s.start()
        try:
            for i in range(1000):  # 60 MB of 60 KB events
                msg = Msg(env="p", svc="a", txt=f"{i:04d}" + "x" * 60_000)
                msg.t.FromNanoseconds(i)
                s.write(msg, i)
                s.end_batch()
                assert s.info()["buffered_bytes"] <= MiB
            kept = s.info()["buffered_events"]
            assert 10 <= kept <= 17  # 1 MiB of 60 KB events
            assert s.info()["dropped_events"] == 1000 - kept
            await asyncio.to_thread(server.start)
            await until(lambda: s.info()["buffered_bytes"] == 0)  # with the round trip's
            assert s.info()["buffered_events"] == 0
            got = [m.txt[:4] for m in (await s.query(Filter(), limit=100, offset=0)).events]
            assert got == [f"{i:04d}" for i in range(999, 999 - kept, -1)]
        finally:
            await s.close()

    asyncio.run(main())


def test_a_full_buffer_drops_the_oldest_and_counts_them(server: RedisServer) -> None:
    """While the backend is down a full buffer keeps the newest events, and ingest is
    refused nothing (checks cost the backend nothing then: ValkeyStore.room)."""

    async def main() -> None:
        s = make(server, buffer_events=3)
        await s.start()
        try:
            for i in range(8):
                put(s, i)
            assert s.info()["dropped_events"] == 5
            assert s.down
            assert s.room == sys.maxsize
            await asyncio.to_thread(server.start)
            await until(lambda: s.info()["buffered_events"] == 0)
            assert await texts(s) == ["e7", "e6", "e5"]
        finally:
            await s.close()

    asyncio.run(main())


def test_store_url_setting(tmp_path: Path) -> None:
    def load(**env: str) -> Config:
        return Config.load(file=None, environ=env, argv={}, cwd=tmp_path)

    assert load().store_url == "memory://"
    assert load(LOGD_STORE_URL="rediss://cache.internal:6379/0").store_url.startswith("rediss")
    assert load(LOGD_STORE_URL="rediss+cluster://c.internal:6379").store_url.endswith(":6379")
    with pytest.raises(ConfigError, match="redis\\+cluster://host:port or"):
        load(LOGD_STORE_URL="redis+cluster://h:1/2")  # a cluster has only db 0
    with pytest.raises(ConfigError, match="LOGD_STORE_URL has a bad value"):
        load(LOGD_STORE_URL="http://x")
    with pytest.raises(ConfigError, match="data_dir is for the memory store"):
        load(LOGD_STORE_URL="redis://h:1/0", LOGD_DATA_DIR=str(tmp_path))
    assert "hunter2" not in repr(load(LOGD_STORE_PASSWORD="hunter2"))


def test_urls_are_shown_without_their_password_and_keys_keep_one_slot_per_ring() -> None:
    assert redact("rediss://user:s3cret@h:6379/0") == "rediss://user:***@h:6379/0"
    assert redact("redis://:s3cret@h/0") == "redis://:***@h/0"
    assert redact("redis://h:1/0") == "redis://h:1/0"
    assert stream_key("prod/api") == b"logd:ring:{prod/api}"
    assert stream_key("we{ir}d/x") == b"logd:ring:{we%7Bir%7Dd/x}"


def test_guard_against_replay_on_another_node(server: RedisServer) -> None:
    """Two nodes' guards on one backend: whichever checks a MAC first wins, the other sees a
    replay; the MAC's bucket is kept for max_age + max_future after its end, then
    forgotten."""
    server.start()
    now = 10**18

    async def main() -> None:
        nodes = [make(server), make(server)]
        guards = [
            SharedReplayGuard(
                client=n.client, max_age_ns=S, max_future_ns=S // 4, clock=lambda: now
            )
            for n in nodes
        ]
        results: list[list[bool]] = []
        try:
            guards[0].submit([(b"m" * 16, now), (b"n" * 16, now)], results.append)
            await guards[0].close()
            guards[1].submit([(b"n" * 16, now), (b"o" * 16, now)], results.append)
            await guards[1].close()
            assert results == [[True, True], [False, True]]
            bucket = b"%s{0}:%d" % (PREFIX, now // BUCKET_NS)
            assert await nodes[0].client.hkeys(bucket) == [b"m" * 16, b"n" * 16, b"o" * 16]
            ttl = await nodes[0].client.pttl(bucket)  # max_age + max_future past the bucket
            assert 1250 < ttl <= 1250 + BUCKET_NS // 1_000_000
            assert guards[1].info() == {
                "checked": 2, "replays": 1, "unchecked": 0, "round_trips": 1,
            }  # fmt: skip
            await asyncio.to_thread(server.stop)
            guards[1].submit([(b"p" * 16, now)], results.append)
            await guards[1].close()
            assert results[-1] == [True]  # backend away: the local guard alone decides
            assert guards[1].info()["unchecked"] == 1
            offline = SharedReplayGuard(
                client=nodes[0].client, max_age_ns=S, max_future_ns=0, offline=lambda: True
            )
            offline.submit([(b"q" * 16, now)], results.append)
            assert results[-1] == [True]  # known down: decided at once, no round trip
            assert offline.info()["unchecked"] == 1
        finally:
            for n in nodes:
                await n.close()

    asyncio.run(main())


def test_replay_buckets_are_by_signing_time_and_their_expiry_only_grows(
    server: RedisServer,
) -> None:
    """Frames signed either side of a bucket's end go in two buckets, whatever the node's
    clock; each bucket outlives its newest possible frame by max_age + max_future. A node
    whose clock is ahead does not shorten that; one whose clock is behind lengthens it."""
    server.start()
    edge = 10**18 - 10**18 % BUCKET_NS + 7 * BUCKET_NS  # a bucket's start
    clock = [edge]

    async def main() -> None:
        store = make(server)
        guard = SharedReplayGuard(
            client=store.client, max_age_ns=S, max_future_ns=S // 4, clock=lambda: clock[0]
        )
        results: list[list[bool]] = []
        try:
            guard.submit([(b"a" * 16, edge - 1), (b"b" * 16, edge)], results.append)
            await guard.close()
            older, newer = (b"%s{0}:%d" % (PREFIX, edge // BUCKET_NS + k) for k in (-1, 0))
            assert await store.client.hkeys(older) == [b"a" * 16]
            assert await store.client.hkeys(newer) == [b"b" * 16]
            assert 1249 <= await store.client.pttl(older) <= 1250
            assert 1250 + 249 <= await store.client.pttl(newer) <= 1250 + 250
            clock[0] = edge + S // 2  # a node whose clock is half a second ahead
            guard.submit([(b"b" * 16, edge), (b"c" * 16, edge)], results.append)
            await guard.close()
            assert results == [[True, True], [False, True]]
            assert await store.client.pttl(newer) >= 1250 + 250 - 100  # not down to 1000
            clock[0] = edge - S // 2  # and one whose clock is half a second behind
            guard.submit([(b"d" * 16, edge)], results.append)
            await guard.close()
            assert 1250 + 250 + 400 <= await store.client.pttl(newer) <= 1250 + 250 + 500
        finally:
            await store.close()

    asyncio.run(main())


def test_guard_against_replay_on_another_node_in_cluster_mode(cluster: RedisClusterNodes) -> None:
    """The same check on a 3-node cluster: MACs of all 16 tags (so every node owns some)
    are claimed by one node's guard and are replays on the other's."""
    now = 10**18
    macs = [bytes([tag]) * 16 for tag in range(SLOTS)]

    async def main() -> None:
        nodes = [make(cluster), make(cluster)]
        guards = [
            SharedReplayGuard(client=n.client, max_age_ns=S, max_future_ns=0, clock=lambda: now)
            for n in nodes
        ]
        results: list[list[bool]] = []
        try:
            guards[0].submit([(m, now) for m in macs[:10]], results.append)
            await guards[0].close()
            guards[1].submit([(m, now) for m in macs], results.append)
            await guards[1].close()
            assert results == [[True] * 10, [False] * 10 + [True] * 6]
            assert guards[1].info() == {
                "checked": 16, "replays": 10, "unchecked": 0, "round_trips": 1,
            }  # fmt: skip
        finally:
            for n in nodes:
                await n.close()

    asyncio.run(main())


def test_close_ends_even_when_redis_py_loses_the_cancel(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """redis-py can lose a cancel that lands mid-command. With the ring figures refreshed
    without pause, most cancels of the refresh loop land there: close() must still end,
    and by the loop's stop flag, not by giving up on it (a stopping node once hung here)."""
    server.start()
    monkeypatch.setattr(valkey, "REFRESH_S", 0.0)

    async def main() -> None:
        for i in range(10):
            s = make(server)
            await s.start()
            put(s, i)
            await asyncio.sleep(0.01)
            closing = asyncio.create_task(s.close())
            done, _ = await asyncio.wait({closing}, timeout=15)
            assert done, f"close() hung on round {i}"
            closing.result()

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert "did not stop" not in caplog.text
    assert "could not send" not in caplog.text


def test_tails_get_every_ring_in_id_order_also_past_a_read_s_count(server: RedisServer) -> None:
    """One reader position for every ring: a ring XREAD cut off at COUNT holds back the
    other rings' later events, and a ring another node creates meanwhile is read in among
    them, so a tail's events come in id order, each once."""
    server.start()

    async def main() -> None:
        a = make(server, buffer_events=20_000)
        b = make(server, buffer_events=20_000, tail_queue=10_000)
        await a.client.flushall()
        await a.start()
        await b.start()
        sub = b.subscribe(Filter())
        try:
            await asyncio.sleep(0.1)  # the reader starts
            for i in range(2500):  # past COUNT (1,000) in one ring, a few in others
                msg = Msg(env="p", svc="big" if i % 50 else f"n{i % 3}", txt=f"e{i}")
                (b if i % 50 else a).write(msg, i)  # a's rings are new to b
            a.end_batch()
            b.end_batch()
            await a.send_all()
            await b.send_all()
            ids: list[int] = []
            async with asyncio.timeout(20):
                while len(ids) < 2500:
                    lines, dropped = await tail_batch(sub, 0.5)
                    assert dropped == 0
                    ids += [int(json.loads(line)["id"]) for line in lines]
            assert len(ids) == 2500
            assert ids == sorted(set(ids))  # increasing: in order, no duplicate
        finally:
            sub.close()
            await a.close()
            await b.close()

    asyncio.run(main())


def test_ids_go_on_above_the_rings_when_the_counter_is_lost(server: RedisServer) -> None:
    """A backend that lost (or evicted) the id counter: the next ids start above the newest
    entry of the rings appended to, instead of failing on a smaller id."""
    server.start()

    async def main() -> None:
        s = make(server)
        await s.client.flushall()
        await s.start()
        try:
            for i in range(3):
                put(s, i)
            await s.send_all()
            newest = ids.number(await s.client.get(ids.COUNTER))
            # Ahead of the clock, as after a step back of the backend's clock.
            ahead = newest + (3600_000 << ids.SEQ_BITS)
            await s.client.xadd(stream_key("p/a"), {"t": 3, "l": 0, "d": b""}, id=ids.entry(ahead))
            await s.client.delete(ids.COUNTER)
            put(s, 4)
            await s.send_all()
            assert s.info()["errors"] == 0
            found = await s.query(Filter(), limit=10, offset=0)
            assert int(found.ids[0]) == ahead + 1
            assert ids.number(await s.client.get(ids.COUNTER)) == ahead + 1
        finally:
            await s.close()

    asyncio.run(main())


def test_checks_across_nodes_go_one_at_a_time_together_and_in_order(server: RedisServer) -> None:
    """One check in flight: batches submitted meanwhile go together in the next round trip
    (in calls of at most CHECK_MAX frames), and every batch is handed back in the order it
    came."""
    server.start()
    now = 10**18

    async def main() -> None:
        s = make(server)
        guard = SharedReplayGuard(client=s.client, max_age_ns=S, max_future_ns=0, clock=lambda: now)
        order: list[int] = []
        try:
            for n in (3, 1, 2):  # submitted in one turn of the loop: one round trip
                frames = [(b"%d-%d" % (n, i) + b"." * 12, now) for i in range(n)]
                guard.submit(frames, lambda fresh: order.append(len(fresh)))
            await guard.close()
            assert order == [3, 1, 2]
            assert guard.info()["round_trips"] == 1
            big = [(i.to_bytes(16, "big"), now) for i in range(CHECK_MAX + 5000)]
            guard.submit(big, lambda fresh: order.append(len(fresh)))
            guard.submit([(b"x" * 16, now)], lambda fresh: order.append(len(fresh)))
            guard.submit(big[:10], lambda fresh: order.append(fresh.count(False)))  # replays
            await guard.close()
            assert order[3:] == [CHECK_MAX + 5000, 1, 10]
            assert guard.info()["round_trips"] == 2  # two calls, one round trip
            assert guard.info()["checked"] == 6 + CHECK_MAX + 5000 + 1 + 10
        finally:
            await s.close()

    asyncio.run(main())


def test_a_tail_waits_a_bounded_time_for_the_reader_and_leaves_nothing_behind(
    server: RedisServer,
) -> None:
    """catch_up waits for the tail reader to reach the newest id, at most REACH_S: a reader
    that cannot get there (here: an id no event has) holds a tail for that long, and no
    waiter stays behind."""
    server.start()

    async def main() -> None:
        s = make(server)
        await s.client.flushall()
        await s.start()
        sub = s.subscribe(Filter())
        try:
            put(s, 1)
            await s.send_all()
            await s.client.set(ids.COUNTER, ids.entry(2**62))  # ahead of every event
            loop = asyncio.get_running_loop()
            started = loop.time()
            await s.catch_up()
            assert 1.5 < loop.time() - started < 10
            assert s._follower._waiters == []
        finally:
            sub.close()
            await s.close()

    asyncio.run(main())


# --- runs: one stream entry per run of events ----------------------------------------------


def run_of(texts: list[str], t0: int) -> tuple[bytes, bytes, bytes, bytes]:
    """A run as the C engine hands it over: bytes, ends (uint32), times (int64), levels."""
    data = [Msg(env="p", svc="a", txt=txt).SerializeToString() for txt in texts]
    ends = array("I", accumulate(map(len, data)))
    times = array("q", range(t0, t0 + len(texts)))
    return b"".join(data), ends.tobytes(), times.tobytes(), bytes(len(texts))


def test_runs_keep_ids_in_arrival_order_and_ranges_cut_them_event_by_event(
    server: RedisServer,
) -> None:
    """Runs of many sizes (and single events between them) become entries; each event
    has its own id, increasing in arrival order, and every id range (after=, before=, a
    tail's history) gives exactly the events in it: no gap, no duplicate at a cut that
    falls inside an entry."""
    server.start()

    async def main() -> None:
        s = make(server, buffer_events=10_000)
        await s.client.flushall()
        await s.start()
        try:
            sent = []
            for size in (1, 5, 1, 1, 40, 3, 256, 2, 1, 17):
                texts = [f"e{len(sent) + i}" for i in range(size)]
                if size == 1:
                    msg = Msg(env="p", svc="a", txt=texts[0])
                    s.write(msg, len(sent))
                else:
                    s.write_run("p", "a", *run_of(texts, len(sent)))
                sent += texts
                s.end_batch()
            await s.send_all()
            found = await s.query(Filter(), limit=1000, offset=0)
            assert [m.txt for m in found.events] == sent[::-1]
            numbers = [int(i) for i in found.ids][::-1]
            assert numbers == sorted(set(numbers))  # increasing, unique
            assert await s.client.xlen(stream_key("p/a")) < len(sent) // 10  # runs, not events
            for cut in range(len(numbers)):
                after = await s.query(Filter(), limit=1000, offset=0,
                                      ids=(numbers[cut] + 1, 2**64 - 1))  # fmt: skip
                before = await s.query(Filter(), limit=1000, offset=0, ids=(0, numbers[cut]))
                assert [m.txt for m in after.events][::-1] == sent[cut + 1 :]
                assert [m.txt for m in before.events][::-1] == sent[: cut + 1]
        finally:
            await s.close()

    asyncio.run(main())


def stored_events(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
    return sum(int(fields.get(b"n", 1)) for _, fields in entries)


def test_runs_of_a_ring_in_a_row_join_packed_and_older_entries_still_read(
    server: RedisServer,
) -> None:
    """Runs of one ring in a row (across drains and single events) join into one packed
    entry, `n` and `z`; another ring's event between them keeps them apart (ids stay in
    arrival order). Entries as earlier versions wrote them, a run uncompressed and a single
    event, read back beside them."""
    server.start()

    async def main() -> None:
        s = make(server, buffer_events=10_000)
        await s.client.flushall()
        await s.start()
        try:
            s.write_run("p", "a", *run_of(["a0", "a1", "a2"], 0))
            s.write_run("p", "a", *run_of(["a3", "a4"], 3))
            s.write(Msg(env="p", svc="a", txt="a5"), 5)
            s.write(Msg(env="p", svc="b", txt="b6"), 6)
            s.write(Msg(env="p", svc="a", txt="a7"), 7)
            s.end_batch()
            await s.send_all()
            stored = await s.client.xrange(stream_key("p/a"))
            assert [(f[b"n"], set(f)) for _, f in stored] == [
                (b"6", {b"n", b"z"}),
                (b"1", {b"n", b"z"}),
            ]
            top = ids.number(stored[-1][0])
            data, ends, times, lvls = run_of(["old8", "old9"], 8)
            run = {"n": 2, "t": times, "l": lvls, "e": ends, "d": data}
            single = {"t": 10, "l": 0, "d": Msg(txt="old10").SerializeToString()}
            await s.client.xadd(stream_key("p/a"), run, id=ids.entry(top + 1))
            await s.client.xadd(stream_key("p/a"), single, id=ids.entry(top + 3))
            found = await s.query(Filter(), limit=100, offset=0)
            assert [m.txt for m in found.events] == [
                "old10",
                "old9",
                "old8",
                "a7",
                "b6",
                *(f"a{i}" for i in range(5, -1, -1)),
            ]
            numbers = [int(i) for i in found.ids]
            assert numbers == sorted(set(numbers), reverse=True)
        finally:
            await s.close()

    asyncio.run(main())


def test_a_packed_entry_that_lz4_did_not_write_is_an_error_not_an_allocation() -> None:
    """`z` is LZ4's block with its size before it: a size past what LZ4 can encode in the
    block's bytes (255 per byte) or bytes that do not decode are a ValueError."""
    z = entries.pack([b"\x00" * 8, b"\x01", b"\x02\x00\x00\x00", b"hi"])
    assert entries.unpack(z) == b"\x00" * 8 + b"\x01\x02\x00\x00\x00hi"
    for bad in (b"", b"\x01", (2**31).to_bytes(4, "little") + z[4:], z[:4] + b"\xff" * 8):
        with pytest.raises(ValueError, match="not one logd wrote"):
            entries.unpack(bad)


@pytest.mark.parametrize("event_bytes", [100, 20_000])
def test_a_ring_keeps_its_caps_in_events_and_bytes_exactly(
    server: RedisServer, event_bytes: int
) -> None:
    """A ring of 64 KiB keeps at most 256 events (budget / TYPICAL_EVENT_BYTES) and at most
    64 KiB of entries as stored (compressed), whatever the events' size: small events hit
    the first cap, big ones (random hex: LZ4 cannot shrink them) the second; /info's
    length and evictions are in events; the newest stay."""
    server.start()
    budget = 64 * 1024
    rand = random.Random(event_bytes)  # noqa: S311 (test data that LZ4 cannot shrink)

    async def main() -> None:
        s = ValkeyStore(
            url=server.url, password=None, buffer_events=10_000, ring_bytes=budget,
            ring_sizes={}, max_rings=8, max_tails=4, tail_queue=16, timeout=0.5,
        )  # fmt: skip
        await s.client.flushall()
        await s.start()
        try:
            total = 0
            for batch in range(20):
                texts = [
                    f"{total + i:05d}" + rand.randbytes(event_bytes // 2).hex() for i in range(50)
                ]
                if batch % 2:
                    s.write_run("p", "a", *run_of(texts, total))
                else:
                    for i, txt in enumerate(texts):
                        s.write(Msg(env="p", svc="a", txt=txt), total + i)
                total += len(texts)
                s.end_batch()
                await s.send_all()
            entries = await s.client.xrange(stream_key("p/a"))
            kept = stored_events(entries)
            payload = sum(len(f[b"z"]) for _, f in entries)
            assert kept <= budget // valkey.TYPICAL_EVENT_BYTES
            assert payload - len(entries[-1][1][b"z"]) <= budget  # the newest entry stays
            assert kept >= 1
            await s.refresh()
            (ring,) = s.stats().rings
            assert (ring.events, ring.evicted) == (kept, total - kept)
            texts = [m.txt[:5] for m in (await s.query(Filter(), limit=1000, offset=0)).events]
            assert texts == [f"{i:05d}" for i in range(total - 1, total - 1 - kept, -1)]
        finally:
            await s.close()

    asyncio.run(main())


def test_tails_get_runs_in_id_order_past_a_read_s_count(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs in several rings, with XREAD cut off at 2 entries a ring: a tail gets every
    event once, in id order (a cut-off ring holds back the others' later runs)."""
    server.start()
    monkeypatch.setattr(tail, "COUNT", 2)

    async def main() -> None:
        s = make(server, buffer_events=20_000, tail_queue=10_000)
        await s.client.flushall()
        await s.start()
        sub = s.subscribe(Filter())
        try:
            await asyncio.sleep(0.1)  # the reader starts
            sent = 0
            for i in range(40):
                svc = "big" if i % 4 else f"n{i % 3}"
                data = [Msg(env="p", svc=svc, txt=f"e{sent + j}").SerializeToString()
                        for j in range(1 + i % 7)]  # fmt: skip
                ends = array("I", accumulate(map(len, data))).tobytes()
                times = array("q", range(sent, sent + len(data))).tobytes()
                s.write_run("p", svc, b"".join(data), ends, times, bytes(len(data)))
                sent += len(data)
                if i % 5 == 4:
                    s.end_batch()
            s.end_batch()
            await s.send_all()
            got: list[int] = []
            texts: list[str] = []
            async with asyncio.timeout(20):
                while len(got) < sent:
                    lines, dropped = await tail_batch(sub, 0.5)
                    assert dropped == 0
                    got += [int(json.loads(line)["id"]) for line in lines]
                    texts += [json.loads(line)["txt"] for line in lines]
            assert got == sorted(set(got))
            assert sorted(texts, key=lambda t: int(t[1:])) == [f"e{i}" for i in range(sent)]
        finally:
            sub.close()
            await s.close()

    asyncio.run(main())
