"""Alert evaluation as events arrive: constant work per event per rule that can match.

Rules are selected once per (env, svc): a rule whose filter cannot match that ring costs
nothing for its events. For the rest, a rule that only names the ring (and a level)
counts a run of events from the C engine without parsing them (bytes.count on the run's
level bytes); others parse each event once, shared by the ring's rules. Counts go into a
window of at most WINDOW_BUCKETS buckets per rule (each over/60, at least a second, of
arrival time), so a window's count costs no scan. One periodic check a second (`tick`)
rolls the windows, fires absent rules and resolves threshold rules.

State machine per rule: ok -> firing when the condition holds and the cooldown since it
last fired has passed (a notice); firing -> ok when it no longer holds (a "resolved"
notice). A condition that holds during the cooldown fires once the cooldown is over.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from logd._pb.logd_pb2 import Msg
from logd.server.alerts.notice import MAX_SAMPLES, SAMPLE_TEXT, Notice, build, query_line, rfc3339
from logd.server.alerts.rules import AlertConfig, Rule, S
from logd.server.filters import Filter

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
        self.roll(now_s)
        self._buckets[self._head % len(self._buckets)] += count
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
                self._hit(state, now_ns // S, 1, (_kept(msg),))

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
        at = memoryview(ends).cast("I")
        records: list[bytes] | None = None  # sliced and parsed once, shared by the rules
        parsed: dict[int, Msg] = {}
        for state, flt, mode in selected:
            if mode == _ALL:
                n = len(at)
                self._hit(state, now_s, n, (_record(data, at, i) for i in range(max(0, n - 5), n)))
            elif mode == _LEVEL:
                count = sum(lvls.count(v) for v in _levels_from(flt.lvl))
                if count:
                    self._hit(state, now_s, count, _last_at_level(data, at, lvls, flt.lvl))
            else:
                if records is None:
                    records = [_slice(data, at, i) for i in range(len(at))]
                hits = [
                    i
                    for i, record in enumerate(records)
                    if lvls[i] >= flt.lvl
                    and flt.prefilter(record)
                    and flt.matches(_parsed(parsed, records, i))
                ]
                if hits:
                    self._hit(state, now_s, len(hits), (parsed[i] for i in hits[-MAX_SAMPLES:]))

    def _hit(
        self, state: RuleState, now_s: int, count: int, samples: Iterable[Msg | bytes]
    ) -> None:
        state.window.add(now_s, count)
        for sample in samples:
            state.samples.append((now_s, sample))
        if state.rule.threshold is not None:
            if not state.firing and state.window.total >= state.rule.threshold:
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
        samples = [_message(s) for at, s in state.samples if at > since]
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


def _levels_from(lvl: int) -> list[bytes]:
    return [bytes((v,)) for v in range(lvl, 7)]


def _slice(data: bytes, at: memoryview, i: int) -> bytes:
    return data[at[i - 1] if i else 0 : at[i]]


def _record(data: bytes, at: memoryview, i: int) -> Msg | bytes:
    record = _slice(data, at, i)
    return record if len(record) <= SAMPLE_MAX_BYTES else _kept(Msg.FromString(record))


def _parsed(cache: dict[int, Msg], records: list[bytes], i: int) -> Msg:
    msg = cache.get(i)
    if msg is None:
        msg = cache[i] = Msg.FromString(records[i])
    return msg


def _last_at_level(data: bytes, at: memoryview, lvls: bytes, lvl: int) -> list[Msg | bytes]:
    """The run's last MAX_SAMPLES events at `lvl` or above, oldest first (C-speed rfind)."""
    found: list[Msg | bytes] = []
    end = len(lvls)
    levels = _levels_from(lvl)
    while len(found) < MAX_SAMPLES:
        i = max(lvls.rfind(v, 0, end) for v in levels)
        if i < 0:
            break
        found.append(_record(data, at, i))
        end = i
    found.reverse()
    return found


def _kept(msg: Msg) -> Msg | bytes:
    """A sample as held until a notice: the event, or a cut copy of a large one."""
    if msg.ByteSize() <= SAMPLE_MAX_BYTES:
        return msg
    cut = Msg(env=msg.env[:256], svc=msg.svc[:256], fn=msg.fn[:256], lvl=msg.lvl)
    cut.t.CopyFrom(msg.t)
    cut.txt = msg.txt[: SAMPLE_TEXT + 1]
    return cut


def _message(sample: Msg | bytes) -> Msg:
    return sample if isinstance(sample, Msg) else Msg.FromString(sample)
