"""Where events live: the Store interface and its backends."""

from logd.server.store.base import RingStats, Store, StoreStats
from logd.server.store.memory import MemoryStore

__all__ = ["MemoryStore", "RingStats", "Store", "StoreStats"]
