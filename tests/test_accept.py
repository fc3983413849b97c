"""The acceptance pipeline, fed frames directly with a fixed clock (PROTOCOL.md order)."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from logd._pb.logd_pb2 import INFO, PING, PONG, WRITE, Cmd, Msg
from logd.accept import Accepted, FrameChecker, Reject
from logd.keys import KeyHolder, KeyRing, Role, Stage
from logd.replay import ReplayGuard
from logd.wire import Signer

S = 1_000_000_000
NOW = 1_800_000_000 * S
READ, WRITE_SECRET = b"read-secret-0123456789", b"write-secret-0123456789"
PAYLOAD = Cmd(name=WRITE, msg=Msg(env="prod", svc="api", lvl=INFO, txt="hi")).SerializeToString()


@pytest.fixture
def checker() -> FrameChecker:
    ring = KeyRing.from_secrets(
        {(Role.READ, Stage.CURRENT): READ, (Role.WRITE, Stage.CURRENT): WRITE_SECRET}
    )
    return FrameChecker(
        keys=KeyHolder(ring),
        guard=ReplayGuard(max_age_ns=S, capacity=1000),
        max_frame=2048,
        max_age_ns=S,
        max_future_ns=S // 4,
    )


def sign(payload: bytes = PAYLOAD, secret: bytes = WRITE_SECRET, at: int = NOW) -> bytes:
    return Signer(secret).sign(payload, at)


def test_valid_write_is_accepted(checker: FrameChecker) -> None:
    verdict = checker.check(sign(), NOW)
    assert isinstance(verdict, Accepted)
    assert verdict.key.role is Role.WRITE
    assert verdict.cmd.msg.txt == "hi"


@pytest.mark.parametrize(
    "frame",
    [b"", b"\x01" * 28, b"\x02" + sign()[1:], b"\x00" + sign()[1:], sign(b"x" * 2100)],
    ids=["empty", "short", "version2", "version0", "oversize"],
)
def test_guard_against_malformed_frames(checker: FrameChecker, frame: bytes) -> None:
    assert checker.check(frame, NOW) is Reject.BAD_FRAME


def test_guard_against_unknown_key(checker: FrameChecker) -> None:
    assert checker.check(sign(secret=b"someone-else"), NOW) is Reject.UNKNOWN_KEY


def test_guard_against_tampered_payload(checker: FrameChecker) -> None:
    frame = bytearray(sign())
    frame[-1] ^= 1
    assert checker.check(bytes(frame), NOW) is Reject.BAD_MAC


def test_guard_against_length_extension(checker: FrameChecker) -> None:
    """The original signed sha256(secret||time||payload); appending protobuf fields to a seen
    frame and computing a sum over it (what length extension enables there) fails here."""
    frame = sign()
    extra = Msg(env="prod", svc="api", txt="forged").SerializeToString()
    appended = b"\x22" + bytes([len(extra)]) + extra  # one more `batch` entry
    forged_mac = hashlib.sha256(frame[13:29] + frame[:13] + PAYLOAD + appended).digest()[:16]
    assert checker.check(frame[:13] + forged_mac + PAYLOAD + appended, NOW) is Reject.BAD_MAC
    assert checker.check(frame + appended, NOW) is Reject.BAD_MAC


@pytest.mark.parametrize("secret", [WRITE_SECRET[:-1], WRITE_SECRET[:1]])
def test_guard_against_truncated_key(checker: FrameChecker, secret: bytes) -> None:
    """Re-signed with a truncated key but claiming the real key's id."""
    real = sign()
    fake = Signer(secret).mac(real[:13], real[29:])
    assert checker.check(real[:13] + fake + real[29:], NOW) is Reject.BAD_MAC


def test_guard_against_empty_key(checker: FrameChecker) -> None:
    real = sign()
    fake = hmac.new(b"", real[:13] + real[29:], hashlib.sha256).digest()[:16]
    assert checker.check(real[:13] + fake + real[29:], NOW) is Reject.BAD_MAC


def test_guard_against_read_key_writing(checker: FrameChecker) -> None:
    assert checker.check(sign(secret=READ), NOW) is Reject.FORBIDDEN


def test_ping_is_allowed_for_both_roles(checker: FrameChecker) -> None:
    ping = Cmd(name=PING).SerializeToString()
    for n, secret in enumerate((READ, WRITE_SECRET)):
        verdict = checker.check(sign(ping, secret, NOW - n), NOW)
        assert isinstance(verdict, Accepted)


def test_guard_against_pong_sent_to_the_server(checker: FrameChecker) -> None:
    assert checker.check(sign(Cmd(name=PONG).SerializeToString()), NOW) is Reject.FORBIDDEN


def test_guard_against_unknown_command(checker: FrameChecker) -> None:
    assert checker.check(sign(b"\x08\x63"), NOW) is Reject.FORBIDDEN


def test_guard_against_stale_and_future_frames(checker: FrameChecker) -> None:
    assert checker.check(sign(at=NOW - S - 1), NOW) is Reject.STALE
    assert checker.check(sign(at=NOW + S // 4 + 1), NOW) is Reject.FUTURE
    assert isinstance(checker.check(sign(at=NOW - S), NOW), Accepted)
    assert isinstance(checker.check(sign(at=NOW + S // 4), NOW), Accepted)


def test_guard_against_replay_within_the_window(checker: FrameChecker) -> None:
    frame = sign()
    assert isinstance(checker.check(frame, NOW), Accepted)
    assert checker.check(frame, NOW) is Reject.REPLAY
    assert checker.check(frame, NOW + S // 2) is Reject.REPLAY


def test_guard_against_replay_after_the_window(checker: FrameChecker) -> None:
    frame = sign()
    assert isinstance(checker.check(frame, NOW), Accepted)
    assert checker.check(frame, NOW + S + 1) is Reject.STALE


def test_guard_against_bad_payload_after_authentication(checker: FrameChecker) -> None:
    assert checker.check(sign(b"\xff\xff\xff"), NOW) is Reject.BAD_PAYLOAD
    bad_utf8 = b"\x12\x03\x3a\x01\xff"  # Msg.txt = b"\xff"
    assert checker.check(sign(bad_utf8), NOW) is Reject.BAD_PAYLOAD


def test_empty_payload_is_an_empty_write(checker: FrameChecker) -> None:
    verdict = checker.check(sign(b""), NOW)
    assert isinstance(verdict, Accepted)
    assert verdict.cmd.name == WRITE
    assert not verdict.cmd.HasField("msg")


def test_reject_order_is_protocol_order(checker: FrameChecker) -> None:
    """A stale frame with a bad MAC is a bad MAC: the MAC is checked first."""
    frame = bytearray(sign(at=NOW - 10 * S))
    frame[20] ^= 1
    assert checker.check(bytes(frame), NOW) is Reject.BAD_MAC
    wrong_version = b"\x07" + struct.pack(">4sq", b"zzzz", NOW) + bytes(16)
    assert checker.check(wrong_version, NOW) is Reject.BAD_FRAME


def test_exactly_eight_reasons() -> None:
    assert [r.value for r in Reject] == [
        "bad_frame", "unknown_key", "bad_mac", "stale", "future", "replay", "bad_payload",
        "forbidden",
    ]  # fmt: skip
