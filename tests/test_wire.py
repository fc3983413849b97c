"""The wire format, pinned to PROTOCOL.md's test vector."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from logd._pb.logd_pb2 import INFO, PING, PONG, WRITE, Cmd, Msg
from logd.wire import (
    HEADER_LEN,
    PING_PAYLOAD,
    PONG_PAYLOAD,
    Signer,
    frame_key_id,
    frame_mac,
    frame_payload,
    key_id,
    signed_at,
)

VECTOR_SECRET = b"test-secret"
VECTOR_SIGNED_AT = 1_700_000_000_000_000_000
VECTOR_PAYLOAD = bytes.fromhex("12141a0470726f64220361706930033a0568656c6c6f")
VECTOR_KEY_ID = bytes.fromhex("434b5c97")
VECTOR_FRAME = bytes.fromhex(
    "01434b5c9717979cfe362a0000cd64e3d6bcb5154dbfeae4cffe0d4f22"
    "12141a0470726f64220361706930033a0568656c6c6f"
)


def test_vector_payload_is_the_official_serialisation() -> None:
    cmd = Cmd(name=WRITE, msg=Msg(env="prod", svc="api", lvl=INFO, txt="hello"))
    assert cmd.SerializeToString() == VECTOR_PAYLOAD


def test_vector_key_id() -> None:
    assert key_id(VECTOR_SECRET) == VECTOR_KEY_ID


def test_vector_frame_bytes() -> None:
    assert Signer(VECTOR_SECRET).sign(VECTOR_PAYLOAD, VECTOR_SIGNED_AT) == VECTOR_FRAME


def test_vector_mac_is_plain_hmac_sha256_truncated() -> None:
    expected = hmac.new(VECTOR_SECRET, VECTOR_FRAME[:13] + VECTOR_PAYLOAD, hashlib.sha256).digest()[
        :16
    ]
    assert frame_mac(VECTOR_FRAME) == expected


def test_frame_fields_read_back() -> None:
    assert frame_key_id(VECTOR_FRAME) == VECTOR_KEY_ID
    assert signed_at(VECTOR_FRAME) == VECTOR_SIGNED_AT
    assert frame_payload(VECTOR_FRAME) == VECTOR_PAYLOAD
    assert len(VECTOR_FRAME) == HEADER_LEN + len(VECTOR_PAYLOAD)


def test_negative_signed_at_round_trips() -> None:
    frame = Signer(VECTOR_SECRET).sign(b"", -5)
    assert signed_at(frame) == -5


def test_verify_accepts_own_frames_and_rejects_changes() -> None:
    signer = Signer(VECTOR_SECRET)
    assert signer.verify(VECTOR_FRAME)
    for i in range(len(VECTOR_FRAME)):
        if 1 <= i < 5:
            continue  # key_id is not under the MAC's protection alone: a lookup rejects it
        flipped = bytearray(VECTOR_FRAME)
        flipped[i] ^= 0x01
        assert not signer.verify(bytes(flipped)), f"bit flip at byte {i} verified"


def test_other_secret_does_not_verify() -> None:
    assert not Signer(b"test-secret2").verify(VECTOR_FRAME)


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        Signer(b"")


def test_signer_repr_shows_no_secret() -> None:
    assert "test-secret" not in repr(Signer(VECTOR_SECRET))


@pytest.mark.parametrize(("payload", "name"), [(PING_PAYLOAD, PING), (PONG_PAYLOAD, PONG)])
def test_fixed_ping_pong_payloads_match_protobuf(payload: bytes, name: int) -> None:
    assert Cmd(name=name).SerializeToString() == payload  # type: ignore[arg-type]


@pytest.mark.parametrize("length", [1, 31, 32, 63, 64, 65, 200])
def test_mac_equals_the_standard_hmac_for_any_key_length(length: int) -> None:
    secret = bytes(range(256))[:length]
    signed, payload = b"\x01abcd" + bytes(8), b"payload bytes"
    expected = hmac.new(secret, signed + payload, hashlib.sha256).digest()[:16]
    assert Signer(secret).mac(signed, payload) == expected
