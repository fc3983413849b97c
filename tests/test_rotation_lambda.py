"""The rotation Lambda against moto (in-process), step by step, and its PING against a
real logd process. RotateSecret starts each rotation (moto's Lambda runs no code: its
config has use_docker off), then the tests call the handler for each step."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st
from logd.wire import PING_PAYLOAD, PONG_PAYLOAD, Signer
from moto import mock_aws
from moto_support import (
    free_port,
    load_rotation_handler,
    rotation_function,
    stages,
    start_rotation,
    value_at,
)
from support import start_logd

NAME = "logd/write"
FIRST = "first-write-secret-0123456789abcdefghijklmnopq"


@pytest.fixture(scope="module")
def rotation() -> ModuleType:
    return load_rotation_handler()


@pytest.fixture(scope="module")
def function() -> Iterator[str]:
    """moto for the whole module (each test has its own secret) and the Lambda function
    RotateSecret names."""
    with mock_aws(config={"lambda": {"use_docker": False}}):
        yield rotation_function()


class Secret:
    """One secret in moto and the handler, driven step by step."""

    def __init__(self, rotation: ModuleType, function: str) -> None:
        self.rotation = rotation
        self.client = boto3.client("secretsmanager", region_name="us-east-1")
        name = f"{NAME}-{uuid.uuid4().hex}"
        self.arn = self.client.create_secret(Name=name, SecretString=FIRST)["ARN"]
        self.function = function

    def start(self) -> str:
        return start_rotation(self.client, self.arn, self.function)

    def step(self, step: str, token: str) -> None:
        self.rotation.handler(
            {"SecretId": self.arn, "ClientRequestToken": token, "Step": step}, None
        )

    def rotate(self) -> str:
        token = self.start()
        for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
            self.step(step, token)
        return token

    def stages(self) -> dict[str, str]:
        return stages(self.client, self.arn)

    def value(self, stage: str) -> str:
        return value_at(self.client, self.arn, stage)


@pytest.fixture
def secret(rotation: ModuleType, function: str) -> Secret:
    return Secret(rotation, function)


# --- the four steps -----------------------------------------------------------------------


def test_create_puts_a_random_url_safe_pending_value(secret: Secret) -> None:
    token = secret.start()
    secret.step("createSecret", token)
    assert secret.stages()["AWSPENDING"] == token
    pending = secret.value("AWSPENDING")
    assert re.fullmatch(r"[A-Za-z0-9_-]{64}", pending)  # 48 random bytes: 384 bits
    assert secret.value("AWSCURRENT") == FIRST


def test_create_again_changes_nothing(secret: Secret) -> None:
    token = secret.start()
    secret.step("createSecret", token)
    first = secret.value("AWSPENDING")
    secret.step("createSecret", token)
    assert secret.value("AWSPENDING") == first
    assert len(secret.client.list_secret_version_ids(SecretId=secret.arn)["Versions"]) == 2


def test_set_changes_nothing(secret: Secret) -> None:
    token = secret.start()
    secret.step("createSecret", token)
    before = secret.stages()
    secret.step("setSecret", token)
    secret.step("setSecret", token)
    assert secret.stages() == before


def test_test_step_without_a_ping_target_checks_the_format(secret: Secret) -> None:
    token = secret.start()
    secret.step("createSecret", token)
    secret.step("testSecret", token)
    secret.step("testSecret", token)
    assert secret.stages()["AWSCURRENT"] != token


def test_finish_makes_pending_current_and_current_previous(secret: Secret) -> None:
    old = secret.stages()["AWSCURRENT"]
    token = secret.start()
    secret.step("createSecret", token)
    pending = secret.value("AWSPENDING")
    secret.step("finishSecret", token)
    assert secret.stages() == {"AWSCURRENT": token, "AWSPREVIOUS": old}
    assert secret.value("AWSCURRENT") == pending
    assert secret.value("AWSPREVIOUS") == FIRST
    secret.step("finishSecret", token)  # again: already current, nothing changes
    assert secret.stages() == {"AWSCURRENT": token, "AWSPREVIOUS": old}


def test_finish_cut_short_after_moving_current_completes_on_retry(secret: Secret) -> None:
    old = secret.stages()["AWSCURRENT"]
    token = secret.start()
    secret.step("createSecret", token)
    secret.client.update_secret_version_stage(
        SecretId=secret.arn,
        VersionStage="AWSCURRENT",
        MoveToVersionId=token,
        RemoveFromVersionId=old,
    )  # the first of finishSecret's two calls, then the Lambda died
    secret.step("finishSecret", token)
    assert secret.stages() == {"AWSCURRENT": token, "AWSPREVIOUS": old}


def test_three_rotations_in_a_row(secret: Secret) -> None:
    values = [FIRST]
    for _ in range(3):
        before = secret.stages()["AWSCURRENT"]
        token = secret.rotate()
        assert secret.stages() == {"AWSCURRENT": token, "AWSPREVIOUS": before}
        assert secret.value("AWSPREVIOUS") == values[-1]
        values.append(secret.value("AWSCURRENT"))
    assert len(set(values)) == 4


# --- stage checks before any step ----------------------------------------------------------


def test_unknown_token_is_refused(secret: Secret, rotation: ModuleType) -> None:
    secret.start()
    with pytest.raises(rotation.RotationError, match="is not a version of secret"):
        secret.step("createSecret", str(uuid.uuid4()))


def test_token_already_current_does_nothing(secret: Secret) -> None:
    current = secret.stages()["AWSCURRENT"]
    secret.start()
    for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        secret.step(step, current)
    assert secret.stages()["AWSCURRENT"] == current
    assert secret.value("AWSCURRENT") == FIRST


def test_token_previous_is_refused(secret: Secret, rotation: ModuleType) -> None:
    first = secret.stages()["AWSCURRENT"]
    secret.rotate()
    secret.start()
    with pytest.raises(rotation.RotationError, match="is not AWSPENDING"):
        secret.step("createSecret", first)


def test_rotation_disabled_is_refused(rotation: ModuleType, function: str) -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    arn = client.create_secret(Name=f"{NAME}-off", SecretString=FIRST)["ARN"]
    token = str(uuid.uuid4())
    client.put_secret_value(
        SecretId=arn,
        ClientRequestToken=token,
        SecretString=FIRST + "x",
        VersionStages=["AWSPENDING"],
    )
    with pytest.raises(rotation.RotationError, match="rotation is not enabled"):
        rotation.handler(
            {"SecretId": arn, "ClientRequestToken": token, "Step": "createSecret"}, None
        )


def test_unknown_step_is_refused(secret: Secret, rotation: ModuleType) -> None:
    with pytest.raises(rotation.RotationError, match="unknown rotation step"):
        secret.step("dropSecret", secret.start())


@pytest.mark.parametrize("bad", ["short", "x" * 42, "has spaces " * 5, "ünïcödé" * 8])
def test_malformed_pending_value_fails_the_test_step(
    secret: Secret, rotation: ModuleType, bad: str
) -> None:
    token = secret.start()
    secret.client.put_secret_value(
        SecretId=secret.arn,
        ClientRequestToken=token,
        SecretString=bad,
        VersionStages=["AWSPENDING"],
    )
    secret.step("createSecret", token)  # a value exists: create keeps it
    with pytest.raises(rotation.RotationError, match="pending value") as err:
        secret.step("testSecret", token)
    assert bad not in str(err.value)
    assert secret.stages()["AWSCURRENT"] != token


def test_deploy_time_configuration_test_passes(
    rotation: ModuleType, function: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What every deploy does: the schedule's RotateImmediately false makes Secrets Manager
    run only testSecret, on an AWSPENDING version that holds a copy of the current value."""
    client = boto3.client("secretsmanager", region_name="us-east-1")
    arn = client.create_secret(Name=f"{NAME}-{uuid.uuid4().hex}", SecretString=FIRST)["ARN"]
    client.rotate_secret(
        SecretId=arn,
        RotationLambdaARN=function,
        RotationRules={"AutomaticallyAfterDays": 30},
        RotateImmediately=False,
    )
    before = stages(client, arn)
    pending = before["AWSPENDING"]
    assert value_at(client, arn, "AWSPENDING") == FIRST  # the configuration test's copy
    logd = start_logd(tmp_path, env={"LOGD_WRITE_SECRET": FIRST})
    try:
        monkeypatch.setenv("LOGD_PING_TARGET", f"127.0.0.1:{logd.udp_addr[1]}")
        monkeypatch.setenv("LOGD_PING_TIMEOUT", "20")
        rotation.handler(
            {"SecretId": arn, "ClientRequestToken": pending, "Step": "testSecret"}, None
        )
        assert logd.info()["udp"]["pongs"] >= 1
    finally:
        logd.stop()
    assert stages(client, arn) == before  # a test only: AWSCURRENT has not moved


def test_region_comes_from_aws_region_as_lambda_sets_it(
    secret: Secret, monkeypatch: pytest.MonkeyPatch
) -> None:
    """boto3 reads AWS_DEFAULT_REGION only; the handler honours AWS_REGION too."""
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    token = secret.start()
    secret.step("createSecret", token)
    assert secret.stages()["AWSPENDING"] == token


def test_logs_are_json_and_never_hold_a_value(
    secret: Secret, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="logd.rotation"):
        secret.rotate()
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "logd.rotation"]
    assert [line["event"] for line in lines if line["event"] != "step_start"][:2] == [
        "created",
        "step_done",
    ]
    assert {line["step"] for line in lines if "step" in line} == {
        "createSecret",
        "setSecret",
        "testSecret",
        "finishSecret",
    }
    for value in (FIRST, secret.value("AWSCURRENT")):
        assert value not in caplog.text


# --- the PING: the same bytes as logd's own code -------------------------------------------


def test_frame_matches_the_protocol_test_vector(rotation: ModuleType) -> None:
    payload = bytes.fromhex("12141a0470726f64220361706930033a0568656c6c6f")
    frame = rotation.sign_frame(b"test-secret", payload, 1_700_000_000_000_000_000)
    assert frame.hex() == (
        "01434b5c9717979cfe362a0000cd64e3d6bcb5154dbfeae4cffe0d4f22"
        "12141a0470726f64220361706930033a0568656c6c6f"
    )
    assert rotation.key_id(b"test-secret").hex() == "434b5c97"


def test_ping_and_pong_payloads_match_logd(rotation: ModuleType) -> None:
    assert rotation.PING_PAYLOAD == PING_PAYLOAD
    assert rotation.PONG_PAYLOAD == PONG_PAYLOAD


@given(
    secret=st.binary(min_size=1, max_size=200),
    payload=st.binary(max_size=64),
    signed_at=st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_frame_equals_logd_wire_signer(
    secret: bytes, payload: bytes, signed_at: int, rotation: ModuleType
) -> None:
    assert rotation.sign_frame(secret, payload, signed_at) == Signer(secret).sign(
        payload, signed_at
    )


def test_pong_check_accepts_only_a_fresh_pong_from_the_key(rotation: ModuleType) -> None:
    key, other, now = b"k" * 43, b"o" * 43, 1_700_000_000_000_000_000
    pong = Signer(key).sign(PONG_PAYLOAD, now)
    assert rotation.is_pong(pong, key, now - 1)
    assert not rotation.is_pong(pong, key, now + 1)  # older than the PING
    assert not rotation.is_pong(Signer(other).sign(PONG_PAYLOAD, now), key, now - 1)
    assert not rotation.is_pong(Signer(key).sign(PING_PAYLOAD, now), key, now - 1)
    assert not rotation.is_pong(pong[:20] + bytes([pong[20] ^ 1]) + pong[21:], key, now - 1)
    assert not rotation.is_pong(pong[:28], key, now - 1)


# --- testSecret against a real logd --------------------------------------------------------


def test_test_step_pings_logd_with_the_pending_key(
    secret: Secret, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = secret.start()
    secret.step("createSecret", token)
    logd = start_logd(tmp_path, env={"LOGD_WRITE_SECRET": secret.value("AWSPENDING")})
    try:
        monkeypatch.setenv("LOGD_PING_TARGET", f"127.0.0.1:{logd.udp_addr[1]}")
        monkeypatch.setenv("LOGD_PING_TIMEOUT", "20")
        secret.step("testSecret", token)
        assert logd.info()["udp"]["pongs"] >= 1
    finally:
        logd.stop()


def test_test_step_fails_when_logd_does_not_know_the_pending_key(
    secret: Secret, rotation: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = secret.start()
    secret.step("createSecret", token)
    logd = start_logd(tmp_path)
    try:
        monkeypatch.setenv("LOGD_PING_TARGET", f"127.0.0.1:{logd.udp_addr[1]}")
        monkeypatch.setenv("LOGD_PING_TIMEOUT", "1.5")
        with pytest.raises(rotation.RotationError, match="did not answer a PING"):
            secret.step("testSecret", token)
        assert logd.info()["udp"]["rejected"]["unknown_key"] >= 1
    finally:
        logd.stop()
    assert secret.stages()["AWSCURRENT"] != token


def test_test_step_fails_when_nothing_listens(
    secret: Secret, rotation: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = secret.start()
    secret.step("createSecret", token)
    monkeypatch.setenv("LOGD_PING_TARGET", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("LOGD_PING_TIMEOUT", "1")
    with pytest.raises(rotation.RotationError, match="did not answer a PING"):
        secret.step("testSecret", token)


def test_a_bad_ping_target_is_one_sentence(
    secret: Secret, rotation: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = secret.start()
    secret.step("createSecret", token)
    monkeypatch.setenv("LOGD_PING_TARGET", "logd.internal")
    with pytest.raises(rotation.RotationError, match="is not host:port"):
        secret.step("testSecret", token)
