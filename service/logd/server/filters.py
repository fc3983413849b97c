"""Event filters of HTTP_API.md: parsed from query parameters, matched against events.

Pure (the clock is an argument). Matching has two steps so that a scan over a
million stored events stays cheap: `prefilter(data)` rejects most events on
their serialised bytes without parsing them (never wrongly), then
`matches(msg)` decides exactly on the parsed message.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Filter:
    env: str | None = None
    svc: str | None = None  # exact, or a prefix when svc_prefix
    svc_prefix: bool = False
    fn: str | None = None
    lvl: int = 0  # minimum level
    txt: str | None = None  # lower-cased needle
    url: str | None = None  # prefix
    status: int | None = None
    method: int | None = None
    since_ns: int | None = None
    until_ns: int | None = None

    @classmethod
    def from_params(
        cls, params: Mapping[str, str], now_ns: int, *, allow_until: bool = True
    ) -> Filter:
        def text(name: str) -> str | None:
            return params.get(name) or None

        svc = text("svc")
        svc_prefix = svc is not None and svc.endswith("*")
        if svc_prefix and svc is not None:
            svc = svc[:-1]
        txt = text("txt")
        return cls(
            env=text("env"),
            svc=svc,
            svc_prefix=svc_prefix,
            fn=text("fn"),
            lvl=_parse_level(params["lvl"]) if params.get("lvl") else 0,
            txt=txt.lower() if txt else None,
            url=text("url"),
            status=_parse_status(params["status"]) if params.get("status") else None,
            method=_parse_method(params["method"]) if params.get("method") else None,
            since_ns=parse_time("since", params["since"], now_ns) if params.get("since") else None,
            until_ns=(
                parse_time("until", params["until"], now_ns)
                if allow_until and params.get("until")
                else None
            ),
        )

    def for_ring(self, env: str | None, svc: str | None) -> Filter | None:
        """The filter left to apply inside a ring keyed (env, svc), or None when no event
        of that ring can match. None parts mean a ring that mixes keys (the overflow ring)."""
        if env is None or svc is None:
            return self
        if self.env is not None and env != self.env:
            return None
        if self.svc is not None and not (
            svc.startswith(self.svc) if self.svc_prefix else svc == self.svc
        ):
            return None
        return replace(self, env=None, svc=None, svc_prefix=False)

    def time_match(self, t_ns: int) -> bool:
        return (self.since_ns is None or t_ns >= self.since_ns) and (
            self.until_ns is None or t_ns <= self.until_ns
        )

    @property
    def needs_message(self) -> bool:
        """Whether matching needs more than the ring, the time and the level."""
        return any(
            v is not None
            for v in (self.env, self.svc, self.fn, self.txt, self.url, self.status, self.method)
        )

    def prefilter(self, data: bytes) -> bool:
        """False only when the serialised event cannot match (exact strings must appear)."""
        for needle in (self.fn, self.url, self.env, self.svc):
            if needle is not None and needle.encode() not in data:
                return False
        return not (
            self.txt is not None
            and lowered_bytes_can_match(self.txt, data)
            and self.txt.encode() not in data.lower()
        )

    def matches(self, msg: Msg) -> bool:
        """The exact decision, on a parsed event."""
        if msg.lvl < self.lvl:
            return False
        if self.env is not None and msg.env != self.env:
            return False
        if self.svc is not None and not (
            msg.svc.startswith(self.svc) if self.svc_prefix else msg.svc == self.svc
        ):
            return False
        if self.fn is not None and msg.fn != self.fn:
            return False
        if self.txt is not None and self.txt not in msg.txt.lower():
            return False
        if self.url is not None and not msg.url.startswith(self.url):
            return False
        if self.status is not None and msg.response_status != self.status:
            return False
        return self.method is None or msg.http_method == self.method


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


def parse_time(param: str, value: str, now_ns: int) -> int:
    """RFC 3339 time, or a duration back from now (`15m`, `2h`, `90s`), as epoch ns within
    the int64 range of event times (a longer duration reaches back to the earliest)."""
    match = _DURATION.fullmatch(value.strip())
    if match:
        whole, fraction, unit = match.group(1), match.group(2) or "", match.group(3)
        if len(whole) > MAX_DIGITS or len(fraction) > MAX_DIGITS:
            raise FilterError(param, f"a duration of at most {MAX_DIGITS} digits (15m, 2h, 90s)")
        unit_ns = _UNIT_NS[unit]  # exact integers: a float overflows past 308 digits
        ago = int(whole) * unit_ns + (
            int(fraction) * unit_ns // 10 ** len(fraction) if fraction else 0
        )
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
