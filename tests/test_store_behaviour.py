"""One suite of store behaviour, run against MemoryStore and ValkeyStore (a real
redis-server on a free port, and a real 3-node redis cluster). What a reader sees must
not depend on the backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from logd._pb.logd_pb2 import ERROR, INFO, Msg
from logd.server.filters import Filter
from logd.server.http import backlog
from logd.server.store import MemoryStore, Store
from logd.server.store.memory import OVERFLOW_KEY
from logd.server.store.valkey.store import ValkeyStore
from logd.server.tail import Subscription
from redis_support import RedisClusterNodes, RedisServer
from support import tail_batch

MiB = 1024 * 1024
S = 1_000_000_000
Body = Callable[[Store], Awaitable[None]]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    cluster = RedisClusterNodes(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["memory", "valkey", "cluster"])
def run(request: pytest.FixtureRequest) -> Callable[..., None]:
    """run(body, **store_args): build the store, run `body(store)` on a fresh loop, close."""
    backends = {"valkey": "redis_server", "cluster": "redis_cluster"}
    fixture = backends.get(request.param)
    server = request.getfixturevalue(fixture) if fixture else None

    def runner(body: Body, **kw: object) -> None:
        args: dict[str, object] = {
            "ring_bytes": MiB, "ring_sizes": {}, "max_rings": 8, "max_tails": 4, "tail_queue": 16,
        }  # fmt: skip
        args.update(kw)

        async def main() -> None:
            if server is None:
                await body(MemoryStore(**args))  # type: ignore[arg-type]
                return
            store = ValkeyStore(url=server.url, password=None, buffer_events=100_000, **args)  # type: ignore[arg-type]
            await store.client.flushall()
            await store.start()
            try:
                await body(store)
            finally:
                await store.close()

        asyncio.run(main())

    return runner


def put(s: Store, t: int, **fields: object) -> None:
    msg = Msg(**fields)  # type: ignore[arg-type]
    msg.t.FromNanoseconds(t)
    s.write(msg, t)


async def settle(s: Store) -> None:
    """End the batch and wait until the backend holds it (and /info figures are fresh)."""
    s.end_batch()
    if isinstance(s, ValkeyStore):
        await s.send_all()
        await s.refresh()


async def query(s: Store, limit: int = 100, offset: int = 0, **params: str) -> list[Msg]:
    return (await s.query(Filter.from_params(params, 10**19), limit=limit, offset=offset)).events


def test_rings_are_keyed_env_svc_with_placeholders(run: Callable[..., None]) -> None:
    async def body(s: Store) -> None:
        put(s, 1, env="prod", svc="api")
        put(s, 2)
        await settle(s)
        stats = s.stats()
        assert sorted(r.key for r in stats.rings) == ["-/-", "prod/api"]
        assert sorted(r.events for r in stats.rings) == [1, 1]
        assert stats.writes == 2

    run(body)


def test_overflow_ring_takes_keys_beyond_max_rings_and_filters_exactly(
    run: Callable[..., None],
) -> None:
    async def body(s: Store) -> None:
        for i, svc in enumerate(["a", "b", "c", "d", "c"]):
            put(s, i, env="e", svc=svc, txt=svc)
        await settle(s)
        stats = s.stats()
        assert sorted(r.key for r in stats.rings) == sorted(["e/a", "e/b", OVERFLOW_KEY])
        assert stats.overflow_events == 3
        assert [m.txt for m in await query(s, svc="c")] == ["c", "c"]
        assert [m.txt for m in await query(s, svc="d")] == ["d"]

    run(body, max_rings=2)


def test_query_is_newest_first_across_rings_with_offset_and_limit(
    run: Callable[..., None],
) -> None:
    async def body(s: Store) -> None:
        for i in range(10):
            put(s, i * S, env="prod", svc="api" if i % 2 else "web", txt=f"e{i}")
        await settle(s)
        assert [m.txt for m in await query(s)] == [f"e{i}" for i in range(9, -1, -1)]
        assert [m.txt for m in await query(s, limit=3, offset=2)] == ["e7", "e6", "e5"]
        assert [m.txt for m in await query(s, svc="api", limit=2)] == ["e9", "e7"]
        assert [m.txt for m in await query(s, svc="w*")] == [f"e{i}" for i in range(8, -1, -2)]

    run(body)


def test_query_filters_level_text_and_time(run: Callable[..., None]) -> None:
    async def body(s: Store) -> None:
        put(s, 1 * S, env="p", svc="a", lvl=INFO, txt="card ok")
        put(s, 2 * S, env="p", svc="a", lvl=ERROR, txt="Card declined")
        put(s, 3 * S, env="p", svc="a", lvl=INFO, txt="other")
        put(s, 4 * S, env="p", svc="a", lvl=INFO, txt="\u212aelvin")
        await settle(s)
        assert [m.txt for m in await query(s, lvl="error")] == ["Card declined"]
        assert [m.txt for m in await query(s, txt="card")] == ["Card declined", "card ok"]
        assert [m.txt for m in await query(s, txt="kelvin")] == ["\u212aelvin"]
        since = await query(s, since="1970-01-01T00:00:02Z", until="1970-01-01T00:00:03Z")
        assert [m.txt for m in since] == ["other", "Card declined"]
        assert await query(s, txt="nothing") == []

    run(body)


def test_query_returns_what_was_written(run: Callable[..., None]) -> None:
    async def body(s: Store) -> None:
        put(s, 5, env="p", svc="a", fn="F", txt="t", attrs={"k": "v"}, response_status=500)
        await settle(s)
        (msg,) = await query(s, status="500")
        assert (msg.fn, msg.txt, dict(msg.attrs)) == ("F", "t", {"k": "v"})
        assert msg.t.ToNanoseconds() == 5

    run(body)


def test_a_full_ring_keeps_the_newest_events_in_order(run: Callable[..., None]) -> None:
    async def body(s: Store) -> None:
        total = 3000  # ~350 KiB of 100-byte events in memory; a 1024-entry stream cap
        for i in range(total):
            put(s, i, env="p", svc="a", txt=f"{i:0100d}")
            if i % 500 == 499:
                await settle(s)  # as ingest does: batches
        await settle(s)
        kept = [m.t.ToNanoseconds() for m in await query(s, limit=total)]
        assert 0 < len(kept) < total
        assert kept == list(range(total - 1, total - 1 - len(kept), -1))  # newest, no gaps
        (ring,) = s.stats().rings
        assert ring.events == len(kept)
        assert ring.evicted == total - len(kept)

    run(body, ring_bytes=256 * 1024)


def test_paged_reads_cross_page_boundaries(run: Callable[..., None]) -> None:
    async def body(s: Store) -> None:
        for i in range(1600):  # more than three XREVRANGE pages, sparse matches
            put(s, i, env="p", svc="a", fn="hit" if i % 97 == 0 else "miss")
        await settle(s)
        found = [m.t.ToNanoseconds() for m in await query(s, fn="hit", limit=1000)]
        assert found == [i for i in range(1599, -1, -1) if i % 97 == 0]
        assert [m.t.ToNanoseconds() for m in await query(s, limit=3, offset=998)] == [
            601,
            600,
            599,
        ]

    run(body)


def test_tail_sees_matching_events_written_after_it_subscribed(run: Callable[..., None]) -> None:
    async def body(s: Store) -> None:
        put(s, 1, env="p", svc="a", txt="before")
        await settle(s)
        sub = s.subscribe(Filter.from_params({"env": "p", "lvl": "error"}, 0))
        try:
            await asyncio.sleep(0)  # let a backend's reader start
            put(s, 2, env="p", svc="a", lvl=INFO, txt="too low")
            put(s, 3, env="q", svc="a", lvl=ERROR, txt="other env")
            put(s, 4, env="p", svc="b", lvl=ERROR, txt="wanted")
            await settle(s)
            lines: list[str] = []
            for _ in range(50):
                got, dropped = await tail_batch(sub, 0.2)
                assert dropped == 0
                lines += got
                if lines:
                    break
            assert len(lines) == 1
            assert '"wanted"' in lines[0]
        finally:
            sub.close()

    run(body)


def test_per_key_sizes_exact_then_longest_prefix(tmp_path: Path) -> None:
    for cls in (MemoryStore, ValkeyStore):
        args: dict[str, object] = {
            "ring_bytes": MiB,
            "ring_sizes": {"prod/api": 5 * MiB, "prod/*": 3 * MiB, "prod/ap*": 4 * MiB},
            "max_rings": 8, "max_tails": 4, "tail_queue": 16,
        }  # fmt: skip
        if cls is ValkeyStore:
            args |= {"url": "redis://127.0.0.1:1/0", "password": None, "buffer_events": 10}
        s = cls(**args)  # type: ignore[arg-type]
        assert [s.capacity_for(k) for k in ("prod/api", "prod/apx", "prod/web", "dev/web")] == [
            5 * MiB,
            4 * MiB,
            3 * MiB,
            MiB,
        ]


# --- event ids: tail history and paging (every store with ordered ids) --------------------


def ordered(s: Store) -> bool:
    """Whether the store's ids have one order across rings (not a Valkey cluster)."""
    has = backlog.has_history(s)
    assert has == (not isinstance(s, ValkeyStore) or s.ordered)
    return has


async def tail_from_now(s: Store, flt: Filter) -> tuple[Subscription, int]:
    """What /tail does before its history: catch up, subscribe, then the id it cuts at."""
    assert backlog.has_history(s)
    if isinstance(s, backlog.FedLater):
        await s.catch_up()
    sub = s.subscribe(flt)
    return sub, s.last_id()


def test_ids_increase_in_arrival_order_across_rings_and_page_back_stably(
    run: Callable[..., None],
) -> None:
    async def body(s: Store) -> None:
        for i in range(30):  # three rings, interleaved
            put(s, i * S, env="p", svc=f"s{i % 3}", txt=f"e{i}")
            if i % 7 == 6:
                await settle(s)  # several batches
        await settle(s)
        found = await s.query(Filter(), limit=100, offset=0)
        assert len(set(found.ids)) == 30  # unique across rings
        if not ordered(s):
            assert not found.ids[0].isdigit()  # a cluster's ids: entry id and ring, not numbers
            return
        ids = [int(i) for i in found.ids]
        assert ids == sorted(ids, reverse=True)  # newest first is highest id first
        before = ids[10]  # e19
        page = await s.query(Filter(), limit=5, offset=0, ids=(0, before - 1))
        assert [m.txt for m in page.events] == ["e18", "e17", "e16", "e15", "e14"]
        put(s, 100 * S, env="p", svc="s1", txt="new")
        put(s, 101 * S, env="p", svc="s9", txt="new ring")
        await settle(s)
        again = await s.query(Filter(), limit=5, offset=0, ids=(0, before - 1))
        assert again.ids == page.ids  # new writes do not shift a page
        newer = await s.query(Filter(), limit=100, offset=0, ids=(ids[0] + 1, 2**64 - 1))
        assert [m.txt for m in newer.events] == ["new ring", "new"]
        assert min(int(i) for i in newer.ids) > ids[0]

    run(body)


def test_history_cut_is_the_newest_stored_and_live_events_come_after_it(
    run: Callable[..., None],
) -> None:
    async def body(s: Store) -> None:
        if not ordered(s):
            return
        for i in range(5):
            put(s, i, env="p", svc=f"s{i % 2}", txt=f"old{i}")
        await settle(s)
        newest = max(int(i) for i in (await s.query(Filter(), limit=10, offset=0)).ids)
        sub, cut = await tail_from_now(s, Filter())
        try:
            assert cut == newest  # the history has every stored event
            put(s, 10, env="p", svc="s0", txt="live0")
            put(s, 11, env="p", svc="s5", txt="live1")  # a ring that did not exist
            await settle(s)
            lines: list[str] = []
            for _ in range(50):
                got, dropped = await tail_batch(sub, 0.2)
                assert dropped == 0
                lines += got
                if len(lines) >= 2:
                    break
            events = [json.loads(line) for line in lines]
            assert [e["txt"] for e in events] == ["live0", "live1"]  # none of the history
            assert all(int(e["id"]) > cut for e in events)
        finally:
            sub.close()

    run(body)


def test_evicted_after_tells_whether_events_after_an_id_are_gone(
    run: Callable[..., None],
) -> None:
    async def body(s: Store) -> None:
        if not ordered(s):
            return
        assert backlog.has_history(s)
        put(s, 0, env="p", svc="a", txt="first")
        put(s, 0, env="p", svc="b", txt="other ring")
        await settle(s)
        first, other = sorted(int(i) for i in (await s.query(Filter(), limit=2, offset=0)).ids)
        for i in range(3000):  # through a 256 KiB ring, or a stream capped at 1,024 entries
            put(s, i + 1, env="p", svc="a", txt=f"{i:0100d}")
            if i % 500 == 499:
                await settle(s)
        await settle(s)
        newest = max(int(i) for i in (await s.query(Filter(), limit=1, offset=0)).ids)

        async def evicted(flt: Filter, after: int) -> bool:
            answer = s.evicted_after(flt, after)
            return answer if isinstance(answer, bool) else await answer

        assert await evicted(Filter(), first)  # "first" and events after it are gone
        assert not await evicted(Filter(), newest)
        assert not await evicted(Filter.from_params({"svc": "b"}, 0), other)  # b evicted none

    run(body, ring_bytes=256 * 1024)
