"""aiohttp's own error answers in logd's JSON, and never with what the client sent.

A request line or header that aiohttp's parser refuses (too long, too many, a bad
character, not HTTP at all), and a handler that times out or raises, never reach a
middleware: the connection's `RequestHandler.handle_error` answers them, in text/plain,
with the parser's message, which can quote the header it refused. aiohttp has no hook
for it (aio-libs/aiohttp#3287), so the runner here builds the server's connections from
a subclass that answers `{"error": "..."}`. The client caused a 4xx: logged once per
status, then only counted by its absence (QuietLogger); a 5xx is a bug: logged with its
traceback every time.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from logd.server.logsetup import QuietLogger

log = logging.getLogger(__name__)
_quiet = QuietLogger(log)


def error_sentence(status: int, exc: BaseException | None) -> str:
    """What went wrong, in words of logd's own: nothing of the request is quoted."""
    if status >= 500:
        return "request timed out" if status == 504 else "internal error; see the server log"
    if isinstance(exc, LineTooLong):
        return "request line or header too long"
    if isinstance(exc, BadHttpMethod):
        return "not an HTTP request"
    return "malformed HTTP request"


class JsonErrorHandler(RequestHandler):
    """A connection whose own error answers are JSON (see the module docstring)."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("internal error answering a request", exc_info=exc)
        else:
            kind = type(exc).__name__ if exc is not None else "-"
            _quiet.once(f"http_{status}", "refused a malformed request status=%d kind=%s",
                        status, kind)  # fmt: skip
        if request.writer.output_size > 0:  # as aiohttp: a response is under way
            raise ConnectionError("a response was already being sent; closing the connection")
        response = web.json_response({"error": error_sentence(status, exc)}, status=status)
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """`web.AppRunner` whose server answers its own errors in JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _JsonErrorServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
