"""The replay guard of each engine (ReplayGuard; the C engine's ReplayTable) with a fixed
clock: exact within the window, bounded, fail closed."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
from logd.server.ingest.engine import Impl, replay_guard
from logd.server.ingest.replay import MacGuard

MakeGuard = Callable[..., MacGuard]


@pytest.fixture
def make_guard(impl: Impl) -> MakeGuard:
    return functools.partial(replay_guard, impl=impl)


S = 1_000_000_000
T0 = 1_800_000_000 * S


def mac(i: int) -> bytes:
    return i.to_bytes(16, "big")


def test_first_sight_then_replay(make_guard: MakeGuard) -> None:
    guard = make_guard(max_age_ns=S, capacity=10)
    assert guard.check_and_remember(mac(1), T0, T0) is True
    assert guard.check_and_remember(mac(1), T0, T0 + S // 2) is False
    assert guard.check_and_remember(mac(2), T0, T0 + S // 2) is True


def test_guard_against_replay_at_the_window_edge(make_guard: MakeGuard) -> None:
    guard = make_guard(max_age_ns=S, capacity=10)
    guard.check_and_remember(mac(1), T0, T0)
    edge = T0 + S  # the last instant the frame is not yet stale
    guard.expire(edge)
    assert guard.check_and_remember(mac(1), T0, edge) is False


def test_expiry_forgets_only_what_is_stale(make_guard: MakeGuard) -> None:
    guard = make_guard(max_age_ns=S, capacity=100)
    for i in range(10):
        guard.check_and_remember(mac(i), T0 + i * S // 10, T0 + i * S // 10)
    guard.expire(T0 + S + S // 2)
    # Frames signed at T0 .. T0+0.4s are stale at T0+1.5s; the rest must still be remembered.
    for i in range(5, 10):
        assert guard.check_and_remember(mac(i), T0 + i * S // 10, T0 + S + S // 2) is False
    assert len(guard) == 5


def test_everything_expires_after_the_window(make_guard: MakeGuard) -> None:
    guard = make_guard(max_age_ns=S, capacity=100)
    for i in range(50):
        guard.check_and_remember(mac(i), T0, T0)
    guard.expire(T0 + 3 * S)
    assert len(guard) == 0


def test_out_of_order_signing_times_are_exact(make_guard: MakeGuard) -> None:
    guard = make_guard(max_age_ns=S, capacity=100)
    times = [T0 + 900_000_000, T0, T0 + 500_000_000, T0 + 50_000_000, T0 + 950_000_000]
    for i, t in enumerate(times):
        assert guard.check_and_remember(mac(i), t, T0 + S)
    guard.expire(T0 + S + 400_000_000)  # stale now: signed before T0+0.4s
    for i, t in enumerate(times):
        remembered = guard.check_and_remember(mac(i), t, T0 + S + 400_000_000) is False
        assert remembered == (t >= T0 + 400_000_000), i


def test_guard_against_valid_frame_flood_beyond_capacity(make_guard: MakeGuard) -> None:
    guard = make_guard(max_age_ns=S, capacity=3)
    results = [guard.check_and_remember(mac(i), T0, T0) for i in range(5)]
    assert results == [True, True, True, None, None]
    assert guard.overflows == 2
    assert len(guard) == 3
    # Once the window passes, room comes back.
    assert guard.check_and_remember(mac(9), T0 + 2 * S, T0 + 2 * S) is True


def test_guard_against_replay_across_guard_rotation(make_guard: MakeGuard) -> None:
    """Expiry rotates buckets out continuously; a frame still inside its window stays known."""
    guard = make_guard(max_age_ns=S, capacity=1000)
    assert guard.check_and_remember(mac(1), T0 + S // 2, T0 + S // 2)
    for step in range(1, 11):  # 100 ms steps up to the window edge; buckets rotate out
        now = T0 + S // 2 + step * S // 10
        guard.check_and_remember(mac(100 + step), now, now)
        guard.expire(now)
        assert guard.check_and_remember(mac(1), T0 + S // 2, now) is False, step
