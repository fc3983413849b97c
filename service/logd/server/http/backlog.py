"""A tail's history: the held events it sends before it follows.

- `n=N`: the newest N matching events, oldest first (at most TAIL_BACKLOG_MAX);
- `since=`: the matching events from then on (as many, the newest kept);
- `after=ID`, or the `Last-Event-ID` header a browser's EventSource sends when it
  reconnects: the held matching events after that id.

The tail subscribes first and takes the id of the newest stored event at that very
moment (`last_id`): the history is the events up to it, the live stream the ones
after, so there is no gap and no duplicate between the two. When events that the
history should have held are gone (evicted, or more than the cap), an in-band
notice says so first: `{"gap": true}` (NDJSON) or `event: gap` (SSE).

The memory store and a Valkey store on one server have such ids (store/valkey/ids.py);
a Valkey cluster's ids have no order across rings, so it has no history.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeGuard, runtime_checkable

from logd.events import event_json
from logd.server.filters import Filter, FilterError, whole_number
from logd.server.store.ring import IdRange
from logd.server.store.scan import Found

TAIL_BACKLOG_MAX = 10_000
RENDER_SLICE = 100  # events of the history rendered before they are written


@runtime_checkable
class History(Protocol):
    """A store whose events have ids that a tail can start from: the memory store, and
    the Valkey store on one server (whose `evicted_after` asks the backend)."""

    async def query(
        self,
        flt: Filter,
        *,
        limit: int,
        offset: int,
        max_bytes: int | None = None,
        ids: IdRange = ...,
    ) -> Found: ...
    def last_id(self) -> int: ...
    def evicted_after(self, flt: Filter, after: int) -> bool | Awaitable[bool]: ...


@runtime_checkable
class FedLater(Protocol):
    """A store whose tails are fed from a backend, a little after it stored (Valkey)."""

    async def catch_up(self) -> None:
        """Return once the tails are fed up to what is stored now."""
        ...


def has_history(store: object) -> TypeGuard[History]:
    """Whether a tail can have history and resume, and `before=` page, on this store."""
    # A Valkey store in cluster mode has the methods but no order across rings.
    return isinstance(store, History) and getattr(store, "ordered", True)


@dataclass(frozen=True, slots=True)
class Ask:
    limit: int  # most events
    after: int | None  # only events after this id
    whole: bool  # all of them were asked for (after=, since=): more than `limit` is a gap


def parse_ask(params: Mapping[str, str], headers: Mapping[str, str]) -> Ask | None:
    """What history a tail asks for, or None; a bad `n` or id is a FilterError."""
    n_text, after_text = params.get("n"), params.get("after")
    last_event_id = headers.get("Last-Event-ID")
    if after_text is None and last_event_id is not None:
        after_text, after_name = last_event_id, "Last-Event-ID"
    else:
        after_name = "after"
    after = None if after_text is None else parse_id(after_name, after_text)
    if n_text is not None:
        n = whole_number(n_text)
        if n is None or not 0 <= n <= TAIL_BACKLOG_MAX:
            raise FilterError("n", f"a whole number from 0 to {TAIL_BACKLOG_MAX}")
        return Ask(n, after, whole=after is not None)
    if after is not None or params.get("since"):
        return Ask(TAIL_BACKLOG_MAX, after, whole=True)
    return None


def parse_id(param: str, text: str) -> int:
    """An event id this server gave, sent back (`after`, `before`, `Last-Event-ID`)."""
    number = whole_number(text.strip())
    if number is None or number >= 2**64:
        raise FilterError(param, "an event id this server gave (the `id` of an event)")
    return number


async def history(
    store: History, flt: Filter, ask: Ask, last_id: int, max_bytes: int
) -> tuple[Found, bool]:
    """The held events the tail sends first (newest first), and whether some are missing."""
    lo = 0 if ask.after is None else ask.after + 1
    extra = 1 if ask.whole else 0  # one more than asked: were there more than the cap?
    found = await store.query(
        flt, limit=ask.limit + extra, offset=0, max_bytes=max_bytes, ids=(lo, last_id)
    )
    gap = found.truncated
    if ask.whole and len(found.events) > ask.limit:
        found = Found(found.events[:-1], found.ids[:-1], truncated=True, nbytes=found.nbytes)
        gap = True
    if ask.after is not None:
        evicted = store.evicted_after(flt, ask.after)
        if evicted if isinstance(evicted, bool) else await evicted:
            gap = True
    return found, gap


def render(found: Found, *, gap: bool, sse: bool) -> Iterator[bytes]:
    """The history as the stream's first bytes, oldest first, RENDER_SLICE events a part:
    the first part can go out while the rest is rendered."""
    if gap:
        yield b'event: gap\ndata: {"gap": true}\n\n' if sse else b'{"gap": true}\n'
    pairs = list(zip(reversed(found.events), reversed(found.ids), strict=True))
    for start in range(0, len(pairs), RENDER_SLICE):
        parts: list[bytes] = []
        for msg, event_id in pairs[start : start + RENDER_SLICE]:
            line = event_json(msg, event_id)
            if sse:
                parts.append(b"id: " + event_id.encode() + b"\ndata: " + line + b"\n\n")
            else:
                parts.append(line + b"\n")
        yield b"".join(parts)
