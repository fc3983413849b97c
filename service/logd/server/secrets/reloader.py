"""The reload loop: reload the keys every `interval_s`, sooner when poked.

A failed reload is retried with exponential backoff and jitter (1 s, 2 s, 4 s ...
up to `backoff_max_s`, each delay drawn from its upper half) instead of waiting a
whole interval. The ingest loop pokes when a frame names an unknown key_id: a
rotation may have created a key this server has not loaded yet. Pokes are
rate-limited (`poke_gap_s`), because anyone can send unknown key_ids and each
reload costs API calls.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from logd.server.secrets.manager import KeyManager
from logd.server.tasks import wait_event

BACKOFF_FIRST_S = 1.0


class Reloader:
    def __init__(
        self,
        manager: KeyManager,
        *,
        interval_s: float,
        poke_gap_s: float = 5.0,
        backoff_max_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.manager = manager
        self.interval_s = interval_s
        self.poke_gap_s = poke_gap_s
        self.backoff_max_s = backoff_max_s
        self.pokes = 0  # reloads started by an unknown key_id
        self._clock = clock
        self._jitter = jitter
        self._next_poke = 0.0
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """Ask for a reload soon; cheap and safe to call for every unknown-key frame."""
        if self._wake.is_set():
            return
        now = self._clock()
        if now >= self._next_poke:
            self._next_poke = now + self.poke_gap_s
            self.pokes += 1
            self._wake.set()

    def delay_s(self, failures: int) -> float:
        """How long to wait before the next reload, after `failures` failed ones in a row."""
        if failures == 0:
            return self.interval_s
        ceiling = min(self.backoff_max_s, BACKOFF_FIRST_S * 2.0 ** min(failures - 1, 30))
        return ceiling * (0.5 + 0.5 * self._jitter())

    async def run(self) -> None:
        """Reload forever; cancel the task to stop. Never raises on a failed reload."""
        while True:
            await wait_event(self._wake, self.delay_s(self.manager.failures))
            self._wake.clear()
            await self.manager.reload()
