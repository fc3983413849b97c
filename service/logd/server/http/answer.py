"""A query's answer: written while it is rendered, bounded in bytes, and at most
LOGD_MAX_QUERIES of them at once.

The events come from the store already bounded by LOGD_QUERY_MAX_BYTES (their
serialised size); their JSON is rendered one event at a time and written in
slices of SLICE_BYTES, each write waiting for the client (flow control) and
giving the event loop back. Past the bound, the answer ends with a truncation
marker, the last element of the JSON array or the last NDJSON line:

    {"truncated": true, "max_bytes": 8388608, "events": 130,
     "until": "2026-12-01T20:59:59.123456789Z", "offset": 3, "before": "1887..."}

`before` pages on: the same query with `before=` that id gets the next, older, events,
unmoved by new writes (the memory store; on Valkey, `until` and `offset` do the same:
the first `offset` events at the `until` time were in this answer). An event never has
a `truncated` field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from aiohttp import web

from logd.events import event_json, format_time
from logd.server.store.scan import Found

SLICE_BYTES = 64 * 1024
JSON = "application/json"
NDJSON = "application/x-ndjson"

_render: Callable[[object], str] = json.JSONEncoder(ensure_ascii=False).encode


class QueryGate:
    """How many queries run now, and the bytes their answers hold, for /info."""

    def __init__(self, max_queries: int) -> None:
        self.max_queries = max_queries
        self.running = 0
        self.refused = 0
        self.held_bytes = 0
        self.truncated = 0

    def enter(self) -> bool:
        if self.running >= self.max_queries:
            self.refused += 1
            return False
        self.running += 1
        return True

    def leave(self) -> None:
        self.running -= 1

    def refusal(self) -> web.Response:
        """The answer to a query that found every slot taken (`enter` was False)."""
        cap = f"LOGD_MAX_QUERIES={self.max_queries}"
        return web.json_response(
            {"error": f"too many queries at once ({cap}); retry later"},
            status=429,
            headers={"Retry-After": "1"},
        )

    def info(self) -> dict[str, int]:
        return {
            "running": self.running,
            "max": self.max_queries,
            "refused": self.refused,
            "truncated": self.truncated,
            "held_bytes": self.held_bytes,
        }


def truncation_marker(found: Found, written: int, max_bytes: int) -> dict[str, object]:
    """Where the next page starts: at the last event's time, past the `offset` events
    at that very time that this answer showed (events of one frame share a time)."""
    times = [m.t.seconds * 1_000_000_000 + m.t.nanos for m in found.events[:written]]
    same = next((i for i, t_ns in enumerate(reversed(times)) if t_ns != times[-1]), len(times))
    return {
        "truncated": True,
        "max_bytes": max_bytes,
        "events": written,
        "until": format_time(times[-1]),
        "offset": same,
        "before": found.ids[written - 1],
    }


async def write_answer(
    request: web.Request,
    found: Found,
    *,
    ndjson: bool,
    max_bytes: int,
    gate: QueryGate,
    headers: Mapping[str, str],
) -> web.StreamResponse:
    """Stream `found` as a JSON array (or NDJSON), at most `max_bytes` of events."""
    held = found.nbytes + SLICE_BYTES  # the events found, and the slice being written
    gate.held_bytes += held
    try:
        media = NDJSON if ndjson else JSON
        response = web.StreamResponse(headers={"Content-Type": f"{media}; charset=utf-8"})
        response.headers.update(headers)
        await response.prepare(request)
        sep = b"\n" if ndjson else b","
        out = bytearray() if ndjson else bytearray(b"[")
        total = written = 0
        truncated = found.truncated
        for msg, event_id in zip(found.events, found.ids, strict=True):
            line = event_json(msg, event_id)
            if written and total + len(line) > max_bytes:
                truncated = True
                break
            out += line + sep if ndjson else (sep + line if written else line)
            total += len(line) + 1
            written += 1
            if len(out) >= SLICE_BYTES:
                await response.write(bytes(out))
                out.clear()
        if truncated and written:
            gate.truncated += 1
            marker = _render(truncation_marker(found, written, max_bytes)).encode()
            out += marker + sep if ndjson else sep + marker
        if not ndjson:
            out += b"]"
        await response.write(bytes(out))
        await response.write_eof()
        return response
    finally:
        gate.held_bytes -= held
