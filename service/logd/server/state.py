"""Typed keys for what the aiohttp application holds."""

from __future__ import annotations

from aiohttp import web

from logd.server.budget import Budget
from logd.server.config import Config
from logd.server.http.answer import QueryGate
from logd.server.http.guard import IdleConnectionReaper
from logd.server.http.ratelimit import FailureLimiter
from logd.server.ingest.drain import UdpIngest
from logd.server.ingest.replay import MacGuard
from logd.server.secrets import KeyManager, Reloader
from logd.server.store import Store
from logd.server.store.backends import Backend
from logd.server.store.persist import Persister
from logd.server.store.valkey.replay import SharedReplayGuard

CONFIG = web.AppKey("config", Config)
BUDGET = web.AppKey("budget", Budget)
QUERIES = web.AppKey("queries", QueryGate)
KEYS = web.AppKey("keys", KeyManager)
RELOADER = web.AppKey("reloader", Reloader)
BACKEND: web.AppKey[Backend] = web.AppKey("backend")  # a Protocol, as STORE
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
