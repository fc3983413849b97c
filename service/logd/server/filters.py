"""Event filters of HTTP_API.md: parsed from query parameters, matched against events.

Pure (the clock is an argument). Matching has two steps so that a scan over a
million stored events stays cheap: `prefilter(data)` rejects most events on
their serialised bytes without parsing them (never wrongly), then
`matches(msg)` decides exactly on the parsed message.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from logd._pb.logd_pb2 import Msg
from logd.events import LEVEL_VALUES, METHOD_VALUES

# ASCII digits only: \d and str.isdigit() also take other scripts' digits and "²".
_DURATION = re.compile(r"(\d+)(?:\.(\d+))?(ms|s|m|h|d)", re.ASCII)
_FRACTION = re.compile(r"(?<=:\d\d)\.(\d+)", re.ASCII)
_UNIT_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}
MAX_DIGITS = 20  # in a number parameter: far below int()'s 4,300-digit limit
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # the event times a store holds


class FilterError(ValueError):
    """A query parameter has a bad value; `param` names it, the message says what was expected."""

    def __init__(self, param: str, expected: str) -> None:
        super().__init__(f"bad parameter {param!r}: expected {expected}")
        self.param = param


# Filters a request may repeat (an OR of the values) and negate with a trailing "!" (the
# query string `svc!=api` arrives as the parameter `svc!`), besides `attr.KEY`.
TERM_PARAMS = ("env", "svc", "fn", "host", "txt", "url", "status", "method")
ATTR_PREFIX = "attr."
MAX_ATTR_KEY = 256  # characters in the KEY of attr.KEY
MAX_VALUES = 100  # filter values in one request, all parameters together
_FIELDS = {"status": "response_status", "method": "http_method"}
_PREFIXED = ("svc", "url")  # url is always a prefix; svc (and attr.KEY) with a trailing *
_STRING_FIELDS = frozenset({"env", "svc", "fn", "host", "url", "attrs"})

Params = Mapping[str, str] | Sequence[tuple[str, str]]


def is_filter_param(name: str) -> bool:
    """Whether `name` is a filter parameter (a malformed attr. name is one: it gets its own
    error from Filter.from_params)."""
    base = name.removesuffix("!")
    return base in TERM_PARAMS or base.startswith(ATTR_PREFIX)


@dataclass(frozen=True, slots=True)
class Term:
    """One filter parameter and its values: the event's field is one of `exact`, starts with
    one of `prefixes` or (txt) contains one of `contains`, lower-cased. `negated`: the event
    must not be so. An event without the attribute `attr.KEY` names is never one."""

    name: str  # the parameter, without "!": env, svc, ..., attr.KEY
    exact: frozenset[str | int] = frozenset()
    prefixes: tuple[str, ...] = ()
    contains: tuple[str, ...] = ()
    negated: bool = False
    field: str = ""  # the Msg field: set from `name`
    key: str = ""  # the attribute key, for attr.KEY

    def __post_init__(self) -> None:
        if self.name.startswith(ATTR_PREFIX):
            object.__setattr__(self, "field", "attrs")
            object.__setattr__(self, "key", self.name[len(ATTR_PREFIX) :])
        else:
            object.__setattr__(self, "field", _FIELDS.get(self.name, self.name))

    def value(self, msg: Msg) -> str | int | None:
        if self.field == "attrs":
            return msg.attrs.get(self.key)
        value: str | int = getattr(msg, self.field)
        return value

    def hit(self, value: str | int | None) -> bool:
        """Whether a field holding `value` is one this term names (before negation)."""
        if value is None:
            return False
        if value in self.exact:
            return True
        if isinstance(value, str):
            if self.prefixes and value.startswith(self.prefixes):
                return True
            if self.contains:
                lowered = value.lower()
                return any(needle in lowered for needle in self.contains)
        return False

    def needles(self) -> list[bytes] | None:
        """Byte strings one of which a matching event's bytes must contain (None: no such
        list, e.g. a number field, or a negated term)."""
        if self.negated or self.field not in _STRING_FIELDS:
            return None
        found = [str(v).encode() for v in self.exact] + [p.encode() for p in self.prefixes]
        if self.field == "attrs" and not all(found):
            return [self.key.encode()]  # attr.KEY=*: the key must be there
        return found if all(found) else None

    def whole(self) -> frozenset[bytes]:
        """The needles that are a whole string field of a matching event (exact values, the
        key of attr.KEY=*), not only part of one: see filters.whole_field_in."""
        if self.field == "attrs" and "" in self.prefixes:
            return frozenset({self.key.encode()})
        return frozenset(str(v).encode() for v in self.exact) - {p.encode() for p in self.prefixes}


@dataclass(frozen=True, slots=True, kw_only=True)
class Filter:
    """Every term must hold (AND), the level be at least `lvl` and the time in range."""

    terms: tuple[Term, ...] = ()
    lvl: int = 0  # minimum level
    since_ns: int | None = None
    until_ns: int | None = None
    # Derived from `terms`, for the scans: the C-speed search (store/ring.py) and prefilter.
    search: tuple[bytes, ...] | None = field(default=None, compare=False, repr=False)
    whole: frozenset[bytes] = field(default=frozenset(), compare=False, repr=False)
    text_search: tuple[bytes, ...] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        best: list[bytes] | None = None
        for term in self.terms:
            needles = term.needles()
            if needles and (best is None or _weakest(needles) > _weakest(best)):
                best, whole = needles, term.whole()
        object.__setattr__(self, "search", tuple(best) if best else None)
        if best:
            object.__setattr__(self, "whole", whole)
        texts = [t for t in self.terms if t.field == "txt" and not t.negated and t.contains]
        if texts and all(n.isascii() for n in texts[0].contains):
            object.__setattr__(self, "text_search", tuple(n.encode() for n in texts[0].contains))

    @classmethod
    def from_params(cls, params: Params, now_ns: int, *, allow_until: bool = True) -> Filter:
        """From query parameters (a MultiDict, a dict, or (name, value) pairs): a repeated
        filter parameter is an OR of its values, `NAME!` excludes, an empty value counts
        as not given. Raises FilterError naming the parameter."""
        pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
        values: dict[str, list[str]] = {}
        for name, value in pairs:
            if value != "":
                values.setdefault(name, []).append(value)
        given = sum(len(v) for k, v in values.items() if is_filter_param(k))
        if given > MAX_VALUES:
            name = next(k for k in values if is_filter_param(k))
            raise FilterError(name, f"at most {MAX_VALUES} filter values in one request")
        terms = [_term(name, vals) for name, vals in values.items() if is_filter_param(name)]
        lvls = values.get("lvl", [])
        since, until = values.get("since"), values.get("until")
        return cls(
            terms=tuple(terms),
            lvl=min(_parse_level(v) for v in lvls) if lvls else 0,
            since_ns=parse_time("since", since[0], now_ns) if since else None,
            until_ns=parse_time("until", until[0], now_ns) if allow_until and until else None,
        )

    def for_ring(self, env: str | None, svc: str | None) -> Filter | None:
        """The filter left to apply inside a ring keyed (env, svc), or None when no event
        of that ring can match. None parts mean a ring that mixes keys (the overflow ring)."""
        if env is None or svc is None:
            return self
        ring = {"env": env, "svc": svc}
        left = []
        for term in self.terms:
            if term.field in ring:
                if term.hit(ring[term.field]) == term.negated:
                    return None
            else:
                left.append(term)
        if len(left) == len(self.terms):
            return self
        return replace(self, terms=tuple(left))

    def time_match(self, t_ns: int) -> bool:
        return (self.since_ns is None or t_ns >= self.since_ns) and (
            self.until_ns is None or t_ns <= self.until_ns
        )

    @property
    def needs_message(self) -> bool:
        """Whether matching needs more than the ring, the time and the level."""
        return bool(self.terms)

    def prefilter(self, data: bytes) -> bool:
        """False only when the serialised event cannot match: each term's strings must
        appear as they are (txt: in the lowered bytes, where that is exact)."""
        lowered: bytes | None = None
        for term in self.terms:
            if term.negated:
                continue
            if term.field == "txt":
                if not all(n.isascii() for n in term.contains):
                    continue
                if not lowered_bytes_can_match(term.contains[0], data):
                    continue
                if lowered is None:
                    lowered = data.lower()
                if not any(n.encode() in lowered for n in term.contains):
                    return False
                continue
            needles = term.needles()
            if needles is None:
                continue
            whole = term.whole()
            if not any(whole_field_in(n, data) >= 0 if n in whole else n in data for n in needles):
                return False
        return True

    def matches(self, msg: Msg) -> bool:
        """The exact decision, on a parsed event."""
        if msg.lvl < self.lvl:
            return False
        return all(term.hit(term.value(msg)) != term.negated for term in self.terms)


def whole_field_in(needle: bytes, data: bytes | bytearray, start: int = 0, end: int = -1) -> int:
    """Where `needle` may be a whole length-delimited field of the protobuf in `data` (within
    start..end), or -1: where the byte before it can end a varint holding len(needle). Any
    encoding of that length ends in the last byte of its shortest form, or in 0x00 when
    padded, so this never misses a field that equals `needle`, however it was encoded; an
    occurrence inside a longer string ("r-5" in "r-50") is skipped at C speed."""
    length = len(needle)
    last = length
    while last >= 0x80:
        last >>= 7
    end = len(data) if end < 0 else end
    pos = data.find(needle, start, end)
    while pos >= 0 and (pos == 0 or data[pos - 1] not in (last, 0)):
        pos = data.find(needle, pos + 1, end)
    return pos


def _weakest(needles: list[bytes]) -> tuple[int, int]:
    """How selective a search for any of `needles` is: its shortest needle, then fewer."""
    return min(map(len, needles)), -len(needles)


def _term(name: str, values: list[str]) -> Term:
    negated = name.endswith("!")
    base = name.removesuffix("!")
    if base.startswith(ATTR_PREFIX):
        key = base[len(ATTR_PREFIX) :]
        if not key or len(key) > MAX_ATTR_KEY:
            raise FilterError(name, f"attr.KEY with a KEY of 1 to {MAX_ATTR_KEY} characters")
    if base == "status":
        return Term(base, exact=frozenset(_parse_status(v) for v in values), negated=negated)
    if base == "method":
        return Term(base, exact=frozenset(_parse_method(v) for v in values), negated=negated)
    if base == "txt":
        return Term(base, contains=tuple(v.lower() for v in values), negated=negated)
    if base == "url":
        return Term(base, prefixes=tuple(values), negated=negated)
    if base in _PREFIXED or base.startswith(ATTR_PREFIX):
        exact = frozenset[str | int](v for v in values if not v.endswith("*"))
        prefixes = tuple(v[:-1] for v in values if v.endswith("*"))
        return Term(base, exact=exact, prefixes=prefixes, negated=negated)
    return Term(base, exact=frozenset(values), negated=negated)


# The only non-ASCII characters whose str.lower() holds ASCII letters: KELVIN SIGN -> "k"
# and LATIN CAPITAL I WITH DOT ABOVE -> "i" + U+0307, as UTF-8.
LOWERS_TO_ASCII = ("\u212a".encode(), "\u0130".encode())


def lowered_bytes_can_match(needle: str, data: bytes | bytearray) -> bool:
    """Whether `needle.encode() in data.lower()` is exact for a lower-case `needle`: it is
    when the needle is ASCII (bytes.lower() only maps A-Z) and `data` holds no character
    that str.lower() turns into ASCII. A protobuf's other bytes do not matter."""
    return needle.isascii() and not any(c in data for c in LOWERS_TO_ASCII)


def whole_number(text: str) -> int | None:
    """`text` as a whole number when it is ASCII digits, at most MAX_DIGITS; else None."""
    if text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS:
        return int(text)
    return None


def _parse_level(value: str) -> int:
    upper = value.strip().upper()
    if upper == "WARNING":  # Python's name for it
        return LEVEL_VALUES["WARN"]
    if upper in LEVEL_VALUES:
        return LEVEL_VALUES[upper]
    number = whole_number(upper)
    if number is not None and 0 <= number <= max(LEVEL_VALUES.values()):
        return number
    names = ", ".join(name.lower() for name in LEVEL_VALUES)
    raise FilterError("lvl", f"a level name ({names}) or number 0-6")


def _parse_method(value: str) -> int:
    upper = value.strip().upper()
    if upper not in METHOD_VALUES:
        raise FilterError("method", "an HTTP method name (" + ", ".join(METHOD_VALUES) + ")")
    return METHOD_VALUES[upper]


def _parse_status(value: str) -> int:
    number = whole_number(value)
    if number is None or not 100 <= number <= 999:
        raise FilterError("status", "an HTTP status code (100-999)")
    return number


def duration_ns(param: str, value: str) -> int | None:
    """A duration (`15m`, `2h`, `1.5h`, `90s`, `250ms`, `2d`) in exact nanoseconds; None
    when `value` is not written as one."""
    match = _DURATION.fullmatch(value.strip())
    if not match:
        return None
    whole, fraction, unit = match.group(1), match.group(2) or "", match.group(3)
    if len(whole) > MAX_DIGITS or len(fraction) > MAX_DIGITS:
        raise FilterError(param, f"a duration of at most {MAX_DIGITS} digits (15m, 2h, 90s)")
    unit_ns = _UNIT_NS[unit]  # exact integers: a float overflows past 308 digits
    return int(whole) * unit_ns + (
        int(fraction) * unit_ns // 10 ** len(fraction) if fraction else 0
    )


def parse_time(param: str, value: str, now_ns: int) -> int:
    """RFC 3339 time, or a duration back from now (`15m`, `2h`, `90s`), as epoch ns within
    the int64 range of event times (a longer duration reaches back to the earliest)."""
    ago = duration_ns(param, value)
    if ago is not None:
        return _clamp(now_ns - ago)
    # datetime keeps microseconds; take the fraction apart so that nanoseconds stay exact.
    fraction = _FRACTION.search(value)
    digits = fraction.group(1) if fraction else ""
    text = value.strip() if not fraction else value[: fraction.start()] + value[fraction.end() :]
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise FilterError(
            param, "an RFC 3339 time (2026-11-29T21:56:54Z) or a duration (15m, 2h, 90s)"
        ) from None
    if when.tzinfo is None:
        raise FilterError(param, "a time with a zone offset (Z or +01:00)")
    return _clamp(int(when.timestamp()) * 1_000_000_000 + int(digits[:9].ljust(9, "0") or 0))


def _clamp(t_ns: int) -> int:
    return min(max(t_ns, INT64_MIN), INT64_MAX)
