"""The store backends as the app opens them: each builds its store from the Config
and knows what it needs around it while open.

- memory://  the rings in this process; with a data dir, a Persister loads them
  before UDP opens and flushes them until after it closes; with a max age, an
  AgeSweeper evicts what aged (store/retention.py).
- redis://   a Valkey/Redis server shared by several nodes, and the replay check
  across those nodes; shorter drains, since each step waits for a round trip.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

from logd.server.budget import Budget
from logd.server.config import Config
from logd.server.store.base import Store
from logd.server.store.memory import MemoryStore
from logd.server.store.persist import Persister
from logd.server.store.retention import AgeSweeper, sweep_interval
from logd.server.store.valkey.replay import SharedReplayGuard
from logd.server.store.valkey.store import ValkeyStore


class Backend(Protocol):
    @property
    def store(self) -> Store: ...
    @property
    def drain_max(self) -> int:
        """Datagrams per readiness event."""
        ...

    @property
    def persister(self) -> Persister | None: ...
    @property
    def shared_guard(self) -> SharedReplayGuard | None: ...

    def opened(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Start what the store needs before ingest, and stop it after ingest stopped."""
        ...


def backend_for(config: Config, budget: Budget) -> Backend:
    if config.store_url == "memory://":
        return MemoryBackend(config, budget)
    return ValkeyBackend(config, budget)


class MemoryBackend:
    drain_max = 1024
    shared_guard = None

    def __init__(self, config: Config, budget: Budget) -> None:
        self._config = config
        self.store = MemoryStore(
            ring_bytes=budget.ring_bytes,
            ring_sizes=config.rings,
            max_rings=config.max_rings,
            max_tails=config.max_tails,
            tail_queue=config.tail_queue,
            tail_bytes=config.tail_buffer_bytes,
            ring_max_age_ns=config.ring_max_age_ns,
            ring_max_ages_ns=config.ring_max_ages_ns,
        )
        self.persister: Persister | None = None

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[None]:
        async with self._persisted(), self._swept():
            yield

    @contextlib.asynccontextmanager
    async def _persisted(self) -> AsyncIterator[None]:
        if self._config.data_dir is None:
            yield
            return
        persister = self.persister = Persister(
            store=self.store, data_dir=self._config.data_dir, interval=self._config.flush_interval
        )
        await persister.load()  # before the UDP port opens: old events first
        persister.start()
        try:
            yield
        finally:
            await persister.stop()  # after the UDP endpoint closed: a last flush

    @contextlib.asynccontextmanager
    async def _swept(self) -> AsyncIterator[None]:
        ages = [a for a in (self._config.ring_max_age, *self._config.ring_max_ages.values()) if a]
        if not ages:
            yield
            return
        sweeper = AgeSweeper(self.store, interval_s=sweep_interval(min(ages)))
        sweeper.start()  # after the load: what aged while logd was down goes at once
        try:
            yield
        finally:
            await sweeper.stop()


class ValkeyBackend:
    # Short turns: each step of a flush or a replay check waits for the next turn of
    # the event loop, so long drains would starve them.
    drain_max = 64
    persister = None

    def __init__(self, config: Config, budget: Budget) -> None:
        self._config = config
        self.store = self._valkey = ValkeyStore(
            url=config.store_url,
            password=config.store_password,
            buffer_events=config.store_buffer,
            ring_bytes=budget.ring_bytes,
            ring_sizes=config.rings,
            max_rings=config.max_rings,
            max_tails=config.max_tails,
            tail_queue=config.tail_queue,
            tail_bytes=config.tail_buffer_bytes,
        )
        self.shared_guard: SharedReplayGuard | None = None

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[None]:
        store = self._valkey
        await store.start()
        guard = self.shared_guard = SharedReplayGuard(
            client=store.client,
            max_age_ns=self._config.max_age_ns,
            max_future_ns=self._config.max_future_ns,
            offline=lambda: store.down,
            room=lambda: store.room,
        )
        try:
            yield
        finally:
            # After the UDP endpoint closed: let the last checks finish, send what is buffered.
            await guard.close()
            await store.close()
