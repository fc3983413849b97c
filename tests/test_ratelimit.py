from __future__ import annotations

from logd.server.http.ratelimit import FailureLimiter


def test_failures_beyond_the_burst_are_throttled_then_recover() -> None:
    lim = FailureLimiter(per_minute=3)
    for _ in range(3):
        assert lim.retry_after("a", 0.0) is None
        lim.failed("a", 0.0)
    wait = lim.retry_after("a", 0.0)
    assert wait is not None
    assert 0 < wait <= 20
    assert lim.retry_after("b", 0.0) is None  # per client
    assert lim.retry_after("a", 20.0) is None  # one token back after 60/3 s


def test_table_is_bounded() -> None:
    lim = FailureLimiter(per_minute=1, max_clients=100)
    for i in range(1000):
        lim.failed(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(lim._buckets) == 100
