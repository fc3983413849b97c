"""Wiring: build the application from a Config, start it, stop it on a signal.

Start-up order (cleanup contexts unwind in reverse): keys, then the rings
loaded from the data directory with their flush task, then the UDP endpoint
(which feeds the store), then the Secrets Manager reload loop. HTTP opens last,
once there is something to read.
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

from aiohttp import web

from logd.accept import FrameChecker
from logd.config import Config
from logd.fastpath import FastPath, available, replay_guard
from logd.http_api import add_routes, error_middleware
from logd.http_guard import IdleConnectionReaper
from logd.ingest import UdpIngest, bind_udp
from logd.ratelimit import FailureLimiter
from logd.replay_shared import SharedReplayGuard
from logd.secrets import DevFileSource, KeyManager, Reloader, select_source
from logd.secrets.aws import SecretsManagerSource
from logd.state import (
    CORS_ORIGIN,
    GUARD,
    INGEST,
    KEYS,
    LIMITER,
    PERSISTER,
    QUERY_LIMIT_MAX,
    REAPER,
    SHARED_GUARD,
    STARTED_NS,
    STORE,
    UDP_RCVBUF,
)
from logd.store import MemoryStore, Store
from logd.store.persist import Persister
from logd.store.valkey import ValkeyStore
from logd.tasks import stop_tasks

log = logging.getLogger("logd.app")
SHUTDOWN_TIMEOUT_S = 3.0


def create_app(config: Config) -> web.Application:
    reaper = IdleConnectionReaper(idle_s=config.http_idle_timeout)
    app = web.Application(middlewares=[reaper.middleware, error_middleware])
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
    reloader = Reloader(app[KEYS], interval_s=config.secrets_reload_interval) if rotating else None
    app[STORE] = _make_store(config)
    # The freshness window of PROTOCOL.md, in the nanoseconds the checks use.
    max_age_ns, max_future_ns = int(config.max_age * 1e9), int(config.max_future * 1e9)
    app[GUARD] = replay_guard(max_age_ns=max_age_ns, capacity=config.replay_capacity)
    app[LIMITER] = FailureLimiter(per_minute=config.auth_fail_limit)
    app[QUERY_LIMIT_MAX] = config.query_limit_max
    if config.cors_origin:
        app[CORS_ORIGIN] = config.cors_origin

    async def keys_ctx(app: web.Application) -> AsyncIterator[None]:
        await app[KEYS].start()
        yield

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        store = app[STORE]
        if not isinstance(store, ValkeyStore):
            yield
            return
        await store.start()
        guard = app[SHARED_GUARD] = SharedReplayGuard(
            client=store.client,
            max_age_ns=max_age_ns,
            max_future_ns=max_future_ns,
            offline=lambda: store.down,
        )
        try:
            yield
        finally:
            # After the UDP endpoint closed: let the last checks finish, send what is buffered.
            await guard.close()
            await store.close()

    async def persist_ctx(app: web.Application) -> AsyncIterator[None]:
        store = app[STORE]
        if config.data_dir is None or not isinstance(store, MemoryStore):
            yield
            return
        persister = app[PERSISTER] = Persister(
            store=store, data_dir=config.data_dir, interval=config.flush_interval
        )
        await persister.load()  # before the UDP port opens: old events first
        persister.start()
        try:
            yield
        finally:
            await persister.stop()  # after the UDP endpoint closed: a last flush

    async def udp_ctx(app: web.Application) -> AsyncIterator[None]:
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
        checker = FrameChecker(
            keys=keys,
            guard=app[GUARD],
            max_frame=config.max_frame,
            max_age_ns=max_age_ns,
            max_future_ns=max_future_ns,
        )
        store = app[STORE]
        fast = None
        if available() and isinstance(store, MemoryStore):
            fast = FastPath(
                keys=keys,
                guard=app[GUARD],
                store=store,
                max_frame=config.max_frame,
                max_age_ns=max_age_ns,
                max_future_ns=max_future_ns,
            )
        app[INGEST] = UdpIngest(
            sock=sock,
            checker=checker,
            store=store,
            expire=app[GUARD].expire,
            on_unknown_key=reloader.poke if reloader else None,
            shared_guard=app.get(SHARED_GUARD),
            fast=fast,
            # Shorter turns with a remote store: each step of a flush or a replay check
            # waits for the next turn of the event loop, so long drains would starve them.
            drain_max=64 if isinstance(store, ValkeyStore) else 1024,
        )
        app[INGEST].start(asyncio.get_running_loop())
        try:
            yield
        finally:
            app[INGEST].stop()
            sock.close()

    async def reload_ctx(app: web.Application) -> AsyncIterator[None]:
        if reloader is None:
            yield
            return
        task = asyncio.get_running_loop().create_task(reloader.run(), name="logd-reload")
        yield
        await stop_tasks([task])

    async def close_tails(app: web.Application) -> None:
        app[STORE].hub.close_all()

    app.cleanup_ctx.extend([keys_ctx, store_ctx, persist_ctx, udp_ctx, reload_ctx])
    app.on_shutdown.append(close_tails)
    add_routes(app)
    return app


def _make_store(config: Config) -> Store:
    if config.store_url == "memory://":
        return MemoryStore(
            ring_bytes=config.ring_bytes,
            ring_sizes=config.rings,
            max_rings=config.max_rings,
            max_tails=config.max_tails,
            tail_queue=config.tail_queue,
        )
    return ValkeyStore(
        url=config.store_url,
        password=config.store_password,
        buffer_events=config.store_buffer,
        ring_bytes=config.ring_bytes,
        ring_sizes=config.rings,
        max_rings=config.max_rings,
        max_tails=config.max_tails,
        tail_queue=config.tail_queue,
    )


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
    """Run until SIGTERM/SIGINT; SIGHUP reloads the secrets."""
    app = create_app(config)
    # handler_cancellation: a tail whose client went away is cancelled at once, which
    # frees its subscriber slot instead of waiting for the next keep-alive write to fail.
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        handler_cancellation=True,
    )
    # Signals first: a SIGTERM during start-up (loading keys or data) still stops cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[bool]] = set()

    def reload() -> None:
        if app[KEYS].holder is None:
            return  # still starting: the first load is about to read the source anyway
        task = loop.create_task(app[KEYS].reload())
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
        app[INGEST].stop()  # stop reading UDP first, then close HTTP and the tails
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
