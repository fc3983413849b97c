# The C engine (_fastpath.c beside this file); fastpath.py is its Python side.
from typing import Any

ITEM_RUN: int
ITEM_FRAME: int
MAX_EVENTS: int
VERSION: int
SIGNED_LEN: int
HEADER_LEN: int
MAC_LEN: int
RECV_SIZE: int
MAX_NAME: int
MIN_T_S: int
MAX_T_S: int
REASONS: tuple[str, ...]

class ReplayTable:
    capacity: int
    overflows: int
    def __init__(self, *, max_age_ns: int, capacity: int) -> None: ...
    def __len__(self) -> int: ...
    def check_and_remember(self, mac: bytes, signed_at_ns: int, now_ns: int) -> bool | None: ...
    def expire(self, now_ns: int) -> None: ...

# (ITEM_RUN, env, svc, data, ends, times, lvls, t_min, t_max): events for one ring, their
# bytes back to back, end offsets (uint32), times (int64) and levels (uint8), native order.
# (ITEM_FRAME, frame, addr, key slot, signed_at_ns): checked up to the payload; Python acts.
# held: a run ends with its events' frames (uint32 indexes into the checks), a frame with
# its index there; each check is (mac, signed_at_ns, key slot, events or -1 for a frame
# left to Python, sender or None, seq, first event's host or None, its svc or None).
Item = tuple[Any, ...]

class Engine:
    def __init__(
        self,
        guard: ReplayTable,
        *,
        max_frame: int,
        max_age_ns: int,
        max_future_ns: int,
        not_before_ns: int = ...,
        writers: Any = None,
        held: bool = False,
        run_events: int = 0,
        run_bytes: int = 0,
    ) -> None: ...
    def set_keys(self, keys: list[tuple[bytes, bytes, bytes, bool]]) -> None: ...
    # free_rings: rings the store may still open; rings: its (env, svc) -> ring dict, only
    # looked up. Runs are gathered per ring while none of them could overflow; 0: arrival
    # order, one run per stretch of same-ring events.
    def drain(
        self,
        fd: int,
        now_ns: int,
        max_frames: int,
        max_events: int,
        free_rings: int = 0,
        rings: dict[tuple[str, str], Any] | None = None,
    ) -> tuple[list[Item], int] | tuple[list[Item], list[tuple[Any, ...]], int]: ...
    def take_counts(self) -> tuple[int, tuple[int, ...], int, int, tuple[int, ...]]: ...
