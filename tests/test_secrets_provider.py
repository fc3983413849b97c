"""SecretsManagerProvider, the writer's side of a rotation: moto in-process for Secrets
Manager, a real logd process for the PINGs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from logd.client.secret_provider import SecretsManagerProvider
from logd.errors import SecretsError
from moto import mock_aws
from support import start_logd, wait_for

NAME = "logd/write"
W1 = "write-one-0123456789abcdefghijklmnopqrstuvwxyz"
W2 = "write-two-0123456789abcdefghijklmnopqrstuvwxyz"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sm() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        client.create_secret(Name=NAME, SecretString=W1)
        yield client


def counting(client: Any) -> list[str]:
    calls: list[str] = []
    client.meta.events.register(
        "provide-client-params.secrets-manager.GetSecretValue",
        lambda params, **_: calls.append(params["VersionStage"]),
    )
    return calls


def test_returns_the_current_value_and_caches_it(sm: Any) -> None:
    calls = counting(sm)
    provider = SecretsManagerProvider(NAME, client=sm, clock=Clock())
    assert provider() == W1
    assert provider() == W1
    assert calls == ["AWSCURRENT"]
    assert W1 not in repr(provider)


def test_refreshes_in_the_background_every_refresh_s(sm: Any) -> None:
    clock = Clock()
    calls = counting(sm)
    provider = SecretsManagerProvider(NAME, client=sm, clock=clock, refresh_s=60)
    provider()
    sm.put_secret_value(SecretId=NAME, SecretString=W2)
    clock.now += 59.9
    assert provider() == W1
    assert len(calls) == 1
    clock.now += 0.1
    assert provider() == W1  # the refresh runs in a thread: this call does not wait for it
    wait_for(lambda: provider() == W2)
    assert len(calls) == 2


def test_first_call_without_a_secret_is_one_sentence(sm: Any) -> None:
    with pytest.raises(SecretsError, match=r"^Secrets Manager has no secret logd/nope \("):
        SecretsManagerProvider("logd/nope", client=sm)()


def test_a_failed_refresh_keeps_the_cached_value_and_says_so_once(
    sm: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    provider = SecretsManagerProvider(NAME, client=sm, clock=clock, refresh_s=10)
    provider()
    sm.delete_secret(SecretId=NAME, ForceDeleteWithoutRecovery=True)
    with caplog.at_level(logging.WARNING, logger="logd.client.secret_provider"):
        for _ in range(2):
            clock.now += 10
            assert provider() == W1
            wait_for(lambda: not provider._fetching)
    assert caplog.text.count("cannot refresh the secret") == 1
    assert W1 not in caplog.text


def test_an_unanswered_ping_refreshes_at_once(sm: Any, tmp_path: Path) -> None:
    """logd accepts only W2 (a rotation this writer missed): the PINGs signed with the
    cached W1 go unanswered, and the provider fetches W2 long before its hour is up."""
    logd = start_logd(tmp_path, env={"LOGD_WRITE_SECRET": W2})
    try:
        provider = SecretsManagerProvider(
            NAME, client=sm, server=logd.udp_addr, refresh_s=3600, ping_every_s=0.2, min_gap_s=0.2
        )
        assert provider() == W1
        sm.put_secret_value(SecretId=NAME, SecretString=W2)
        wait_for(lambda: provider() == W2)
        assert provider.unanswered_pings >= 1
        unanswered, refreshes = provider.unanswered_pings, provider.refreshes
        pongs = logd.info()["udp"]["pongs"]
        wait_for(lambda: provider() and logd.info()["udp"]["pongs"] >= pongs + 3)
        provider()
        assert (provider.unanswered_pings, provider.refreshes) == (unanswered, refreshes)
    finally:
        provider.close()
        logd.stop()


def test_unanswered_refreshes_back_off_while_the_value_stays_the_same(sm: Any) -> None:
    """Nothing answers (logd down): refreshes are spaced out, doubling up to refresh_s."""
    clock = Clock()
    calls = counting(sm)
    provider = SecretsManagerProvider(
        NAME,
        client=sm,
        server=("127.0.0.1", 9),
        clock=clock,
        refresh_s=60,
        ping_every_s=1,
        min_gap_s=1,
    )
    provider()
    try:
        for _ in range(40):
            clock.now += 1
            provider()
            wait_for(lambda: not provider._fetching)
    finally:
        provider.close()
    # 40 s of unanswered PINGs: refreshes after gaps of 1, 2, 4, 8, 16 s (then 32 > 40 s left)
    assert provider.unanswered_pings >= 39
    assert len(calls) == 6
