"""Where keys come from. A KeySource loads a whole KeyRing; the KeyManager swaps it in.

A source (Secrets Manager: `logd.server.secrets.aws`) implements `KeySource`: a `name` for /info, a
`where` that says where it reads (a path or an ARN, never a value), and an
async `load()` that returns a KeyRing or raises SecretsError.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path
from typing import Protocol

from logd.devsecrets import (
    READ_NAME,
    WRITE_NAME,
    SecretsFileError,
    dev_secrets_path,
    ensure_dev_secrets,
    read_secrets_file,
)
from logd.errors import ConfigError, SecretsError
from logd.server.keys import MIN_SECRET_BYTES, KeyRing, Role, Stage

log = logging.getLogger(__name__)

_STAGES = {"": Stage.CURRENT, "_PENDING": Stage.PENDING, "_PREVIOUS": Stage.PREVIOUS}
_ROLES = {READ_NAME: Role.READ, WRITE_NAME: Role.WRITE}


class KeySource(Protocol):
    name: str

    @property
    def where(self) -> str: ...

    async def load(self) -> KeyRing: ...


class EnvSource:
    """LOGD_READ_SECRET / LOGD_WRITE_SECRET, read once at start-up."""

    name = "env"
    where = "environment"

    def __init__(self, *, read_secret: str, write_secret: str) -> None:
        self._secrets = {
            (Role.READ, Stage.CURRENT): read_secret,
            (Role.WRITE, Stage.CURRENT): write_secret,
        }

    async def load(self) -> KeyRing:
        return KeyRing.from_secrets(self._secrets, min_bytes=MIN_SECRET_BYTES)


class FileSource:
    """A secrets file (devsecrets format), re-read on every reload (SIGHUP)."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def where(self) -> str:
        return str(self.path)

    async def load(self) -> KeyRing:
        return await asyncio.to_thread(self._load)

    def _load(self) -> KeyRing:
        try:
            values = read_secrets_file(self.path)
            mode = self.path.stat().st_mode
        except (SecretsFileError, OSError) as err:
            raise SecretsError(str(err)) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "secrets file is readable by other users path=%s fix='chmod 600 %s'",
                self.path,
                self.path,
            )
        by_stage = {}
        for name, value in values.items():
            base = READ_NAME if name.startswith(READ_NAME) else WRITE_NAME
            by_stage[_ROLES[base], _STAGES[name[len(base) :]]] = value
        return KeyRing.from_secrets(by_stage, min_bytes=MIN_SECRET_BYTES)


class DevFileSource(FileSource):
    """Zero-config dev mode: a per-user file of random secrets, created on first start."""

    name = "dev"

    async def load(self) -> KeyRing:
        if await asyncio.to_thread(ensure_dev_secrets, self.path):
            log.info("created dev-mode secrets path=%s", self.path)
        return await super().load()


def select_source(
    *,
    read_secret: str | None,
    write_secret: str | None,
    secrets_file: Path | None,
    environ: dict[str, str] | None = None,
    read_secret_id: str | None = None,
    write_secret_id: str | None = None,
) -> KeySource:
    """The source the settings ask for; dev mode when no secret is configured at all."""
    if read_secret_id or write_secret_id:
        if not (read_secret_id and write_secret_id):
            missing = "LOGD_WRITE_SECRET_ID" if read_secret_id else "LOGD_READ_SECRET_ID"
            raise ConfigError(f"{missing} is not set; set both Secrets Manager secret ids")
        if read_secret or write_secret or secrets_file is not None:
            raise ConfigError(
                "set either the Secrets Manager secret ids or LOGD_READ_SECRET/"
                "LOGD_WRITE_SECRET/a secrets file, not both"
            )
        from logd.server.secrets.aws import SecretsManagerSource  # boto3 only when asked for

        return SecretsManagerSource(read_secret_id=read_secret_id, write_secret_id=write_secret_id)
    if secrets_file is not None:
        if read_secret or write_secret:
            raise ConfigError(
                "set either LOGD_READ_SECRET/LOGD_WRITE_SECRET or a secrets file, not both"
            )
        return FileSource(secrets_file)
    if read_secret and write_secret:
        return EnvSource(read_secret=read_secret, write_secret=write_secret)
    if read_secret or write_secret:
        missing = WRITE_NAME if read_secret else READ_NAME
        raise ConfigError(f"{missing} is not set; set both secrets, or neither for dev mode")
    return DevFileSource(dev_secrets_path(os.environ if environ is None else environ))
