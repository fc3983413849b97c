"""One suite of store behaviour, run against MemoryStore and ValkeyStore (a real
redis-server on a free port, and a real 3-node redis cluster). What a reader sees must
not depend on the backend."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from logd._pb.logd_pb2 import ERROR, INFO, Msg
from logd.server.filters import Filter
from logd.server.store import MemoryStore, Store
from logd.server.store.memory import OVERFLOW_KEY
from logd.server.store.valkey.store import ValkeyStore
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
