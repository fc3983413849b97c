"""How the `logd` command shows events and status to a person.

Colour only when asked for or on a TTY, never with NO_COLOR (no-color.org). Event text
is written by whoever can log, so control characters are shown escaped: a log line
must not be able to drive the reader's terminal.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from typing import Any, TextIO

_LEVEL_STYLE = {
    "TRACE": "2",
    "DEBUG": "36",
    "INFO": "32",
    "WARN": "33",
    "ERROR": "31",
    "FATAL": "1;37;41",
}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but \t and \n


def use_color(mode: str, stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """`always` / `never`, or `auto`: a TTY and NO_COLOR unset or empty."""
    if mode != "auto":
        return mode == "always"
    return not environ.get("NO_COLOR") and stream.isatty()


def _paint(text: str, style: str, color: bool) -> str:
    return f"\x1b[{style}m{text}\x1b[0m" if color and style else text


def clean(text: str) -> str:
    """Control characters as visible escapes (ESC -> \\x1b)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def short_time(stamp: str) -> str:
    """RFC 3339 (UTC, up to nanoseconds) -> local `YYYY-MM-DD HH:MM:SS.mmm`."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    try:
        when = dt.datetime.fromisoformat(head).replace(tzinfo=dt.UTC).astimezone()
    except ValueError:
        return clean(stamp)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + (frac + "000")[:3]


def format_event(event: Mapping[str, Any], *, color: bool) -> str:
    """One event as lines: time, level, host[pid] (as syslog writes them), env/svc fn,
    text, HTTP fields, attrs; then the stack trace, indented."""
    lvl = str(event.get("lvl", "-"))
    where = "/".join(clean(str(event[k])) for k in ("env", "svc") if event.get(k))
    if event.get("fn"):
        where = f"{where} {clean(str(event['fn']))}".strip()
    parts = [
        _paint(short_time(str(event.get("t", ""))), "2", color),
        _paint(f"{lvl:<5}", _LEVEL_STYLE.get(lvl, ""), color),
    ]
    origin = clean(str(event.get("host") or ""))
    if event.get("pid"):
        origin += f"[{clean(str(event['pid']))}]"
    if origin:
        parts.append(_paint(origin, "2", color))
    if where:
        parts.append(_paint(where, "1", color) + ":")
    parts.append(_indent_rest(clean(str(event.get("txt", "")))))
    http = [str(event[k]) for k in ("http_method", "url", "response_status") if k in event]
    if http:
        parts.append(clean(" ".join(http)))
    attrs = event.get("attrs") or {}
    if isinstance(attrs, Mapping):
        parts.extend(_paint(clean(f"{k}={v}"), "2", color) for k, v in attrs.items())
    line = " ".join(parts)
    stack = str(event.get("stack_trace", "")).rstrip("\n")
    if stack:
        line += "\n" + "\n".join("    " + clean(s) for s in stack.split("\n"))
    return line


def _indent_rest(text: str) -> str:
    return text.replace("\n", "\n    ")


def format_truncated(marker: dict[str, Any]) -> str:
    """The server cut the answer at its byte bound: say so, and how to get the rest."""
    return (
        f"logd: the answer stopped after {marker.get('events')} events, at the server's "
        f"LOGD_QUERY_MAX_BYTES ({marker.get('max_bytes')} bytes); for older ones add "
        f"--until {clean(str(marker.get('until')))} --offset {marker.get('offset')}"
    )


_GROUP_STYLES = ("34", "35", "36", "32", "33", "31", "94", "95", "96", "92", "2")  # by order


def format_hits(body: Mapping[str, Any], *, color: bool, width: int = 80) -> list[str]:
    """GET /hits as a bar per bucket, oldest first: local start time, total, a bar split
    by group (each group its colour; levels their own), then the group counts in words so
    that nothing depends on colour."""
    buckets = [b for b in body.get("buckets") or [] if isinstance(b, Mapping)]
    step = int(body.get("step_s") or 1)
    groups: dict[str, int] = {}
    for bucket in buckets:
        for name, n in (bucket.get("by") or {}).items():
            groups[str(name)] = groups.get(str(name), 0) + int(n)
    order = sorted(groups, key=lambda g: (g == "other", -groups[g], g))
    styles = {
        g: _LEVEL_STYLE.get(g) or _GROUP_STYLES[i % len(_GROUP_STYLES)] for i, g in enumerate(order)
    }
    if "other" in styles:
        styles["other"] = "2"
    lines = [f"{body.get('total', 0)} events, {_step(step)} buckets"]
    if order:
        lines.append("  ".join(_paint("\u2588", styles[g], color) + " " + clean(g) for g in order))
    peak = max((int(b.get("total", 0)) for b in buckets), default=0) or 1
    digits = len(str(peak))
    room = max(10, min(60, width - 22 - digits))
    for bucket in buckets:
        total = int(bucket.get("total", 0))
        label = _bucket_time(str(bucket.get("t", "")), step)
        by = {str(k): int(v) for k, v in (bucket.get("by") or {}).items()}
        bar = _bar(total, by, order, styles, peak, room, color)
        words = ", ".join(f"{clean(g)} {by[g]}" for g in order if by.get(g))
        lines.append(f"{label} {total:>{digits}} {bar}" + (f"  {words}" if words else ""))
    return lines


def _bar(
    total: int,
    by: Mapping[str, int],
    order: list[str],
    styles: Mapping[str, str],
    peak: int,
    room: int,
    color: bool,
) -> str:
    """A bar of `total` scaled to `room` columns, split by group; `#` without colour."""
    cells = round(total * room / peak) if total else 0
    if total and not cells:
        cells = 1
    if not color or not by:
        return ("\u2588" if color else "#") * cells
    parts, used, seen = [], 0, 0
    for g in order:
        n = by.get(g, 0)
        if not n:
            continue
        seen += n
        upto = round(seen * cells / total)
        if upto > used:
            parts.append(_paint("\u2588" * (upto - used), styles[g], color))
            used = upto
    return "".join(parts)


def _bucket_time(stamp: str, step_s: int) -> str:
    """A bucket's start in local time, to the second only when the step needs it."""
    try:
        when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone()
    except ValueError:
        return clean(stamp)
    if step_s % 86400 == 0:
        return when.strftime("%Y-%m-%d")
    return when.strftime("%Y-%m-%d %H:%M" if step_s % 60 == 0 else "%Y-%m-%d %H:%M:%S")


def _step(step_s: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if step_s % size == 0:
            return f"{step_s // size}{unit}"
    return f"{step_s}s"


def format_dropped(count: int) -> str:
    return f"logd: {count} events were not shown: this tail fell behind the server"


def _by_age(ring: Mapping[str, Any]) -> str:
    """` (N by age)` when a max age evicted some of the ring's events."""
    by = ring.get("evicted_by")
    age = by.get("age") if isinstance(by, Mapping) else None
    aged = age.get("events", 0) if isinstance(age, Mapping) else 0
    return f" ({aged} by age)" if aged else ""


def format_info(info: Mapping[str, Any]) -> str:
    """/info as aligned lines for a person (the JSON has every detail: --json)."""
    udp, store = info.get("udp", {}), info.get("store", {})
    rejected = {k: v for k, v in (udp.get("rejected") or {}).items() if v}
    lines = [
        f"logd {info.get('version', '?')}, up {_duration(float(info.get('uptime_s', 0)))}",
        f"udp      received {udp.get('received', 0)}, accepted {udp.get('accepted', 0)}, "
        f"events {udp.get('events', 0)}, pongs {udp.get('pongs', 0)}, "
        f"kernel drops {_or_unknown(udp.get('kernel_drops'))}",
        "         rejected: "
        + (", ".join(f"{k} {v}" for k, v in sorted(rejected.items())) if rejected else "none"),
        f"store    writes {store.get('writes', 0)}, "
        f"overflow events {store.get('overflow_events', 0)}",
    ]
    writers = udp.get("writers")
    if isinstance(writers, Mapping):
        lines.insert(
            3,
            f"writers  {writers.get('tracked', 0)} tracked, frames {writers.get('frames', 0)}, "
            f"lost {writers.get('lost', 0)}, forgotten {writers.get('forgotten', 0)}, "
            f"malformed {writers.get('malformed', 0)}",
        )
        for at, w in enumerate(w for w in writers.get("most_lost") or [] if w.get("lost")):
            where = "/".join(str(w.get(k)) for k in ("host", "svc") if w.get(k)) or "-"
            sent = int(w.get("frames", 0)) + int(w.get("lost", 0))
            lines.insert(
                4 + at,
                f"  writer {w.get('sender', '?')} {where}: lost {w.get('lost', 0)} of {sent}, "
                f"last seen {w.get('last_seen')}",
            )
    rings = store.get("rings") or []
    width = max((len(str(r.get("key", ""))) for r in rings), default=0)
    for ring in rings:
        cap = int(ring.get("capacity_bytes", 0)) or 1
        used = int(ring.get("bytes", 0))
        lines.append(
            f"  ring   {ring.get('key', '')!s:<{width}}  {ring.get('events', 0)} events, "
            f"{_size(used)} of {_size(cap)} ({100 * used / cap:.0f}%), "
            f"evicted {ring.get('evicted', 0)}{_by_age(ring)}"
        )
    tail = info.get("tail")
    if isinstance(tail, Mapping):
        lines.append(
            f"tail     {tail.get('subscribers', 0)} subscribers, "
            f"{tail.get('published', 0)} published, {tail.get('dropped', 0)} dropped"
        )
    secrets = info.get("secrets")
    if isinstance(secrets, Mapping):
        keys = ", ".join(
            f"{k.get('role')} {k.get('stage')} {k.get('key_id')}" for k in secrets.get("keys", [])
        )
        lines.append(f"secrets  {secrets.get('source', '?')}; keys: {keys or 'none'}")
    return "\n".join(clean(line) for line in lines)


def format_alerts(body: Mapping[str, Any]) -> str:
    """GET /alerts as one line per rule, then the notice counts."""
    rules = body.get("rules") or []
    if not rules:
        return "no alert rules (alerts: in logdrc.yml; docs/configuration.md)"
    width = max(len(str(r.get("name", ""))) for r in rules)
    lines = []
    for r in rules:
        over = _span(int(r.get("over_s", 0)))
        condition = "absent" if r.get("absent") else f"threshold {r.get('threshold')}"
        fired = r.get("last_fired")
        lines.append(
            f"{r.get('name', '')!s:<{width}}  {r.get('state', '?'):<7} "
            f"{r.get('count', 0)} in {over} ({condition}), "
            + (f"last fired {fired}" if fired else "never fired")
            + (f", notify {', '.join(r.get('notify') or [])}" if r.get("notify") else "")
        )
    n = body.get("notices") or {}
    lines.append(
        f"notices: sent {n.get('sent', 0)}, retried {n.get('retried', 0)}, "
        f"dropped {n.get('dropped', 0)}, queued {n.get('queued', 0)}"
    )
    return "\n".join(clean(line) for line in lines)


def _span(seconds: int) -> str:
    """A rule's window as it is written: 10m, 90s, 2h, 1d."""
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _or_unknown(value: object) -> str:
    return "unknown" if value is None else str(value)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    return f"{minutes}m {secs}s" if minutes else f"{seconds:.1f}s"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
