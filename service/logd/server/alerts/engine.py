"""Alert evaluation as events arrive: constant work per event per rule that can match.

Rules are selected once per (env, svc): a rule whose filter cannot match that ring costs
nothing for its events. For the rest, a rule that only names the ring (and a level)
counts a run of events from the C engine without parsing them (bytes.count on the run's
level bytes); the others find the events that may match with the C search a ring scan
uses (store/search.py) and parse only those, each once per run whatever the rules.
Counts go into a window of at most WINDOW_BUCKETS buckets per rule (each over/60, at
least a second, of arrival time), so a window's count costs no scan. Samples for a notice
are taken only when one may come. One periodic check a second (`tick`) rolls the
windows, fires absent rules and resolves threshold rules.

State machine per rule: ok -> firing when the condition holds and the cooldown since it
last fired has passed (a notice); firing -> ok when it no longer holds (a "resolved"
notice). A condition that holds during the cooldown fires once the cooldown is over.
"""

from __future__ import annotations

import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from logd._pb.logd_pb2 import Msg
from logd.server.alerts.notice import MAX_SAMPLES, SAMPLE_TEXT, Notice, build, query_line, rfc3339
from logd.server.alerts.rules import AlertConfig, Rule, S
from logd.server.filters import LOWERS_TO_ASCII, Filter
from logd.server.store.search import containing

WINDOW_BUCKETS = 60
SAMPLE_MAX_BYTES = 4096  # a larger sample event is kept cut (bounds samples per rule)
# (env, svc) pairs whose rule selection is cached; client input, so bounded: past it the
# cache starts over (events then pay a selection again, never more memory).
RING_CACHE_MAX = 4096
_ALL, _LEVEL, _MESSAGE = 0, 1, 2  # what matching needs in a ring: nothing, the level, the event


class Window:
    """Counts over the last `over_s`, in buckets of `width` seconds of arrival time."""

    __slots__ = ("_buckets", "_head", "total", "width")

    def __init__(self, over_s: int, now_s: int) -> None:
        self.width = max(1, -(-over_s // WINDOW_BUCKETS))
        self._buckets = [0] * -(-over_s // self.width)
        self._head = now_s // self.width  # the newest bucket's number
        self.total = 0

    @property
    def span_s(self) -> int:
        """Seconds the buckets cover: `over`, rounded up to a whole bucket."""
        return self.width * len(self._buckets)

    def roll(self, now_s: int) -> None:
        """Forget the buckets older than the window."""
        head = now_s // self.width
        if head <= self._head:
            return
        buckets, n = self._buckets, len(self._buckets)
        if head - self._head >= n:
            buckets[:] = [0] * n
            self.total = 0
        else:
            for i in range(self._head + 1, head + 1):
                self.total -= buckets[i % n]
                buckets[i % n] = 0
        self._head = head

    def add(self, now_s: int, count: int) -> None:
        if now_s // self.width != self._head:  # most adds land in the newest bucket
            self.roll(now_s)
        buckets = self._buckets
        buckets[self._head % len(buckets)] += count
        self.total += count


class RuleState:
    __slots__ = (
        "armed_s",
        "fired",
        "firing",
        "last_fired_s",
        "last_resolved_s",
        "rule",
        "samples",
        "window",
    )

    def __init__(self, rule: Rule, now_s: int) -> None:
        self.rule = rule
        self.window = Window(rule.over_s, now_s)
        self.samples: deque[tuple[int, Msg | bytes]] = deque(maxlen=MAX_SAMPLES)
        self.armed_s = now_s  # an absent rule waits a whole window before it can fire
        self.firing = False
        self.fired = 0
        self.last_fired_s: int | None = None
        self.last_resolved_s: int | None = None

    def holds(self, now_s: int) -> bool:
        threshold = self.rule.threshold
        if threshold is not None:
            return self.window.total >= threshold
        return self.window.total == 0 and now_s - self.armed_s >= self.rule.over_s

    def may_fire(self, now_s: int) -> bool:
        return self.last_fired_s is None or now_s - self.last_fired_s >= self.rule.cooldown_s


Selected = tuple[tuple[RuleState, Filter, int], ...]


class AlertEngine:
    """Rules, their windows and states; notices go to `send`, which must not block."""

    def __init__(
        self,
        config: AlertConfig,
        send: Callable[[Notice], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._send = send
        self._clock = clock
        self._states: dict[str, RuleState] = {}
        self._by_ring: dict[tuple[str, str], Selected] = {}
        self.load(config)

    @property
    def rules(self) -> int:
        return len(self._states)

    @property
    def firing(self) -> int:
        return sum(state.firing for state in self._states.values())

    def load(self, config: AlertConfig) -> None:
        """Take new rules: a rule that did not change keeps its window and state."""
        now_s = int(self._clock())
        old = self._states
        self._states = {
            r.name: old[r.name] if r.name in old and old[r.name].rule == r else RuleState(r, now_s)
            for r in config.rules
        }
        self._by_ring = {}

    # --- ingest: every accepted event ----------------------------------------------------

    def _select(self, env: str, svc: str) -> Selected:
        chosen = []
        for state in self._states.values():
            flt = state.rule.flt.for_ring(env, svc)
            if flt is not None:
                mode = _MESSAGE if flt.terms else _LEVEL if flt.lvl else _ALL
                chosen.append((state, flt, mode))
        if len(self._by_ring) >= RING_CACHE_MAX:
            self._by_ring.clear()
        selected = self._by_ring[env, svc] = tuple(chosen)
        return selected

    def event(self, msg: Msg, now_ns: int) -> None:
        """One event the Python engine stored."""
        if not self._states:
            return
        selected = self._by_ring.get((msg.env, msg.svc))
        if selected is None:
            selected = self._select(msg.env, msg.svc)
        for state, flt, mode in selected:
            if mode == _ALL or (msg.lvl >= flt.lvl and (mode == _LEVEL or flt.matches(msg))):
                self._hit(state, now_ns // S, 1, _kept_one, msg)

    def run(self, env: str, svc: str, data: bytes, ends: bytes, lvls: bytes) -> None:
        """Events for one ring that the C engine stored: their bytes, end offsets (uint32,
        native order) and levels, as store.write_run takes them."""
        if not self._states:
            return
        selected = self._by_ring.get((env, svc))
        if selected is None:
            selected = self._select(env, svc)
        if not selected:
            return
        now_s = int(self._clock())
        run = _Run(data, ends, lvls)
        events = len(run.at)
        for state, flt, mode in selected:
            if mode == _ALL:
                self._hit(state, now_s, events, _newest, run)
            elif mode == _LEVEL:
                count = sum(run.histogram[flt.lvl :])
                if count:
                    self._hit(state, now_s, count, _newest_at_level, run, flt.lvl)
            else:
                hits = run.matching(flt)
                if hits:
                    self._hit(state, now_s, len(hits), _parsed_at, run, hits)

    def _hit(
        self,
        state: RuleState,
        now_s: int,
        count: int,
        sampler: Callable[..., Iterable[Msg | bytes]],
        *args: Any,
    ) -> None:
        """Count `count` matches; samples (`sampler(*args)`) only for a notice that may
        come: the last matches before a threshold rule fires, the event that resolves an
        absent rule. A rule far from its threshold costs no sampling."""
        threshold = state.rule.threshold
        if threshold is None:
            wanted = state.firing
        else:  # the window is not rolled yet: its total is at least what it will be
            wanted = not state.firing and state.window.total + count >= threshold - MAX_SAMPLES
        state.window.add(now_s, count)
        if wanted:
            for sample in sampler(*args):
                state.samples.append((now_s, sample))
        if threshold is not None:
            if not state.firing and state.window.total >= threshold:
                self._evaluate(state, now_s)
        elif state.firing:
            self._evaluate(state, now_s)

    # --- the periodic check ---------------------------------------------------------------

    def tick(self) -> None:
        """Roll every window to now; fire or resolve what the time alone changed."""
        now_s = int(self._clock())
        for state in self._states.values():
            state.window.roll(now_s)
            self._evaluate(state, now_s)

    def _evaluate(self, state: RuleState, now_s: int) -> None:
        holds = state.holds(now_s)
        if holds and not state.firing and state.may_fire(now_s):
            state.firing = True
            state.fired += 1
            state.last_fired_s = now_s
            self._notify(state, "firing", now_s)
        elif not holds and state.firing:
            state.firing = False
            state.last_resolved_s = now_s
            self._notify(state, "resolved", now_s)

    def _notify(self, state: RuleState, what: str, now_s: int) -> None:
        if not state.rule.notify:
            return
        since = now_s - state.window.span_s
        # Samples show what fired a threshold rule, and what resolved an absent one.
        shown = (what == "firing") == (state.rule.threshold is not None)
        samples = [_message(s) for at, s in state.samples if at > since] if shown else []
        self._send(build(state.rule, what, state.window.total, now_s, samples))

    # --- GET /alerts ------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        now_s = int(self._clock())
        out = []
        for state in self._states.values():
            rule = state.rule
            state.window.roll(now_s)
            params: dict[str, list[str]] = {}
            for name, value in rule.params:
                params.setdefault(name, []).append(value)
            out.append(
                {
                    "name": rule.name,
                    "filter": params,
                    "over_s": rule.over_s,
                    "threshold": rule.threshold,
                    "absent": rule.absent,
                    "cooldown_s": rule.cooldown_s,
                    "notify": list(rule.notify),
                    "state": "firing" if state.firing else "ok",
                    "count": state.window.total,
                    "fired": state.fired,
                    "last_fired": _when(state.last_fired_s),
                    "last_resolved": _when(state.last_resolved_s),
                    "query": query_line(rule),
                }
            )
        return out


def _when(at_s: int | None) -> str | None:
    return None if at_s is None else rfc3339(at_s)


class _Run:
    """One run of the C engine's events, seen by every rule of its ring: what several rules
    need (the level histogram, the events parsed) is made once, when the first needs it."""

    __slots__ = ("_histogram", "_odd", "_parsed", "at", "data", "lvls")

    def __init__(self, data: bytes, ends: bytes, lvls: bytes) -> None:
        self.data = data
        self.at = array("I")
        self.at.frombytes(ends)
        self.lvls = lvls
        self._histogram: list[int] | None = None
        self._odd: list[int] | None = None
        self._parsed: dict[int, Msg] = {}

    @property
    def histogram(self) -> list[int]:
        """Events per level 0..6 (C-speed counts)."""
        if self._histogram is None:
            self._histogram = [self.lvls.count(v) for v in _LEVEL_BYTES]
        return self._histogram

    def record(self, i: int) -> bytes:
        return self.data[self.at[i - 1] if i else 0 : self.at[i]]

    def candidates(self, flt: Filter) -> Iterable[int]:
        """The events that may match, found as store/ring.py finds them in a chunk: the
        C-speed search (store/search.py) of the strings one of which a match must hold,
        else of its text, case-insensitively, plus the events holding a character that
        lowers to ASCII (filters.LOWERS_TO_ASCII), which that search cannot decide."""
        if flt.search:
            found = {
                i
                for needle in flt.search
                for i in containing(
                    self.data, self.at, needle, folded=False, whole=needle in flt.whole
                )
            }
        elif flt.text_search:
            found = {
                i
                for needle in flt.text_search
                for i in containing(self.data, self.at, needle, folded=True, whole=False)
            }
            found.update(self._lowering_inexact())
        else:
            return range(len(self.at))
        return sorted(found)

    def _lowering_inexact(self) -> list[int]:
        if self._odd is None:
            self._odd = []
            if not self.data.isascii():  # most logs: one fast pass
                for char in LOWERS_TO_ASCII:
                    self._odd += containing(self.data, self.at, char, folded=False, whole=False)
        return self._odd

    def matching(self, flt: Filter) -> list[int]:
        """The indexes of the events that match, each parsed at most once per run."""
        lvls, parsed, lvl = self.lvls, self._parsed, flt.lvl
        hits = []
        for i in self.candidates(flt):
            if lvls[i] < lvl:
                continue
            msg = parsed.get(i)
            if msg is None:
                record = self.record(i)
                if not flt.prefilter(record):
                    continue
                msg = parsed[i] = Msg.FromString(record)
            if flt.matches(msg):
                hits.append(i)
        return hits

    def parsed(self, i: int) -> Msg:
        return self._parsed[i]


_LEVEL_BYTES = [bytes((v,)) for v in range(7)]


def _kept_one(msg: Msg) -> tuple[Msg | bytes]:
    return (_kept(msg),)


def _newest(run: _Run) -> list[Msg | bytes]:
    n = len(run.at)
    return [_sample(run.record(i)) for i in range(max(0, n - MAX_SAMPLES), n)]


def _newest_at_level(run: _Run, lvl: int) -> list[Msg | bytes]:
    """The run's newest MAX_SAMPLES events at `lvl` or above, oldest first (rfind)."""
    found: list[Msg | bytes] = []
    end = len(run.lvls)
    levels = _LEVEL_BYTES[lvl:]
    while len(found) < MAX_SAMPLES:
        i = max(run.lvls.rfind(v, 0, end) for v in levels)
        if i < 0:
            break
        found.append(_sample(run.record(i)))
        end = i
    found.reverse()
    return found


def _parsed_at(run: _Run, hits: list[int]) -> list[Msg | bytes]:
    return [_kept(run.parsed(i)) for i in hits[-MAX_SAMPLES:]]


def _sample(record: bytes) -> Msg | bytes:
    return record if len(record) <= SAMPLE_MAX_BYTES else _kept(Msg.FromString(record))


def _kept(msg: Msg) -> Msg | bytes:
    """A sample as held until a notice: the event's bytes (not the message, which keeps its
    whole frame alive), or a cut copy of a large one."""
    if msg.ByteSize() <= SAMPLE_MAX_BYTES:
        return msg.SerializeToString()
    cut = Msg(env=msg.env[:256], svc=msg.svc[:256], fn=msg.fn[:256], lvl=msg.lvl)
    cut.t.CopyFrom(msg.t)
    cut.txt = msg.txt[: SAMPLE_TEXT + 1]
    return cut


def _message(sample: Msg | bytes) -> Msg:
    return sample if isinstance(sample, Msg) else Msg.FromString(sample)
