"""The held C engine (the Valkey store: every check in C but the replay check across
nodes, which SharedReplayGuard runs per drain) against the Python accept path with the
same check (accept.py, then drain.py holding the frames): the same datagrams through
both, over real UDP sockets into real Valkey stores, must store the same events and
count the same things; and a frame one node accepted is a replay on another, in the
middle of a run too, with none of its events stored twice."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_support import NOW, S
from logd._pb.logd_pb2 import PING, Cmd, Msg
from logd.server.ingest.drain import DRAIN_EVENTS, UdpIngest
from logd.server.ingest.engine import Impl, available, make_engine, replay_guard
from logd.server.keys import KeyHolder, KeyRing
from logd.server.store.valkey.entries import ENTRY_DATA, ENTRY_EVENTS, events, unpack
from logd.server.store.valkey.ids import number
from logd.server.store.valkey.replay import SharedReplayGuard
from logd.server.store.valkey.store import ValkeyStore
from redis_support import RedisServer
from test_fastpath import READER, WRITER, _ring, datagrams

pytestmark = pytest.mark.skipif(
    not available(), reason="the C engine is not built (LOGD_PURE_PYTHON=1)"
)
_fastpath = pytest.importorskip("logd.server.ingest._fastpath")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(Path(tmp_path_factory.mktemp("redis"))).start()
    yield srv
    srv.stop()


class ValkeyRig:
    """A node: UdpIngest on its own socket, engine `impl`, its ValkeyStore and shared guard."""

    def __init__(
        self, impl: Impl, url: str, ring: KeyRing, *, max_rings: int = 64, buffer: int = 100_000
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sender.bind(("127.0.0.1", 0))
        self.guard = replay_guard(max_age_ns=S, capacity=100_000, impl=impl)
        self.store = ValkeyStore(
            url=url, password=None, buffer_events=buffer, ring_bytes=1 << 24, ring_sizes={},
            max_rings=max_rings, max_tails=1, tail_queue=1, timeout=2.0,
        )  # fmt: skip
        self.shared = SharedReplayGuard(
            client=self.store.client, max_age_ns=S, max_future_ns=S // 4, clock=lambda: NOW,
            offline=lambda: self.store.down, room=lambda: self.store.room,
        )  # fmt: skip
        self.engine = make_engine(
            impl=impl, keys=KeyHolder(ring), guard=self.guard, store=self.store,
            max_frame=65_507, max_age_ns=S, max_future_ns=S // 4, not_before_ns=-(2**63),
            clock=lambda: NOW, shared_guard=self.shared,
        )  # fmt: skip
        assert (self.engine.name, self.engine.checks_across_nodes) == (impl, impl == "c")
        self.ingest = UdpIngest(
            sock=self.sock, engine=self.engine, store=self.store, expire=self.guard.expire,
            clock=lambda: NOW, drain_max=64,
            shared_guard=None if self.engine.checks_across_nodes else self.shared,
        )  # fmt: skip

    async def close(self) -> None:
        await self.store.close()
        self.sock.close()
        self.sender.close()

    async def feed(self, datagrams: Iterable[bytes], *, send: bool = True) -> None:
        """Send the datagrams, drain until all are received, then wait for their checks
        across nodes and (`send`) for the store to have them."""
        stats = self.ingest.stats
        target = stats.received
        for d in datagrams:
            self.sender.sendto(d, self.sock.getsockname())
            target += 1
        async with asyncio.timeout(10):
            while stats.received < target:
                self.ingest.drain()
                await asyncio.sleep(0)
            await self.shared.close()
            while getattr(self.engine, "_ready", None):  # noqa: ASYNC110 - stored over turns
                await asyncio.sleep(0)
            if send:
                await self.store.send_all()

    def counts(self) -> dict[str, object]:
        s = self.ingest.stats
        shared = self.shared.info()
        return {
            "received": s.received, "accepted": s.accepted, "events": s.events,
            "pongs": s.pongs, "rejected": dict(s.rejected), "keys": dict(s.keys.current),
            "guard": len(self.guard), "overflow": self.store.overflow_events,
            "checked": shared["checked"], "replays": shared["replays"],
        }  # fmt: skip

    async def stored(self) -> dict[bytes, list[tuple[int, int, Msg]]]:
        """Each ring's events as the backend holds them, oldest first."""
        rings = {}
        for key in await self.store.client.hkeys(b"logd:rings"):
            rings[key] = [
                (t_ns, lvl, Msg.FromString(data))
                for entry_id, fields in await self.store.client.xrange(key)
                for _, t_ns, lvl, data in events(number(entry_id), fields)
            ]
        return rings


async def both(server: RedisServer, batch: list[bytes], max_rings: int = 64) -> None:
    """The batch into a Python node (db 1) and a held C node (db 2): the same outcome."""
    python = ValkeyRig("python", server.url[:-1] + "1", _ring(), max_rings=max_rings)
    c = ValkeyRig("c", server.url[:-1] + "2", _ring(), max_rings=max_rings)
    try:
        for rig in (python, c):
            await rig.store.client.flushdb()
            await rig.store.start()
            await rig.feed(batch)
        assert c.counts() == python.counts()
        assert await c.stored() == await python.stored()
    finally:
        for rig in (python, c):
            await rig.close()


@st.composite
def plain(draw: st.DrawFn) -> list[bytes]:
    """Well-formed WRITEs the C reader takes whole (datagrams() mostly makes ones it
    leaves to Python), with replays, bad MACs and stale frames among them."""
    out: list[bytes] = []
    for f in range(draw(st.integers(1, 12))):
        cmd = Cmd(batch=[
            Msg(env="p", svc=draw(st.sampled_from(["a", "b", "c"])), txt=draw(st.text(max_size=20)),
                lvl=draw(st.integers(0, 6)))
            for _ in range(draw(st.integers(0, 20)))
        ])  # fmt: skip
        if draw(st.booleans()):
            cmd.sender, cmd.seq = b"AAAAAAAA", draw(st.integers(0, 50))
        frame = WRITER.sign(cmd.SerializeToString(), NOW - f - draw(st.sampled_from([0, 0, 2 * S])))
        mangle = draw(st.sampled_from(["no"] * 6 + ["mac", "replay"]))
        if mangle == "mac":
            frame = frame[:20] + bytes([frame[20] ^ 1]) + frame[21:]
        elif mangle == "replay" and out:
            frame = draw(st.sampled_from(out))
        out.append(frame)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.one_of(datagrams(), plain()))
def test_held_c_and_python_agree_on_any_datagrams(server: RedisServer, batch: list[bytes]) -> None:
    asyncio.run(both(server, batch))


def test_held_c_and_python_agree_on_overflow_rings_and_runs_past_an_entry(
    server: RedisServer,
) -> None:
    """Services past max_rings share the overflow ring (each event counted), and a ring's
    run past ENTRY_EVENTS is handed over as several entries, in order."""
    mixed = Cmd(batch=[Msg(env="a", svc=str(i % 3), txt=str(i)) for i in range(9)])
    per_frame = ENTRY_EVENTS // 2
    long = [
        Cmd(batch=[Msg(env="b", svc="x", txt=f"{f}.{i}") for i in range(per_frame)])
        for f in range(6)
    ]
    frames = [WRITER.sign(mixed.SerializeToString(), NOW)]
    frames += [WRITER.sign(cmd.SerializeToString(), NOW - 1 - f) for f, cmd in enumerate(long)]
    asyncio.run(both(server, frames, max_rings=2))

    async def entries() -> list[int]:
        rig = ValkeyRig("c", server.url[:-1] + "3", _ring(), max_rings=64)
        try:
            await rig.store.client.flushdb()
            await rig.store.start()
            await rig.feed(frames[1:])
            assert rig.counts()["events"] == 6 * per_frame
            return [int(f[b"n"]) for _, f in await rig.store.client.xrange(b"logd:ring:{b/x}")]
        finally:
            await rig.close()

    sizes = asyncio.run(entries())
    assert sum(sizes) == 6 * per_frame
    assert max(sizes) <= ENTRY_EVENTS
    assert len(sizes) >= 3  # 3 * ENTRY_EVENTS events in entries of at most ENTRY_EVENTS


def test_a_frame_one_node_accepted_is_a_replay_on_another_also_inside_a_run(
    server: RedisServer,
) -> None:
    """Node A takes four frames; node B then gets two of them among two new ones, in one
    drain and one ring: B counts two replays and stores only the new frames' events, and
    a PING A answered is a replay on B (no PONG). The ring holds every event once."""

    def frame(f: int) -> bytes:
        cmd = Cmd(batch=[Msg(env="p", svc="api", txt=f"{f}.{i}") for i in range(3)])
        return WRITER.sign(cmd.SerializeToString(), NOW - f)

    ping = READER.sign(Cmd(name=PING).SerializeToString(), NOW - 100)

    async def main() -> None:
        url = server.url[:-1] + "4"
        a, b = ValkeyRig("c", url, _ring()), ValkeyRig("c", url, _ring())
        try:
            await a.store.client.flushdb()
            for rig in (a, b):
                await rig.store.start()
            await a.feed([frame(f) for f in range(4)] + [ping])
            await b.feed([frame(1), frame(10), frame(3), frame(11), ping])
            counts = b.counts()
            assert counts["rejected"]["replay"] == 3
            assert (counts["accepted"], counts["events"], counts["pongs"]) == (2, 6, 0)
            assert (counts["checked"], counts["replays"]) == (5, 3)
            assert a.counts()["pongs"] == 1
            stored = [m.txt for _, _, m in (await b.stored())[b"logd:ring:{p/api}"]]
            expected = [f"{f}.{i}" for f in (0, 1, 2, 3, 10, 11) for i in range(3)]
            assert stored == expected  # once each, in arrival order
        finally:
            for rig in (a, b):
                await rig.close()

    asyncio.run(main())


@pytest.mark.parametrize("impl", ["python", "c"])
def test_a_node_whose_store_is_behind_refuses_frames_before_their_check(
    server: RedisServer, impl: Impl, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backend takes this node's appends slower than they come (held here) until its
    buffer is full: frames that pass the local checks are then refused as `overload`
    before their check across nodes (the backend holds no bucket field of theirs) instead
    of pushing buffered events out; nothing buffered is lost, and once the buffer drains
    frames are checked and stored again."""

    def frames(first: int, count: int) -> list[bytes]:
        cmds = [Cmd(batch=[Msg(env="p", svc="a", txt=f"{f}.{i}") for i in range(8)])
                for f in range(first, first + count)]  # fmt: skip
        return [WRITER.sign(c.SerializeToString(), NOW - f) for f, c in enumerate(cmds, first)]

    async def main() -> None:
        rig = ValkeyRig(impl, server.url[:-1] + "6", _ring(), buffer=40)
        gate = asyncio.Event()
        flush = rig.store._flush

        async def slow_flush() -> bool:
            await gate.wait()
            return await flush()

        monkeypatch.setattr(rig.store, "_flush", slow_flush)
        try:
            await rig.store.client.flushdb()
            await rig.store.start()
            await rig.feed(frames(0, 5), send=False)  # 40 events: the buffer is full
            assert rig.store.room == 0
            assert len(rig.store) == 40
            await rig.feed(frames(5, 3), send=False)
            counts = rig.counts()
            assert counts["rejected"]["overload"] == 3
            assert (counts["accepted"], counts["events"], counts["checked"]) == (5, 40, 5)
            buckets = [k async for k in rig.store.client.scan_iter(match=b"logd:mac:*")]
            assert sum([await rig.store.client.hlen(k) for k in buckets]) == 5  # none of theirs
            gate.set()
            await rig.store.send_all()
            assert rig.store.room == 40
            assert rig.store.dropped == 0
            await rig.feed(frames(8, 2))
            assert rig.counts()["rejected"]["overload"] == 3
            stored = [m.txt for _, _, m in (await rig.stored())[b"logd:ring:{p/a}"]]
            assert stored == [f"{f}.{i}" for f in (*range(5), 8, 9) for i in range(8)]
        finally:
            gate.set()
            await rig.close()

    asyncio.run(main())


def test_a_python_node_on_valkey_paces_a_few_frames_after_many_events(
    server: RedisServer,
) -> None:
    """The Python path with the check across nodes: once the node has stored more than a
    drain's bound in events, a drain of two frames still reads as a few frames within its
    bounds (the next read is paced), as on a node without Valkey."""

    def frames(first: int, count: int) -> list[bytes]:
        cmds = [Cmd(batch=[Msg(env="p", svc="a", txt=f"{f}.{i}") for i in range(8)])
                for f in range(first, first + count)]  # fmt: skip
        return [WRITER.sign(c.SerializeToString(), NOW - f) for f, c in enumerate(cmds, first)]

    async def main() -> None:
        rig = ValkeyRig("python", server.url[:-1] + "7", _ring())
        try:
            await rig.store.client.flushdb()
            await rig.store.start()
            await rig.feed(frames(0, DRAIN_EVENTS // 8 + 40))
            assert rig.ingest.stats.events > DRAIN_EVENTS
            for d in frames(1000, 2):
                rig.sender.sendto(d, rig.sock.getsockname())
            await asyncio.sleep(0.05)
            assert rig.ingest._drain_once() is True
            assert rig.ingest.stats.received == DRAIN_EVENTS // 8 + 42
        finally:
            await rig.close()

    asyncio.run(main())


def test_runs_of_big_events_are_entries_of_bounded_bytes(server: RedisServer) -> None:
    """Events of 3 KB in frames of 16: the C reader hands a ring's run over once it would
    pass ENTRY_DATA, so no entry holds more than that (but for its first event)."""
    cmds = [Cmd(batch=[Msg(env="p", svc="big", txt=f"{f}.{i}" + "x" * 3000) for i in range(16)])
            for f in range(20)]  # fmt: skip
    frames = [WRITER.sign(cmd.SerializeToString(), NOW - f) for f, cmd in enumerate(cmds)]

    async def main() -> None:
        rig = ValkeyRig("c", server.url[:-1] + "5", _ring())
        try:
            await rig.store.client.flushdb()
            await rig.store.start()
            await rig.feed(frames)
            entries = await rig.store.client.xrange(b"logd:ring:{p/big}")
            assert sum(int(f[b"n"]) for _, f in entries) == 320
            sizes = [len(unpack(f[b"z"])) - 13 * int(f[b"n"]) for _, f in entries]  # the events'
            assert all(size <= ENTRY_DATA for size in sizes)
            assert len(entries) >= 320 * 3000 // ENTRY_DATA
            stored = [
                m.txt.partition("x")[0] for _, _, m in (await rig.stored())[b"logd:ring:{p/big}"]
            ]
            assert stored == [f"{f}.{i}" for f in range(20) for i in range(16)]
        finally:
            await rig.close()

    asyncio.run(main())


def test_frames_left_to_python_are_stored_a_drain_s_bound_at_a_time(server: RedisServer) -> None:
    """Batches past the C reader's MAX_EVENTS go to Python: once checked across nodes they
    are stored about DRAIN_EVENTS events per turn of the loop (one frame past them at most),
    the rest on the next turns, in order, none lost."""
    per_frame = _fastpath.MAX_EVENTS + 500
    frames = [
        WRITER.sign(Cmd(batch=[Msg(txt=f"{f}.{i}") for i in range(per_frame)])
                    .SerializeToString(), NOW - f)
        for f in range(6)
    ]  # fmt: skip

    async def main() -> None:
        rig = ValkeyRig("c", server.url[:-1] + "6", _ring())
        steps: list[int] = []
        stop = False

        async def watch() -> None:  # what the store took in each turn of the loop
            seen = rig.store.writes
            while not stop:
                await asyncio.sleep(0)
                steps.append(rig.store.writes - seen)
                seen = rig.store.writes

        try:
            await rig.store.client.flushdb()
            await rig.store.start()
            watcher = asyncio.create_task(watch())
            await rig.feed(frames)
            stop = True
            await watcher
            assert rig.counts()["events"] == 6 * per_frame
            assert max(steps) <= DRAIN_EVENTS + per_frame
            assert sum(1 for n in steps if n) >= 3  # over several turns, not one
            (ring,) = (await rig.stored()).values()
            stored = [m.txt for _, _, m in ring]
            assert stored == [f"{f}.{i}" for f in range(6) for i in range(per_frame)]
        finally:
            await rig.close()

    asyncio.run(main())
