"""Typed keys for what the aiohttp application holds."""

from __future__ import annotations

from aiohttp import web

from logd.http_guard import IdleConnectionReaper
from logd.ingest import UdpIngest
from logd.ratelimit import FailureLimiter
from logd.replay import MacGuard
from logd.replay_shared import SharedReplayGuard
from logd.secrets import KeyManager
from logd.store import Store
from logd.store.persist import Persister

KEYS = web.AppKey("keys", KeyManager)
STORE: web.AppKey[Store] = web.AppKey("store")  # a Protocol: no runtime type to pass
PERSISTER = web.AppKey("persister", Persister)
INGEST = web.AppKey("ingest", UdpIngest)
GUARD: web.AppKey[MacGuard] = web.AppKey("guard")  # a Protocol, as STORE
SHARED_GUARD = web.AppKey("shared_guard", SharedReplayGuard)
LIMITER = web.AppKey("limiter", FailureLimiter)
REAPER = web.AppKey("reaper", IdleConnectionReaper)
STARTED_NS = web.AppKey("started_ns", int)
QUERY_LIMIT_MAX = web.AppKey("query_limit_max", int)
CORS_ORIGIN = web.AppKey("cors_origin", str)
UDP_RCVBUF = web.AppKey("udp_rcvbuf", int)
