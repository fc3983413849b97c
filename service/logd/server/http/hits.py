"""GET /hits (HTTP_API.md): counts of the matching events over time, per bucket of
`step`, grouped `by` a field. The store counts (store/tally.py); this parses and answers.
"""

from __future__ import annotations

import time

from aiohttp import web

from logd.server.filters import (
    ATTR_PREFIX,
    MAX_ATTR_KEY,
    Filter,
    FilterError,
    duration_ns,
)
from logd.server.http.requests import authorize, check_params, json_error
from logd.server.state import QUERIES, STORE
from logd.server.store.base import StoreUnavailable
from logd.server.store.tally import (
    BY_FIELDS,
    MAX_STEP_S,
    Grouping,
    S,
    Tally,
    TooManyBuckets,
)

HITS_PARAMS = frozenset(
    {"env", "svc", "fn", "host", "lvl", "txt", "url", "status", "method"}  # the filters
    | {"since", "until", "step", "by"}
)


def parse_step(value: str | None) -> int | None:
    """`step` as whole seconds, 1 s to MAX_STEP_S; None when not given."""
    if not value:
        return None
    expected = f"a duration of whole seconds from 1s to {MAX_STEP_S // 86400}d (30s, 1m, 1h)"
    step_ns = duration_ns("step", value)
    if step_ns is None or step_ns % S or not S <= step_ns <= MAX_STEP_S * S:
        raise FilterError("step", expected)
    return step_ns // S


def parse_by(value: str | None) -> Grouping | None:
    if not value:
        return None
    grouping = Grouping.parse(value)
    if grouping is None or (
        grouping.field == "attrs" and not 0 < len(grouping.key) <= MAX_ATTR_KEY
    ):
        raise FilterError(
            "by",
            ", ".join(BY_FIELDS)
            + f" or {ATTR_PREFIX}KEY with a KEY of 1 to {MAX_ATTR_KEY} characters",
        )
    return grouping


async def hits(request: web.Request) -> web.StreamResponse:
    denied = authorize(request)
    if denied is not None:
        return denied
    params = request.query
    now_ns = time.time_ns()
    try:
        check_params(params, HITS_PARAMS)
        flt = Filter.from_params(params, now_ns)
        tally = Tally(
            step_s=parse_step(params.get("step")),
            since_ns=flt.since_ns,
            until_ns=flt.until_ns,
            now_ns=now_ns,
            grouping=parse_by(params.get("by")),
        )
    except FilterError as err:
        return json_error(400, str(err))
    except TooManyBuckets as err:
        return json_error(400, str(FilterError("step", str(err))))
    gate = request.app[QUERIES]
    if not gate.enter():
        return gate.refusal()
    try:
        await request.app[STORE].hits(flt, tally)
    except TooManyBuckets as err:
        return json_error(400, str(FilterError("step", str(err))))
    except StoreUnavailable as err:
        return json_error(503, str(err), **{"Retry-After": "2"})
    finally:
        gate.leave()
    return web.json_response(tally.result())
