"""The Store interface: what ingest writes to and HTTP reads from.

The embedded default is `MemoryStore`; other backends (Valkey) implement the same
protocol. `write` is called on the event loop and must not block or await.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from logd._pb.logd_pb2 import Msg
from logd.filters import Filter
from logd.tail import Subscription


@dataclass(frozen=True, slots=True)
class RingStats:
    key: str
    events: int
    bytes: int
    capacity_bytes: int
    evicted: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    writes: int
    overflow_events: int
    rings: list[RingStats] = field(default_factory=list)


class Store(Protocol):
    def write(self, msg: Msg, t_ns: int) -> None:
        """Store one event whose time is `t_ns` (already set in `msg.t`)."""

    async def query(self, flt: Filter, *, limit: int, offset: int) -> list[Msg]:
        """Matching events, newest first."""

    def subscribe(self, flt: Filter) -> Subscription:
        """A live feed of matching events; close it when done."""

    def stats(self) -> StoreStats: ...
