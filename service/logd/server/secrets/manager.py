"""KeyManager: loads keys from a source and swaps them in whole on reload.

With a `previous_grace_s`, an AWSPREVIOUS key stays accepted for that long after
the manager first sees it as previous, then is dropped from the ring, even while
the source is unreachable, so a leaked old secret dies soon after a rotation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from logd.errors import SecretsError
from logd.events import format_time
from logd.server.keys import Key, KeyHolder, KeyRing, Role, Stage
from logd.server.secrets.sources import KeySource

log = logging.getLogger(__name__)


class KeyManager:
    def __init__(
        self,
        source: KeySource,
        *,
        previous_grace_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.holder: KeyHolder | None = None
        self.last_reload_ns: int | None = None
        self.last_error: str | None = None
        self.reloads = 0
        self.failures = 0  # consecutive failed reloads
        self._grace_s = previous_grace_s
        self._clock = clock
        self._loaded: KeyRing | None = None  # the source's ring, before the grace rule
        self._previous_since: dict[tuple[Role, bytes], float] = {}
        self._lock = asyncio.Lock()  # SIGHUP and the reload loop may ask at the same time

    async def start(self) -> KeyHolder:
        """Load the first ring; a SecretsError here stops start-up."""
        loaded = await self._load()
        self._loaded = loaded
        self.holder = KeyHolder(self._with_grace(loaded))
        return self.holder

    async def reload(self) -> bool:
        """Swap in a fresh ring; on failure keep the last good keys (less expired previous
        ones) and report it, in the log once per distinct error."""
        if self.holder is None:
            raise RuntimeError("KeyManager.reload() called before start()")
        async with self._lock:
            try:
                loaded = await self._load()
            except SecretsError as err:
                self._failed(str(err))
                self._swap(self._loaded)
                return False
            if self.last_error is not None:
                log.info("secrets reload works again after failures=%d", self.failures)
            self.last_error = None
            self.failures = 0
            self.reloads += 1
            self._loaded = loaded
            self._swap(loaded)
            return True

    def _failed(self, error: str) -> None:
        self.failures += 1
        if error != self.last_error:
            log.warning("secrets reload failed, keeping the last good keys error=%r", error)
        self.last_error = error

    def _swap(self, loaded: KeyRing | None) -> None:
        if loaded is None or self.holder is None:
            return
        ring = self._with_grace(loaded)
        before = self.holder.ring.describe()
        self.holder.ring = ring
        if ring.describe() != before:
            log.info(
                "secrets changed source=%s keys=%s",
                self.source.name,
                ",".join(f"{k['role']}:{k['stage']}:{k['key_id']}" for k in ring.describe()),
            )

    def _with_grace(self, loaded: KeyRing) -> KeyRing:
        """`loaded` without the AWSPREVIOUS keys whose grace has run out."""
        if self._grace_s is None:
            return loaded
        now = self._clock()
        previous = {_identity(k) for k in loaded.keys if k.stage is Stage.PREVIOUS}
        for gone in self._previous_since.keys() - previous:
            del self._previous_since[gone]
        for ident in previous:
            self._previous_since.setdefault(ident, now)
        keep = [k for k in loaded.keys if self._remaining_s(k, now) != 0]
        return loaded if len(keep) == len(loaded.keys) else KeyRing(keep)

    def _remaining_s(self, key: Key, now: float) -> float | None:
        """Seconds of grace a previous key has left (0: expired); None for other keys."""
        since = self._previous_since.get(_identity(key))
        if self._grace_s is None or since is None or key.stage is not Stage.PREVIOUS:
            return None
        return max(0.0, since + self._grace_s - now)

    async def _load(self) -> KeyRing:
        ring = await self.source.load()
        self.last_reload_ns = time.time_ns()
        return ring

    def info(self, frames: Callable[[str], Mapping[str, int]] | None = None) -> dict[str, Any]:
        """What /info shows; `frames(key_id)` gives counts to show with each key."""
        keys: list[dict[str, Any]] = []
        now = self._clock()
        for key in self.holder.ring.keys if self.holder else ():
            entry: dict[str, Any] = {"role": key.role, "stage": key.stage, "key_id": key.key_id}
            remaining = self._remaining_s(key, now)
            if remaining is not None:
                entry["grace_left_s"] = round(remaining, 1)
            if frames is not None:
                entry.update(frames(key.key_id))
            keys.append(entry)
        return {
            "source": self.source.name,
            "where": self.source.where,
            "last_reload": format_time(self.last_reload_ns) if self.last_reload_ns else None,
            "last_error": self.last_error,
            "reloads": self.reloads,
            "failures": self.failures,
            "keys": keys,
        }


def _identity(key: Key) -> tuple[Role, bytes]:
    # The token digest is the SHA-256 of the secret: it tells secrets apart exactly.
    return key.role, key.token_digest
