"""A small client of the HTTP read API (docs/http-api.md) for the `logd` command.

Standard library only (urllib), so that `logd query` starts fast. Every failure is a
ClientError whose message is one sentence for a person; `Disconnected` marks the ones
after which a tail may reconnect (the server went away or restarted).
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Generator, Mapping, Sequence
from http.client import HTTPException, HTTPResponse
from typing import Any

from logd import __version__
from logd.errors import ClientError

TIMEOUT_S = 10.0
# The server sends a keep-alive at least every 15 s: a silent tail is a dead one.
TAIL_READ_TIMEOUT_S = 40.0
NDJSON = "application/x-ndjson"
# Query parameters: a mapping, or (name, value) pairs where a name may repeat (an OR).
Params = Mapping[str, str] | Sequence[tuple[str, str]]


class Disconnected(ClientError):
    """The server could not be reached, or the connection broke."""


class ReadClient:
    def __init__(self, base: str, secret: str | None = None, secret_from: str = "") -> None:
        self.base = base
        self._secret = secret
        self._secret_from = secret_from

    def __repr__(self) -> str:
        return f"ReadClient({self.base})"

    def query(self, params: Params, *, ndjson: bool = False) -> bytes:
        """The body of GET / (a JSON array, or NDJSON lines)."""
        with self._open("/", params, accept=NDJSON if ndjson else "application/json") as resp:
            return self._read(resp)

    def hits(self, params: Params) -> dict[str, Any]:
        """The body of GET /hits."""
        with self._open("/hits", params, accept="application/json") as resp:
            body = self._read(resp)
        return self._json_object(body)

    def alerts(self) -> dict[str, Any]:
        """The body of GET /alerts."""
        with self._open("/alerts", {}, accept="application/json") as resp:
            body = self._read(resp)
        return self._json_object(body)

    def info(self) -> dict[str, Any]:
        with self._open("/info", {}, accept="application/json", auth=False) as resp:
            body = self._read(resp)
        return self._json_object(body)

    def _json_object(self, body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ClientError(f"{self.base} did not answer with logd's JSON; is it a logd server?")
        return data

    def tail(self, params: Params) -> Generator[dict[str, Any], None, None]:
        """Connect to GET /tail, then yield each event or `{"dropped": N}` notice. Connecting
        happens on the first next(); a broken or ended stream raises Disconnected."""
        resp = self._open("/tail", params, accept=NDJSON, timeout=TAIL_READ_TIMEOUT_S)
        with resp:
            yield {}  # connected: lets the caller tell "could not connect" from "lost"
            while True:
                try:
                    line = resp.readline()
                except (OSError, HTTPException) as err:
                    raise Disconnected(f"the tail from {self.base} broke ({_why(err)})") from None
                if not line:
                    raise Disconnected(f"{self.base} ended the tail")
                if not line.strip():
                    continue  # keep-alive
                try:
                    item = json.loads(line)
                except ValueError:
                    raise ClientError(f"{self.base} sent a line that is not JSON") from None
                if isinstance(item, dict):
                    yield item

    def _open(
        self,
        path: str,
        params: Params,
        *,
        accept: str,
        auth: bool = True,
        timeout: float = TIMEOUT_S,
    ) -> HTTPResponse:
        pairs = params.items() if isinstance(params, Mapping) else params
        query = urllib.parse.urlencode([(k, v) for k, v in pairs if v not in (None, "")])
        url = self.base + path + ("?" + query if query else "")
        request = urllib.request.Request(  # noqa: S310  # base is checked to be http(s)
            url, headers={"Accept": accept, "User-Agent": f"logd-cli/{__version__}"}
        )
        if auth and self._secret:
            request.add_header("Authorization", self._secret)
        try:
            resp: HTTPResponse = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310
        except urllib.error.HTTPError as err:
            with err:
                raise self._status_error(err.code, err.read()) from None
        except urllib.error.URLError as err:
            raise Disconnected(f"cannot reach logd at {self.base} ({_why(err.reason)})") from None
        except (OSError, HTTPException) as err:
            raise Disconnected(f"cannot reach logd at {self.base} ({_why(err)})") from None
        return resp

    def _read(self, resp: HTTPResponse) -> bytes:
        try:
            return resp.read()
        except (OSError, HTTPException) as err:
            raise Disconnected(f"the answer from {self.base} broke off ({_why(err)})") from None

    def _status_error(self, status: int, body: bytes) -> ClientError:
        try:
            said = str(json.loads(body)["error"])
        except (ValueError, KeyError, TypeError):
            said = ""
        if status == 401:
            return ClientError(
                f"{self.base} refused the read secret from {self._secret_from or 'nowhere'} "
                "(401); check LOGD_READ_SECRET"
            )
        if status == 400 and said:
            return ClientError(f"the server rejected the request: {said}")
        return ClientError(f"{self.base} answered {status}" + (f": {said}" if said else ""))


def _why(err: object) -> str:
    """A short reason from a socket-level error, without a traceback."""
    if isinstance(err, ConnectionRefusedError):
        return "connection refused; is logd running there? check LOGD_HOST"
    if isinstance(err, socket.gaierror):
        return "unknown host; check LOGD_HOST"
    if isinstance(err, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return str(err) or type(err).__name__
