"""What an engine reports to (the ingest): frames it did not store, refusals, receive errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from logd.server.ingest.accept import Accepted, Reject
from logd.server.ingest.stats import IngestStats

if TYPE_CHECKING:
    from logd.server.alerts.engine import AlertEngine


class Sink(Protocol):
    """What an engine reports to: the ingest."""

    stats: IngestStats
    alerts: AlertEngine | None  # sees every event stored (the C engine's runs too)

    def accepted(self, verdict: Accepted, addr: Any, now_ns: int) -> None: ...
    def reject(self, reason: Reject, count: int = 1) -> None: ...
    def recv_failed(self, errno: int | None) -> None: ...
