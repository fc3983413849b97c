"""End to end: `moto_server` as Secrets Manager, a real `logd serve` configured only with
secret ids, writers and a reader that follow the rotation through SecretsManagerProvider,
and the rotation Lambda's four steps run against both, PINGing logd for real.

Short intervals make it fast: logd reloads every 0.5 s and keeps AWSPREVIOUS for 6 s;
the clients refresh every second.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from logd._pb.logd_pb2 import Cmd, Msg
from logd.secrets.provider import SecretsManagerProvider
from logd.wire import Signer, key_id
from moto_support import (
    MotoServer,
    load_rotation_handler,
    rotation_function,
    stages,
    start_rotation,
    value_at,
)
from support import LogdProcess, start_logd, wait_for

pytestmark = pytest.mark.functional

GRACE_S = 6
STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")


@dataclass
class Lab:
    server: MotoServer
    function: str
    rotation: ModuleType
    client: Any
    read_id: str = ""
    write_id: str = ""

    def rotate(self, secret_id: str, steps: tuple[str, ...] = STEPS) -> str:
        token = start_rotation(self.client, secret_id, self.function)
        for step in steps:
            self.rotation.handler(
                {"SecretId": secret_id, "ClientRequestToken": token, "Step": step}, None
            )
        return token


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MotoServer, str]]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        server.run_no_lambdas()
        yield server, rotation_function(server.url)
    finally:
        server.stop()


@pytest.fixture
def lab(moto: tuple[MotoServer, str], monkeypatch: pytest.MonkeyPatch) -> Lab:
    server, function = moto
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)  # for the Lambda and the providers
    lab = Lab(server, function, load_rotation_handler(), server.client())
    prefix = f"logd-{uuid.uuid4().hex[:8]}"
    for role in ("read", "write"):
        lab.client.create_secret(Name=f"{prefix}/{role}", SecretString=secrets.token_urlsafe(48))
    lab.read_id, lab.write_id = f"{prefix}/read", f"{prefix}/write"
    return lab


def start_server(lab: Lab, tmp_path: Path, *, reload_s: float = 0.5) -> LogdProcess:
    return start_logd(
        tmp_path,
        "--query-limit-max",
        "1000000",
        secrets=False,
        env={
            "AWS_ENDPOINT_URL": lab.server.url,
            "LOGD_READ_SECRET_ID": lab.read_id,
            "LOGD_WRITE_SECRET_ID": lab.write_id,
            "LOGD_SECRETS_RELOAD_INTERVAL": str(reload_s),
            "LOGD_SECRETS_PREVIOUS_GRACE": str(GRACE_S),
        },
    )


@dataclass
class Client:
    """A writer (signed UDP) or a reader (HTTP) whose secret comes from a provider; it
    notes when it first used each key."""

    provider: SecretsManagerProvider
    first_use: dict[str, float] = field(default_factory=dict)
    sent: int = 0
    refused: list[int] = field(default_factory=list)

    def note(self, secret: str) -> None:
        self.first_use.setdefault(key_id(secret.encode()).hex(), time.monotonic())


def write_loop(client: Client, logd: LogdProcess, name: str, stop: threading.Event) -> None:
    signers: dict[str, Signer] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        while not stop.wait(0.004):  # about 250 frames per second per writer
            secret = client.provider()  # what Logger's sender thread does before each frame
            signer = signers.setdefault(secret, Signer(secret.encode()))
            cmd = Cmd(msg=Msg(env="e2e", svc=name, txt=str(client.sent)))
            sock.sendto(signer.sign(cmd.SerializeToString(), time.time_ns()), logd.udp_addr)
            client.note(secret)
            client.sent += 1


def read_loop(client: Client, logd: LogdProcess, stop: threading.Event) -> None:
    while not stop.wait(0.05):
        secret = client.provider()
        url = logd.http_url + "/?limit=1"
        request = urllib.request.Request(url, headers={"Authorization": secret})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                status = response.status
        except urllib.error.HTTPError as err:
            status = err.code
        if status != 200:
            client.refused.append(status)
        client.note(secret)
        client.sent += 1


def read(logd: LogdProcess, reader: Client, **params: str) -> list[dict[str, Any]]:
    status, body, _ = logd.get("/", {"limit": "1000000", **params}, secret=reader.provider())
    assert status == 200, body
    return list(body)


def providers(lab: Lab, logd: LogdProcess, secret_id: str, n: int) -> list[Client]:
    return [
        Client(
            SecretsManagerProvider(secret_id, server=logd.udp_addr, refresh_s=1.0, ping_every_s=0.5)
        )
        for _ in range(n)
    ]


def test_rotating_both_secrets_loses_nothing(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    logd = start_server(lab, tmp_path)
    try:
        with caplog.at_level(logging.INFO, logger="logd.rotation"):
            check_rotation(lab, logd, monkeypatch, caplog)
    finally:
        logd.stop()


def check_rotation(
    lab: Lab, logd: LogdProcess, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LOGD_PING_TARGET", f"127.0.0.1:{logd.udp_addr[1]}")
    monkeypatch.setenv("LOGD_PING_TIMEOUT", "30")
    old_write = value_at(lab.client, lab.write_id, "AWSCURRENT")
    old_read = value_at(lab.client, lab.read_id, "AWSCURRENT")
    writers = providers(lab, logd, lab.write_id, 3)
    reader = providers(lab, logd, lab.read_id, 1)[0]
    stop = threading.Event()
    threads = [
        threading.Thread(target=write_loop, args=(w, logd, f"w{i}", stop))
        for i, w in enumerate(writers)
    ]
    threads.append(threading.Thread(target=read_loop, args=(reader, logd, stop)))
    for thread in threads:
        thread.start()
    switch_s: dict[str, float] = {}
    try:
        wait_for(lambda: all(c.sent > 50 for c in writers) and reader.sent > 5)
        for role, secret_id, clients in (
            ("write", lab.write_id, writers),
            ("read", lab.read_id, [reader]),
        ):
            token = lab.rotate(secret_id)
            finished = time.monotonic()
            new_id = key_id(value_at(lab.client, secret_id, "AWSCURRENT").encode()).hex()
            assert stages(lab.client, secret_id)["AWSCURRENT"] == token
            wait_for(lambda: all(new_id in c.first_use for c in clients), timeout=30)  # noqa: B023
            switch_s[role] = max(c.first_use[new_id] for c in clients) - finished
        wait_for(
            lambda: all(k["stage"] != "AWSPREVIOUS" for k in logd.info()["secrets"]["keys"]),
            timeout=60,
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        for client in [*writers, reader]:
            client.provider.close()
    print(f"\nrotation: finishSecret -> all clients on the new key: {switch_s}")
    probes = [
        json.loads(r.getMessage())["pings"]
        for r in caplog.records
        if r.name == "logd.rotation" and '"pong"' in r.getMessage()
    ]
    assert len(probes) == 2

    # Nothing was refused but testSecret's probes: PINGs signed with a pending key that
    # logd had not loaded yet go unanswered (PROTOCOL.md), and the Lambda says how many.
    info = logd.info()
    rejected = info["udp"]["rejected"]
    assert rejected == dict.fromkeys(rejected, 0) | {"unknown_key": rejected["unknown_key"]}
    assert rejected["unknown_key"] == sum(p - 1 for p in probes)
    assert reader.refused == []
    total = sum(w.sent for w in writers)
    wait_for(lambda: len(read(logd, reader, env="e2e")) == total)
    events = read(logd, reader, env="e2e")
    for i, writer in enumerate(writers):
        texts = sorted(int(e["txt"]) for e in events if e["svc"] == f"w{i}")
        assert texts == list(range(writer.sent))
    assert info["secrets"]["source"] == "secretsmanager"
    assert info["secrets"]["last_error"] is None
    by_stage = {(k["role"], k["stage"]): k for k in info["secrets"]["keys"]}
    assert set(by_stage) == {("read", "AWSCURRENT"), ("write", "AWSCURRENT")}
    assert by_stage["write", "AWSCURRENT"]["frames_total"] > 0

    # The old keys died with their grace: frames and reads with them are refused.
    unknown = info["udp"]["rejected"]["unknown_key"]
    logd.write(Msg(env="e2e", svc="old", txt="forged with the old key"), secret=old_write)
    wait_for(lambda: logd.info()["udp"]["rejected"]["unknown_key"] > unknown)
    assert read(logd, reader, svc="old") == []
    status, _, _ = logd.get("/", secret=old_read)
    assert status == 401


def test_a_rotation_while_logd_is_down_fails_in_test_and_changes_nothing(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logd = start_server(lab, tmp_path)
    target = f"127.0.0.1:{logd.udp_addr[1]}"
    assert logd.info()["secrets"]["source"] == "secretsmanager"  # serving: SIGTERM is handled
    assert logd.stop() == 0
    before = stages(lab.client, lab.write_id)
    monkeypatch.setenv("LOGD_PING_TARGET", target)
    monkeypatch.setenv("LOGD_PING_TIMEOUT", "2")
    with pytest.raises(lab.rotation.RotationError, match="did not answer a PING"):
        lab.rotate(lab.write_id)
    after = stages(lab.client, lab.write_id)
    assert after["AWSCURRENT"] == before["AWSCURRENT"]
    assert "AWSPENDING" in after  # Secrets Manager retries the rotation later


def test_an_unknown_key_makes_logd_reload_at_once(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With hourly reloads, testSecret still passes within seconds: the PING signed with
    the pending key makes logd reload (rate-limited) and answer the next one."""
    logd = start_server(lab, tmp_path, reload_s=3600)
    try:
        monkeypatch.setenv("LOGD_PING_TARGET", f"127.0.0.1:{logd.udp_addr[1]}")
        monkeypatch.setenv("LOGD_PING_TIMEOUT", "30")
        lab.rotate(lab.write_id, STEPS[:3])
        info = logd.info()
        assert info["secrets"]["reloads"] >= 1
        assert {k["stage"] for k in info["secrets"]["keys"] if k["role"] == "write"} == {
            "AWSCURRENT",
            "AWSPENDING",
        }
    finally:
        logd.stop()
