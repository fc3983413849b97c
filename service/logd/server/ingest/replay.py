"""ReplayGuard: an exact, bounded memory of accepted MACs. Pure: `now` is passed in.

A frame is only acceptable while `now - max_age <= signed_at <= now + max_future`,
so its MAC need only be remembered until `signed_at + max_age`; after that the
frame is refused as stale anyway. MACs are kept in a dict (O(1) lookup) and
expired in coarse time buckets, so forgetting is amortised O(1) too.

The guard never forgets a MAC early (no false positives, no missed replays).
If more MACs are live than `capacity`, new frames are refused (fail closed)
and counted as overflow: memory stays bounded whatever the flood.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

_BUCKET_NS = 100_000_000  # expiry granularity: 100 ms


class MacGuard(Protocol):
    """A replay guard as the checks use it: ReplayGuard, or the C accept path's table
    (`logd.server.ingest._fastpath.ReplayTable`), which keeps the same promises."""

    @property
    def capacity(self) -> int: ...
    @property
    def overflows(self) -> int: ...
    def __len__(self) -> int: ...
    def check_and_remember(self, mac: bytes, signed_at_ns: int, now_ns: int) -> bool | None: ...
    def expire(self, now_ns: int) -> None: ...


class ReplayGuard:
    __slots__ = ("_buckets", "_expiry", "_max_age_ns", "capacity", "overflows")

    def __init__(self, *, max_age_ns: int, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("replay capacity must be at least 1")
        self._max_age_ns = max_age_ns
        self.capacity = capacity
        self.overflows = 0
        self._expiry: dict[bytes, int] = {}
        # (bucket index, MACs expiring in it), bucket indexes ascending.
        self._buckets: deque[tuple[int, list[bytes]]] = deque()

    def __len__(self) -> int:
        return len(self._expiry)

    def check_and_remember(self, mac: bytes, signed_at_ns: int, now_ns: int) -> bool | None:
        """True: first sight, now remembered. False: a replay. None: guard full, refuse."""
        expiry = self._expiry
        if mac in expiry:
            if expiry[mac] >= now_ns:
                return False
        elif len(expiry) >= self.capacity:
            self.expire(now_ns)
            if len(expiry) >= self.capacity:
                self.overflows += 1
                return None
        expires_at = signed_at_ns + self._max_age_ns
        expiry[mac] = expires_at
        index = expires_at // _BUCKET_NS
        buckets = self._buckets
        if buckets and buckets[-1][0] == index:
            buckets[-1][1].append(mac)
        elif not buckets or buckets[-1][0] < index:
            buckets.append((index, [mac]))
        else:
            self._insert_out_of_order(index, mac)
        return True

    def _insert_out_of_order(self, index: int, mac: bytes) -> None:
        # Frames arrive roughly in signing order, so this walks back a bucket or two.
        buckets = self._buckets
        for pos in range(len(buckets) - 1, -1, -1):
            if buckets[pos][0] == index:
                buckets[pos][1].append(mac)
                return
            if buckets[pos][0] < index:
                buckets.insert(pos + 1, (index, [mac]))
                return
        buckets.appendleft((index, [mac]))

    def expire(self, now_ns: int) -> None:
        """Forget every MAC whose frame would now be stale."""
        buckets = self._buckets
        expiry = self._expiry
        while buckets and (buckets[0][0] + 1) * _BUCKET_NS <= now_ns:
            for mac in buckets.popleft()[1]:
                # A MAC re-remembered later (its first entry expired) lives in a later bucket.
                if expiry.get(mac, now_ns) < now_ns:
                    del expiry[mac]
