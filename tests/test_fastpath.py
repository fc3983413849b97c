"""The C accept path (logd.server.ingest._fastpath) against the Python one (accept.py), which is its
specification: the same datagrams through both, over real UDP sockets, must store the
same events and count the same things. Hypothesis makes the datagrams, including
authenticated payloads in odd encodings that only a careful protobuf reader gets right.
"""

from __future__ import annotations

import socket
import struct
from array import array
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_support import NOW, Rig, S, key_ring
from logd._pb.logd_pb2 import PING, PONG, Cmd, Msg
from logd.server.filters import Filter
from logd.server.ingest.engine import available
from logd.server.ingest.replay import ReplayGuard
from logd.server.keys import KeyRing, Role, Stage
from logd.server.store.ring import EventIds, Ring
from logd.wire import HEADER_LEN, Signer
from support import wait_for

pytestmark = pytest.mark.skipif(
    not available(), reason="the C engine is not built (LOGD_PURE_PYTHON=1)"
)
_fastpath = pytest.importorskip("logd.server.ingest._fastpath")

READ, WRITE, OLD_WRITE = b"fp-read-secret-0000000", b"fp-write-secret-000000", b"fp-old-write-0"
WRITER, READER, OLD = Signer(WRITE), Signer(READ), Signer(OLD_WRITE)
STRANGER = Signer(b"not-a-key-logd-knows")


def _ring() -> KeyRing:
    return key_ring(READ, WRITE, OLD_WRITE)


@pytest.fixture
def sides() -> Iterator[tuple[Rig, Rig]]:
    python, c = Rig("python", _ring()), Rig("c", _ring())
    yield python, c
    for s in (python, c):
        s.close()


def feed(sides: tuple[Rig, Rig], datagrams: list[bytes]) -> None:
    for side in sides:
        side.feed(datagrams)


def assert_same(python: Rig, c: Rig) -> None:
    assert c.counts() == python.counts()
    assert c.stored() == python.stored()


# --- payloads -------------------------------------------------------------------------

strings = st.text(max_size=30)
times = st.one_of(
    st.none(),  # no time: the receive time is stored
    st.integers(0, 2**40).map(lambda ns: NOW - ns),
    st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**31), 2**31 - 1)),  # any
)


@st.composite
def msgs(draw: st.DrawFn) -> Msg:
    msg = Msg(env=draw(st.sampled_from(["", "prod", "dev", "é"])),
              svc=draw(st.sampled_from(["", "api", "db"])), fn=draw(strings),
              txt=draw(st.text(max_size=200)), lvl=draw(st.integers(-3, 300)),
              http_method=draw(st.integers(-2, 9)), url=draw(strings),
              response_status=draw(st.integers(-(2**31), 2**31 - 1)),
              attrs=draw(st.dictionaries(strings, strings, max_size=3)),
              host=draw(st.sampled_from(["", "web-1", "é" * 64, "h" * 129])),
              pid=draw(st.integers(0, 2**32 - 1)))  # fmt: skip
    t = draw(times)
    if isinstance(t, int):
        msg.t.seconds, msg.t.nanos = divmod(t, S)
    elif t is not None:
        msg.t.seconds, msg.t.nanos = t
    return msg


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    cmd = Cmd(name=draw(st.sampled_from([0, 0, 0, PING, 5, 7])))
    if draw(st.booleans()):
        cmd.msg.CopyFrom(draw(msgs()))
    cmd.batch.extend(draw(st.lists(msgs(), max_size=4)))
    if draw(st.booleans()):  # loss accounting: any sender, any seq (a table per engine)
        cmd.sender = draw(st.sampled_from([b"", b"AAAAAAAA", b"123"]))
        cmd.seq = draw(st.integers(0, 2**64 - 1))
    data = cmd.SerializeToString()
    how = draw(st.sampled_from(["as is", "as is", "flip", "cut", "append", "random"]))
    if how == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    elif how == "cut" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "append":  # unknown fields, repeated fields, odd tags
        data += draw(st.binary(max_size=12))
    elif how == "random":
        data = draw(st.binary(max_size=64))
    return data


@st.composite
def datagrams(draw: st.DrawFn) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(draw(st.integers(1, 12))):
        signer = draw(st.sampled_from([WRITER, WRITER, WRITER, OLD, READER, STRANGER]))
        age = draw(st.sampled_from([0, 0, 0, -S // 2, 2 * S, -S]))  # future / stale too
        frame = signer.sign(draw(payloads()), NOW - age - len(out))
        mangle = draw(st.sampled_from(["no"] * 6 + ["mac", "version", "short", "replay"]))
        if mangle == "mac":
            frame = frame[:20] + bytes([frame[20] ^ 1]) + frame[21:]
        elif mangle == "version":
            frame = b"\x02" + frame[1:]
        elif mangle == "short":
            frame = frame[: HEADER_LEN - 1]
        elif mangle == "replay" and out:
            frame = draw(st.sampled_from(out))
        out.append(frame)
    return out


DIFF = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


@DIFF
@given(batch=datagrams())
def test_c_and_python_agree_on_any_datagrams(sides: tuple[Rig, Rig], batch: list[bytes]) -> None:
    python, c = sides
    before = python.counts(), python.stored()
    feed(sides, batch)
    assert_same(python, c)
    assert (python.counts(), python.stored()) != before or not batch


def test_a_key_reload_reaches_the_c_path(sides: tuple[Rig, Rig]) -> None:
    python, c = sides
    new_writer = Signer(b"fp-new-write-secret")
    payload = Cmd(msg=Msg(env="prod", svc="api", txt="hello")).SerializeToString()
    feed(sides, [new_writer.sign(payload, NOW)])
    assert c.counts()["rejected"] == python.counts()["rejected"]
    assert c.ingest.stats.rejected["unknown_key"] == 1
    assert (python.reloads, c.reloads) == (1, 1)  # an unknown key_id asks for a key reload
    ring = KeyRing.from_secrets({(Role.READ, Stage.CURRENT): READ,
                                 (Role.WRITE, Stage.CURRENT): b"fp-new-write-secret"})  # fmt: skip
    for side in (python, c):
        side.keys.ring = ring
    feed(sides, [new_writer.sign(payload, NOW - 1), WRITER.sign(payload, NOW - 2)])
    assert_same(python, c)
    assert c.ingest.stats.events == 1  # the new key writes; the dropped one no longer does
    assert c.ingest.stats.keys.current == {new_writer.key_id: 1}


def test_overflow_rings_count_every_event() -> None:
    python, c = Rig("python", _ring(), max_rings=1), Rig("c", _ring(), max_rings=1)
    try:
        batch = Cmd(batch=[Msg(env="a", svc=str(i % 3), txt=str(i)) for i in range(9)])
        feed((python, c), [WRITER.sign(batch.SerializeToString(), NOW)])
        assert_same(python, c)
        assert c.store.overflow_events == 6
    finally:
        for s in (python, c):
            s.close()


# --- the replay table against ReplayGuard -------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 40), st.integers(-S // 4, S), st.integers(0, S // 3)),
        max_size=60,
    ),
    capacity=st.integers(1, 30),
)
def test_replay_table_keeps_replay_guards_promises(
    steps: list[tuple[int, int, int]], capacity: int
) -> None:
    """Same answers for fresh frames in any order as time goes on (the checker refuses
    stale and future ones first). A MAC names one frame, so here it is made from the
    frame's signing time and a nonce."""
    guard = ReplayGuard(max_age_ns=S, capacity=capacity)
    table = _fastpath.ReplayTable(max_age_ns=S, capacity=capacity)
    now = NOW
    for nonce, age, advance in steps:
        now += advance
        signed_at = now - age
        mac = struct.pack(">qq", signed_at, nonce)
        answers = [g.check_and_remember(mac, signed_at, now) for g in (guard, table)]
        assert answers[0] == answers[1]
        if advance % 5 == 0:
            guard.expire(now)
            table.expire(now)
    assert table.overflows == guard.overflows


def test_replay_table_fails_closed_when_full_and_forgets_what_expired() -> None:
    table = _fastpath.ReplayTable(max_age_ns=S, capacity=2)
    assert table.check_and_remember(b"a" * 16, NOW, NOW) is True
    assert table.check_and_remember(b"b" * 16, NOW, NOW) is True
    assert table.check_and_remember(b"c" * 16, NOW, NOW) is None  # full: refused
    assert table.check_and_remember(b"a" * 16, NOW, NOW) is False  # still a replay
    assert (len(table), table.overflows) == (2, 1)
    later = NOW + S + 200_000_000  # both expired, in generations that have passed
    table.expire(later)
    assert len(table) == 0
    assert table.check_and_remember(b"c" * 16, later, later) is True


def test_replay_table_needs_a_capacity() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        _fastpath.ReplayTable(max_age_ns=S, capacity=0)
    with pytest.raises(ValueError, match="16 bytes"):
        _fastpath.ReplayTable(max_age_ns=S, capacity=1).check_and_remember(b"x", NOW, NOW)


# --- Ring.extend against Ring.append ------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3000), max_size=80),
    capacity=st.integers(2000, 60_000),
    split=st.integers(1, 10),
)
def test_extend_stores_what_append_would(sizes: list[int], capacity: int, split: int) -> None:
    one, many = (
        Ring("a/b", "a", "b", capacity, EventIds(1)),
        Ring("a/b", "a", "b", capacity, EventIds(1)),
    )
    events = [(NOW + i, i % 7, bytes([65 + i % 26]) * n) for i, n in enumerate(sizes)]
    for t_ns, lvl, data in events:
        one.append(t_ns, lvl, data)
    for start in range(0, len(events), split):  # runs of `split` events
        run = events[start : start + split]
        ends = array("I")
        for _, _, data in run:
            ends.append((ends[-1] if ends else 0) + len(data))
        many.extend(b"".join(d for _, _, d in run), ends, array("q", (t for t, _, _ in run)),
                    bytes(lvl for _, lvl, _ in run), run[0][0], run[-1][0])  # fmt: skip
    assert (many.events, many.bytes, many.evicted) == (one.events, one.bytes, one.evicted)
    assert list(many.scan(Filter())) == list(one.scan(Filter()))
    assert [len(c) for c in many._chunks] == [len(c) for c in one._chunks]


def test_c_stores_plain_writes_and_leaves_pings_to_python() -> None:
    """The split itself: a well-formed WRITE comes back as a run of stored bytes; a PING,
    which needs an answer, comes back as a checked frame with its key's slot."""
    guard = _fastpath.ReplayTable(max_age_ns=S, capacity=10)
    engine = _fastpath.Engine(
        guard, max_frame=65_507, max_age_ns=S, max_future_ns=S // 4, not_before_ns=-(2**63)
    )
    engine.set_keys([(k.signer.key_id, *k.signer.pad_blocks(), k.role is Role.WRITE)
                     for k in _ring().keys])  # fmt: skip
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        msg = Msg(env="prod", svc="api", txt="hello")  # no time: the receive time is added
        tx.sendto(WRITER.sign(Cmd(msg=msg).SerializeToString(), NOW), rx.getsockname())
        tx.sendto(READER.sign(Cmd(name=PING).SerializeToString(), NOW), rx.getsockname())
        items, err = engine.drain(rx.fileno(), NOW, 10, 100)
    finally:
        rx.close()
        tx.close()
    assert err == 0
    (kind, env, svc, data, ends, times, lvls, t_min, t_max), (kind2, frame, addr, slot, at) = items
    assert (kind, env, svc, kind2, slot, at) == (_fastpath.ITEM_RUN, "prod", "api",
                                                 _fastpath.ITEM_FRAME, 0, NOW)  # fmt: skip
    stored = Msg.FromString(data)
    assert (stored.txt, stored.t.seconds * S + stored.t.nanos) == ("hello", NOW)
    assert (array("q", times).tolist(), lvls, t_min, t_max) == ([NOW], b"\0", NOW, NOW)
    assert array("I", ends).tolist() == [len(data)]
    assert (addr[0], Cmd.FromString(frame[HEADER_LEN:]).name) == ("127.0.0.1", PING)
    assert engine.take_counts() == (2, (0, 0, 0, 0, 0, 0, 0), 1, 1, (0, 1, 0))


def test_event_times_past_2262_get_the_receive_time_on_both_paths(
    sides: tuple[Rig, Rig],
) -> None:
    """Times are kept as int64 nanoseconds; a valid Timestamp beyond them (year 9999)
    once overflowed the ring's time array on the Python path."""
    python, c = sides
    far = Msg(txt="far")
    far.t.seconds = 253_402_300_799  # 9999-12-31T23:59:59Z
    feed(sides, [WRITER.sign(Cmd(msg=far).SerializeToString(), NOW)])
    assert_same(python, c)
    assert [t for _, events in c.stored() for t, _ in events] == [NOW]


def test_pings_over_ipv6_are_answered_through_the_c_path() -> None:
    """A PING comes back from C with its IPv6 source address; the PONG goes there."""
    side = Rig("c", _ring(), host="::1")
    client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        client.bind(("::1", 0))
        client.settimeout(5)
        client.sendto(READER.sign(Cmd(name=PING).SerializeToString(), NOW), side.sock.getsockname())
        side.ingest.drain()
        pong = client.recv(1024)
    finally:
        side.close()
        client.close()
    assert READER.verify(pong)
    assert Cmd.FromString(pong[HEADER_LEN:]).name == PONG
    assert (side.ingest.stats.pongs, side.ingest.stats.received) == (1, 1)


def test_frames_left_to_python_count_toward_the_drains_bound() -> None:
    """Batches past the C reader's MAX_EVENTS go to Python: a drain still stores about
    DRAIN_EVENTS events (one frame past them at most), and what it read beyond waits, in
    order, for the next drain (a burst of them once held the loop for 13.8 s)."""
    from logd.server.ingest.drain import DRAIN_EVENTS

    rig = Rig("c", _ring())
    try:
        per_frame = _fastpath.MAX_EVENTS + 500  # about 50 KB a frame
        frames = [
            WRITER.sign(Cmd(batch=[Msg(txt=f"{f}.{i}") for i in range(per_frame)])
                        .SerializeToString(), NOW - f)
            for f in range(6)
        ]  # fmt: skip
        for frame in frames:
            rig.sender.sendto(frame, rig.sock.getsockname())
        wait_for(lambda: rig.ingest.drain() or rig.ingest.stats.received == 6)
        stored = [rig.ingest.stats.events]
        while rig.ingest.stats.events < 6 * per_frame:
            rig.ingest.drain()
            stored.append(rig.ingest.stats.events)
        steps = [b - a for a, b in zip([0, *stored], stored, strict=False)]
        assert max(steps) <= DRAIN_EVENTS + per_frame
        assert len(stored) >= 3  # it took several drains, not one
        in_order = [f"{f}.{i}" for f in range(6) for i in range(per_frame)]
        assert rig.texts() == in_order[::-1]  # all of them, newest first
    finally:
        rig.close()
