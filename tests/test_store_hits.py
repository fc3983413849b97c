"""One set of cases for the filters and GET /hits counts, run on every store: memory,
persisted (memory written to a data dir, then loaded back into a fresh store) and Valkey
(a real redis-server). The answers must not depend on the store, and the /hits totals
must equal what a query with the same filters returns."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from logd._pb.logd_pb2 import DEBUG, ERROR, FATAL, GET, INFO, POST, WARN, Msg
from logd.server.filters import Filter
from logd.server.store import MemoryStore, Store
from logd.server.store.persist import Persister
from logd.server.store.tally import NONE, OTHER, Grouping, Tally
from logd.server.store.valkey.store import ValkeyStore
from redis_support import RedisServer

MiB = 1024 * 1024
S = 1_000_000_000
BASE = 1_800_000_000 * S  # 2027-01-15T08:00:00Z
NOW = BASE + 3600 * S
ARGS: dict[str, Any] = {
    "ring_bytes": MiB, "ring_sizes": {}, "max_rings": 4, "max_tails": 4, "tail_queue": 16,
}  # fmt: skip
Check = Callable[[Store], Awaitable[None]]


def events() -> list[Msg]:
    """~2,000 events over an hour: five keys (one spills into the overflow ring), levels,
    attributes, HTTP fields, text with characters that lower to ASCII."""
    keys = [("prod", "api"), ("prod", "billing"), ("dev", "api"), ("prod", "web"), ("qa", "x")]
    levels = [INFO, INFO, INFO, DEBUG, WARN, ERROR, 0, FATAL]
    out = []
    for i in range(2000):
        env, svc = keys[i % 5]
        attrs = {"request_id": f"r-{i % 40}", **({"user": "ann"} if i % 7 else {})}
        msg = Msg(env=env, svc=svc, fn=["Charge", "List", ""][i % 3], lvl=levels[i % 8],
                  txt=["card declined", "GET /healthz", "\u212aelvin ok", "page served"][i % 4],
                  url=["/v1/charge", "/healthz", ""][i % 3],
                  response_status=[200, 402, 500, 0][i % 4], http_method=[GET, POST, 0][i % 3],
                  attrs=attrs, host=["web-1", "web-10", "", "wörk-2"][i % 4 - (i % 11 == 0)],
                  pid=i % 5)  # fmt: skip
        msg.t.FromNanoseconds(BASE + (i * 1789 % 3600) * S + i)  # shuffled, not in order
        out.append(msg)
    return out


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "persisted", "valkey"])
def run(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[Check], None]:
    """run(check): the events written to a fresh store of this kind, then `check(store)`."""
    kind = request.param
    server = request.getfixturevalue("redis_server") if kind == "valkey" else None

    def runner(check: Check) -> None:
        async def main() -> None:
            if kind == "memory":
                store = MemoryStore(**ARGS)
                for msg in events():
                    store.write(msg, msg.t.ToNanoseconds())
                await check(store)
            elif kind == "persisted":
                first = MemoryStore(**ARGS)
                persister = Persister(store=first, data_dir=tmp_path, interval=60)
                await persister.load()
                for msg in events():
                    first.write(msg, msg.t.ToNanoseconds())
                await persister.flush()
                second = MemoryStore(**ARGS)
                await Persister(store=second, data_dir=tmp_path, interval=60).load()
                await check(second)
            else:
                assert server is not None
                valkey = ValkeyStore(url=server.url, password=None, buffer_events=100_000, **ARGS)
                await valkey.client.flushall()
                await valkey.start()
                try:
                    for msg in events():
                        valkey.write(msg, msg.t.ToNanoseconds())
                    valkey.end_batch()
                    await valkey.send_all()
                    await check(valkey)
                finally:
                    await valkey.close()

        asyncio.run(main())

    return runner


Pairs = list[tuple[str, str]]
FILTER_CASES: list[Pairs] = [
    [],
    [("lvl", "warn")],
    [("svc", "api"), ("svc", "billing")],
    [("svc!", "api")],
    [("env!", "dev"), ("svc", "api")],
    [("svc", "x")],  # the overflow ring: matched per event
    [("svc!", "x"), ("env", "qa")],
    [("attr.request_id", "r-7")],
    [("attr.request_id", "r-1*")],
    [("attr.request_id", "r-1"), ("attr.request_id", "r-2")],
    [("attr.user", "*")],
    [("attr.user!", "ann"), ("lvl", "error")],
    [("txt", "kelvin")],
    [("txt", "DECLINED"), ("txt", "served")],
    [("txt!", "health")],
    [("fn", "Charge"), ("fn", "List"), ("fn!", "List")],
    [("url!", "/health"), ("status", "500"), ("status", "402")],
    [("method!", "get"), ("status!", "200")],
    [("since", "2027-01-15T08:30:00Z"), ("until", "2027-01-15T08:45:00Z")],
    [("since", "2027-01-15T08:30:00Z"), ("lvl", "error"), ("svc", "api")],
    [("host", "web-1")],  # not web-10: exact
    [("host", "wörk-2"), ("host", "web-10"), ("svc", "x")],
    [("host!", "web-1"), ("host!", "web-10")],
]


def flt(pairs: Pairs) -> Filter:
    return Filter.from_params(pairs, NOW)


async def everything(store: Store, pairs: Pairs) -> list[Msg]:
    return (await store.query(flt(pairs), limit=10**6, offset=0)).events


async def hits(store: Store, pairs: Pairs, **kw: Any) -> dict[str, Any]:
    f = flt(pairs)
    args = {"step_s": None, "grouping": None} | kw
    tally = Tally(since_ns=f.since_ns, until_ns=f.until_ns, now_ns=NOW, **args)
    await store.hits(f, tally)
    return tally.result()


def expected_counts(found: list[Msg], step_s: int) -> Counter[str]:
    from logd.server.store.tally import format_second

    return Counter(format_second(m.t.ToNanoseconds() // (step_s * S) * step_s) for m in found)


def canonical(msg: Msg) -> bytes:
    return msg.SerializeToString(deterministic=True)


def test_filters_give_the_same_events_on_every_store(run: Callable[[Check], None]) -> None:
    written = events()

    async def check(store: Store) -> None:
        for pairs in FILTER_CASES:
            f = flt(pairs)
            want = [m for m in written if f.matches(m) and f.time_match(m.t.ToNanoseconds())]
            got = await everything(store, pairs)
            # Deterministic: a map's entries are serialised in no fixed order otherwise.
            assert sorted(canonical(m) for m in got) == sorted(canonical(m) for m in want), pairs

    run(check)


def test_hits_totals_equal_the_query_on_every_store(run: Callable[[Check], None]) -> None:
    async def check(store: Store) -> None:
        for pairs in FILTER_CASES:
            found = await everything(store, pairs)
            for step_s in (None, 60, 600):
                body = await hits(store, pairs, step_s=step_s)
                assert body["total"] == len(found), pairs
                got = Counter({b["t"]: b["total"] for b in body["buckets"] if b["total"]})
                assert got == expected_counts(found, body["step_s"]), (pairs, step_s)

    run(check)


@pytest.mark.parametrize("by", ["lvl", "env", "svc", "fn", "host", "attr.request_id", "attr.user"])
def test_hits_by_group_on_every_store(run: Callable[[Check], None], by: str) -> None:
    grouping = Grouping.parse(by)
    assert grouping is not None

    async def check(store: Store) -> None:
        for pairs in ([], [("lvl", "warn")], [("svc!", "web")], [("attr.request_id", "r-1*")]):
            found = await everything(store, pairs)
            body = await hits(store, pairs, step_s=900, grouping=grouping)
            assert body["total"] == len(found)
            overall = Counter(grouping.of_msg(m) for m in found)
            shown = Counter[str]()
            for bucket in body["buckets"]:
                assert sum(bucket["by"].values()) == bucket["total"]
                assert len(bucket["by"]) <= 11
                shown.update({g: n for g, n in bucket["by"].items() if g != OTHER})
            top = sorted(overall, key=lambda g: (-overall[g], g))[:10]
            assert set(shown) <= set(top), (by, pairs)
            for group in shown:  # fewer than TRACKED_GROUPS groups: exact
                assert shown[group] == overall[group]

    run(check)


def test_hits_by_level_names_levels(run: Callable[[Check], None]) -> None:
    async def check(store: Store) -> None:
        body = await hits(store, [], step_s=3600, grouping=Grouping("lvl"))
        by: Counter[str] = Counter()
        for bucket in body["buckets"]:
            by.update(bucket["by"])
        assert by == {"INFO": 750, "DEBUG": 250, "WARN": 250, "ERROR": 250, NONE: 250,
                      "FATAL": 250}  # fmt: skip

    run(check)


def test_hits_on_an_unreachable_valkey_is_store_unavailable() -> None:
    from logd.server.store.base import StoreUnavailable

    async def main() -> None:
        store = ValkeyStore(
            url="redis://127.0.0.1:1/0", password=None, buffer_events=10, timeout=0.5, **ARGS
        )
        try:
            with pytest.raises(StoreUnavailable, match="unreachable"):
                await hits(store, [("lvl", "warn")], grouping=Grouping("lvl"))
        finally:
            await store.client.aclose()
            await store._follower.close()

    asyncio.run(main())
