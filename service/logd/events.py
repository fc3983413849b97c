"""Event vocabulary shared by the server and the clients: level and method names,
times, and the JSON shape of an event (docs/http-api.md). Pure and protobuf-only."""

from __future__ import annotations

import datetime as dt
import functools
import json.encoder
from collections.abc import Callable

from logd._pb.logd_pb2 import HttpMethod, Lvl, Msg

LEVEL_NAMES: dict[int, str] = {v: k for k, v in Lvl.items() if v}  # 1 -> "TRACE" ... 6 -> "FATAL"
LEVEL_VALUES: dict[str, int] = {name: value for value, name in LEVEL_NAMES.items()}
MAX_LEVEL = max(LEVEL_NAMES)  # FATAL; ingest stores any other value outside 0..6 as 0
METHOD_NAMES: dict[int, str] = {v: k for k, v in HttpMethod.items() if v}
METHOD_VALUES: dict[str, int] = {name: value for value, name in METHOD_NAMES.items()}

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# A JSON string literal, quotes included, as json.dumps(ensure_ascii=False) writes it.
_quoted: Callable[[str], str] = json.encoder.encode_basestring


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


def event_json(msg: Msg, event_id: str) -> bytes:
    """The event object of docs/http-api.md as UTF-8 JSON: its server-assigned `id` first,
    then its time and the fields that are set, attributes sorted by key; empty fields
    are left out. The same bytes as json.dumps of that object (ensure_ascii=False), put
    together field by field with the json module's own C string escaping: building the
    dict and encoding it took three times as long, for every event a query or a tail
    sends."""
    parts = ['{"id": ', _quoted(event_id), ', "t": "', format_time(msg_time_ns(msg)), '"']
    for name, value in (("env", msg.env), ("svc", msg.svc), ("fn", msg.fn), ("host", msg.host)):
        if value:
            parts += (', "', name, '": ', _quoted(value))
    if msg.pid:
        parts.append(f', "pid": {msg.pid}')
    if msg.lvl:
        parts += (', "lvl": ', _quoted(LEVEL_NAMES.get(msg.lvl, str(msg.lvl))))
    if msg.txt:
        parts += (', "txt": ', _quoted(msg.txt))
    if msg.stack_trace:
        parts += (', "stack_trace": ', _quoted(msg.stack_trace))
    if msg.http_method:
        parts += (
            ', "http_method": ',
            _quoted(METHOD_NAMES.get(msg.http_method, str(msg.http_method))),
        )
    if msg.url:
        parts += (', "url": ', _quoted(msg.url))
    if msg.response_status:
        parts.append(f', "response_status": {msg.response_status}')
    if msg.attrs:
        pairs = sorted(msg.attrs.items())
        parts += (
            ', "attrs": {',
            ", ".join([_quoted(k) + ": " + _quoted(v) for k, v in pairs]),
            "}",
        )
    parts.append("}")
    return "".join(parts).encode()
