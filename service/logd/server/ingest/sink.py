"""What an engine reports to (the ingest): frames it did not store, refusals, receive errors."""

from __future__ import annotations

from typing import Any, Protocol

from logd.server.ingest.accept import Accepted, Reject
from logd.server.ingest.stats import IngestStats


class Sink(Protocol):
    """What an engine reports to: the ingest."""

    stats: IngestStats

    def accepted(self, verdict: Accepted, addr: Any, now_ns: int) -> None: ...
    def reject(self, reason: Reject, count: int = 1) -> None: ...
    def recv_failed(self, errno: int | None) -> None: ...
