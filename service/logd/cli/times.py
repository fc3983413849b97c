"""The times a person types after --since / --until, as the server's parameters.

The server (docs/http-api.md) takes an RFC 3339 time with a zone, or one duration back
from now (`90s`, `15m`, `1.5h`). The CLI takes more, and converts before sending, so
the HTTP API stays as it is:

- those two forms, passed on as they are (a duration is then measured on the server's
  clock, as before);
- a compound duration, `1h30m`, `2d12h`, `1m30.5s`: sent as one duration in seconds;
- `today`, `yesterday`: local midnight, sent as a UTC time;
- a time without a zone, `2026-12-01 14:30`, `2026-12-01T14:30:05.25`, a date alone
  (`2026-12-01`, midnight) or a time of day alone (`14:30`, today): local time, sent as
  a UTC time with the fraction kept to the nanosecond.

Pure but for the clock and the local zone, which a test can pass in.
"""

from __future__ import annotations

import datetime as dt
import re
import time

_UNIT_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}
_PART = r"(\d+)(?:\.(\d+))?(ms|s|m|h|d)"
_ONE = re.compile(_PART)
_COMPOUND = re.compile(f"(?:{_PART}){{2,}}")
_FRACTION = re.compile(r"\.(\d+)")
_CLOCK = re.compile(r"\d{1,2}:\d{2}(?::\d{2})?")
MAX_DIGITS = 20  # of a number in a duration, as the server allows


class TimeError(ValueError):
    """A --since / --until value the CLI cannot read; the message says what would do."""


def server_time(value: str, *, now: float | None = None, zone: dt.tzinfo | None = None) -> str:
    """`value` as the server's `since` / `until` parameter. `now`: seconds since the epoch
    (default: the clock); `zone`: the local zone (default: the machine's)."""
    text = value.strip()
    if not text:
        raise TimeError("an empty time: give 15m, 1h30m, today, yesterday or 2026-12-01 14:30")
    if _ONE.fullmatch(text):
        return text
    if _COMPOUND.fullmatch(text):
        return _seconds(sum(_part_ns(m) for m in _ONE.finditer(text)))
    stamp = time.time() if now is None else now
    today = (
        dt.datetime.fromtimestamp(stamp, zone) if zone else dt.datetime.fromtimestamp(stamp)
    ).date()
    lowered = text.lower()
    if lowered in ("today", "yesterday"):
        day = today - dt.timedelta(days=lowered == "yesterday")
        return _utc(_local(dt.datetime.combine(day, dt.time()), zone), "")
    fraction = _FRACTION.search(text)
    digits = fraction.group(1) if fraction else ""
    bare = text if not fraction else text[: fraction.start()] + text[fraction.end() :]
    if _CLOCK.fullmatch(bare):
        bare = f"{today.isoformat()}T{bare}"
    try:
        when = dt.datetime.fromisoformat(bare.replace("z", "Z"))
    except ValueError:
        raise TimeError(
            f"cannot read {value!r} as a time: give a duration (15m, 1h30m), today, "
            "yesterday, or a time (2026-12-01 14:30, local unless it has a zone)"
        ) from None
    if when.tzinfo is not None:
        return text  # the server reads it as it is, to the nanosecond
    return _utc(_local(when, zone), digits)


def _part_ns(match: re.Match[str]) -> int:
    whole, fraction, unit = match.group(1), match.group(2) or "", match.group(3)
    if len(whole) > MAX_DIGITS or len(fraction) > MAX_DIGITS:
        raise TimeError(f"a duration of at most {MAX_DIGITS} digits per number (1h30m)")
    unit_ns = _UNIT_NS[unit]
    return int(whole) * unit_ns + (
        int(fraction) * unit_ns // 10 ** len(fraction) if fraction else 0
    )


def _seconds(ns: int) -> str:
    whole, rest = divmod(ns, 10**9)
    return f"{whole}.{rest:09d}s".replace(".000000000s", "s")


def _local(naive: dt.datetime, zone: dt.tzinfo | None) -> dt.datetime:
    """A wall-clock time in `zone`, else in the machine's zone with the offset of that
    date (astimezone asks the C library: summer time included)."""
    return naive.replace(tzinfo=zone) if zone is not None else naive.astimezone()


def _utc(when: dt.datetime, digits: str) -> str:
    """RFC 3339 in UTC; `digits` the fraction as typed (nanoseconds kept)."""
    text = when.astimezone(dt.UTC).replace(tzinfo=None, microsecond=0).isoformat()
    ns = digits[:9].ljust(9, "0") if digits else ""
    return f"{text}.{ns}Z" if ns.strip("0") else f"{text}Z"
