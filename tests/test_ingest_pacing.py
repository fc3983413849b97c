"""Paced drains (issue 14): fed live, a drain that found a few frames takes the socket off
the selector and reads again PACE_S later, so one wake-up reads many frames. On a real
event loop (asyncio's and uvloop's) and real UDP sockets, both engines: every frame is
still stored in order, PINGs are answered, a flood or a pause puts the socket back on
the selector, and stop() ends the pacing.

PACE_S is stretched in some tests so that which read took a frame (the paced one or a
readiness event) shows without timing anything short.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop
from ingest_support import NOW, Rig, key_ring
from logd._pb.logd_pb2 import PING, Cmd, Msg
from logd.server.ingest import drain
from logd.wire import PONG_PAYLOAD, Signer, frame_payload

READ, WRITE = b"pace-read-secret-00000", b"pace-write-secret-0000"
WRITER, READER = Signer(WRITE), Signer(READ)

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    def run(coro: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            runner.run(coro)

    return run


def frame(n: int) -> bytes:
    return WRITER.sign(Cmd(msg=Msg(env="prod", svc="api", txt=f"e{n}")).SerializeToString(), NOW)


async def until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.001)


def record(rig: Rig) -> list[tuple[str, int]]:
    """Which read took the frames: (drain: a readiness event, or _paced_drain, frames read),
    in order. The ingest's own callbacks, wrapped before start() hands them to the loop."""
    ingest, calls = rig.ingest, []

    def wrap(name: str) -> Callable[[], None]:
        inner = getattr(ingest, name)

        def call() -> None:
            before = ingest.stats.received
            inner()
            calls.append((name, ingest.stats.received - before))

        return call

    for name in ("drain", "_paced_drain"):
        setattr(ingest, name, wrap(name))
    return calls


def test_a_stream_fed_live_is_stored_whole_and_in_order(
    impl: str, run: Callable[[Coroutine[Any, Any, None]], None]
) -> None:
    """Frames a few at a time, as a live sender sends them: paced reads take them, and every
    one is stored, in order."""
    rig = Rig(impl, key_ring(READ, WRITE))
    calls = record(rig)
    sent = 3_000

    async def main() -> None:
        rig.ingest.start(asyncio.get_running_loop())
        for at in range(0, sent, 3):
            for n in range(at, at + 3):
                rig.sender.sendto(frame(n), rig.sock.getsockname())
            await asyncio.sleep(0)
        await until(lambda: rig.ingest.stats.events == sent)
        rig.ingest.stop()

    try:
        run(main())
        assert rig.texts() == [f"e{n}" for n in reversed(range(sent))]
        assert rig.ingest.stats.received == rig.ingest.stats.accepted == sent
        assert calls[0][0] == "drain"
        assert any(name == "_paced_drain" and n for name, n in calls)
        assert sum(n for _, n in calls) == sent
    finally:
        rig.close()


def test_frames_wait_for_the_paced_read_and_pings_are_answered(
    impl: str, run: Callable[[Coroutine[Any, Any, None]], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a drain of a few frames the next ones (a PING too) wait for the paced read; a
    paced read that finds nothing puts the socket back on the selector, and the next frame
    is read at its readiness event."""
    monkeypatch.setattr(drain, "PACE_S", 1.0)
    rig = Rig(impl, key_ring(READ, WRITE))
    calls = record(rig)
    to = rig.sock.getsockname()
    ping = READER.sign(Cmd(name=PING).SerializeToString(), NOW)

    async def main() -> None:
        stats = rig.ingest.stats
        rig.ingest.start(asyncio.get_running_loop())
        for n in range(3):
            rig.sender.sendto(frame(n), to)
        await until(lambda: stats.received == 3)
        assert calls == [("drain", 3)]
        rig.sender.sendto(frame(3), to)
        rig.sender.sendto(ping, to)
        await until(lambda: stats.pongs == 1)
        assert stats.events == 4
        assert [name for name, _ in calls[1:]] == ["_paced_drain"] * (len(calls) - 1)
        # The PONG came back to the sender, signed with the PING's key.
        rig.sender.settimeout(5)
        pong = rig.sender.recv(65_536)
        assert READER.verify(pong)
        assert frame_payload(pong) == PONG_PAYLOAD
        await until(lambda: calls[-1] == ("_paced_drain", 0))
        rig.sender.sendto(frame(4), to)
        await until(lambda: stats.events == 5)
        assert calls[-1] == ("drain", 1)
        rig.ingest.stop()

    try:
        run(main())
        assert rig.texts() == [f"e{n}" for n in reversed(range(5))]
    finally:
        rig.close()


def test_a_flood_of_bad_frames_puts_the_socket_back_on_the_selector(
    impl: str, run: Callable[[Coroutine[Any, Any, None]], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A paced read that finds PACE_FRAMES or more (here junk: each refused and counted)
    goes back to readiness events: the buffer never holds more than a pause's worth."""
    monkeypatch.setattr(drain, "PACE_S", 1.0)
    rig = Rig(impl, key_ring(READ, WRITE))
    calls = record(rig)
    to = rig.sock.getsockname()

    async def main() -> None:
        stats = rig.ingest.stats
        rig.ingest.start(asyncio.get_running_loop())
        rig.sender.sendto(frame(0), to)
        await until(lambda: stats.received == 1)
        for n in range(drain.PACE_FRAMES):
            rig.sender.sendto(b"\x01junk" + n.to_bytes(4, "big"), to)
        await until(lambda: stats.received == 1 + drain.PACE_FRAMES)
        assert sum(stats.rejected.values()) == drain.PACE_FRAMES
        rig.sender.sendto(frame(1), to)
        await until(lambda: stats.events == 2)
        rig.ingest.stop()

    try:
        run(main())
        assert calls == [("drain", 1), ("_paced_drain", drain.PACE_FRAMES), ("drain", 1)]
        assert rig.texts() == ["e1", "e0"]
    finally:
        rig.close()


def test_a_drain_bounded_by_its_events_is_not_paced(
    impl: str, run: Callable[[Coroutine[Any, Any, None]], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full buffer of 16-event batches: a drain stops at DRAIN_EVENTS with frames still
    queued, and the next readiness event (not a paced read) takes them."""
    monkeypatch.setattr(drain, "PACE_S", 5.0)
    rig = Rig(impl, key_ring(READ, WRITE))
    calls = record(rig)
    frames = [
        WRITER.sign(
            Cmd(batch=[Msg(svc="api", txt=f"b{n}.{i}") for i in range(16)]).SerializeToString(),
            NOW,
        )
        for n in range(200)
    ]

    async def main() -> None:
        for f in frames:  # all queued before the loop runs
            rig.sender.sendto(f, rig.sock.getsockname())
        rig.ingest.start(asyncio.get_running_loop())
        await until(lambda: rig.ingest.stats.events == 200 * 16, within_s=4.0)
        rig.ingest.stop()

    try:
        run(main())
        assert {name for name, _ in calls} == {"drain"}
        assert len(calls) >= 2
        assert len(rig.texts()) == 200 * 16
    finally:
        rig.close()


def test_stop_ends_the_pacing(
    impl: str, run: Callable[[Coroutine[Any, Any, None]], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() while a paced read is due: nothing is read after it, and the frames read
    before it are all stored."""
    monkeypatch.setattr(drain, "PACE_S", 0.05)
    rig = Rig(impl, key_ring(READ, WRITE))
    calls = record(rig)
    to = rig.sock.getsockname()

    async def main() -> None:
        stats = rig.ingest.stats
        rig.ingest.start(asyncio.get_running_loop())
        rig.sender.sendto(frame(0), to)
        await until(lambda: stats.received == 1)
        rig.ingest.stop()
        assert not rig.ingest.running
        rig.sender.sendto(frame(1), to)
        await asyncio.sleep(0.2)  # past the paced read it had due

    try:
        run(main())
        assert calls == [("drain", 1)]
        assert rig.ingest.stats.received == 1
        assert rig.texts() == ["e0"]
    finally:
        rig.close()
