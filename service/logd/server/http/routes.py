"""HTTP reads (HTTP_API.md): query, tail, info, metrics, healthz.

Every error is JSON `{"error": "..."}`; nothing a client sends gives a 500.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import HttpVersion11, web

from logd import __version__
from logd.server.alerts.service import ALERTS
from logd.server.budget import TAIL_SNDBUF, rss_bytes
from logd.server.filters import Filter, FilterError
from logd.server.http import backlog
from logd.server.http.alerts import add_alert_routes
from logd.server.http.answer import write_answer
from logd.server.http.hits import hits
from logd.server.http.metrics import render_metrics
from logd.server.http.requests import authorize, check_params, int_param, json_error
from logd.server.http.ui import add_ui_routes, browser_redirect
from logd.server.ingest.writers import writers_info
from logd.server.state import (
    BUDGET,
    CONFIG,
    CORS_ORIGIN,
    GUARD,
    INGEST,
    KEYS,
    LIMITER,
    PERSISTER,
    QUERIES,
    QUERY_LIMIT_MAX,
    REAPER,
    SHARED_GUARD,
    STARTED_NS,
    STORE,
    UDP_RCVBUF,
)
from logd.server.store.base import RingStats, StoreUnavailable
from logd.server.tail import TooManyTails

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
SHOWN_RINGS = 20  # in /info and /metrics; the rest as one total
QUERY_PARAMS = frozenset(
    {
        "limit",
        "offset",
        "env",
        "svc",
        "fn",
        "host",
        "lvl",
        "txt",
        "url",
        "status",
        "method",
        "since",
        "until",
        "format",
        "before",
    }
)
TAIL_PARAMS = (QUERY_PARAMS - {"limit", "offset", "until", "before"}) | {"n", "after"}
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON bodies for aiohttp's own errors (404, 405, ...) and for a bug (a 500, logged with
    its traceback), and CORS headers on everything."""
    origin = request.app.get(CORS_ORIGIN)
    if origin and request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Accept"
        response.headers["Access-Control-Max-Age"] = "600"
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = json_error(exc.status, exc.reason.lower(), **_allow_header(exc))
        except Exception:
            # A bug: aiohttp's own logger is muted (attacker-driven noise), so log it here.
            log.exception("internal error answering %s %s", request.method, request.path)
            if request.writer.output_size:
                raise  # a response was under way (a tail): aiohttp closes the connection
            response = json_error(500, "internal error; see the server log")
    if origin and not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    return response


def streamed_cors(request: web.Request) -> dict[str, str]:
    """The CORS headers of a streamed answer, which is sent before the middleware sees it."""
    origin = request.app.get(CORS_ORIGIN)
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin else {}


def _allow_header(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}


def _wants(request: web.Request, media: str, fmt: str) -> bool:
    return request.query.get("format") == fmt or media in request.headers.get("Accept", "")


async def query(request: web.Request) -> web.StreamResponse:
    to_page = browser_redirect(request)
    if to_page is not None:
        return to_page
    denied = authorize(request)
    if denied is not None:
        return denied
    params = request.query
    try:
        check_params(params, QUERY_PARAMS)
        limit = int_param(params, "limit", 100, request.app[QUERY_LIMIT_MAX], lo=1)
        offset = int_param(params, "offset", 0, 10**9)
        flt = Filter.from_params(params, time.time_ns())
        before = backlog.parse_id("before", params["before"]) if "before" in params else None
    except FilterError as err:
        return json_error(400, str(err))
    store = request.app[STORE]
    ids = {}
    if before is not None:
        if not backlog.has_history(store):
            return json_error(400, "before= needs ordered event ids: not on a Valkey cluster")
        ids = {"ids": (0, before - 1)}  # stable paging: older than that event
    gate = request.app[QUERIES]
    if not gate.enter():
        return gate.refusal()
    try:
        max_bytes = request.app[CONFIG].query_max_bytes
        try:
            found = await store.query(flt, limit=limit, offset=offset, max_bytes=max_bytes, **ids)
        except StoreUnavailable as err:
            return json_error(503, str(err), **{"Retry-After": "2"})
        ndjson = _wants(request, NDJSON, "ndjson")
        return await write_answer(
            request,
            found,
            ndjson=ndjson,
            max_bytes=max_bytes,
            gate=gate,
            headers=streamed_cors(request),
        )
    finally:
        gate.leave()


async def tail(request: web.Request) -> web.StreamResponse:
    denied = authorize(request)
    if denied is not None:
        return denied
    params = request.query
    try:
        check_params(params, TAIL_PARAMS)
        flt = Filter.from_params(params, time.time_ns(), allow_until=False)
        ask = backlog.parse_ask(params, request.headers)
    except FilterError as err:
        return json_error(400, str(err))
    store = request.app[STORE]
    if ask is not None and not backlog.has_history(store) and not params.get("since"):
        return json_error(400, "n, after and Last-Event-ID need ordered ids: not on a cluster")
    try:
        if ask is not None and isinstance(store, backlog.FedLater):
            await store.catch_up()  # the history then has the newest events
        sub = store.subscribe(flt)
    except TooManyTails:
        return json_error(429, "too many live tails; retry later", **{"Retry-After": "5"})
    except StoreUnavailable as err:
        return json_error(503, str(err), **{"Retry-After": "2"})
    sse = SSE in request.headers.get("Accept", "")
    first: Iterable[bytes] = ()
    if ask is not None and backlog.has_history(store):
        # Subscribed first: what is stored up to this id is history, the rest comes live.
        try:
            last_id = store.last_id()
            found, gap = await backlog.history(
                store, flt, ask, last_id, request.app[CONFIG].query_max_bytes
            )
        except StoreUnavailable as err:
            sub.close()
            return json_error(503, str(err), **{"Retry-After": "2"})
        except BaseException:
            sub.close()
            raise
        first = backlog.render(found, gap=gap, sse=sse)
    response = web.StreamResponse(
        headers={
            "Content-Type": SSE if sse else NDJSON,
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # tell proxies not to buffer the stream
        }
    )
    response.headers.update(streamed_cors(request))
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None:  # a client that does not read holds at most this in the kernel
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, TAIL_SNDBUF // 2)
    if request.version >= HttpVersion11:
        response.enable_chunked_encoding()  # said here: follow frames its own chunks
    try:
        await response.prepare(request)  # sends the head (a StreamResponse does at once)
        for part in first:
            await response.write(part)
        if request.transport is not None:
            # From here the hub writes each flush straight into the transport.
            await sub.follow(
                request.transport, sse=sse, chunked=response.chunked, keepalive_s=KEEPALIVE_S
            )
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away
    finally:
        sub.close()
    return response


def status(app: web.Application) -> dict[str, Any]:
    """What /info shows: counters and configuration facts, never secrets or log text."""
    ingest = app[INGEST]
    store_stats = app[STORE].stats()
    guard = app[GUARD]
    hub = app[STORE].hub
    return {
        "version": __version__,
        "uptime_s": round((time.time_ns() - app[STARTED_NS]) / 1e9, 3),
        "store": {
            "writes": store_stats.writes,
            "overflow_events": store_stats.overflow_events,
            "evicted_by": evicted_by(store_stats.rings),
            **shown_rings(store_stats.rings),
            "backend": store_stats.backend,
        },
        "memory": memory_info(app),
        "udp": {
            "accept_path": ingest.accept_path,
            "received": ingest.stats.received,
            "accepted": ingest.stats.accepted,
            "events": ingest.stats.events,
            "pongs": ingest.stats.pongs,
            "kernel_drops": ingest.kernel_drops(),
            "rcvbuf_bytes": app[UDP_RCVBUF],
            "rejected": {r.value: n for r, n in ingest.stats.rejected.items()},
            "replay_guard": {
                "entries": len(guard),
                "capacity": guard.capacity,
                "overflows": guard.overflows,
                "across_nodes": app[SHARED_GUARD].info() if SHARED_GUARD in app else None,
            },
            "writers": writers_info(ingest.writers),
        },
        "tail": {"subscribers": len(hub), "published": hub.published, "dropped": hub.dropped},
        "queries": app[QUERIES].info(),
        "http": {"auth_throttled": app[LIMITER].throttled, "idle_closed": app[REAPER].reaped},
        "secrets": app[KEYS].info(ingest.stats.keys.counts),
        "persistence": app[PERSISTER].info() if PERSISTER in app else None,
        "alerts": app[ALERTS].info() if ALERTS in app else None,
    }


def shown_rings(rings: list[RingStats]) -> dict[str, Any]:
    """The SHOWN_RINGS largest rings, and the rest as one total: /info and /metrics stay
    bounded in size whatever env/svc names writers send."""
    largest = sorted(rings, key=lambda r: (-r.bytes, r.key))
    other = largest[SHOWN_RINGS:]
    return {
        "ring_count": len(rings),
        "rings": [_ring_info(r) for r in largest[:SHOWN_RINGS]],
        "rings_other": {
            "rings": len(other),
            "events": sum(r.events for r in other),
            "bytes": sum(r.bytes for r in other),
            "capacity_bytes": sum(r.capacity_bytes for r in other),
            "evicted": sum(r.evicted for r in other),
            "evicted_by": evicted_by(other),
        },
    }


def evicted_by(rings: list[RingStats]) -> dict[str, dict[str, int]]:
    """Events evicted, and the bytes they held, by reason: the byte budget, or age
    (LOGD_RING_MAX_AGE, a `rings:` entry's max_age). `evicted` counts both."""
    aged, aged_bytes = sum(r.aged for r in rings), sum(r.aged_bytes for r in rings)
    return {
        "bytes": {
            "events": sum(r.evicted for r in rings) - aged,
            "bytes": sum(r.evicted_bytes for r in rings) - aged_bytes,
        },
        "age": {"events": aged, "bytes": aged_bytes},
    }


def _ring_info(r: RingStats) -> dict[str, Any]:
    return {
        "key": r.key,
        "events": r.events,
        "bytes": r.bytes,
        "capacity_bytes": r.capacity_bytes,
        "evicted": r.evicted,
        "evicted_by": evicted_by([r]),
    }


def memory_info(app: web.Application) -> dict[str, Any]:
    """The memory limit, what each part may hold (reserved) and holds now (used)."""
    budget = app[BUDGET]
    store_stats = app[STORE].stats()
    guard = app[GUARD]
    return {
        "limit_bytes": budget.limit,
        "source": budget.source,
        "ring_bytes_default": budget.ring_bytes,
        "reserved": budget.parts(),
        "used": {
            "rings": sum(r.bytes for r in store_stats.rings) if budget.rings else 0,
            "tails": app[STORE].hub.queued_bytes,
            "queries": app[QUERIES].held_bytes,
            "replay_guard": len(guard) * budget.replay_entry_bytes,
        },
        "rss_bytes": rss_bytes(),
    }


async def info(request: web.Request) -> web.StreamResponse:
    return web.json_response(status(request.app))


async def metrics(request: web.Request) -> web.StreamResponse:
    return web.Response(
        text=render_metrics(status(request.app)),
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


async def healthz(request: web.Request) -> web.StreamResponse:
    if not request.app[INGEST].running:
        return web.Response(status=503, text="udp listener is down\n")
    return web.Response(text="ok\n")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", query, allow_head=False)
    app.router.add_get("/tail", tail, allow_head=False)
    app.router.add_get("/hits", hits, allow_head=False)
    app.router.add_get("/info", info, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
    app.router.add_get("/healthz", healthz)
    add_alert_routes(app)
    add_ui_routes(app)
