"""The Store interface: what ingest writes to and HTTP reads from.

The embedded default is `MemoryStore`; other backends (Valkey) implement the same
protocol. `write` is called on the event loop and must not block or await.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from logd._pb.logd_pb2 import Msg
from logd.server.filters import Filter
from logd.server.store.scan import Found
from logd.server.store.tally import Tally
from logd.server.tail import Subscription, TailHub


class StoreUnavailable(Exception):
    """The backend cannot answer a read now (HTTP shows a 503)."""


@dataclass(frozen=True, slots=True)
class RingStats:
    key: str
    events: int
    bytes: int
    capacity_bytes: int
    evicted: int  # events evicted, for any reason
    evicted_bytes: int = 0  # what they held, as `bytes` counts it
    aged: int = 0  # of them, evicted by age (the rest: by the byte budget)
    aged_bytes: int = 0


@dataclass(frozen=True, slots=True)
class StoreStats:
    writes: int
    overflow_events: int
    rings: list[RingStats] = field(default_factory=list)
    backend: dict[str, Any] | None = None  # what a remote backend reports (None: in memory)


class RingBudgets:
    """Byte budget per ring key: exact keys first, then the longest `prefix*`, then default."""

    def __init__(self, default: int, sizes: Mapping[str, int]) -> None:
        self.default = default
        self._exact = {k: v for k, v in sizes.items() if not k.endswith("*")}
        self._prefixes = sorted(
            ((k[:-1], v) for k, v in sizes.items() if k.endswith("*")), key=lambda kv: -len(kv[0])
        )

    def __call__(self, key: str) -> int:
        if key in self._exact:
            return self._exact[key]
        for prefix, size in self._prefixes:
            if key.startswith(prefix):
                return size
        return self.default


class Store(Protocol):
    hub: TailHub

    def write(self, msg: Msg, t_ns: int) -> None:
        """Store one event whose time is `t_ns` (already set in `msg.t`)."""

    async def query(
        self, flt: Filter, *, limit: int, offset: int, max_bytes: int | None = None
    ) -> Found:
        """Matching events, newest first; fewer when their bytes would pass `max_bytes`."""

    async def hits(self, flt: Filter, tally: Tally) -> None:
        """Count the matching events into `tally` (GET /hits); may raise TooManyBuckets."""

    def end_batch(self) -> None:
        """Ingest drained a batch of datagrams: a remote backend sends what it buffered."""

    def subscribe(self, flt: Filter) -> Subscription:
        """A live feed of matching events; close it when done. Raises StoreUnavailable."""

    def stats(self) -> StoreStats: ...
