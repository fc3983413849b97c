from __future__ import annotations

import pytest
from logd.errors import SecretsError
from logd.server.keys import KeyRing, Role, Stage
from logd.wire import key_id

READ, WRITE = "r" * 40, "w" * 40


def ring(**extra: str) -> KeyRing:
    secrets: dict[tuple[Role, Stage], str] = {
        (Role.READ, Stage.CURRENT): READ,
        (Role.WRITE, Stage.CURRENT): WRITE,
    }
    for name, value in extra.items():
        role, stage = name.split("_")
        secrets[Role(role), Stage("AWS" + stage.upper())] = value
    return KeyRing.from_secrets(secrets)


def test_lookup_by_key_id_finds_the_key_and_its_role() -> None:
    keys = ring(write_previous="old-write-secret")
    (found,) = keys.lookup(key_id(b"old-write-secret"))
    assert (found.role, found.stage) == (Role.WRITE, Stage.PREVIOUS)
    assert keys.lookup(b"\x00\x00\x00\x00") == ()


def test_check_token_accepts_every_read_key_and_no_write_key() -> None:
    keys = ring(read_pending="new-read-secret")
    assert keys.check_token(READ) is not None
    assert keys.check_token("new-read-secret") is not None
    assert keys.check_token(WRITE) is None
    assert keys.check_token("") is None
    assert keys.check_token(READ + "x") is None


def test_same_read_and_write_secret_is_refused() -> None:
    with pytest.raises(SecretsError, match="same"):
        KeyRing.from_secrets({(Role.READ, Stage.CURRENT): "s", (Role.WRITE, Stage.CURRENT): "s"})


def test_empty_secret_is_refused_without_showing_values() -> None:
    with pytest.raises(SecretsError, match="empty") as err:
        ring(read_pending="")
    assert READ not in str(err.value)


def test_a_role_without_a_current_key_is_refused() -> None:
    with pytest.raises(SecretsError, match="no current write secret"):
        KeyRing.from_secrets({(Role.READ, Stage.CURRENT): READ})


def test_describe_and_repr_hold_no_key_material() -> None:
    keys = ring(write_previous="old-write-secret")
    shown = repr(keys.describe()) + repr(keys.keys)
    for secret in (READ, WRITE, "old-write-secret"):
        assert secret not in shown
    assert {
        "role": "write",
        "stage": "AWSPREVIOUS",
        "key_id": key_id(b"old-write-secret").hex(),
    } in (keys.describe())


def test_colliding_key_ids_are_all_returned() -> None:
    a = KeyRing.from_secrets({(Role.READ, Stage.CURRENT): READ, (Role.WRITE, Stage.CURRENT): WRITE})
    b = KeyRing([*a.keys, a.keys[0]])  # the same id twice, as a 4-byte collision would give
    assert len(b.lookup(a.keys[0].signer.key_id)) == 2
