"""One memory budget for the whole server (LOGD_MEMORY_LIMIT): what each part may hold.

Every buffer of the server has a bound in bytes, and their sum must fit the limit:

- rings: every ring's capacity, in the worst case (every ring slot used, each at
  the largest size a key could get), plus the overflow ring, and RING_SLACK for what
  a ring holds beyond the bytes it counts (the arrays' and the open chunk's spare room);
- tails: each subscriber's queue (LOGD_TAIL_BUFFER_BYTES) twice (the queue kept while
  its history is sent, moved whole into its connection's buffer, which then takes new
  events only up to the same bound), plus its socket's send buffer (TAIL_SNDBUF),
  times LOGD_MAX_TAILS;
- queries: each answer (LOGD_QUERY_MAX_BYTES) held twice (the events found, and
  the rendered part being written) times LOGD_MAX_QUERIES;
- the replay guard: its capacity times what an entry may cost;
- a fixed part: the interpreter, libraries, connections (measured idle: ~50 MiB).

A configuration that cannot fit is refused at start-up with the numbers. When
LOGD_RING_BYTES is not set, the default ring size is derived so that it fits.
Pure: the machine's memory is an argument.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from logd.errors import ConfigError
from logd.server.config import Config
from logd.server.store.base import RingBudgets
from logd.server.store.memory import OVERFLOW_KEY

MiB = 1024 * 1024
SHARE = 0.70  # of the machine's (or cgroup's) memory, when LOGD_MEMORY_LIMIT is not set
FIXED_BYTES = 96 * MiB
RING_DEFAULT_MAX = 64 * MiB
RING_MIN = 256 * 1024  # the smallest derived default (a chunk is 1/16 of a ring)
# Worst case per remembered MAC: the C table's open-addressing slots at low load; the
# Python guard's dict entry, key and expiry.
REPLAY_ENTRY_BYTES = {"c": 100, "python": 200}
RING_SLACK = 1.10  # measured: full rings took 8% more than they count
TAIL_SNDBUF = 256 * 1024  # the kernel's send buffer of a tail connection (the handler sets it)


@dataclass(frozen=True, slots=True)
class Budget:
    limit: int
    source: str  # where the limit came from
    ring_bytes: int  # the default capacity of a ring (given, or derived to fit)
    rings: int
    tails: int
    queries: int
    replay_guard: int
    replay_entry_bytes: int
    fixed: int

    def parts(self) -> dict[str, int]:
        return {
            "rings": self.rings,
            "tails": self.tails,
            "queries": self.queries,
            "replay_guard": self.replay_guard,
            "fixed": self.fixed,
        }


def machine_memory(
    cgroup: Path = Path("/sys/fs/cgroup"),
    meminfo: Path = Path("/proc/meminfo"),
    self_cgroup: Path = Path("/proc/self/cgroup"),
) -> tuple[int, str]:
    """The memory this process may have: the tightest limit of its cgroup and the cgroups
    above it (v2 `memory.max`, v1 `memory.limit_in_bytes`), else the machine's MemTotal."""
    limits = []
    for path in _cgroup_limit_files(cgroup, self_cgroup):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 says "no limit" with a huge number
            limits.append((int(text), f"cgroup {path}"))
    if limits:
        return min(limits)
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024, "MemTotal"
    raise ConfigError("cannot tell this machine's memory; set LOGD_MEMORY_LIMIT")


def _cgroup_limit_files(cgroup: Path, self_cgroup: Path) -> list[Path]:
    """The limit files of this process's memory cgroup and of each cgroup above it."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    files = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one hierarchy
            base, name = cgroup, "memory.max"
        elif "memory" in controllers.split(","):
            base, name = cgroup / "memory", "memory.limit_in_bytes"
        else:
            continue
        here = base / path.strip("/")
        while True:
            files.append(here / name)
            if here == base:
                break
            here = here.parent
    return files


def _rings_worst_case(config: Config, default: int) -> int:
    """Every ring slot used, each at the largest capacity a key could be given."""
    sizes = RingBudgets(default, config.rings)
    exact = {k: v for k, v in config.rings.items() if not k.endswith("*")}
    prefixes = [v for k, v in config.rings.items() if k.endswith("*")]
    named = [v for k, v in exact.items() if k != OVERFLOW_KEY][: config.max_rings]
    largest = max([default, *prefixes])
    counted = sum(named) + (config.max_rings - len(named)) * largest + sizes(OVERFLOW_KEY)
    return int(counted * RING_SLACK)


def plan(config: Config, *, engine: str, memory: tuple[int, str] | None = None) -> Budget:
    """The budget for `config` with the given replay engine ("c" or "python")."""
    if config.memory_limit is not None:
        limit, source = config.memory_limit, "LOGD_MEMORY_LIMIT"
    else:
        total, where = memory if memory is not None else machine_memory()
        limit, source = int(total * SHARE), f"{SHARE:.0%} of {where}"
    tails = config.max_tails * (2 * config.tail_buffer_bytes + TAIL_SNDBUF)
    queries = config.max_queries * 2 * config.query_max_bytes
    replay = config.replay_capacity * REPLAY_ENTRY_BYTES[engine]
    fixed = FIXED_BYTES
    rest = limit - tails - queries - replay - fixed
    ring_bytes = config.ring_bytes
    if ring_bytes is None:
        # The largest default, up to RING_DEFAULT_MAX, whose worst case fits what is left.
        lo, hi = RING_MIN, RING_DEFAULT_MAX
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _rings_worst_case(config, mid) <= rest:
                lo = mid
            else:
                hi = mid - 1
        ring_bytes = lo
    rings = _rings_worst_case(config, ring_bytes)
    if config.store_url != "memory://":
        rings = 0  # the rings live in Valkey/Redis; the local buffer is bounded by events
    needed = rings + tails + queries + replay + fixed
    if needed > limit:
        raise ConfigError(
            f"the configuration needs {_mib(needed)} but the memory limit is {_mib(limit)} "
            f"({source}): rings {_mib(rings)} ({config.max_rings} + 1 of up to "
            f"{_mib(max(ring_bytes, *[v for v in config.rings.values()] or [0]))}), "
            f"tails {_mib(tails)}, queries {_mib(queries)}, replay guard {_mib(replay)}, "
            f"fixed {_mib(fixed)}; lower LOGD_MAX_RINGS, LOGD_RING_BYTES, LOGD_MAX_TAILS or "
            "LOGD_QUERY_MAX_BYTES, or raise LOGD_MEMORY_LIMIT"
        )
    return Budget(
        limit=limit,
        source=source,
        ring_bytes=ring_bytes,
        rings=rings,
        tails=tails,
        queries=queries,
        replay_guard=replay,
        replay_entry_bytes=REPLAY_ENTRY_BYTES[engine],
        fixed=fixed,
    )


def _mib(n: int) -> str:
    return f"{n / MiB:.0f}MiB" if n >= 10 * MiB else f"{n / MiB:.1f}MiB"


def rss_bytes(statm: Path = Path("/proc/self/statm")) -> int | None:
    """This process's resident memory, or None where /proc does not tell."""
    try:
        return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
