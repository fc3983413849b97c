"""The accept checks, in PROTOCOL.md's order, on both engines: each frame goes over a real
UDP socket into a real ingest with a fixed clock, and its outcome is what ingest counted."""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterator

import pytest
from ingest_support import ACCEPTED, NOW, Rig, S, key_ring
from logd._pb.logd_pb2 import INFO, PING, PONG, WRITE, Cmd, Msg
from logd.server.filters import Filter
from logd.server.ingest.accept import MAX_NAME, Reject
from logd.server.ingest.engine import Impl, restart_floor
from logd.wire import Signer

READ, WRITE_SECRET = b"read-secret-0123456789", b"write-secret-0123456789"
PAYLOAD = Cmd(name=WRITE, msg=Msg(env="prod", svc="api", lvl=INFO, txt="hi")).SerializeToString()


class Checker:
    """`check(frame, now)` as accept.py's FrameChecker has it, through a real ingest."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig

    def check(self, frame: bytes, now: int) -> Reject | str:
        return self.rig.check(frame, now)


@pytest.fixture
def checker(impl: Impl) -> Iterator[Checker]:
    rig = Rig(impl, key_ring(READ, WRITE_SECRET), max_frame=2048, capacity=1000)
    yield Checker(rig)
    rig.close()


def sign(payload: bytes = PAYLOAD, secret: bytes = WRITE_SECRET, at: int = NOW) -> bytes:
    return Signer(secret).sign(payload, at)


def test_valid_write_is_accepted(checker: Checker) -> None:
    assert checker.check(sign(), NOW) == ACCEPTED
    assert checker.rig.texts() == ["hi"]
    assert checker.rig.counts()["keys"] == {Signer(WRITE_SECRET).key_id: 1}


@pytest.mark.parametrize(
    "frame",
    [b"", b"\x01" * 28, b"\x02" + sign()[1:], b"\x00" + sign()[1:], sign(b"x" * 2100)],
    ids=["empty", "short", "version2", "version0", "oversize"],
)
def test_guard_against_malformed_frames(checker: Checker, frame: bytes) -> None:
    assert checker.check(frame, NOW) is Reject.BAD_FRAME


def test_guard_against_unknown_key(checker: Checker) -> None:
    assert checker.check(sign(secret=b"someone-else"), NOW) is Reject.UNKNOWN_KEY


def test_guard_against_tampered_payload(checker: Checker) -> None:
    frame = bytearray(sign())
    frame[-1] ^= 1
    assert checker.check(bytes(frame), NOW) is Reject.BAD_MAC


def test_guard_against_length_extension(checker: Checker) -> None:
    """The original signed sha256(secret||time||payload); appending protobuf fields to a seen
    frame and computing a sum over it (what length extension enables there) fails here."""
    frame = sign()
    extra = Msg(env="prod", svc="api", txt="forged").SerializeToString()
    appended = b"\x22" + bytes([len(extra)]) + extra  # one more `batch` entry
    forged_mac = hashlib.sha256(frame[13:29] + frame[:13] + PAYLOAD + appended).digest()[:16]
    assert checker.check(frame[:13] + forged_mac + PAYLOAD + appended, NOW) is Reject.BAD_MAC
    assert checker.check(frame + appended, NOW) is Reject.BAD_MAC


@pytest.mark.parametrize("secret", [WRITE_SECRET[:-1], WRITE_SECRET[:1]])
def test_guard_against_truncated_key(checker: Checker, secret: bytes) -> None:
    """Re-signed with a truncated key but claiming the real key's id."""
    real = sign()
    fake = Signer(secret).mac(real[:13], real[29:])
    assert checker.check(real[:13] + fake + real[29:], NOW) is Reject.BAD_MAC


def test_guard_against_empty_key(checker: Checker) -> None:
    real = sign()
    fake = hmac.new(b"", real[:13] + real[29:], hashlib.sha256).digest()[:16]
    assert checker.check(real[:13] + fake + real[29:], NOW) is Reject.BAD_MAC


def test_guard_against_read_key_writing(checker: Checker) -> None:
    assert checker.check(sign(secret=READ), NOW) is Reject.FORBIDDEN


def test_ping_is_allowed_for_both_roles(checker: Checker) -> None:
    ping = Cmd(name=PING).SerializeToString()
    for n, secret in enumerate((READ, WRITE_SECRET)):
        assert checker.check(sign(ping, secret, NOW - n), NOW) == ACCEPTED
    assert checker.rig.counts()["pongs"] == 2
    assert checker.rig.texts() == []


def test_guard_against_pong_sent_to_the_server(checker: Checker) -> None:
    assert checker.check(sign(Cmd(name=PONG).SerializeToString()), NOW) is Reject.FORBIDDEN


def test_guard_against_unknown_command(checker: Checker) -> None:
    assert checker.check(sign(b"\x08\x63"), NOW) is Reject.FORBIDDEN


def test_guard_against_stale_and_future_frames(checker: Checker) -> None:
    assert checker.check(sign(at=NOW - S - 1), NOW) is Reject.STALE
    assert checker.check(sign(at=NOW + S // 4 + 1), NOW) is Reject.FUTURE
    assert checker.check(sign(at=NOW - S), NOW) == ACCEPTED
    assert checker.check(sign(at=NOW + S // 4), NOW) == ACCEPTED


def test_guard_against_replay_within_the_window(checker: Checker) -> None:
    frame = sign()
    assert checker.check(frame, NOW) == ACCEPTED
    assert checker.check(frame, NOW) is Reject.REPLAY
    assert checker.check(frame, NOW + S // 2) is Reject.REPLAY


def test_guard_against_replay_after_the_window(checker: Checker) -> None:
    frame = sign()
    assert checker.check(frame, NOW) == ACCEPTED
    assert checker.check(frame, NOW + S + 1) is Reject.STALE


def test_guard_against_replay_guard_flood_counts_overload_not_replay(impl: Impl) -> None:
    """A full guard refuses fresh frames (fail closed) under `overload`; a replay of a
    remembered MAC stays a replay."""
    rig = Rig(impl, key_ring(READ, WRITE_SECRET), max_frame=2048, capacity=1)
    try:
        first = sign()
        assert rig.check(first, NOW) == ACCEPTED
        assert rig.check(sign(at=NOW + 1), NOW) is Reject.OVERLOAD
        assert rig.check(sign(at=NOW + 2), NOW) is Reject.OVERLOAD
        assert rig.check(first, NOW) is Reject.REPLAY
        assert rig.ingest.stats.rejected[Reject.OVERLOAD] == 2
        assert rig.ingest.stats.rejected[Reject.REPLAY] == 1
        assert rig.guard.overflows == 2
    finally:
        rig.close()


def _varint(v: int) -> bytes:
    out = b""
    while v >= 0x80:
        out += bytes([v & 0x7F | 0x80])
        v >>= 7
    return out + bytes([v])


def test_out_of_range_levels_are_stored_and_filtered_as_no_level(
    checker: Checker,
) -> None:
    """A level outside the enum is stored as no level (0), so every store, tail and filter
    treats it alike, on both engines: 7 and 200 fit the ring's level byte, 300 and -1 do
    not; a 64-bit varint is the int32 protobuf reads (2**32 + 3 is 3, a real level)."""
    odd = {"seven": 7, "two hundred": 200, "three hundred": 300, "minus one": -1}
    for i, (txt, lvl) in enumerate(odd.items()):
        write = Cmd(name=WRITE, msg=Msg(env="p", svc="a", lvl=lvl, txt=txt))
        assert checker.check(sign(write.SerializeToString(), at=NOW + i), NOW) == ACCEPTED
    wide = b"\x12" + bytes([2 + len(_varint(2**32 + 3)) + 5])  # Cmd.msg, length-delimited
    wide += b"\x30" + _varint(2**32 + 3) + b"\x3a\x04wide"  # Msg.lvl, Msg.txt
    assert checker.check(sign(wide, at=NOW + 9), NOW) == ACCEPTED
    stored = {msg.txt: msg.lvl for _, events in checker.rig.stored() for _, msg in events}
    assert stored == {**dict.fromkeys(odd, 0), "wide": 3}
    leveled = [
        Msg.FromString(data).txt
        for ring in checker.rig.store._all_rings()
        for _, data, _, _ in ring.scan(Filter(lvl=1))
    ]
    assert leveled == ["wide"]


@pytest.mark.parametrize("max_age_s", [1, 30, 300])
def test_guard_against_replay_across_a_restart(impl: Impl, max_age_s: int) -> None:
    """A restarted process has forgotten the MACs it accepted, so it refuses as stale every
    frame it could have accepted before its start: signed before start + max_future."""
    started = NOW - S // 10  # the process started 100 ms ago
    floor = restart_floor(started_ns=started, max_future_ns=S // 4)
    rig = Rig(impl, key_ring(READ, WRITE_SECRET), max_age_ns=max_age_s * S, not_before_ns=floor)
    try:
        for before in (started - max_age_s * S // 2, started - 1, started + S // 4 - 1):
            assert rig.check(sign(at=before), NOW) is Reject.STALE
        assert rig.check(sign(at=started + S // 4), NOW) == ACCEPTED
        later = floor + max_age_s * S  # the window has passed: the age check alone remains
        assert rig.check(sign(at=later - max_age_s * S + 1), later) == ACCEPTED
        assert rig.check(sign(at=later - max_age_s * S - 1), later) is Reject.STALE
    finally:
        rig.close()


def test_guard_against_bad_payload_after_authentication(checker: Checker) -> None:
    assert checker.check(sign(b"\xff\xff\xff"), NOW) is Reject.BAD_PAYLOAD
    bad_utf8 = b"\x12\x03\x3a\x01\xff"  # Msg.txt = b"\xff"
    assert checker.check(sign(bad_utf8), NOW) is Reject.BAD_PAYLOAD


def test_empty_payload_is_an_empty_write(checker: Checker) -> None:
    assert checker.check(sign(b""), NOW) == ACCEPTED
    assert checker.rig.counts()["events"] == 0
    assert checker.rig.counts()["pongs"] == 0


def test_reject_order_is_protocol_order(checker: Checker) -> None:
    """A stale frame with a bad MAC is a bad MAC: the MAC is checked first."""
    frame = bytearray(sign(at=NOW - 10 * S))
    frame[20] ^= 1
    assert checker.check(bytes(frame), NOW) is Reject.BAD_MAC
    wrong_version = b"\x07" + struct.pack(">4sq", b"zzzz", NOW) + bytes(16)
    assert checker.check(wrong_version, NOW) is Reject.BAD_FRAME


def test_exactly_ten_reasons() -> None:
    assert [r.value for r in Reject] == [
        "bad_frame", "unknown_key", "bad_mac", "stale", "future", "replay", "overload",
        "bad_payload", "forbidden", "long_name",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "field",
    ["env", "svc", "fn", "attr", "batch_env", "multibyte_svc"],
)
def test_guard_against_names_past_their_cap(checker: Checker, field: str) -> None:
    """env, svc, fn and attribute keys become ring keys, labels and groups: past MAX_NAME
    bytes the frame is refused (both engines) and counted; at the cap it is stored."""
    long, at_cap = "n" * (MAX_NAME + 1), "n" * MAX_NAME

    def write(name: str) -> bytes:
        msg = Msg(env="prod", svc="api", txt="x")
        if field in ("env", "svc", "fn"):
            setattr(msg, field, name)
        elif field == "attr":
            msg.attrs[name] = "v"
        elif field == "multibyte_svc":  # 44 characters, 132 bytes
            msg.svc = "\u20ac" * (len(name) // 3 + (len(name) > MAX_NAME))
        cmd = Cmd(name=WRITE, msg=Msg(env="prod", svc="api", txt="first"))
        if field == "batch_env":
            cmd.batch.add(env=name, svc="api", txt="x")
        else:
            cmd.batch.append(msg)
        return sign(cmd.SerializeToString(), at=NOW - len(name))

    assert checker.check(write(long), NOW) is Reject.LONG_NAME
    assert checker.rig.texts() == []  # nothing of the frame is stored
    assert checker.check(write(at_cap), NOW) == ACCEPTED
    assert checker.rig.counts()["rejected"][Reject.LONG_NAME] == 1
