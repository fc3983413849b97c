"""KeyManager: loads keys from a source and swaps them in whole on reload."""

from __future__ import annotations

import logging
import time
from typing import Any

from logd.errors import SecretsError
from logd.events import format_time
from logd.keys import KeyHolder, KeyRing
from logd.secrets.sources import KeySource

log = logging.getLogger("logd.secrets")


class KeyManager:
    def __init__(self, source: KeySource) -> None:
        self.source = source
        self.holder: KeyHolder | None = None
        self.last_reload_ns: int | None = None
        self.last_error: str | None = None
        self.reloads = 0

    async def start(self) -> KeyHolder:
        """Load the first ring; a SecretsError here stops start-up."""
        self.holder = KeyHolder(await self._load())
        return self.holder

    async def reload(self) -> bool:
        """Swap in a fresh ring; on failure keep the last good keys and report it."""
        if self.holder is None:
            raise RuntimeError("KeyManager.reload() called before start()")
        try:
            ring = await self._load()
        except SecretsError as err:
            self.last_error = str(err)
            log.warning("secrets reload failed, keeping the last good keys error=%r", str(err))
            return False
        self.holder.ring = ring
        self.last_error = None
        self.reloads += 1
        log.info(
            "secrets reloaded source=%s keys=%s",
            self.source.name,
            ",".join(f"{k['role']}:{k['stage']}:{k['key_id']}" for k in ring.describe()),
        )
        return True

    async def _load(self) -> KeyRing:
        ring = await self.source.load()
        self.last_reload_ns = time.time_ns()
        return ring

    def info(self) -> dict[str, Any]:
        return {
            "source": self.source.name,
            "where": self.source.where,
            "last_reload": format_time(self.last_reload_ns) if self.last_reload_ns else None,
            "last_error": self.last_error,
            "reloads": self.reloads,
            "keys": self.holder.ring.describe() if self.holder else [],
        }
