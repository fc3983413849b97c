"""Per-client throttling of failed read authentications. Pure: `now` is passed in.

A token bucket per client address: each failure takes a token, tokens come
back at `per_minute` a minute. With no token left the client gets 429 until one
returns. The table is bounded; the least recently failing clients are forgotten.
"""

from __future__ import annotations

from collections import OrderedDict


class FailureLimiter:
    def __init__(self, *, per_minute: int, max_clients: int = 10_000) -> None:
        self._burst = float(per_minute)
        self._rate = per_minute / 60.0  # tokens per second
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self.throttled = 0

    def _tokens(self, client: str, now: float) -> float:
        tokens, at = self._buckets.get(client, (self._burst, now))
        return min(self._burst, tokens + (now - at) * self._rate)

    def retry_after(self, client: str, now: float) -> float | None:
        """Seconds until `client` may try again, or None when it may try now."""
        if client not in self._buckets:
            return None
        tokens = self._tokens(client, now)
        if tokens >= 1.0:
            return None
        self.throttled += 1
        return (1.0 - tokens) / self._rate

    def failed(self, client: str, now: float) -> None:
        tokens = self._tokens(client, now) - 1.0
        self._buckets[client] = (tokens, now)
        self._buckets.move_to_end(client)
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
