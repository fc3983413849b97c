"""The connection to Valkey/Redis: one server or a cluster, failing fast (the store retries
on its own), and its URL without the password for /info and logs."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def redact(url: str) -> str:
    """The URL without its password, for /info and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = (f"{parts.username}:***@" if parts.username else ":***@") + host
    netloc += f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=netloc))


Client = aioredis.Redis | RedisCluster


def connect(url: str, password: str | None, *, timeout: float) -> Client:
    """A client that fails fast (no retries): the store has its own retry loop.
    `redis+cluster://` and `rediss+cluster://` seed a cluster-mode client, which learns
    the slot map from that node and sends each command to the node that owns its key."""
    scheme, plus, rest = url.partition("+cluster://")
    options: dict[str, Any] = {
        "password": password,
        "socket_timeout": timeout,
        "socket_connect_timeout": min(timeout, 2.0),
        "retry": Retry(NoBackoff(), 0),
    }
    if plus:
        return RedisCluster.from_url(f"{scheme}://{rest}", **options)
    return aioredis.from_url(url, **options)
