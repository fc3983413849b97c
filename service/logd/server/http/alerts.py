"""GET /alerts (docs/http-api.md): each rule, its state, the count in its window and when
it last fired; the read secret. Never a webhook URL: targets are named only."""

from __future__ import annotations

from aiohttp import web

from logd.server.alerts.service import ALERTS
from logd.server.filters import FilterError
from logd.server.http.requests import authorize, json_error


async def alerts(request: web.Request) -> web.StreamResponse:
    denied = authorize(request)
    if denied is not None:
        return denied
    for name in request.query:
        return json_error(400, str(FilterError(name, "no parameters (GET /alerts takes none)")))
    state = request.app[ALERTS]
    return web.json_response(
        {"rules": state.engine.status(), "notices": state.notifier.info()},
    )


def add_alert_routes(app: web.Application) -> None:
    app.router.add_get("/alerts", alerts, allow_head=False)
