"""What the HTTP side answers when something goes wrong: JSON, never a bare 500, and a bug
that still gets through is logged with its traceback."""

from __future__ import annotations

import asyncio
import json
import logging
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from logd.server.http.routes import error_middleware


def test_an_unexpected_error_is_a_json_500_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        raise ZeroDivisionError("a bug")

    writer = mock.Mock(output_size=0)  # nothing sent yet
    request = make_mocked_request("GET", "/info", app=web.Application(), writer=writer)
    with caplog.at_level(logging.ERROR):
        response = asyncio.run(error_middleware(request, broken))
    assert isinstance(response, web.Response)
    assert response.status == 500
    assert response.body is not None
    assert json.loads(bytes(response.body)) == {"error": "internal error; see the server log"}
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None
    assert record.exc_info[0] is ZeroDivisionError
    assert "/info" in record.getMessage()
