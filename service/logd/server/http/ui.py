"""GET /ui/: the web page for reading logs (index.html, app.js, app.css, icon.svg in
logd.server.ui), and the redirect of a browser that opens `/`.

The page's files are read from the package once, at start: logd serves everything the page
needs (the host may have no internet), and a request never touches the disk. Every answer
carries the page's security headers: a Content-Security-Policy that allows only logd's own
script, style and connections (no inline script or style, no framing), no MIME sniffing,
no referrer.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

UI_PATH = "/ui/"
FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
    "icon.svg": "image/svg+xml",  # asked for by the page: no 404 for /favicon.ico
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    # A new logd version serves new files: the browser asks again before using its copy.
    "Cache-Control": "no-cache",
}


def _load() -> dict[str, bytes]:
    package = resources.files("logd.server.ui")
    return {name: package.joinpath(name).read_bytes() for name in FILES}


def browser_redirect(request: web.Request) -> web.Response | None:
    """A browser opening `/` (asks for HTML, sends no secret) goes to the page, filters
    kept; curl and every JSON client (no text/html in Accept, or an Authorization header)
    get the query as before."""
    if "text/html" not in request.headers.get("Accept", "") or "Authorization" in request.headers:
        return None
    location = UI_PATH + (f"?{request.query_string}" if request.query_string else "")
    return web.Response(status=302, headers={"Location": location, **SECURITY_HEADERS})


def add_ui_routes(app: web.Application) -> None:
    bodies = _load()

    def serve(name: str) -> web.Response:
        return web.Response(
            body=bodies[name],
            content_type=FILES[name],
            charset="utf-8",
            headers=SECURITY_HEADERS,
        )

    async def index(request: web.Request) -> web.StreamResponse:
        return serve("index.html")

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in bodies or name == "index.html":
            raise web.HTTPNotFound()
        return serve(name)

    async def to_page(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(UI_PATH)

    app.router.add_get("/ui", to_page, allow_head=False)
    app.router.add_get(UI_PATH, index, allow_head=False)
    app.router.add_get(UI_PATH + "{name}", asset, allow_head=False)
