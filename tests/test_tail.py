"""TailHub: bounded per-subscriber queues; a slow subscriber loses events, counted."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from logd._pb.logd_pb2 import ERROR, INFO, Msg
from logd.server.filters import Filter
from logd.server.tail import TailHub, TooManyTails
from support import HeldTransport, follow, following, split_notice, tail_batch

IDS = itertools.count(1)  # event ids, as the store gives them


def test_matching_subscribers_get_events_in_order() -> None:
    async def run() -> None:
        hub = TailHub(max_subscribers=4, queue_len=10)
        errors = hub.subscribe(Filter(lvl=ERROR))
        everything = hub.subscribe(Filter())
        hub.publish(Msg(txt="a", lvl=INFO), next(IDS))
        hub.publish(Msg(txt="b", lvl=ERROR), next(IDS))
        lines, dropped = await tail_batch(everything, 1)
        assert [json.loads(x)["txt"] for x in lines] == ["a", "b"]
        assert dropped == 0
        lines, dropped = await tail_batch(errors, 1)
        assert [json.loads(x)["txt"] for x in lines] == ["b"]

    asyncio.run(run())


def test_slow_subscriber_loses_events_and_is_told() -> None:
    async def run() -> None:
        hub = TailHub(max_subscribers=4, queue_len=3)
        sub = hub.subscribe(Filter())
        for i in range(10):
            hub.publish(Msg(txt=str(i)), next(IDS))
        lines, dropped = await tail_batch(sub, 1)
        assert len(lines) == 3
        assert dropped == 7
        assert hub.dropped == 7
        assert await tail_batch(sub, 0.01) == ([], 0)  # nothing new: a keep-alive

    asyncio.run(run())


def test_cap_on_subscribers_and_close() -> None:
    async def run() -> None:
        hub = TailHub(max_subscribers=1, queue_len=3)
        sub = hub.subscribe(Filter())
        with pytest.raises(TooManyTails):
            hub.subscribe(Filter())
        _, task = following(sub)
        await asyncio.sleep(0)  # it follows now
        hub.close_all()
        await asyncio.wait_for(task, 1)  # follow returns: /tail ends the response
        assert sub.closed
        assert len(hub) == 0
        hub.subscribe(Filter())  # room again

    asyncio.run(run())


def test_a_burst_is_one_flush_whose_bytes_every_subscriber_shares() -> None:
    async def run() -> None:
        hub = TailHub(max_subscribers=4, queue_len=10)
        subs = [hub.subscribe(Filter()) for _ in range(3)]
        outs = [follow(sub) for sub in subs]
        await asyncio.sleep(0)  # they follow now
        for i in range(5):
            hub.publish(Msg(txt=str(i)), next(IDS))
        await outs[0].read(1)
        (chunk,) = outs[1].writes
        assert [json.loads(x)["txt"] for x in chunk.splitlines()] == list("01234")
        assert outs[2].writes[0] is chunk  # encoded once for all three
        assert (hub.flushes, hub.published) == (1, 5)

    asyncio.run(run())


def test_the_first_event_after_a_quiet_spell_is_not_held_back() -> None:
    async def run() -> None:
        hub = TailHub(max_subscribers=1, queue_len=10, coalesce_s=3600)
        sub = hub.subscribe(Filter())
        hub.publish(Msg(txt="now"), next(IDS))
        lines, _ = await tail_batch(sub, 60)  # an hour's coalescing would not answer
        assert [json.loads(x)["txt"] for x in lines] == ["now"]

    asyncio.run(run())


def test_chunks_put_the_dropped_notice_first_in_both_formats() -> None:
    async def run() -> None:
        hub = TailHub(max_subscribers=2, queue_len=2)
        ndjson, sse = hub.subscribe(Filter()), hub.subscribe(Filter())
        for i in range(5):
            hub.publish(Msg(txt=str(i)), next(IDS))
        first, *lines = (await follow(ndjson).read(1)).decode().splitlines()
        assert json.loads(first) == {"dropped": 3}
        assert [json.loads(x)["txt"] for x in lines] == ["0", "1"]
        events = (await follow(sse, sse=True).read(1)).decode().split("\n\n")
        assert events[0] == 'event: dropped\ndata: {"dropped": 3}'
        messages = [e.split("\n") for e in events[1:3]]  # each: its id, then its data
        assert [json.loads(data.removeprefix("data: "))["txt"] for _, data in messages] == [
            "0",
            "1",
        ]
        for id_line, data in messages:
            assert id_line == "id: " + json.loads(data.removeprefix("data: "))["id"]
        assert events[3:] == [""]
        assert hub.dropped == 6

    asyncio.run(run())


def test_nothing_new_is_a_keep_alive_in_both_formats() -> None:
    async def run() -> None:
        hub = TailHub(max_subscribers=2, queue_len=2)
        ndjson, sse = hub.subscribe(Filter()), hub.subscribe(Filter())
        assert await follow(ndjson, keepalive_s=0.01).read(1) == b"\n"
        assert await follow(sse, sse=True, keepalive_s=0.01).read(1) == b": keep-alive\n\n"

    asyncio.run(run())


def test_a_full_queue_keeps_its_oldest_lines_across_flushes() -> None:
    async def run() -> None:
        hub = TailHub(max_subscribers=1, queue_len=3, coalesce_s=0)
        sub = hub.subscribe(Filter())
        for i in range(4):
            hub.publish(Msg(txt=str(i)), next(IDS))
            hub.flush()  # one flush per event, as under light load
        lines, dropped = await tail_batch(sub, 1)
        assert [json.loads(x)["txt"] for x in lines] == ["0", "1", "2"]
        assert dropped == 1

    asyncio.run(run())


def test_a_subscriber_does_not_get_what_was_published_before_it_came() -> None:
    async def run() -> None:
        hub = TailHub(max_subscribers=2, queue_len=10)
        early = hub.subscribe(Filter())
        hub.publish(Msg(txt="before"), next(IDS))  # not flushed yet
        late = hub.subscribe(Filter())
        hub.publish(Msg(txt="after"), next(IDS))
        lines, _ = await tail_batch(late, 1)
        assert [json.loads(x)["txt"] for x in lines] == ["after"]
        lines, _ = await tail_batch(early, 1)
        assert [json.loads(x)["txt"] for x in lines] == ["before", "after"]

    asyncio.run(run())


def test_close_wakes_a_waiting_reader() -> None:
    async def run() -> None:
        hub = TailHub(max_subscribers=1, queue_len=3)
        sub = hub.subscribe(Filter())
        _, task = following(sub)
        await asyncio.sleep(0)  # it waits now, for an hour's keep-alive
        hub.close_all()
        await asyncio.wait_for(task, 1)

    asyncio.run(run())


def test_filtered_subscribers_share_the_rendering_not_the_batch() -> None:
    async def run() -> None:
        hub = TailHub(max_subscribers=3, queue_len=10)
        errors = hub.subscribe(Filter(lvl=ERROR))
        everything = hub.subscribe(Filter())
        hub.publish(Msg(txt="a", lvl=INFO), next(IDS))
        hub.publish(Msg(txt="b", lvl=ERROR), next(IDS))
        (err,) = (await follow(errors).read(1)).splitlines()
        lines = (await follow(everything).read(1)).splitlines()
        assert lines[1] == err
        assert hub.published == 2

    asyncio.run(run())


def test_guard_against_large_events_filling_a_queue_past_its_bytes() -> None:
    """8 KB events and a 64 KiB queue: the queue holds what fits in its bytes, not its count."""

    async def run() -> None:
        hub = TailHub(max_subscribers=2, queue_len=10_000, queue_bytes=64 * 1024)
        sub = hub.subscribe(Filter())
        for i in range(100):
            hub.publish(Msg(txt=f"{i:04d}" + "x" * 8000), next(IDS))
        hub.flush()
        assert sub.queued_bytes <= 64 * 1024
        assert hub.queued_bytes == sub.queued_bytes
        lines, dropped = await tail_batch(sub, 1)
        assert len(lines) == 64 * 1024 // (len(lines[0]) + 1)  # as many ~8 KB lines as fit
        assert sum(len(x) + 1 for x in lines) <= 64 * 1024
        assert dropped == 100 - len(lines)
        assert sub.queued_bytes == 0

    asyncio.run(run())


class CountingFilter(Filter):
    """A Filter that counts how often a flush runs it."""

    calls = 0

    def matches(self, msg: Msg) -> bool:
        type(self).calls += 1
        return Filter.matches(self, msg)


def test_guard_against_a_stuck_filtered_tail_costing_work_per_event() -> None:
    """A subscriber that never reads: once its queue is full, a flush neither runs its filter
    nor renders for it; every event published meanwhile counts as missed."""

    async def run() -> None:
        hub = TailHub(max_subscribers=2, queue_len=4)
        flt = CountingFilter(terms=Filter.from_params({"txt": "match"}, 0).terms)
        stuck = hub.subscribe(flt)
        for i in range(4):
            hub.publish(Msg(txt=f"match {i}"), next(IDS))
        hub.flush()
        assert stuck.full
        assert flt.calls == 4
        for i in range(1000):
            hub.publish(Msg(txt=f"match {i}" if i % 2 else "other"), next(IDS))
        hub.flush()
        assert flt.calls == 4  # the 1,000 were not matched one by one
        lines, dropped = await tail_batch(stuck, 1)
        assert [json.loads(x)["txt"] for x in lines] == [f"match {i}" for i in range(4)]
        assert dropped == 1000  # all published while it was full: an upper bound
        assert not stuck.full

    asyncio.run(run())


def test_events_waiting_for_a_flush_are_bounded_in_bytes() -> None:
    async def run() -> None:
        hub = TailHub(max_subscribers=1, queue_len=100_000, queue_bytes=1 << 30, coalesce_s=3600)
        sub = hub.subscribe(Filter())
        hub.publish(
            Msg(txt="first"), next(IDS)
        )  # after a quiet spell: flushed on the next loop turn
        await asyncio.sleep(0)
        big = "y" * 60_000
        for _ in range(40):  # 2.4 MB: past PENDING_MAX_BYTES, flushed at once
            hub.publish(Msg(txt=big), next(IDS))
        assert hub.flushes == 2
        lines, _ = await tail_batch(sub, 1)
        assert len(lines) == 1 + 35  # the 35th event crossed 2 MiB and flushed them all

    asyncio.run(run())


def test_guard_against_a_stuck_tail_whose_queue_never_fills_to_the_byte() -> None:
    """8 KB lines in a 20 KB queue: two fit, the third does not, and the queue stops short
    of its bound. Having lost an event, the subscriber is skipped until it reads."""

    async def run() -> None:
        hub = TailHub(max_subscribers=1, queue_len=10_000, queue_bytes=20 * 1024)
        flt = CountingFilter(terms=Filter.from_params({"txt": "orders"}, 0).terms)
        CountingFilter.calls = 0
        stuck = hub.subscribe(flt)
        for i in range(3):
            hub.publish(Msg(txt=f"orders {i} " + "x" * 8000), next(IDS))
        hub.flush()
        assert stuck.queued_bytes < 20 * 1024
        assert stuck.full
        for i in range(500):
            hub.publish(Msg(txt=f"orders {i} " + "x" * 8000), next(IDS))
        hub.flush()
        assert flt.calls == 3  # the 500 cost no matching
        lines, dropped = await tail_batch(stuck, 1)
        assert (len(lines), dropped) == (2, 501)
        assert not stuck.full

    asyncio.run(run())


def test_guard_against_a_following_client_that_stops_reading() -> None:
    """Once a tail follows, its transport's unsent bytes are its queue: a client that stops
    reading holds at most queue_bytes in logd; past that its events are lost, counted, and
    cost no filter work; when it reads again, the notice of the exact loss comes first."""

    async def run() -> None:
        hub = TailHub(max_subscribers=1, queue_len=10_000, queue_bytes=64 * 1024, coalesce_s=0)
        flt = CountingFilter(terms=Filter.from_params({"txt": "orders"}, 0).terms)
        CountingFilter.calls = 0
        sub = hub.subscribe(flt)
        out = follow(sub)
        await asyncio.sleep(0)
        for i in range(1000):  # ~8 KB each, one flush each: 8 MB offered
            hub.publish(Msg(txt=f"orders {i} " + "x" * 8000), next(IDS))
            hub.flush()
        assert out.get_write_buffer_size() <= 64 * 1024
        assert hub.queued_bytes == out.get_write_buffer_size()
        kept = len(out.writes)
        assert 0 < kept < 10
        assert hub.dropped == 1000 - kept
        assert CountingFilter.calls == kept + 1  # the one that did not fit; then skipped
        lines, dropped = split_notice((await out.read(1)).decode().splitlines())
        assert [json.loads(x)["txt"].split()[1] for x in lines] == [str(i) for i in range(kept)]
        assert dropped == 0  # not told yet: it is told with its next write
        hub.publish(Msg(txt="orders next"), next(IDS))
        hub.flush()
        first, line = (await out.read(1)).decode().splitlines()
        assert json.loads(first) == {"dropped": 1000 - kept}
        assert json.loads(line)["txt"] == "orders next"

    asyncio.run(run())


def test_guard_against_a_following_client_holding_many_small_events() -> None:
    """The bound in events holds too while the transport has bytes waiting."""

    async def run() -> None:
        hub = TailHub(max_subscribers=1, queue_len=5, coalesce_s=0)
        sub = hub.subscribe(Filter())
        out = follow(sub)
        await asyncio.sleep(0)
        for i in range(20):
            hub.publish(Msg(txt=str(i)), next(IDS))
            hub.flush()
        lines, _ = split_notice((await out.read(1)).decode().splitlines())
        assert [json.loads(x)["txt"] for x in lines] == ["0", "1", "2", "3", "4"]
        assert hub.dropped == 15

    asyncio.run(run())


def test_a_caught_up_tail_is_told_of_its_loss_without_waiting_for_an_event() -> None:
    async def run() -> None:
        hub = TailHub(max_subscribers=1, queue_len=2, coalesce_s=0)
        sub = hub.subscribe(Filter())
        out = follow(sub, keepalive_s=0.05)
        await asyncio.sleep(0)
        for i in range(5):
            hub.publish(Msg(txt=str(i)), next(IDS))
            hub.flush()
        lines, _ = split_notice((await out.read(1)).decode().splitlines())
        assert len(lines) == 2
        assert await out.read(1) == b'{"dropped": 3}\n'  # at the keep-alive, not a keep-alive

    asyncio.run(run())


def test_a_client_gone_closes_its_tail_at_the_next_write() -> None:
    async def run() -> None:
        hub = TailHub(max_subscribers=2, queue_len=10, coalesce_s=0)
        gone, stays = hub.subscribe(Filter()), hub.subscribe(Filter())
        out, task = following(gone)
        other = follow(stays)
        await asyncio.sleep(0)
        out.closing = True
        hub.publish(Msg(txt="x"), next(IDS))
        hub.flush()
        await asyncio.wait_for(task, 1)
        assert gone.closed
        assert hub.subscribers == {stays}
        assert out.writes == []
        lines, _ = split_notice((await other.read(1)).decode().splitlines())
        assert [json.loads(x)["txt"] for x in lines] == ["x"]

    asyncio.run(run())


def test_chunked_writes_are_whole_http_chunks() -> None:
    async def run() -> None:
        hub = TailHub(max_subscribers=1, queue_len=3, coalesce_s=0)
        sub = hub.subscribe(Filter())
        for i in range(5):  # queued before it follows: 3 kept, 2 lost
            hub.publish(Msg(txt=str(i)), next(IDS))
        hub.flush()
        out = HeldTransport()
        task = asyncio.ensure_future(sub.follow(out, sse=False, chunked=True, keepalive_s=0.05))
        await asyncio.sleep(0)
        hub.publish(Msg(txt="5"), next(IDS))
        hub.flush()
        await asyncio.sleep(0.13)  # a keep-alive check with that write, then one without
        body, chunks = bytes(b"".join(out.writes)), []
        while body:
            size, _, body = body.partition(b"\r\n")
            n = int(size, 16)
            assert n > 0  # a zero chunk would end the response
            assert body[n : n + 2] == b"\r\n"
            chunks.append(body[:n])
            body = body[n + 2 :]
        lines = b"".join(chunks).decode().splitlines()
        assert lines[0] == '{"dropped": 2}'
        assert [json.loads(x)["txt"] for x in lines[1:5]] == ["0", "1", "2", "5"]
        assert chunks[-1] == b"\n"  # the keep-alive, framed
        hub.close_all()
        await asyncio.wait_for(task, 1)

    asyncio.run(run())


def test_subscribers_with_the_same_filter_share_its_matching_and_bytes() -> None:
    async def run() -> None:
        hub = TailHub(max_subscribers=4, queue_len=10)
        CountingFilter.calls = 0
        terms = Filter.from_params({"txt": "err"}, 0).terms
        subs = [hub.subscribe(CountingFilter(terms=terms)) for _ in range(3)]
        other = hub.subscribe(CountingFilter(terms=Filter.from_params({"txt": "ok"}, 0).terms))
        outs = [follow(sub) for sub in subs]
        other_out = follow(other)
        await asyncio.sleep(0)
        for txt in ("err 1", "ok 2", "err 3"):
            hub.publish(Msg(txt=txt), next(IDS))
        await outs[0].read(1)
        assert CountingFilter.calls == 3 * 2  # each event once per distinct filter
        (chunk,) = outs[1].writes
        assert outs[2].writes[0] is chunk
        assert [json.loads(x)["txt"] for x in chunk.splitlines()] == ["err 1", "err 3"]
        lines, _ = split_notice((await other_out.read(1)).decode().splitlines())
        assert [json.loads(x)["txt"] for x in lines] == ["ok 2"]

    asyncio.run(run())


def test_guard_against_a_filtered_tail_with_little_room_matching_a_whole_flush() -> None:
    """Room for 4 events and a flush of 1,000: its filter runs until the 4 are found, and
    the 996 events it did not look at count as lost (an upper bound)."""

    async def run() -> None:
        hub = TailHub(max_subscribers=1, queue_len=4, coalesce_s=3600)
        CountingFilter.calls = 0
        sub = hub.subscribe(CountingFilter(terms=Filter.from_params({"txt": "m"}, 0).terms))
        for i in range(1000):
            hub.publish(Msg(txt=f"m {i}" if i % 2 else "other"), next(IDS))
        hub.flush()
        assert CountingFilter.calls == 8  # events 0..7: the 4th match is event 7
        lines, dropped = await tail_batch(sub, 1)
        assert [json.loads(x)["txt"] for x in lines] == ["m 1", "m 3", "m 5", "m 7"]
        assert dropped == 992
        assert hub.dropped == 992

    asyncio.run(run())
