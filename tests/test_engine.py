"""The one C seam (engine.py): which engine runs, and what the C extension shares with the
Python specification (constants are exported by the extension and compared here)."""

from __future__ import annotations

import os
import time

import pytest
from ingest_support import S, key_ring
from logd.client import encoder
from logd.events import LEVEL_VALUES, MAX_LEVEL
from logd.server.ingest import accept, drain, engine, fastpath, writers
from logd.server.ingest.replay import ReplayGuard
from logd.server.keys import KeyHolder
from logd.server.store import MemoryStore
from logd.wire import HEADER_LEN, MAC_LEN, SIGNED_LEN, VERSION

PURE = os.environ.get("LOGD_PURE_PYTHON") == "1"
needs_c = pytest.mark.skipif(not engine.available(), reason="the C engine is not built")


def _store() -> MemoryStore:
    return MemoryStore(ring_bytes=1 << 20, ring_sizes={}, max_rings=4, max_tails=1, tail_queue=1)


def _engine(impl: engine.Impl | None, guard: object, store: object) -> engine.Engine:
    return engine.make_engine(
        impl=impl, keys=KeyHolder(key_ring(b"r" * 32, b"w" * 32)), guard=guard,  # type: ignore[arg-type]
        store=store, max_frame=65_507, max_age_ns=S, max_future_ns=S // 4,  # type: ignore[arg-type]
        not_before_ns=0, clock=time.time_ns,
    )  # fmt: skip


def test_the_extension_is_built_unless_asked_not_to() -> None:
    """`make install` builds it; a LOGD_PURE_PYTHON=1 build (make test runs one) has none."""
    assert engine.available() is not PURE
    assert engine.default_impl() == ("python" if PURE else "c")


@needs_c
def test_the_extensions_constants_are_the_protocols() -> None:
    ext = fastpath.extension()
    assert (ext.VERSION, ext.SIGNED_LEN, ext.HEADER_LEN, ext.MAC_LEN) == (
        VERSION, SIGNED_LEN, HEADER_LEN, MAC_LEN,
    )  # fmt: skip
    assert ext.RECV_SIZE == engine.RECV_SIZE
    assert (ext.MIN_T_S, ext.MAX_T_S) == (drain.MIN_T_S, drain.MAX_T_S)
    assert ext.MAX_LVL == MAX_LEVEL == max(LEVEL_VALUES.values())
    assert ext.MAX_NAME == accept.MAX_NAME  # longer names: the C reader defers to Python
    assert encoder.MAX_NAME == accept.MAX_NAME  # the writer checks the same cap
    assert (ext.WINDOW, ext.WRITERS) == (writers.WINDOW, writers.CAPACITY)  # loss accounting
    # The engine counts the checks before the payload, by the names and in the order of
    # accept.py; the payload checks (bad_payload, forbidden) are Python's.
    assert tuple(r.value for r in accept.Reject)[: len(ext.REASONS)] == ext.REASONS
    # It stops at the replay check, with both of its outcomes: a replay, or a full guard.
    assert [accept.Reject(r) for r in ext.REASONS][-2:] == [
        accept.Reject.REPLAY, accept.Reject.OVERLOAD,
    ]  # fmt: skip


@needs_c
def test_the_c_engine_serves_the_memory_store_with_its_table() -> None:
    guard = engine.replay_guard(max_age_ns=S, capacity=10)
    assert isinstance(guard, fastpath.extension().ReplayTable)
    assert _engine(None, guard, _store()).name == "c"


def test_the_python_engine_serves_what_c_cannot() -> None:
    """A ReplayGuard (a pure build's), or a store that does not take runs (Valkey)."""
    python_guard = ReplayGuard(max_age_ns=S, capacity=10)
    assert _engine(None, python_guard, _store()).name == "python"
    guard = engine.replay_guard(max_age_ns=S, capacity=10)
    assert _engine(None, guard, object()).name == "python"
    assert _engine("python", guard, _store()).name == "python"


def test_asking_for_c_without_what_it_needs_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="C engine"):
        _engine("c", ReplayGuard(max_age_ns=S, capacity=10), _store())
