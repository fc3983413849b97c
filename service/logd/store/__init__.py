"""Where events live: the Store interface and its backends."""

from logd.store.base import RingStats, Store, StoreStats
from logd.store.memory import MemoryStore

__all__ = ["MemoryStore", "RingStats", "Store", "StoreStats"]
