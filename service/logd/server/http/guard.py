"""Slow-client protection for the HTTP server (slowloris and idle connections).

aiohttp has no deadline for receiving a request's headers, so a client can hold
a connection open by sending a header line every few seconds, or by sending
nothing. The reaper closes every connection that has no request in progress
and has not finished one within `idle_s`: slow headers, idle keep-alives and
silent sockets all end there. Requests in progress (a live tail) are untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from logd.server.tasks import stop_tasks

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class IdleConnectionReaper:
    def __init__(self, *, idle_s: float) -> None:
        self.idle_s = idle_s
        self._active: dict[Any, int] = {}  # protocol -> requests in progress
        self._idle_since: dict[Any, float] = {}
        self.reaped = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        proto = request.protocol
        self._active[proto] = self._active.get(proto, 0) + 1
        try:
            return await handler(request)
        finally:
            self._active[proto] -= 1
            if not self._active[proto]:
                del self._active[proto]
            self._idle_since[proto] = time.monotonic()

    def sweep(self, connections: list[Any], now: float) -> None:
        """Close idle connections; forget the ones that are gone."""
        alive = set(connections)
        for proto in list(self._idle_since):
            if proto not in alive:
                del self._idle_since[proto]
        for proto in connections:
            if proto in self._active:
                continue
            since = self._idle_since.setdefault(proto, now)  # first seen: about when it connected
            if now - since > self.idle_s:
                proto.force_close()
                self.reaped += 1

    async def run(self, server: web.Server) -> None:
        interval = min(1.0, self.idle_s / 2)
        while True:
            await asyncio.sleep(interval)
            self.sweep(list(server.connections), time.monotonic())

    @contextlib.asynccontextmanager
    async def running(self, server: web.Server) -> Any:
        task = asyncio.create_task(self.run(server), name="logd-reaper")
        try:
            yield
        finally:
            await stop_tasks([task])
