"""A real webhook receiver for the alert tests: an aiohttp server on 127.0.0.1 (a free
port), in its own thread, that records what it is sent. Paths choose its behaviour:
/ok answers 200, /flaky answers 500 to the first request and 200 after, /hang never
answers (until the receiver stops)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from support import wait_for


class Receiver:
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []  # (path, JSON body)
        self.hung = 0
        self._flaky_seen = 0
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._ready = threading.Event()
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="receiver")
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("the webhook receiver did not start")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in list(self.posts) if p == path]

    def wait_bodies(self, path: str, n: int, timeout: float = 15) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.bodies(path)) >= n, timeout=timeout)
        return self.bodies(path)

    async def _handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        self.posts.append((request.path, body))
        if request.path == "/hang":
            self.hung += 1
            await self._stop.wait()
        if request.path == "/flaky":
            self._flaky_seen += 1
            if self._flaky_seen == 1:
                return web.Response(status=500, text="try again")
        return web.Response(text="ok")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@contextmanager
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()
