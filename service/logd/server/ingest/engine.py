"""The one place that chooses how frames are accepted: the C engine or the Python one.

Both drain a non-blocking UDP socket through the checks of PROTOCOL.md and report
to a `Sink` (the ingest): frames they did not store themselves arrive checked, as
`Accepted`; refusals arrive as (reason, count). The Python engine (`accept.py`
per frame) is the specification; the C engine (`fastpath.py`) does the same with
recvmmsg and stores runs of same-ring events itself. The C engine is used whenever
the extension is built: with the memory store it stores runs at once; with the
Valkey store (several nodes) it runs held and does the replay check across nodes
itself before storing them (`checks_across_nodes`: ingest then does not).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

from logd.server.ingest import fastpath
from logd.server.ingest.accept import FrameChecker, Reject
from logd.server.ingest.replay import MacGuard, ReplayGuard
from logd.server.ingest.sink import Sink
from logd.server.ingest.writers import CAPACITY, Writers, WriterTable
from logd.server.keys import KeyHolder
from logd.server.store.base import Store
from logd.server.store.valkey.replay import SharedReplayGuard

Impl = Literal["c", "python"]
IMPLS: tuple[Impl, ...] = ("c", "python")
RECV_SIZE = 65_536


class Engine(Protocol):
    @property
    def name(self) -> Impl: ...
    @property
    def writers(self) -> Writers:
        """The table of writers (writers.py): the engine's own kind, fed by both paths."""
        ...

    @property
    def checks_across_nodes(self) -> bool:
        """Whether it runs the shared replay check itself (else ingest holds what it hands
        over for it)."""
        ...

    def drain(self, sock: Any, now_ns: int, max_frames: int, max_events: int, sink: Sink) -> bool:
        """Read up to `max_frames` datagrams, fewer once about `max_events` more are stored;
        True when some of what was read waits for the next call."""
        ...


def available() -> bool:
    """Whether the C engine is built (not with LOGD_PURE_PYTHON=1)."""
    return fastpath.available()


def default_impl() -> Impl:
    return "c" if fastpath.available() else "python"


def replay_guard(*, max_age_ns: int, capacity: int, impl: Impl | None = None) -> MacGuard:
    """The replay guard for an engine: the C table for the C engine, else ReplayGuard."""
    if (impl or default_impl()) == "c":
        return fastpath.replay_table(max_age_ns=max_age_ns, capacity=capacity)
    return ReplayGuard(max_age_ns=max_age_ns, capacity=capacity)


def restart_floor(*, started_ns: int, max_future_ns: int) -> int:
    """The earliest `signed_at` a process started at `started_ns` accepts.

    The replay guard lives in memory, so a restarted process has forgotten the MACs it
    accepted before, and a frame of then may still be within max_age. Every such frame
    was received before this start, so signed no later than `started_ns + max_future`:
    refusing those as stale keeps the replay window whole across a restart, for any
    max_age. Its cost: frames signed in the first max_future after the start are refused
    too; logd announces ready only once that time has passed (app.py `udp_ctx`).
    """
    return started_ns + max_future_ns


def make_engine(
    *,
    impl: Impl | None,
    keys: KeyHolder,
    guard: MacGuard,
    store: Store,
    max_frame: int,
    max_age_ns: int,
    max_future_ns: int,
    not_before_ns: int,
    clock: Callable[[], int],
    writers_capacity: int = CAPACITY,
    shared_guard: SharedReplayGuard | None = None,
) -> Engine:
    """The engine `impl` names; None: C where it can serve this store and guard.
    Frames signed before `not_before_ns` are stale (`restart_floor`). With a
    `shared_guard` (several nodes), the C engine runs it; the Python engine leaves it to
    ingest."""
    limits = {
        "max_frame": max_frame,
        "max_age_ns": max_age_ns,
        "max_future_ns": max_future_ns,
        "not_before_ns": not_before_ns,
    }
    if shared_guard is not None:
        if impl is None:
            impl = "c" if fastpath.can_hold(guard, store) else "python"
        if impl == "c":
            return fastpath.HeldCEngine(
                keys=keys, guard=guard, shared_guard=shared_guard, store=store,
                writers_capacity=writers_capacity, **limits,
            )  # fmt: skip
    elif impl is None:
        impl = "c" if fastpath.can_serve(guard, store) else "python"
    if impl == "c":
        return fastpath.CEngine(
            keys=keys, guard=guard, store=store, writers_capacity=writers_capacity, **limits
        )
    checker = FrameChecker(keys=keys, guard=guard, **limits)
    return PythonEngine(checker, clock, WriterTable(writers_capacity))


class PythonEngine:
    """accept.py for every datagram, read one `recvfrom` at a time."""

    name: Impl = "python"
    checks_across_nodes = False

    def __init__(self, checker: FrameChecker, clock: Callable[[], int], writers: Writers) -> None:
        self._checker = checker
        self._clock = clock
        self.writers = writers  # ingest notes every frame it accepts

    def drain(self, sock: Any, now_ns: int, max_frames: int, max_events: int, sink: Sink) -> bool:
        recv, check, clock = sock.recvfrom, self._checker.check, self._clock
        stats = sink.stats
        events_max = stats.events + max_events
        for _ in range(max_frames):
            if stats.events >= events_max:
                break
            try:
                data, addr = recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:
                sink.recv_failed(err.errno)
                break
            stats.received += 1
            now = clock()
            verdict = check(data, now)
            if isinstance(verdict, Reject):
                sink.reject(verdict)
            else:
                sink.accepted(verdict, addr, now)
        return False  # what it did not read stays in the socket
