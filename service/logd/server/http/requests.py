"""What every read handler does first, and how it answers an error: the read secret
(checked before the failure limit), the query parameters (unknown ones refused,
filters may repeat), whole-number parameters, and JSON errors."""

from __future__ import annotations

import time
from collections.abc import Mapping

from aiohttp import web
from multidict import MultiMapping

from logd.server.filters import FilterError, is_filter_param, whole_number
from logd.server.state import KEYS, LIMITER


def json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


def authorize(request: web.Request) -> web.Response | None:
    """None when the request carries an accepted read secret; else the 401/429 answer.

    The secret is checked first: a correct one is never refused because someone else
    failed from the same address (a shared NAT, a neighbour's stale config). Failures are
    throttled per address: past the limit a wrong secret gets 429, not another 401.
    """
    token = request.headers.get("Authorization", "")
    if token[:7].lower() == "bearer ":
        token = token[7:]
    holder = request.app[KEYS].holder
    if token and holder is not None and holder.ring.check_token(token) is not None:
        return None
    limiter = request.app[LIMITER]
    now = time.monotonic()
    retry = limiter.retry_after(_client(request), now)
    if retry is not None:
        return json_error(
            429,
            "too many failed authentications; retry later",
            **{"Retry-After": str(max(1, round(retry)))},
        )
    limiter.failed(_client(request), now)
    return json_error(401, "missing or wrong read secret in the Authorization header")


def check_params(params: MultiMapping[str], allowed: frozenset[str]) -> None:
    """Unknown parameters are refused; filter parameters (filters.is_filter_param) may
    repeat (an OR), the others are given once."""
    for name in params:
        if is_filter_param(name):
            continue
        if name not in allowed:
            known = [*sorted(allowed), "attr.KEY", "NAME! (exclude)"]
            raise FilterError(name, "no such parameter; known: " + ", ".join(known))
        if name != "lvl" and len(params.getall(name)) > 1:
            raise FilterError(name, "one value (only filters may be repeated)")
    if params.get("format", "json") not in ("json", "ndjson"):
        raise FilterError("format", "json or ndjson")


def int_param(params: Mapping[str, str], name: str, default: int, hi: int, lo: int = 0) -> int:
    text = params.get(name)
    if text is None or text == "":
        return default
    number = whole_number(text)
    if number is None or not lo <= number <= hi:
        raise FilterError(name, f"a whole number from {lo} to {hi}")
    return number
