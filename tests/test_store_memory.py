"""MemoryStore: byte-bounded rings, overflow ring, per-key sizes, newest-first queries."""

from __future__ import annotations

import asyncio

import pytest
from logd._pb.logd_pb2 import ERROR, INFO, Msg
from logd.filters import Filter
from logd.store.memory import OVERFLOW_KEY, RECORD_OVERHEAD, MemoryStore, Ring, ring_key

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
    return asyncio.run(s.query(Filter.from_params(params, 10**19), limit=limit, offset=offset))


def test_ring_evicts_oldest_by_bytes() -> None:
    ring = Ring("a/b", "a", "b", capacity=10 * (100 + RECORD_OVERHEAD))
    for i in range(25):
        ring.append(i, 0, bytes([i]) * 100)
    assert len(ring) == 10
    assert ring.bytes <= ring.capacity
    assert ring.evicted == 15
    assert [t for t, _, _ in ring.scan(Filter())] == list(range(24, 14, -1))


def test_big_events_evict_many_small_ones() -> None:
    ring = Ring("a/b", "a", "b", capacity=4000)
    for i in range(20):
        ring.append(i, 0, b"x" * 10)
    ring.append(99, 0, b"y" * 3000)
    assert ring.bytes <= 4000
    assert next(iter(ring.scan(Filter())))[0] == 99


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
