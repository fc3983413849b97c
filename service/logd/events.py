"""Event vocabulary shared by the server and the clients: level and method names,
times, and the JSON shape of an event (docs/http-api.md). Pure and protobuf-only."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

from logd._pb.logd_pb2 import HttpMethod, Lvl, Msg

LEVEL_NAMES: dict[int, str] = {v: k for k, v in Lvl.items() if v}  # 1 -> "TRACE" ... 6 -> "FATAL"
LEVEL_VALUES: dict[str, int] = {name: value for value, name in LEVEL_NAMES.items()}
MAX_LEVEL = max(LEVEL_NAMES)  # FATAL; ingest stores any other value outside 0..6 as 0
METHOD_NAMES: dict[int, str] = {v: k for k, v in HttpMethod.items() if v}
METHOD_VALUES: dict[str, int] = {name: value for value, name in METHOD_NAMES.items()}

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def format_time(t_ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds: 2026-11-29T21:56:54.123456789Z."""
    seconds, nanos = divmod(t_ns, 1_000_000_000)
    return f"{_format_second(seconds)}.{nanos:09d}Z"


@functools.lru_cache(maxsize=4096)
def _format_second(seconds: int) -> str:
    # Events come many to a second: strftime was a third of the cost of an event's JSON.
    return (_EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def msg_time_ns(msg: Msg) -> int:
    return msg.t.seconds * 1_000_000_000 + msg.t.nanos


def msg_to_json(msg: Msg, event_id: str | None = None) -> dict[str, Any]:
    """The event object of docs/http-api.md, its server-assigned `id` first; empty fields
    are left out."""
    out: dict[str, Any] = {} if event_id is None else {"id": event_id}
    out["t"] = format_time(msg_time_ns(msg))
    for name in ("env", "svc", "fn", "host"):
        value = getattr(msg, name)
        if value:
            out[name] = value
    if msg.pid:
        out["pid"] = msg.pid
    if msg.lvl:
        out["lvl"] = LEVEL_NAMES.get(msg.lvl, str(msg.lvl))
    if msg.txt:
        out["txt"] = msg.txt
    if msg.stack_trace:
        out["stack_trace"] = msg.stack_trace
    if msg.http_method:
        out["http_method"] = METHOD_NAMES.get(msg.http_method, str(msg.http_method))
    if msg.url:
        out["url"] = msg.url
    if msg.response_status:
        out["response_status"] = msg.response_status
    if msg.attrs:
        out["attrs"] = dict(sorted(msg.attrs.items()))
    return out
