"""Loss accounting (PROTOCOL.md "Loss accounting and origin"): the table of writers, in
Python (writers.WriterTable) and in C (_fastpath.WriterTable), against a plain model of
the rule and against each other; then both engines over real UDP, and the C reader
keeping frames with the new fields on its own path."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingest_support import IMPLS, NOW, Rig, S, key_ring
from logd._pb.logd_pb2 import Cmd, Msg
from logd.server.ingest.engine import available
from logd.server.ingest.writers import CAPACITY, TOP, U64, WINDOW, WriterTable, writers_info
from logd.wire import Signer

READ, WRITE = b"wr-read-secret-0000000", b"wr-write-secret-000000"
WRITER = Signer(WRITE)
A, B = b"AAAAAAAA", b"BBBBBBBB"


def _c_table(capacity: int = CAPACITY) -> Any:
    from logd.server.ingest import fastpath

    return fastpath.extension().WriterTable(capacity=capacity)


TABLES = [
    pytest.param(WriterTable, id="python"),
    pytest.param(
        _c_table,
        id="c",
        marks=pytest.mark.skipif(not available(), reason="the C engine is not built"),
    ),
]
Make = Callable[..., Any]


def seqs(make: Make, *numbers: int, sender: bytes = A, **kw: Any) -> Any:
    table = make(**kw)
    for at, seq in enumerate(numbers):
        table.note(sender, seq, "web-1", "api", NOW + at)
    return table


def lost(table: Any, sender: bytes = A) -> int:
    return next(e[4] for e in table.entries() if e[0] == sender)


@pytest.mark.parametrize("make", TABLES)
def test_gaps_count_and_late_frames_take_them_off_once(make: Make) -> None:
    table = seqs(make, 1, 2, 5)
    assert (lost(table), table.lost, table.frames) == (2, 2, 3)
    table.note(A, 4, "web-1", "api", NOW)  # late: 4 was counted lost
    table.note(A, 4, "web-1", "api", NOW)  # again (a new frame with its seq): not twice
    table.note(A, 2, "web-1", "api", NOW)  # seen before, never lost: nothing
    table.note(A, 5, "web-1", "api", NOW)  # the highest again: nothing
    assert (lost(table), table.lost, table.frames) == (1, 1, 7)
    table.note(A, 3, "web-1", "api", NOW)
    assert (lost(table), table.lost) == (0, 0)


@pytest.mark.parametrize("make", TABLES)
def test_the_first_frame_seen_counts_nothing(make: Make) -> None:
    """A server that starts (or forgot the writer) after frame 1000 has lost nothing."""
    table = seqs(make, 1000, 1001)
    assert (lost(table), table.lost) == (0, 0)
    table.note(A, 999, "web-1", "api", NOW)  # below the first seen: never counted lost
    assert table.lost == 0


@pytest.mark.parametrize("make", TABLES)
def test_a_late_frame_is_taken_off_within_the_window_only(make: Make) -> None:
    table = seqs(make, 1, WINDOW + 3)  # 2 .. WINDOW + 2 lost
    assert table.lost == WINDOW + 1
    table.note(A, 3, "h", "s", NOW)  # WINDOW - 1 below the highest: the window's last bit
    assert table.lost == WINDOW
    table.note(A, 2, "h", "s", NOW)  # WINDOW below: its loss stays counted
    assert table.lost == WINDOW
    table.note(A, WINDOW + 2, "h", "s", NOW)  # just below the highest
    assert table.lost == WINDOW - 1


@pytest.mark.parametrize("make", TABLES)
def test_the_window_moves_with_the_highest(make: Make) -> None:
    table = seqs(make, 1, 3)  # 2 lost
    for seq in range(4, 4 + WINDOW):  # no gaps: 2 slides out of the window
        table.note(A, seq, "h", "s", NOW)
    table.note(A, 2, "h", "s", NOW)
    assert table.lost == 1
    table = seqs(make, 1, 3, WINDOW + 2)  # 2 lost, then 4 .. WINDOW + 1
    assert table.lost == WINDOW - 1
    table.note(A, 2, "h", "s", NOW)  # WINDOW - 1 below the highest: still inside
    assert table.lost == WINDOW - 2


@pytest.mark.parametrize("make", TABLES)
def test_hostile_seqs_stay_exact_and_saturate_the_total(make: Make) -> None:
    """A writer's own authenticated lie: seq 2**64 - 1 counts what the rule says, nothing
    overflows, and two such writers saturate the total at 2**64 - 1."""
    table = seqs(make, 1, U64)
    assert lost(table) == table.lost == U64 - 2
    table.note(A, U64, "h", "s", NOW)
    table.note(A, U64 - 1, "h", "s", NOW)  # late: takes one off
    assert lost(table) == U64 - 3
    for seq in (1, U64):
        table.note(B, seq, "h", "s", NOW)
    assert lost(table, B) == U64 - 2
    assert table.lost == U64
    table.note(B, U64 - 1, "h", "s", NOW)
    assert table.lost == U64 - 1  # one off the saturated total, as the rule says


@pytest.mark.parametrize("make", TABLES)
@pytest.mark.parametrize("sender", [b"", b"1234567", b"123456789", b"x" * 1000])
def test_a_sender_not_8_bytes_or_seq_0_is_malformed_and_not_counted(
    make: Make, sender: bytes
) -> None:
    table = make()
    table.note(sender, 5, "h", "s", NOW)
    table.note(A, 0, "h", "s", NOW)
    assert (table.malformed, table.frames, len(table), list(table.entries())) == (2, 0, 0, [])


@pytest.mark.parametrize("make", TABLES)
def test_the_table_forgets_the_least_recently_heard_first(make: Make) -> None:
    table = make(capacity=3)
    for n, sender in enumerate([b"1" * 8, b"2" * 8, b"3" * 8]):
        table.note(sender, 1, f"h{n}", "s", NOW + n)
    table.note(b"1" * 8, 2, "h0", "s", NOW + 10)  # heard again: now the newest
    table.note(b"4" * 8, 1, "h3", "s", NOW + 11)  # forgets 2, the oldest
    assert sorted(e[0] for e in table.entries()) == [b"1" * 8, b"3" * 8, b"4" * 8]
    assert (len(table), table.forgotten, table.frames) == (3, 1, 5)
    table.note(b"2" * 8, 9, "h1", "s", NOW + 12)  # back: a first sight again, no loss
    assert table.lost == 0
    assert b"3" * 8 not in {e[0] for e in table.entries()}


@pytest.mark.parametrize("make", TABLES)
def test_a_flood_of_distinct_senders_stays_within_the_bound(make: Make) -> None:
    table = make()
    for n in range(3 * CAPACITY):
        table.note(n.to_bytes(8, "big"), 1 + n % 7, "h" * 128, "s" * 128, NOW + n)
    assert (len(table), table.forgotten, table.frames) == (CAPACITY, 2 * CAPACITY, 3 * CAPACITY)
    held = {int.from_bytes(e[0], "big") for e in table.entries()}
    assert held == set(range(2 * CAPACITY, 3 * CAPACITY))  # the newest CAPACITY
    for n in range(2 * CAPACITY, 3 * CAPACITY):  # each found again after all the deletions
        table.note(n.to_bytes(8, "big"), 100, "h", "s", NOW)
    assert table.forgotten == 2 * CAPACITY
    assert table.lost == sum(100 - (1 + n % 7) - 1 for n in range(2 * CAPACITY, 3 * CAPACITY))


@pytest.mark.parametrize("make", TABLES)
def test_host_and_svc_are_the_latest_frames_and_kept_for_an_empty_write(make: Make) -> None:
    table = make()
    table.note(A, 1, "web-1", "api", NOW)
    table.note(A, 2, None, None, NOW + 1)  # a WRITE without events
    assert [e[1:3] for e in table.entries()] == [("web-1", "api")]
    table.note(A, 3, "", "db", NOW + 2)
    assert list(table.entries()) == [(A, "", "db", 3, 0, NOW + 2)]


@pytest.mark.skipif(not available(), reason="the C engine is not built")
def test_the_c_table_lists_at_most_100_writers_with_the_most_loss() -> None:
    with pytest.raises(ValueError, match="0 to 100"):
        _c_table().most_lost(101)


@pytest.mark.parametrize("make", TABLES)
def test_info_shows_the_writers_with_the_most_loss(make: Make) -> None:
    table = make()
    for n in range(TOP + 5):
        sender = bytes([n]) * 8
        table.note(sender, 1, f"h{n}", "api", NOW)
        table.note(sender, 2 + n, f"h{n}", "api", NOW + S)
    info = writers_info(table)
    assert {k: v for k, v in info.items() if k != "most_lost"} == {
        "tracked": TOP + 5, "capacity": CAPACITY, "frames": 2 * (TOP + 5),
        "lost": sum(range(TOP + 5)), "forgotten": 0, "malformed": 0,
    }  # fmt: skip
    assert [w["lost"] for w in info["most_lost"]] == list(range(TOP + 4, 4, -1))
    assert info["most_lost"][0] == {
        "sender": (bytes([TOP + 4]) * 8).hex(), "host": f"h{TOP + 4}", "svc": "api",
        "frames": 2, "lost": TOP + 4, "last_seen": "2027-01-15T08:00:01.000000000Z",
    }  # fmt: skip


# --- both tables follow the rule, written plainly -------------------------------------


class Model:
    """The rule with unbounded sets, for a few senders."""

    def __init__(self) -> None:
        self.highest: dict[bytes, int] = {}
        self.pending: dict[bytes, set[int]] = {}
        self.lost: dict[bytes, int] = {}

    def note(self, sender: bytes, seq: int) -> None:
        if sender not in self.highest:
            self.highest[sender], self.pending[sender], self.lost[sender] = seq, set(), 0
        elif seq > self.highest[sender]:
            self.pending[sender] |= set(range(self.highest[sender] + 1, seq))
            self.lost[sender] += seq - self.highest[sender] - 1
            self.highest[sender] = seq
        elif seq in self.pending[sender] and self.highest[sender] - 1 - seq < WINDOW:
            self.pending[sender].discard(seq)
            self.lost[sender] -= 1


notes = st.lists(
    st.tuples(st.sampled_from([A, B, b"CCCCCCCC"]), st.integers(1, 3 * WINDOW)), max_size=60
)


@settings(max_examples=200, deadline=None)
@given(notes=notes)
def test_the_tables_follow_the_rule(notes: list[tuple[bytes, int]]) -> None:
    model = Model()
    tables = [WriterTable()] + ([_c_table()] if available() else [])
    for at, (sender, seq) in enumerate(notes):
        model.note(sender, seq)
        for table in tables:
            table.note(sender, seq, "h", "s", NOW + at)
    for table in tables:
        assert {e[0]: e[4] for e in table.entries()} == model.lost
        assert table.lost == sum(model.lost.values())
        assert table.frames == len(notes)


@pytest.mark.skipif(not available(), reason="the C engine is not built")
@settings(max_examples=200, deadline=None)
@given(
    notes=st.lists(
        st.tuples(st.integers(0, 9), st.integers(0, 2**64 - 1) | st.integers(0, 40)),
        max_size=80,
    ),
    capacity=st.integers(1, 6),
)
def test_c_and_python_tables_agree(notes: list[tuple[int, int]], capacity: int) -> None:
    python, c = WriterTable(capacity), _c_table(capacity)
    for at, (n, seq) in enumerate(notes):
        sender = bytes([n]) * (8 if n else 7)  # sender 0: malformed
        for table in (python, c):
            table.note(sender, seq, f"h{n}", "s", NOW + at // 4)  # ties in time too
    assert sorted(python.entries()) == sorted(c.entries())
    for name in ("frames", "lost", "forgotten", "malformed", "capacity"):
        assert getattr(python, name) == getattr(c, name)
    assert len(python) == len(c)
    for top in (0, 1, 3, 100):  # the same writers in the same order, ties included
        assert python.most_lost(top) == c.most_lost(top)


# --- the engines over real UDP --------------------------------------------------------


def numbered(seq: int, *msgs: Msg, sender: bytes = A) -> bytes:
    cmd = Cmd(sender=sender, seq=seq)
    if msgs:
        cmd.msg.CopyFrom(msgs[0])
        cmd.batch.extend(msgs[1:])
    return WRITER.sign(cmd.SerializeToString(), NOW - seq % S)


def origin(txt: str, host: str = "web-1") -> Msg:
    return Msg(env="prod", svc="api", txt=txt, host=host, pid=4242)


@pytest.fixture(params=IMPLS)
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    side = Rig(request.param, key_ring(READ, WRITE))
    yield side
    side.close()


def test_both_engines_count_numbered_frames(rig: Rig) -> None:
    frames = [numbered(s, origin(f"e{s}")) for s in (1, 2, 5, 4, 9)]
    frames.append(numbered(1, origin("other writer"), sender=B))
    frames.append(WRITER.sign(Cmd(msg=origin("unnumbered")).SerializeToString(), NOW))
    frames.append(numbered(3, origin("short sender"), sender=b"1234"))
    rig.feed(frames)
    writers = rig.ingest.writers
    assert sorted(e[:5] for e in writers.entries()) == [
        (A, "web-1", "api", 5, 4),  # 3, 6, 7, 8 lost
        (B, "web-1", "api", 1, 0),
    ]
    assert (writers.frames, writers.lost, writers.malformed) == (6, 4, 1)
    assert rig.ingest.stats.events == 8  # every event stored, the malformed one's too


def test_only_authenticated_fresh_frames_count(rig: Rig) -> None:
    rig.feed([numbered(1, origin("a"))])
    good = numbered(10, origin("b"))
    forged = Signer(b"not-the-write-secret").sign(Cmd(sender=A, seq=5).SerializeToString(), NOW)
    rig.feed([good, good, forged])  # a replay and a stranger's frame
    stale = WRITER.sign(Cmd(sender=A, seq=7).SerializeToString(), NOW - 10 * S)
    rig.feed([stale])
    assert rig.ingest.writers.lost == 8  # 2..9 from the good frame, nothing else
    assert rig.ingest.writers.frames == 2


@pytest.mark.skipif(not available(), reason="the C engine is not built")
@settings(max_examples=60, deadline=None)
@given(
    frames=st.lists(
        st.tuples(
            st.sampled_from([A, B, b"", b"123"]),
            st.integers(0, 40),
            st.lists(st.sampled_from(["", "web-1", "wörk"]), max_size=3),
            st.sampled_from([0, 0, 9]),  # 9: a level out of range, left to Python
        ),
        max_size=25,
    )
)
def test_c_and_python_engines_keep_the_same_table(
    frames: list[tuple[bytes, int, list[str], int]],
) -> None:
    """Frames the C reader leaves to Python are noted in the same table (after the
    drain's C frames: with both kinds in one drain only the order of noting differs)."""
    datagrams = []
    for at, (sender, seq, hosts, lvl) in enumerate(frames):
        cmd = Cmd(sender=sender, seq=seq, batch=[Msg(host=h, lvl=lvl, txt="x") for h in hosts])
        datagrams.append(WRITER.sign(cmd.SerializeToString(), NOW - at))
    python, c = (Rig(impl, key_ring(READ, WRITE)) for impl in ("python", "c"))
    try:
        for datagram in datagrams:  # one a drain: the order of noting is arrival order
            for side in (python, c):
                side.feed([datagram])
        assert sorted(c.ingest.writers.entries()) == sorted(python.ingest.writers.entries())
        for name in ("frames", "lost", "forgotten", "malformed"):
            assert getattr(c.ingest.writers, name) == getattr(python.ingest.writers, name)
        assert c.counts() == python.counts()
        assert c.stored() == python.stored()
    finally:
        python.close()
        c.close()


@pytest.mark.skipif(not available(), reason="the C engine is not built")
def test_frames_with_sender_seq_host_and_pid_stay_on_the_c_path() -> None:
    from logd.server.ingest import fastpath
    from logd.server.keys import Role

    ext = fastpath.extension()
    guard, writers = ext.ReplayTable(max_age_ns=S, capacity=100), ext.WriterTable()
    engine = ext.Engine(guard, max_frame=65_507, max_age_ns=S, max_future_ns=S // 4,
                        writers=writers)  # fmt: skip
    engine.set_keys([(k.signer.key_id, *k.signer.pad_blocks(), k.role is Role.WRITE)
                     for k in key_ring(READ, WRITE).keys])  # fmt: skip
    rx, tx = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    try:
        rx.bind(("127.0.0.1", 0))
        sent = [numbered(1, origin("a")), numbered(3, origin("b"), origin("c", host="web-2"))]
        sent.append(numbered(4))  # an empty WRITE, numbered
        for frame in sent:
            tx.sendto(frame, rx.getsockname())
        items, err = engine.drain(rx.fileno(), NOW, 10, 100)
    finally:
        rx.close()
        tx.close()
    assert err == 0
    assert [i[0] for i in items] == [ext.ITEM_RUN]  # nothing left to Python
    stored = [Msg.FromString(items[0][3][a:b]) for a, b in _spans(items[0][4])]
    assert [(m.host, m.pid) for m in stored] == [("web-1", 4242), ("web-1", 4242), ("web-2", 4242)]
    assert list(writers.entries()) == [(A, "web-1", "api", 3, 1, NOW)]


def _spans(ends: bytes) -> list[tuple[int, int]]:
    from array import array

    offsets = array("I", ends).tolist()
    return list(zip([0, *offsets], offsets, strict=False))


def test_a_host_past_max_name_is_refused_as_a_long_name(rig: Rig) -> None:
    frame = numbered(1, origin("x", host="h" * 129))
    assert rig.check(frame) == "long_name"
    assert (rig.ingest.writers.frames, rig.texts()) == (0, [])
    assert rig.check(numbered(2, origin("y", host="h" * 128))) == "accepted"
