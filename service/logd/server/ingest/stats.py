"""What ingest counts: datagrams, events, refusals by reason, frames per key."""

from __future__ import annotations

from logd.server.ingest.accept import Reject


class KeyUsage:
    """Frames authenticated per key_id, so /info shows when writers left an old key.

    The hot path adds one to `current[key_id]`; `roll()` (once per drain) closes the
    window every `window_ns`, folding its counts into `totals`.
    """

    __slots__ = ("_previous", "_started_ns", "_window_ns", "current", "totals")

    def __init__(self, window_ns: int = 60 * 1_000_000_000) -> None:
        self._window_ns = window_ns
        self._started_ns = 0
        self._previous: dict[bytes, int] = {}
        self.current: dict[bytes, int] = {}
        self.totals: dict[bytes, int] = {}

    def roll(self, now_ns: int) -> None:
        if now_ns - self._started_ns < self._window_ns:
            return
        for key_id, n in self.current.items():
            self.totals[key_id] = self.totals.get(key_id, 0) + n
        recent = now_ns - self._started_ns < 2 * self._window_ns
        self._previous = self.current if recent else {}
        self.current = {}
        self._started_ns = now_ns

    def counts(self, key_id_hex: str) -> dict[str, int]:
        """`frames_recent`: in the last one to two windows; `frames_total`: since start."""
        key_id = bytes.fromhex(key_id_hex)
        now = self.current.get(key_id, 0)
        return {
            "frames_recent": now + self._previous.get(key_id, 0),
            "frames_total": now + self.totals.get(key_id, 0),
        }


class IngestStats:
    __slots__ = ("accepted", "events", "keys", "pongs", "received", "recv_errors", "rejected")

    def __init__(self) -> None:
        self.received = 0
        self.accepted = 0
        self.events = 0
        self.pongs = 0
        self.recv_errors = 0
        self.rejected: dict[Reject, int] = dict.fromkeys(Reject, 0)
        self.keys = KeyUsage()
