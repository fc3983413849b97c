"""TailHub: bounded per-subscriber queues; a slow subscriber loses events, counted."""

from __future__ import annotations

import asyncio
import json

import pytest
from logd._pb.logd_pb2 import ERROR, INFO, Msg
from logd.filters import Filter
from logd.tail import TailClosed, TailHub, TooManyTails


def test_matching_subscribers_get_events_in_order() -> None:
    async def run() -> None:
        hub = TailHub(max_subscribers=4, queue_len=10)
        errors = hub.subscribe(Filter(lvl=ERROR))
        everything = hub.subscribe(Filter())
        hub.publish(Msg(txt="a", lvl=INFO))
        hub.publish(Msg(txt="b", lvl=ERROR))
        lines, dropped = await everything.next_batch(1)
        assert [json.loads(x)["txt"] for x in lines] == ["a", "b"]
        assert dropped == 0
        lines, dropped = await errors.next_batch(1)
        assert [json.loads(x)["txt"] for x in lines] == ["b"]

    asyncio.run(run())


def test_slow_subscriber_loses_events_and_is_told() -> None:
    async def run() -> None:
        hub = TailHub(max_subscribers=4, queue_len=3)
        sub = hub.subscribe(Filter())
        for i in range(10):
            hub.publish(Msg(txt=str(i)))
        lines, dropped = await sub.next_batch(1)
        assert len(lines) == 3
        assert dropped == 7
        assert hub.dropped == 7
        assert await sub.next_batch(0.01) == ([], 0)  # nothing new: a keep-alive

    asyncio.run(run())


def test_cap_on_subscribers_and_close() -> None:
    async def run() -> None:
        hub = TailHub(max_subscribers=1, queue_len=3)
        sub = hub.subscribe(Filter())
        with pytest.raises(TooManyTails):
            hub.subscribe(Filter())
        hub.close_all()
        with pytest.raises(TailClosed):
            await sub.next_batch(1)
        assert len(hub) == 0
        hub.subscribe(Filter())  # room again

    asyncio.run(run())
