"""SecretsManagerSource, the grace of AWSPREVIOUS, and the reload loop, against moto.

moto runs in-process for most tests; `moto_server` (a real HTTP endpoint) where a
test needs Secrets Manager to become unreachable or a `logd serve` process to read it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from logd.errors import ConfigError, SecretsError
from logd.server.keys import KeyRing, Role, Stage
from logd.server.secrets import KeyManager, Reloader, select_source
from logd.server.secrets.aws import SecretsManagerSource
from logd.wire import key_id
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count
from moto_support import MotoServer, free_port, rotation_function, stages, start_rotation

READ_ID, WRITE_ID = "logd/read", "logd/write"
R1, W1 = "read-one-0123456789abcdefghijklmnopqrstuvw", "write-one-0123456789abcdefghijklmnopqrstu"
W2, W3 = "write-two-0123456789abcdefghijklmnopqrstu", "write-three-0123456789abcdefghijklmnopqrs"


@pytest.fixture
def sm() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        client.create_secret(Name=READ_ID, SecretString=R1)
        client.create_secret(Name=WRITE_ID, SecretString=W1)
        yield client


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def kid(secret: str) -> str:
    return key_id(secret.encode()).hex()


def described(ring: KeyRing) -> set[tuple[str, str, str]]:
    return {(k["role"], k["stage"], k["key_id"]) for k in ring.describe()}


def rotate(client: Any, secret_id: str, value: str, token: str) -> None:
    """What the rotation Lambda does, in two calls: a PENDING version, then CURRENT moves."""
    client.put_secret_value(
        SecretId=secret_id,
        ClientRequestToken=token,
        SecretString=value,
        VersionStages=["AWSPENDING"],
    )
    finish(client, secret_id, token)


def finish(client: Any, secret_id: str, token: str) -> None:
    versions = client.describe_secret(SecretId=secret_id)["VersionIdsToStages"]
    current = next(v for v, labels in versions.items() if "AWSCURRENT" in labels)
    client.update_secret_version_stage(
        SecretId=secret_id,
        VersionStage="AWSCURRENT",
        MoveToVersionId=token,
        RemoveFromVersionId=current,
    )
    client.update_secret_version_stage(
        SecretId=secret_id, VersionStage="AWSPENDING", RemoveFromVersionId=token
    )


def source() -> SecretsManagerSource:
    return SecretsManagerSource(read_secret_id=READ_ID, write_secret_id=WRITE_ID)


# --- stages ---------------------------------------------------------------------------


def test_loads_the_current_secrets(sm: Any) -> None:
    ring = asyncio.run(source().load())
    assert described(ring) == {("read", "AWSCURRENT", kid(R1)), ("write", "AWSCURRENT", kid(W1))}


def test_loads_pending_and_previous_by_stage(sm: Any) -> None:
    rotate(sm, WRITE_ID, W2, "t" * 32)
    sm.put_secret_value(
        SecretId=WRITE_ID,
        ClientRequestToken="u" * 32,
        SecretString=W3,
        VersionStages=["AWSPENDING"],
    )
    ring = asyncio.run(source().load())
    assert described(ring) == {
        ("read", "AWSCURRENT", kid(R1)),
        ("write", "AWSCURRENT", kid(W2)),
        ("write", "AWSPENDING", kid(W3)),
        ("write", "AWSPREVIOUS", kid(W1)),
    }


def test_every_get_secret_value_names_its_stage(sm: Any) -> None:
    src = source()
    calls: list[dict[str, Any]] = []
    src._client.meta.events.register(
        "provide-client-params.secrets-manager.GetSecretValue",
        lambda params, **_: calls.append(dict(params)),
    )
    rotate(sm, WRITE_ID, W2, "t" * 32)
    asyncio.run(src.load())
    assert len(calls) == 3  # read current, write current, write previous
    assert all(call.get("VersionStage") in {"AWSCURRENT", "AWSPREVIOUS"} for call in calls)


def test_a_version_is_fetched_once_then_served_from_the_cache(sm: Any) -> None:
    src = source()
    calls: list[str] = []
    src._client.meta.events.register(
        "provide-client-params.secrets-manager.GetSecretValue",
        lambda params, **_: calls.append(params["VersionStage"]),
    )
    asyncio.run(src.load())
    asyncio.run(src.load())
    assert len(calls) == 2
    rotate(sm, WRITE_ID, W2, "t" * 32)  # W1's version only changes its label
    asyncio.run(src.load())
    assert calls[2:] == ["AWSCURRENT"]


def test_a_version_holding_two_stages_is_one_key(sm: Any) -> None:
    versions = sm.describe_secret(SecretId=WRITE_ID)["VersionIdsToStages"]
    current = next(iter(versions))
    sm.update_secret_version_stage(
        SecretId=WRITE_ID, VersionStage="AWSPENDING", MoveToVersionId=current
    )
    ring = asyncio.run(source().load())
    assert [k.stage for k in ring.keys if k.role is Role.WRITE] == [Stage.CURRENT]


def test_a_pending_version_without_a_value_yet_is_skipped() -> None:
    """RotateSecret labels the new version AWSPENDING before createSecret gives it a value."""
    with mock_aws(config={"lambda": {"use_docker": False}}):
        client = boto3.client("secretsmanager", region_name="us-east-1")
        client.create_secret(Name=READ_ID, SecretString=R1)
        client.create_secret(Name=WRITE_ID, SecretString=W1)
        start_rotation(client, WRITE_ID, rotation_function())
        assert "AWSPENDING" in stages(client, WRITE_ID)
        ring = asyncio.run(source().load())
    assert described(ring) == {("read", "AWSCURRENT", kid(R1)), ("write", "AWSCURRENT", kid(W1))}


def test_a_missing_secret_is_one_sentence_naming_it(sm: Any) -> None:
    src = SecretsManagerSource(read_secret_id=READ_ID, write_secret_id="logd/nope")
    with pytest.raises(SecretsError, match=r"^Secrets Manager has no secret logd/nope \(") as err:
        asyncio.run(src.load())
    assert "\n" not in str(err.value)


def test_a_binary_secret_is_refused(sm: Any) -> None:
    sm.create_secret(Name="logd/binary", SecretBinary=b"\x00\x01")
    src = SecretsManagerSource(read_secret_id=READ_ID, write_secret_id="logd/binary")
    with pytest.raises(SecretsError, match="holds no text"):
        asyncio.run(src.load())


def test_read_and_write_must_differ(sm: Any) -> None:
    sm.put_secret_value(SecretId=WRITE_ID, SecretString=R1)
    with pytest.raises(SecretsError, match="the same"):
        asyncio.run(source().load())


@set_initial_no_auth_action_count(0)
def test_denied_access_is_reported_without_values(sm: Any) -> None:
    with pytest.raises(SecretsError) as err:
        asyncio.run(source().load())
    message = str(err.value)
    assert message.startswith("Secrets Manager denied DescribeSecret on logd/read (")
    assert R1 not in message


def test_region_comes_from_the_arn_when_none_is_configured(
    sm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:logd/read-AbCdEf"
    src = SecretsManagerSource(read_secret_id=arn, write_secret_id=arn)
    assert src._client.meta.region_name == "eu-west-1"


def test_aws_region_is_honoured_before_aws_default_region(
    sm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_REGION is what Lambda and the other SDKs set and read first; boto3 alone ignores it."""
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert SecretsManagerSource(
        read_secret_id="a", write_secret_id="b"
    )._client.meta.region_name == ("eu-west-1")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert source()._client.meta.region_name == "eu-west-1"


def test_no_region_at_all_is_a_config_error(sm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(ConfigError, match="AWS_REGION"):
        source()


def test_select_source_wants_both_ids_and_nothing_else(sm: Any, tmp_path: Path) -> None:
    chosen = select_source(
        read_secret=None,
        write_secret=None,
        secrets_file=None,
        read_secret_id="a",
        write_secret_id="b",
    )
    assert isinstance(chosen, SecretsManagerSource)
    assert chosen.where == "read=a write=b"
    with pytest.raises(ConfigError, match="LOGD_WRITE_SECRET_ID is not set"):
        select_source(read_secret=None, write_secret=None, secrets_file=None, read_secret_id="a")
    with pytest.raises(ConfigError, match="not both"):
        select_source(
            read_secret="r",
            write_secret="w",
            secrets_file=None,
            read_secret_id="a",
            write_secret_id="b",
        )


# --- the grace of AWSPREVIOUS -------------------------------------------------------------


def test_previous_is_dropped_when_its_grace_runs_out(sm: Any) -> None:
    clock = Clock()
    manager = KeyManager(source(), previous_grace_s=60, clock=clock)
    holder = asyncio.run(manager.start())
    rotate(sm, WRITE_ID, W2, "t" * 32)
    clock.now += 5
    assert asyncio.run(manager.reload())
    assert ("write", "AWSPREVIOUS", kid(W1)) in described(holder.ring)
    clock.now += 59.9  # grace counts from when the manager first saw W1 as previous
    assert asyncio.run(manager.reload())
    assert holder.ring.lookup(key_id(W1.encode()))
    assert manager.info()["keys"][2]["grace_left_s"] == pytest.approx(0.1)
    clock.now += 0.1
    assert asyncio.run(manager.reload())
    assert not holder.ring.lookup(key_id(W1.encode()))
    assert described(holder.ring) == {
        ("read", "AWSCURRENT", kid(R1)),
        ("write", "AWSCURRENT", kid(W2)),
    }


def test_a_previous_seen_at_start_up_gets_a_full_grace(sm: Any) -> None:
    rotate(sm, WRITE_ID, W2, "t" * 32)
    clock = Clock()
    manager = KeyManager(source(), previous_grace_s=60, clock=clock)
    holder = asyncio.run(manager.start())
    clock.now += 59
    asyncio.run(manager.reload())
    assert holder.ring.lookup(key_id(W1.encode()))


def test_a_newer_rotation_replaces_previous_and_restarts_the_grace(sm: Any) -> None:
    clock = Clock()
    manager = KeyManager(source(), previous_grace_s=60, clock=clock)
    holder = asyncio.run(manager.start())
    rotate(sm, WRITE_ID, W2, "t" * 32)
    asyncio.run(manager.reload())
    clock.now += 50
    rotate(sm, WRITE_ID, W3, "u" * 32)
    asyncio.run(manager.reload())
    clock.now += 50
    asyncio.run(manager.reload())
    assert not holder.ring.lookup(key_id(W1.encode()))  # no stage any more
    assert holder.ring.lookup(key_id(W2.encode()))  # previous for 50 s of 60


# --- Secrets Manager unreachable ----------------------------------------------------------


@pytest.fixture
def moto_server(tmp_path: Path) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path / "moto.log")
    yield server
    server.stop()


def test_unreachable_keeps_the_last_good_keys_and_says_so_once(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client = moto_server.client()
    client.create_secret(Name=READ_ID, SecretString=R1)
    client.create_secret(Name=WRITE_ID, SecretString=W1)
    rotate(client, WRITE_ID, W2, "t" * 32)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    clock = Clock()
    manager = KeyManager(source(), previous_grace_s=60, clock=clock)
    holder = asyncio.run(manager.start())
    good = described(holder.ring)
    moto_server.stop()

    with caplog.at_level(logging.WARNING, logger="logd.server.secrets"):
        assert not asyncio.run(manager.reload())
        assert not asyncio.run(manager.reload())
    assert described(holder.ring) == good
    info = manager.info()
    assert info["last_error"].startswith("cannot reach Secrets Manager for logd/read (")
    assert info["failures"] == 2
    assert info["last_reload"] is not None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert all(s not in caplog.text for s in (R1, W1, W2))

    clock.now += 60  # the old write key's grace ends while Secrets Manager is still away
    assert not asyncio.run(manager.reload())
    assert not holder.ring.lookup(key_id(W1.encode()))
    assert holder.ring.lookup(key_id(W2.encode()))


# --- the reload loop ----------------------------------------------------------------------


def test_backoff_doubles_with_jitter_up_to_the_cap(sm: Any) -> None:
    manager = KeyManager(source())
    low = Reloader(manager, interval_s=30, backoff_max_s=300, jitter=lambda: 0.0)
    high = Reloader(manager, interval_s=30, backoff_max_s=300, jitter=lambda: 0.999999)
    assert low.delay_s(0) == 30
    assert [low.delay_s(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert [round(high.delay_s(n), 3) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert low.delay_s(40) == 150
    assert round(high.delay_s(40), 3) == 300


def test_pokes_are_rate_limited(sm: Any) -> None:
    clock = Clock()
    reloader = Reloader(KeyManager(source()), interval_s=30, poke_gap_s=5, clock=clock)

    async def scenario() -> list[int]:
        seen = []
        for step in (0.0, 1.0, 3.9, 0.2, 10.0):
            clock.now += step
            reloader.poke()
            seen.append(reloader.pokes)
            reloader._wake.clear()  # as the loop does after waking
        return seen

    assert asyncio.run(scenario()) == [1, 1, 1, 2, 3]


def test_the_loop_stops_when_a_poke_and_the_cancel_come_together(sm: Any) -> None:
    """On Python 3.11, asyncio.wait_for returned the poke and lost a cancel that came in
    the same turn, and logd could not stop; the loop waits with asyncio.timeout instead."""
    manager = KeyManager(source())

    async def scenario() -> bool:
        await manager.start()
        reloader = Reloader(manager, interval_s=3600, poke_gap_s=0)
        task = asyncio.create_task(reloader.run())
        await asyncio.sleep(0.05)  # waiting for a poke
        reloader.poke()
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        return task.cancelled()  # here: asyncio.run cancels what is left once this returns

    assert asyncio.run(scenario())


def test_the_loop_reloads_on_a_poke_and_backs_off_on_failure(sm: Any) -> None:
    manager = KeyManager(source())

    async def scenario() -> tuple[bool, int, str | None]:
        await manager.start()
        reloader = Reloader(manager, interval_s=3600, poke_gap_s=0)
        task = asyncio.create_task(reloader.run())
        rotate(sm, WRITE_ID, W2, "t" * 32)
        reloader.poke()
        for _ in range(500):
            await asyncio.sleep(0.01)
            if manager.reloads:
                break
        assert manager.holder is not None
        pending = bool(manager.holder.ring.lookup(key_id(W2.encode())))
        sm.delete_secret(SecretId=WRITE_ID, ForceDeleteWithoutRecovery=True)
        reloader.poke()
        for _ in range(500):  # the first retry comes after 0.5-1 s, not after the hour
            await asyncio.sleep(0.01)
            if manager.failures >= 2:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pending, manager.failures, manager.last_error

    found_new_key, failures, error = asyncio.run(scenario())
    assert found_new_key
    assert failures >= 2
    assert error is not None
    assert "logd/write" in error


# --- `logd serve` -------------------------------------------------------------------------


def _serve(env: dict[str, str], *, code: str = "from logd.cli.main import main; main()") -> Any:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "serve",
            "--udp-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_exits_with_one_sentence_when_no_key_exists(moto_server: MotoServer) -> None:
    result = _serve(
        {
            "AWS_ENDPOINT_URL": moto_server.url,
            "LOGD_READ_SECRET_ID": READ_ID,
            "LOGD_WRITE_SECRET_ID": WRITE_ID,
        }
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "logd: Secrets Manager has no secret logd/read (DescribeSecret failed)"
    )
    assert "Traceback" not in result.stderr


def test_serve_exits_with_one_sentence_when_secrets_manager_is_unreachable() -> None:
    result = _serve(
        {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
            "LOGD_READ_SECRET_ID": READ_ID,
            "LOGD_WRITE_SECRET_ID": WRITE_ID,
        }
    )
    assert result.returncode != 0
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("logd: cannot reach Secrets Manager for logd/read (")
    )
    assert "Traceback" not in result.stderr


NO_BOTO3 = "import sys; sys.modules['boto3'] = None; "  # `import boto3` now raises ImportError


def test_serve_without_boto3_needs_it_only_for_secret_ids() -> None:
    result = _serve(
        {"LOGD_READ_SECRET_ID": READ_ID, "LOGD_WRITE_SECRET_ID": WRITE_ID},
        code=NO_BOTO3 + "from logd.cli.main import main; main()",
    )
    assert result.returncode == 2
    assert "pip install 'logd[aws]'" in result.stderr
    assert "Traceback" not in result.stderr
    without_ids = subprocess.run(
        [
            sys.executable,
            "-c",
            NO_BOTO3 + "from logd.server.app import create_app; from logd.server.config "
            "import Config; create_app(Config(read_secret='r' * 32, write_secret='w' * 32))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert without_ids.returncode == 0, without_ids.stderr
