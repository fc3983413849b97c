"""Services interleaved in one drain (issue 14): the C engine gathers one run per ring per
drain, and each ring still holds its events in arrival order, on both engines and beside
the overflow ring (services past --max-rings), which two services share."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingest_support import NOW, Rig, S, key_ring
from logd._pb.logd_pb2 import PING, Cmd, Msg
from logd.server.ingest.engine import available
from logd.server.keys import Role
from logd.wire import Signer

READ, WRITE = b"il-read-secret-0000000", b"il-write-secret-000000"
WRITER, READER = Signer(WRITE), Signer(READ)


def frames(events: list[tuple[str, str]], per_frame: int) -> list[bytes]:
    """(svc, txt) events, `per_frame` to a frame (1: a plain msg), signed in order."""
    out = []
    for at in range(0, len(events), per_frame):
        chunk = [Msg(env="prod", svc=svc, txt=txt) for svc, txt in events[at : at + per_frame]]
        cmd = Cmd(msg=chunk[0]) if per_frame == 1 else Cmd(batch=chunk)
        out.append(WRITER.sign(cmd.SerializeToString(), NOW - len(out)))
    return out


def interleaved(services: int, each: int) -> list[tuple[str, str]]:
    return [(f"svc-{i % services}", f"{i % services}.{i // services}")
            for i in range(services * each)]  # fmt: skip


def texts_by_ring(rig: Rig) -> dict[str, list[str]]:
    """Each ring's texts, oldest first."""
    return {key: [m.txt for _, m in events][::-1] for key, events in rig.stored()}


@pytest.mark.parametrize("per_frame", [1, 16])
def test_interleaved_services_land_in_their_rings_in_order(impl: str, per_frame: int) -> None:
    rig = Rig(impl, key_ring(READ, WRITE))
    try:
        rig.feed(frames(interleaved(8, 64), per_frame))
        rings = texts_by_ring(rig)
        assert len(rings) == 8
        for key, texts in rings.items():
            n = texts[0].split(".")[0]
            assert key.endswith(f"svc-{n}")
            assert texts == [f"{n}.{j}" for j in range(64)]
        assert rig.ingest.stats.events == 8 * 64
    finally:
        rig.close()


needs_c = pytest.mark.skipif(not available(), reason="the C engine is not built")


@needs_c
@settings(max_examples=150, deadline=None)
@given(
    svcs=st.lists(st.integers(0, 5), min_size=1, max_size=80),
    per_frame=st.sampled_from([1, 3, 16]),
    max_rings=st.integers(1, 7),
    known=st.integers(0, 5),
    pings=st.lists(st.integers(0, 40), max_size=3),
)
def test_c_and_python_agree_when_services_interleave_past_max_rings(
    svcs: list[int], per_frame: int, max_rings: int, known: int, pings: list[int]
) -> None:
    """The overflow ring holds services past --max-rings in arrival order on both
    engines, with rings made before (`known`) and PINGs (left to Python) in between."""
    python, c = (Rig(impl, key_ring(READ, WRITE), max_rings=max_rings) for impl in ("python", "c"))
    try:
        _agree(python, c, svcs, per_frame, known, pings)
    finally:
        python.close()
        c.close()


def _agree(python: Rig, c: Rig, svcs: list[int], per_frame: int, known: int,
           pings: list[int]) -> None:  # fmt: skip
    first = frames([(f"svc-{k}", "first") for k in range(known)], 1)
    events = [(f"svc-{k}", f"{k}.{i}") for i, k in enumerate(svcs)]
    batch = frames(events, per_frame)
    for at in sorted(pings, reverse=True):
        batch.insert(min(at, len(batch)), READER.sign(Cmd(name=PING).SerializeToString(), NOW))
    for rig in (python, c):
        rig.feed(first)
        rig.feed(batch)
    assert c.counts() == python.counts()
    assert c.stored() == python.stored()


@needs_c
def test_one_run_per_ring_per_drain() -> None:
    """The cost of interleaving: 8 services, 1 event a frame, come back as 8 runs while
    the store has room for them all, or it knows them; as one run per event otherwise."""
    from logd.server.ingest import _fastpath

    ring = key_ring(READ, WRITE)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    rx.bind(("127.0.0.1", 0))
    try:
        events = interleaved(8, 8)

        def drain(*extra: object) -> list[tuple[object, ...]]:
            guard = _fastpath.ReplayTable(max_age_ns=S, capacity=1000)
            engine = _fastpath.Engine(guard, max_frame=65_507, max_age_ns=S,
                                      max_future_ns=S // 4, not_before_ns=-(2**63))  # fmt: skip
            engine.set_keys([(k.signer.key_id, *k.signer.pad_blocks(), k.role is Role.WRITE)
                             for k in ring.keys])  # fmt: skip
            for frame in frames(events, 1):
                tx.sendto(frame, rx.getsockname())
            items, err = engine.drain(rx.fileno(), NOW, 1000, 10_000, *extra)
            assert err == 0
            return items  # type: ignore[no-any-return]

        grouped = drain(8)
        assert [(i[2], len(i[4]) // 4) for i in grouped] == [(f"svc-{k}", 8) for k in range(8)]
        known = {("prod", f"svc-{k}"): None for k in range(8)}
        assert len(drain(0, known)) == 8  # no room, but every ring exists
        assert len(drain(7)) == 7 + 8 * 8 - 7  # room for 7: gathered, then arrival order
        assert [i[2] for i in drain()] == [svc for svc, _ in events]  # the default
    finally:
        rx.close()
        tx.close()
