"""Retention by age: the task that sweeps the memory rings, so that aged events go even
when no new event arrives (ingest itself never reads a clock for it; ring.py says why).

A sweep costs O(rings with a max age) plus the chunks it evicts, SWEEP_BATCH rings at a
time with the event loop given back in between, so that even a million rings never hold
ingest up. It runs every SWEEP_S seconds, or more often for ages under 16 s (1/16 of the
smallest age), so an event is gone at most about max_age * 17/16 + two sweeps after it
arrived.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from logd.server.store.memory import MemoryStore
from logd.server.tasks import stop_tasks, wait_event

SWEEP_S = 1.0
SWEEP_MIN_S = 0.05
SWEEP_BATCH = 256  # rings per turn of the event loop: well under a millisecond


def sweep_interval(smallest_age_s: float) -> float:
    return min(SWEEP_S, max(SWEEP_MIN_S, smallest_age_s / 16))


class AgeSweeper:
    def __init__(
        self,
        store: MemoryStore,
        *,
        interval_s: float,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._store = store
        self._interval = interval_s
        # Monotonic: a step of the wall clock (NTP at boot) must not age events early.
        self._clock = clock
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sweeps = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="logd-retention")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await stop_tasks([self._task])

    async def _run(self) -> None:
        while True:
            now, first = self._clock(), 0
            while self._store.sweep(now, first, SWEEP_BATCH):
                first += SWEEP_BATCH
                await asyncio.sleep(0)  # ingest and readers go between batches
            self.sweeps += 1
            if await wait_event(self._stop, self._interval):
                return
