"""Wiring: build the application from a Config, start it, stop it on a signal.

Each resource is one cleanup context, started in this order and stopped in
reverse: keys; the store (with its data directory or its remote server); the
alerts' deliveries and their periodic check; the UDP endpoint, which feeds the
store and the alerts; the Secrets Manager reload loop. HTTP opens
last, once there is something to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from logd.server.alerts.rules import AlertConfig
from logd.server.alerts.service import ALERTS, Alerts, alerts_ctx
from logd.server.budget import plan
from logd.server.config import Config
from logd.server.http.answer import QueryGate
from logd.server.http.guard import IdleConnectionReaper
from logd.server.http.protocol import JsonErrorRunner
from logd.server.http.ratelimit import FailureLimiter
from logd.server.http.routes import add_routes, error_middleware
from logd.server.ingest.drain import UdpIngest
from logd.server.ingest.engine import default_impl, make_engine, replay_guard, restart_floor
from logd.server.ingest.udp import bind_udp
from logd.server.secrets import DevFileSource, KeyManager, Reloader, select_source
from logd.server.secrets.aws import SecretsManagerSource
from logd.server.state import (
    BACKEND,
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
    RELOADER,
    SHARED_GUARD,
    STARTED_NS,
    STORE,
    UDP_RCVBUF,
)
from logd.server.store.backends import backend_for
from logd.server.tasks import stop_tasks

log = logging.getLogger(__name__)
SHUTDOWN_TIMEOUT_S = 3.0


def create_app(config: Config) -> web.Application:
    reaper = IdleConnectionReaper(idle_s=config.http_idle_timeout)
    app = web.Application(middlewares=[reaper.middleware, error_middleware])
    app[CONFIG] = config
    app[REAPER] = reaper
    app[STARTED_NS] = time.time_ns()
    source = select_source(
        read_secret=config.read_secret,
        write_secret=config.write_secret,
        secrets_file=config.secrets_file,
        read_secret_id=config.read_secret_id,
        write_secret_id=config.write_secret_id,
    )
    # Secrets Manager rotates on its own: poll it, and let AWSPREVIOUS expire.
    rotating = isinstance(source, SecretsManagerSource)
    app[KEYS] = KeyManager(
        source, previous_grace_s=config.secrets_previous_grace if rotating else None
    )
    if rotating:
        app[RELOADER] = Reloader(app[KEYS], interval_s=config.secrets_reload_interval)
    budget = app[BUDGET] = plan(config, engine=default_impl())
    backend = app[BACKEND] = backend_for(config, budget)
    app[STORE] = backend.store
    app[GUARD] = replay_guard(max_age_ns=config.max_age_ns, capacity=config.replay_capacity)
    app[LIMITER] = FailureLimiter(per_minute=config.auth_fail_limit)
    app[QUERY_LIMIT_MAX] = config.query_limit_max
    app[QUERIES] = QueryGate(config.max_queries)
    if config.cors_origin:
        app[CORS_ORIGIN] = config.cors_origin
    app[ALERTS] = Alerts(AlertConfig(config.alerts, config.notify), config.config_file)
    app.cleanup_ctx.extend([keys_ctx, store_ctx, alerts_ctx, udp_ctx, reload_ctx])
    app.on_shutdown.append(close_tails)
    add_routes(app)
    return app


async def keys_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[KEYS].start()
    yield


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    backend = app[BACKEND]
    async with backend.opened():
        if backend.persister is not None:
            app[PERSISTER] = backend.persister
        if backend.shared_guard is not None:
            app[SHARED_GUARD] = backend.shared_guard
        yield


async def udp_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    sock, granted = bind_udp(config.udp_addr, config.udp_rcvbuf)
    app[UDP_RCVBUF] = granted
    if granted < config.udp_rcvbuf:
        log.warning(
            "udp receive buffer smaller than asked asked=%d granted=%d "
            "fix='sysctl -w net.core.rmem_max=%d'",
            config.udp_rcvbuf,
            granted,
            config.udp_rcvbuf,
        )
    keys = app[KEYS].holder
    if keys is None:
        raise RuntimeError("the keys context must start before the UDP endpoint")
    backend, guard = app[BACKEND], app[GUARD]
    shared_guard = backend.shared_guard
    reloader = app.get(RELOADER)
    # What this process accepted before a restart it has forgotten: refuse it as stale.
    floor = restart_floor(started_ns=app[STARTED_NS], max_future_ns=config.max_future_ns)
    engine = make_engine(
        impl=None,
        keys=keys,
        guard=guard,
        store=backend.store,
        max_frame=config.max_frame,
        max_age_ns=config.max_age_ns,
        max_future_ns=config.max_future_ns,
        not_before_ns=floor,
        clock=time.time_ns,
        shared_guard=shared_guard,  # the C engine runs the check across nodes itself
    )
    ingest = app[INGEST] = UdpIngest(
        sock=sock,
        engine=engine,
        store=backend.store,
        expire=guard.expire,
        on_unknown_key=reloader.poke if reloader else None,
        shared_guard=None if engine.checks_across_nodes else shared_guard,
        drain_max=backend.drain_max,
        alerts=app[ALERTS].engine,
    )
    ingest.start(asyncio.get_running_loop())
    try:
        # Ready once frames signed now are past the floor (at most max_future after start).
        await asyncio.sleep(max(0, floor - time.time_ns()) / 1e9)
        yield
    finally:
        ingest.stop()  # the one place ingest stops: after HTTP and the tails closed
        sock.close()


async def reload_ctx(app: web.Application) -> AsyncIterator[None]:
    reloader = app.get(RELOADER)
    if reloader is None:
        yield
        return
    task = asyncio.get_running_loop().create_task(reloader.run(), name="logd-reload")
    yield
    await stop_tasks([task])


async def close_tails(app: web.Application) -> None:
    app[STORE].hub.close_all()


def _tls_context(config: Config) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


def _bind_tcp(addr: tuple[str, int]) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)
    sock.listen(512)
    sock.setblocking(False)
    return sock


async def serve(config: Config) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the secrets and the alert rules."""
    app = create_app(config)
    # JsonErrorRunner: aiohttp's own 400s (a malformed request) are JSON as well.
    # handler_cancellation: a tail whose client went away is cancelled at once, which
    # frees its subscriber slot instead of waiting for the next keep-alive write to fail.
    runner = JsonErrorRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        handler_cancellation=True,
    )
    # Signals first: a SIGTERM during start-up (loading keys or data) still stops cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[Any]] = set()

    def reload() -> None:
        if app[KEYS].holder is None:
            return  # still starting: the first load is about to read the source anyway
        for job in (app[KEYS].reload(), app[ALERTS].reload()):
            task = loop.create_task(job)
            reloads.add(task)
            task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await runner.setup()
        if runner.server is None:
            raise RuntimeError("the HTTP server must be set up before it is guarded")
        http_sock = _bind_tcp(config.http_addr)
        site = web.SockSite(
            runner, http_sock, ssl_context=_tls_context(config), shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        await site.start()
        _announce(app, config, http_sock)
        async with app[REAPER].running(runner.server):
            await stop.wait()
        log.info("stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    log.info("stopped")


def _announce(app: web.Application, config: Config, http_sock: socket.socket) -> None:
    udp_host, udp_port = app[INGEST].address
    http_host, http_port = http_sock.getsockname()[:2]
    scheme = "https" if config.tls_cert else "http"
    url = f"{scheme}://{_show_host(http_host)}:{http_port}"
    source = app[KEYS].source
    log.info(
        "ready udp=%s:%d http=%s secrets=%s:%s", udp_host, udp_port, url, source.name, source.where
    )
    if isinstance(source, DevFileSource):
        print(
            f"\nlogd is running (dev mode). Secrets: {source.where} (0600, never printed)\n"
            f"  write: UDP {udp_host}:{udp_port}    read: {url}\n"
            f"  try:   (. {source.where} && curl --location '{url}/?limit=10' "
            f'--header "Authorization: $LOGD_READ_SECRET")\n',
            file=sys.stderr,
            flush=True,
        )


def _show_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def run(config: Config) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(serve(config))
