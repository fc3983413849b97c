"""Secrets files and dev mode: exact values, 0600, no value in any error."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from logd.devsecrets import (
    KNOWN_NAMES,
    SecretsFileError,
    dev_secrets_path,
    ensure_dev_secrets,
    read_secrets_file,
)
from logd.errors import ConfigError, SecretsError
from logd.server.keys import Role, Stage
from logd.server.secrets import DevFileSource, EnvSource, FileSource, select_source


def test_dev_path_is_per_user() -> None:
    assert dev_secrets_path({"HOME": "/home/ann"}) == Path("/home/ann/.config/logd/dev-secrets.env")
    assert dev_secrets_path({"XDG_CONFIG_HOME": "/x", "HOME": "/h"}) == Path(
        "/x/logd/dev-secrets.env"
    )


def test_dev_file_is_private_and_strong(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "logd" / "dev-secrets.env"
    assert ensure_dev_secrets(path) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    values = read_secrets_file(path)
    assert set(values) == {"LOGD_READ_SECRET", "LOGD_WRITE_SECRET"}
    assert all(len(v) >= 43 for v in values.values())  # 256 bits, base64url
    assert values["LOGD_READ_SECRET"] != values["LOGD_WRITE_SECRET"]
    assert ensure_dev_secrets(path) is False  # an existing file is kept as it is
    assert read_secrets_file(path) == values


def test_values_are_kept_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "s.env"
    path.write_text("# comment\n\nLOGD_READ_SECRET= spaced =\nLOGD_WRITE_SECRET=w\n")
    assert read_secrets_file(path) == {"LOGD_READ_SECRET": " spaced =", "LOGD_WRITE_SECRET": "w"}


@pytest.mark.parametrize(
    "content",
    [
        "LOGD_READ_SECRET\n",
        "LOGD_REED_SECRET=topsecret\n",
        "LOGD_READ_SECRET=a\nLOGD_READ_SECRET=b\n",
    ],
)
def test_malformed_files_are_refused_without_values(tmp_path: Path, content: str) -> None:
    path = tmp_path / "s.env"
    path.write_text(content)
    with pytest.raises(SecretsFileError) as err:
        read_secrets_file(path)
    assert "topsecret" not in str(err.value)
    assert "=a" not in str(err.value)


@pytest.mark.parametrize(
    "line",
    ["Sup3rSecretValue_abc123", "c2VjcmV0LXZhbHVl==", "LOGD_READ_SECRET Sup3rSecret"],
    ids=["bare-identifier", "base64-padding", "no-equals"],
)
def test_guard_against_echoing_a_line_that_may_be_a_secret(tmp_path: Path, line: str) -> None:
    """A line without a known NAME= is reported by its number only: it can be a secret
    pasted on its own, and the message reaches the log and /info."""
    path = tmp_path / "s.env"
    path.write_text(f"# secrets\nLOGD_READ_SECRET=r\n{line}\n")
    with pytest.raises(SecretsFileError) as err:
        read_secrets_file(path)
    message = str(err.value)
    assert "line 3" in message
    for part in line.replace("=", " ").split():
        if part not in KNOWN_NAMES:
            assert part not in message


def test_missing_file_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(SecretsFileError, match="does not exist"):
        read_secrets_file(tmp_path / "nope")


def test_file_source_reads_stages(tmp_path: Path) -> None:
    path = tmp_path / "s.env"
    r1, w2, w1 = ("r1" * 16, "w2" * 16, "w1" * 16)  # 32 bytes: the shortest secrets logd takes
    path.write_text(
        f"LOGD_READ_SECRET={r1}\nLOGD_WRITE_SECRET={w2}\nLOGD_WRITE_SECRET_PREVIOUS={w1}\n"
    )
    path.chmod(0o600)
    ring = asyncio.run(FileSource(path).load())
    assert {(k.role, k.stage) for k in ring.keys} == {
        (Role.READ, Stage.CURRENT), (Role.WRITE, Stage.CURRENT), (Role.WRITE, Stage.PREVIOUS),
    }  # fmt: skip


@pytest.mark.parametrize("short", ["LOGD_READ_SECRET", "LOGD_WRITE_SECRET"])
def test_guard_against_weak_secrets(tmp_path: Path, short: str) -> None:
    """Under 32 bytes a secret is refused (a correct one is never throttled, so only its
    length stands between a guesser and it), in one sentence that never shows it."""
    values = {
        "LOGD_READ_SECRET": "r" * 32,
        "LOGD_WRITE_SECRET": "w" * 32,
        short: "Guessable-31-bytes-secret-value",
    }
    path = tmp_path / "s.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)
    with pytest.raises(SecretsError) as err:
        asyncio.run(FileSource(path).load())
    message = str(err.value)
    assert "31 bytes" in message
    assert "at least 32" in message
    assert "Guessable" not in message
    assert message.count(".") <= 1
    with pytest.raises(SecretsError, match="31 bytes"):
        asyncio.run(EnvSource(read_secret=values["LOGD_READ_SECRET"],
                              write_secret=values["LOGD_WRITE_SECRET"]).load())  # fmt: skip
    values[short] = values[short] + "!"  # 32 bytes: enough
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    assert len(asyncio.run(FileSource(path).load()).keys) == 2


def test_file_source_errors_are_secrets_errors(tmp_path: Path) -> None:
    with pytest.raises(SecretsError, match="does not exist"):
        asyncio.run(FileSource(tmp_path / "missing").load())


def test_source_selection(tmp_path: Path) -> None:
    assert isinstance(
        select_source(read_secret="r", write_secret="w", secrets_file=None), EnvSource
    )
    assert isinstance(
        select_source(read_secret=None, write_secret=None, secrets_file=tmp_path), FileSource
    )
    dev = select_source(
        read_secret=None, write_secret=None, secrets_file=None, environ={"HOME": str(tmp_path)}
    )
    assert isinstance(dev, DevFileSource)
    assert dev.where == str(tmp_path / ".config/logd/dev-secrets.env")
    with pytest.raises(ConfigError, match="LOGD_WRITE_SECRET is not set"):
        select_source(read_secret="r", write_secret=None, secrets_file=None)
    with pytest.raises(ConfigError, match="not both"):
        select_source(read_secret="r", write_secret="w", secrets_file=tmp_path)
