"""Rotates logd's read and write secrets: the AWS Secrets Manager rotation contract.

One function serves both secrets. It runs on the plain Lambda Python runtime, so
it uses boto3 and the standard library only, and it signs its PING itself (the
10 lines of PROTOCOL.md version 1; tests/test_rotation_lambda.py proves the bytes
equal `logd.wire.Signer`'s and the PROTOCOL.md test vector).

Structure of the official rotation template: check the version stages first,
then run one of four small idempotent steps:

    createSecret   a new random value as AWSPENDING under the request token
    setSecret      nothing: the secret is shared by logd and its clients, no
                   database holds a copy that would need the new value
    testSecret     the pending value is well formed, and (with LOGD_PING_TARGET)
                   logd already answers a PING signed with it; the pending value may
                   equal the current one: Secrets Manager's own configuration test
                   (RotateImmediately false, as every deploy does) makes its AWSPENDING
                   version that way, then removes it
    finishSecret   AWSCURRENT moves to the token (the old version becomes
                   AWSPREVIOUS), AWSPENDING is removed

Environment: LOGD_PING_TARGET `host:port[,host:port...]` (logd's UDP address;
unset: no live check), LOGD_PING_TIMEOUT seconds (default 60; keep the Lambda
timeout above it), AWS_REGION (set by Lambda; boto3 itself reads only
AWS_DEFAULT_REGION). Log lines are JSON objects; no value is ever logged or raised.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import socket
import struct
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import boto3

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

log = logging.getLogger("logd.rotation")
log.setLevel(logging.INFO)

CURRENT, PENDING = "AWSCURRENT", "AWSPENDING"
SECRET_BYTES = 48  # 384 random bits, 64 URL-safe characters
# At least 256 bits of base64url (43 characters); nothing that breaks a header or a shell.
SECRET_FORMAT = re.compile(r"[A-Za-z0-9_-]{43,4096}")

# PROTOCOL.md version 1: version, key_id, signed_at | mac | payload.
VERSION = 1
HEADER_LEN = 29
KEY_ID_CONTEXT = b"logd-key-id\x00"
PING_PAYLOAD = b"\x08\x02"  # Cmd{name: PING}
PONG_PAYLOAD = b"\x08\x05"  # Cmd{name: PONG}
_PREFIX = struct.Struct(">B4sq")
ATTEMPT_S = 1.0  # wait this long for each PONG before sending the next PING
PONG_MAX_AGE_NS = 30 * 1_000_000_000  # a PONG signed long before our PING is not an answer


class RotationError(Exception):
    """The rotation cannot go on; Secrets Manager marks it failed and retries later."""


def key_id(secret: bytes) -> bytes:
    return hashlib.sha256(KEY_ID_CONTEXT + secret).digest()[:4]


def sign_frame(secret: bytes, payload: bytes, signed_at_ns: int) -> bytes:
    """The frame logd.wire.Signer(secret).sign(payload, signed_at_ns) makes."""
    prefix = _PREFIX.pack(VERSION, key_id(secret), signed_at_ns)
    mac = hmac.new(secret, prefix + payload, hashlib.sha256).digest()[:16]
    return prefix + mac + payload


def is_pong(frame: bytes, secret: bytes, not_before_ns: int) -> bool:
    """A PONG signed with `secret`, no older than `not_before_ns` (constant-time MAC check)."""
    if len(frame) < HEADER_LEN or frame[0] != VERSION or frame[1:5] != key_id(secret):
        return False
    expected = hmac.new(secret, frame[:13] + frame[HEADER_LEN:], hashlib.sha256).digest()[:16]
    signed_at = struct.unpack(">q", frame[5:13])[0]
    return (
        hmac.compare_digest(expected, frame[13:HEADER_LEN])
        and frame[HEADER_LEN:] == PONG_PAYLOAD
        and signed_at >= not_before_ns
    )


def _log(event: str, **fields: Any) -> None:
    log.info(json.dumps({"event": event, **fields}, default=str))


def handler(event: Mapping[str, Any], context: Any) -> None:
    """Entry point: `{"SecretId": arn, "ClientRequestToken": token, "Step": step}`."""
    arn, token, step = event["SecretId"], event["ClientRequestToken"], event["Step"]
    if step not in STEPS:
        raise RotationError(f"unknown rotation step {step!r}")
    # Here, not at import: tests (moto) intercept it. AWS_REGION first, as the AWS SDKs do.
    client = boto3.client("secretsmanager", region_name=os.environ.get("AWS_REGION") or None)
    metadata = client.describe_secret(SecretId=arn)
    if not metadata.get("RotationEnabled"):
        raise RotationError(f"rotation is not enabled for secret {arn}")
    versions = metadata.get("VersionIdsToStages", {})
    if token not in versions:
        raise RotationError(f"version {token} is not a version of secret {arn}")
    if CURRENT in versions[token]:
        if step == "finishSecret" and PENDING in versions[token]:
            _remove_pending(client, arn, token)  # a finishSecret cut short after its first call
        _log("already_current", secret=arn, version=token, step=step)
        return
    if PENDING not in versions[token]:
        raise RotationError(f"version {token} of secret {arn} is not AWSPENDING")
    _log("step_start", secret=arn, version=token, step=step)
    STEPS[step](client, arn, token, context)
    _log("step_done", secret=arn, version=token, step=step)


def create_secret(client: SecretsManagerClient, arn: str, token: str, context: Any) -> None:
    client.get_secret_value(SecretId=arn, VersionStage=CURRENT)  # fails early if none
    try:
        client.get_secret_value(SecretId=arn, VersionId=token, VersionStage=PENDING)
    except client.exceptions.ResourceNotFoundException:
        client.put_secret_value(
            SecretId=arn,
            ClientRequestToken=token,
            SecretString=secrets.token_urlsafe(SECRET_BYTES),
            VersionStages=[PENDING],
        )
        _log("created", secret=arn, version=token)
    else:
        _log("pending_exists", secret=arn, version=token)


def set_secret(client: SecretsManagerClient, arn: str, token: str, context: Any) -> None:
    # Nothing to set: logd reads the secret from Secrets Manager itself (it already
    # accepts AWSPENDING keys) and clients fetch AWSCURRENT; no third party keeps a copy.
    _log("nothing_to_set", secret=arn, version=token)


def test_secret(client: SecretsManagerClient, arn: str, token: str, context: Any) -> None:
    pending = client.get_secret_value(SecretId=arn, VersionId=token, VersionStage=PENDING)
    value = pending.get("SecretString") or ""
    if not SECRET_FORMAT.fullmatch(value):
        raise RotationError(f"the pending value of secret {arn} is not 43-4096 URL-safe characters")
    targets = _targets(os.environ.get("LOGD_PING_TARGET", ""))
    if not targets:
        _log("no_ping_target", secret=arn, version=token)
        return
    timeout_s = float(os.environ.get("LOGD_PING_TIMEOUT", "60"))
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    if remaining_ms is not None:  # end with our own error rather than the Lambda timeout
        timeout_s = min(timeout_s, remaining_ms() / 1000 - 2)
    for host, port in targets:
        elapsed, pings = ping(host, port, value.encode(), timeout_s)
        _log(
            "pong", secret=arn, version=token, target=f"{host}:{port}", seconds=elapsed, pings=pings
        )


def finish_secret(client: SecretsManagerClient, arn: str, token: str, context: Any) -> None:
    versions = client.describe_secret(SecretId=arn).get("VersionIdsToStages", {})
    current = next((v for v, labels in versions.items() if CURRENT in labels), None)
    if current is None:
        raise RotationError(f"secret {arn} has no AWSCURRENT version to move")
    if current != token:
        client.update_secret_version_stage(
            SecretId=arn, VersionStage=CURRENT, MoveToVersionId=token, RemoveFromVersionId=current
        )
        _log("current_moved", secret=arn, version=token, previous=current)
    _remove_pending(client, arn, token)


def _remove_pending(client: SecretsManagerClient, arn: str, token: str) -> None:
    client.update_secret_version_stage(
        SecretId=arn, VersionStage=PENDING, RemoveFromVersionId=token
    )
    _log("pending_removed", secret=arn, version=token)


STEPS = {
    "createSecret": create_secret,
    "setSecret": set_secret,
    "testSecret": test_secret,
    "finishSecret": finish_secret,
}


def _targets(text: str) -> list[tuple[str, int]]:
    targets = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise RotationError(f"LOGD_PING_TARGET item {item!r} is not host:port")
        targets.append((host.strip("[]"), int(port)))
    return targets


def ping(host: str, port: int, secret: bytes, timeout_s: float) -> tuple[float, int]:
    """(seconds, PINGs sent) until logd answered a PING signed with `secret` with a valid
    PONG; retries (logd may load the key only after the first PING), raises after `timeout_s`."""
    started = time.monotonic()
    sent = 0
    deadline = started + timeout_s
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, kind, proto) as sock:
        sock.connect(addr)  # only the target's datagrams arrive; refusals surface as errors
        while time.monotonic() < deadline:
            sent_ns = time.time_ns()
            try:
                sock.send(sign_frame(secret, PING_PAYLOAD, sent_ns))
                sent += 1
            except OSError:
                time.sleep(min(ATTEMPT_S, max(0.0, deadline - time.monotonic())))
                continue
            if _await_pong(sock, secret, sent_ns - PONG_MAX_AGE_NS, deadline):
                return round(time.monotonic() - started, 3), sent
    raise RotationError(
        f"logd at {host}:{port} did not answer a PING signed with the pending key "
        f"within {timeout_s:g} s; it has not loaded the new key (or is down)"
    )


def _await_pong(sock: socket.socket, secret: bytes, not_before_ns: int, deadline: float) -> bool:
    attempt_end = min(deadline, time.monotonic() + ATTEMPT_S)
    while (left := attempt_end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            frame = sock.recv(2048)
        except TimeoutError:
            return False
        except OSError:  # ICMP port unreachable: nothing listens yet
            time.sleep(max(0.0, attempt_end - time.monotonic()))
            return False
        if is_pong(frame, secret, not_before_ns):
            return True
    return False
