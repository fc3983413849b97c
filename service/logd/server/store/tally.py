"""Counts over time for GET /hits: events per time bucket, and per group within it.

Pure (the clock is an argument). A store's scan feeds `Tally.add` with each matching
event's time and group, or with many events of one bucket at once (a chunk whose events
all fall in one bucket is counted from its level array, without parsing). Memory is
bounded whatever the store holds: at most MAX_BUCKETS buckets, each with counts for at
most TRACKED_GROUPS groups and "other".

Buckets start at whole multiples of the step since the epoch, so a bucket of a finer step
of the ladder lies inside exactly one bucket of every coarser step: with no `step` asked
for, the tally starts fine and coarsens (merging buckets exactly) whenever the events it
has seen need more than DEFAULT_BUCKETS.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from logd._pb.logd_pb2 import Msg
from logd.events import LEVEL_NAMES
from logd.server.filters import Filter

S = 1_000_000_000
LADDER_S = (1, 10, 60, 300, 900, 3600, 86400)  # the default steps; past a day: doubling
DEFAULT_BUCKETS = 300
MAX_BUCKETS = 10_000  # a step asking for more is refused
MAX_STEP_S = 3650 * 86400  # ten years
TOP_GROUPS = 10  # shown per answer; the rest are "other"
TRACKED_GROUPS = 64  # counted at once, at most: past this, the lightest go to "other"
CELL_BUDGET = 200_000  # bucket x group counts held at once (a few MB at worst)
OTHER = "other"
NONE = "-"  # the group of an event with an empty field, no level, or no such attribute
BY_FIELDS = ("lvl", "env", "svc", "fn", "host")  # and attr.KEY
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class TooManyBuckets(ValueError):
    """The events found span more than MAX_BUCKETS buckets of the asked step."""


@dataclass(frozen=True, slots=True)
class Grouping:
    """What `by` groups on: an event field, or an attribute (`field` "attrs")."""

    field: str
    key: str = ""

    @classmethod
    def parse(cls, by: str) -> Grouping | None:
        """`lvl`, `env`, `svc`, `fn`, `host` or `attr.KEY` (KEY checked by the caller); else
        None."""
        if by in BY_FIELDS:
            return cls(by)
        if by.startswith("attr."):
            return cls("attrs", by[len("attr.") :])
        return None

    def of_ring(self, env: str | None, svc: str | None) -> str | None:
        """The group every event of a ring keyed (env, svc) is in, when the key says it."""
        if self.field == "env" and env is not None:
            return env or NONE
        if self.field == "svc" and svc is not None:
            return svc or NONE
        return None

    def of_msg(self, msg: Msg) -> str:
        if self.field == "lvl":
            return LEVEL_NAMES.get(msg.lvl, NONE)
        if self.field == "attrs":
            return msg.attrs.get(self.key, NONE) or NONE
        value: str = getattr(msg, self.field)
        return value or NONE


def level_name(lvl: int) -> str:
    return LEVEL_NAMES.get(lvl, NONE)


def default_step_s(lo_ns: int, hi_ns: int, buckets: int = DEFAULT_BUCKETS) -> int:
    """The smallest step of the ladder (then doubling days) that gives at most `buckets`
    buckets from the one holding `lo_ns` to the one holding `hi_ns`."""
    step = LADDER_S[0]
    while hi_ns // (step * S) - lo_ns // (step * S) + 1 > buckets:
        step = coarser(step)
    return step


def coarser(step_s: int) -> int:
    for s in LADDER_S:
        if s > step_s:
            return s
    return step_s * 2


class Tally:
    """Counts per bucket (and per group when `grouping`), from `since_ns` (or the oldest
    event seen) to `until_ns` (or the newer of `now_ns` and the newest event seen).

    Group counts are exact while the events hold at most `tracked` groups; past that the
    lightest group's counts go to "other" and the newcomer takes its place with its weight
    (Space-Saving): the groups shown are the heaviest found, a late one's counts may be low,
    and each bucket's counts still add up to its total."""

    def __init__(
        self,
        *,
        step_s: int | None,
        since_ns: int | None,
        until_ns: int | None,
        now_ns: int,
        grouping: Grouping | None,
        max_buckets: int = MAX_BUCKETS,
        tracked: int | None = None,
    ) -> None:
        self.grouping = grouping
        self.fixed = step_s is not None
        self._max = max_buckets if self.fixed else min(max_buckets, DEFAULT_BUCKETS)
        hi = until_ns if until_ns is not None else max(now_ns, since_ns or now_ns)
        lo = since_ns if since_ns is not None else hi
        if step_s is None:
            step_s = default_step_s(lo, hi) if since_ns is not None else LADDER_S[0]
        self.step_ns = step_s * S
        self.first, self.last = lo // self.step_ns, hi // self.step_ns
        if self.last - self.first + 1 > self._max and lo <= hi:
            raise TooManyBuckets(self._too_many())
        self._most = tracked or TRACKED_GROUPS
        self.tracked = self._most
        self.totals: dict[int, int] = {}
        self.groups: dict[str, dict[int, int]] = {}
        self.weights: dict[str, int] = {}
        self.other: dict[int, int] = {}
        self._fit()

    def _fit(self) -> None:
        """Groups counted at once: as many as CELL_BUDGET allows over the buckets so far,
        from TOP_GROUPS + 1 to TRACKED_GROUPS; the lightest go to "other" as it shrinks."""
        fits = CELL_BUDGET // max(1, self.last - self.first + 1)
        self.tracked = max(TOP_GROUPS + 1, min(self._most, fits))
        while len(self.groups) > self.tracked:
            self._evict_lightest()

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    def bucket(self, t_ns: int) -> int:
        return t_ns // self.step_ns

    def add(self, t_ns: int, group: str | None, n: int = 1) -> None:
        """Count `n` events in the bucket of `t_ns`, in `group` (None: no grouping)."""
        idx = t_ns // self.step_ns
        if idx < self.first or idx > self.last:
            idx = self._widen(t_ns)
        totals = self.totals
        totals[idx] = totals.get(idx, 0) + n
        if group is None:
            return
        cells = self.groups.get(group)
        if cells is None:
            if group == OTHER:  # a group named "other" is counted with the rest
                self.other[idx] = self.other.get(idx, 0) + n
                return
            cells = self._admit(group)
        cells[idx] = cells.get(idx, 0) + n
        self.weights[group] += n

    def add_event(self, flt: Filter, t_ns: int, data: bytes, ring_group: str | None) -> None:
        """Count a stored event (level and time already checked) if `flt` matches it, in
        `ring_group` when its ring's key gives the group, else in the event's own."""
        if flt.needs_message and not flt.prefilter(data):
            return
        msg = Msg.FromString(data)
        if not flt.matches(msg):
            return
        grouping = self.grouping
        if grouping is None:
            self.add(t_ns, None)
        else:
            self.add(t_ns, ring_group if ring_group is not None else grouping.of_msg(msg))

    def _admit(self, group: str) -> dict[int, int]:
        """A table entry for a new group; when TRACKED_GROUPS are held, the lightest one's
        counts go to "other" and the newcomer starts from its weight (Space-Saving), so a
        heavy group that arrives late still rises to the top."""
        weight = self._evict_lightest() if len(self.groups) >= self.tracked else 0
        cells: dict[int, int] = {}
        self.groups[group] = cells
        self.weights[group] = weight
        return cells

    def _evict_lightest(self) -> int:
        lightest = min(self.weights, key=self.weights.__getitem__)
        other = self.other
        for idx, n in self.groups.pop(lightest).items():
            other[idx] = other.get(idx, 0) + n
        return self.weights.pop(lightest)

    def _widen(self, t_ns: int) -> int:
        """Take in an event outside the buckets so far; coarsen when there is no step."""
        idx = t_ns // self.step_ns
        first, last = min(self.first, idx), max(self.last, idx)
        while last - first + 1 > self._max:
            if self.fixed:
                raise TooManyBuckets(self._too_many())
            self._coarsen()
            idx = t_ns // self.step_ns
            first, last = min(self.first, idx), max(self.last, idx)
        self.first, self.last = first, last
        self._fit()
        return idx

    def _coarsen(self) -> None:
        old = self.step_ns
        new = self.step_ns = coarser(old // S) * S

        # The ladder nests (each step a multiple of the one before): the old bucket idx
        # lies inside the new bucket idx * old // new.
        def merged(cells: dict[int, int]) -> dict[int, int]:
            out: dict[int, int] = {}
            for idx, n in cells.items():
                at = idx * old // new
                out[at] = out.get(at, 0) + n
            return out

        self.totals = merged(self.totals)
        self.other = merged(self.other)
        self.groups = {g: merged(cells) for g, cells in self.groups.items()}
        self.first, self.last = self.first * old // new, self.last * old // new

    def _too_many(self) -> str:
        return (
            f"a step that gives at most {MAX_BUCKETS} buckets over the time asked "
            f"(this one gives {self.last - self.first + 1} or more)"
        )

    def result(self) -> dict[str, Any]:
        """The body of GET /hits: oldest bucket first, `t` its start."""
        top = sorted(self.groups, key=lambda g: (-self.weights[g], g))[:TOP_GROUPS]
        step = self.step_ns
        buckets = []
        for idx in range(self.first, self.last + 1):
            total = self.totals.get(idx, 0)
            bucket: dict[str, Any] = {"t": format_second(idx * step // S), "total": total}
            if self.grouping is not None:
                by = {g: self.groups[g][idx] for g in top if self.groups[g].get(idx)}
                rest = total - sum(by.values())
                if rest:
                    by[OTHER] = rest
                bucket["by"] = by
            buckets.append(bucket)
        return {"step_s": step // S, "total": self.total, "buckets": buckets}


def format_second(seconds: int) -> str:
    return (_EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
