"""Hostile HTTP clients against a real logd: slow, silent, oversized; and no secret leaks."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from logd._pb.logd_pb2 import Msg
from logd.wire import Signer
from support import READ_SECRET, WRITE_SECRET, LogdProcess, start_logd, wait_for

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogdProcess]:
    proc = start_logd(tmp_path_factory.mktemp("guarded"), "--http-idle-timeout", "1")
    yield proc
    proc.stop()


def _connect(proc: LogdProcess) -> socket.socket:
    host, port = urllib.parse.urlsplit(proc.http_url).netloc.split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _closed_by_server(sock: socket.socket, dribble: bytes | None, within: float = 10.0) -> bool:
    """Keep the connection busy the slow way until the server closes it (or time runs out)."""
    deadline = time.monotonic() + within
    sock.settimeout(0.3)
    while time.monotonic() < deadline:
        try:
            if dribble:
                sock.sendall(dribble)
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def test_guard_against_slowloris(guarded: LogdProcess) -> None:
    with _connect(guarded) as sock:
        sock.sendall(b"GET /info HTTP/1.1\r\nHost: x\r\n")
        assert _closed_by_server(sock, dribble=b"X-Slow: 1\r\n")


def test_guard_against_silent_connections(guarded: LogdProcess) -> None:
    with _connect(guarded) as sock:
        assert _closed_by_server(sock, dribble=None)
    assert guarded.info()["http"]["idle_closed"] >= 1


def test_live_tails_are_not_reaped(guarded: LogdProcess) -> None:
    with _connect(guarded) as sock:
        sock.sendall(
            f"GET /tail HTTP/1.1\r\nHost: x\r\nAuthorization: {READ_SECRET}\r\n\r\n".encode()
        )
        wait_for(lambda: guarded.info()["tail"]["subscribers"] == 1)
        time.sleep(2.5)  # longer than the idle timeout: the stream is a request in progress
        guarded.write(Msg(env="e", svc="s", txt="still here"))
        received = b""
        while b"still here" not in received:
            chunk = sock.recv(4096)
            assert chunk, "the tail was closed"
            received += chunk


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /?txt=" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: 1\r\n" % i for i in range(500))
        + b"\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100,  # TLS to a plain port
        b"GARBAGE\r\n\r\n",
    ],
    ids=["huge_url", "huge_header", "many_headers", "tls_hello", "garbage"],
)
def test_guard_against_malformed_requests(guarded: LogdProcess, request_bytes: bytes) -> None:
    with _connect(guarded) as sock:
        sock.sendall(request_bytes)
        reply = sock.recv(200)
    assert reply.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4")), reply[:60]
    assert guarded.get("/healthz", secret="")[0] == 200


MARKER = "Zq7-header-value-marker"


def _reply(proc: LogdProcess, request_bytes: bytes) -> bytes:
    """Everything the server sends back before it closes the connection."""
    reply = b""
    with _connect(proc) as sock:
        sock.sendall(request_bytes)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                reply += chunk
    return reply


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /?txt=" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + MARKER.encode() * 1000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: 1\r\n" % i for i in range(500))
        + b"\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: \x01" + MARKER.encode() + b"\x7f\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX Bad Name" + MARKER.encode() + b": 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: " + MARKER.encode() + b"\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100,  # TLS to a plain port
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + MARKER.encode() + b"\r\n\r\n",
    ],
    ids=["huge_url", "huge_header", "many_headers", "control_chars_in_a_value",
         "bad_header_name", "bad_content_length", "tls_hello", "garbage", "bad_encoding"],
)  # fmt: skip
def test_guard_against_parser_errors_leaking_or_breaking_the_json_contract(
    guarded: LogdProcess, request_bytes: bytes
) -> None:
    """aiohttp's own 400s are JSON like every other error and never echo what was sent."""
    reply = _reply(guarded, request_bytes)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.1 400 ", b"HTTP/1.0 400 ")), reply[:80]
    assert b"content-type: application/json" in head.lower(), head
    error = json.loads(body)["error"]
    assert isinstance(error, str)
    assert error
    assert MARKER.encode() not in reply
    assert MARKER not in guarded.log()
    assert guarded.get("/healthz", secret="")[0] == 200


def test_guard_against_secrets_in_any_output(tmp_path: Path) -> None:
    """Use every secret in every way, make everything fail once, then grep all output."""
    secrets_file = tmp_path / "secrets.env"
    previous = "previous-write-secret-zzzzzzzzzz"
    secrets_file.write_text(
        f"LOGD_READ_SECRET={READ_SECRET}\nLOGD_WRITE_SECRET={WRITE_SECRET}\n"
        f"LOGD_WRITE_SECRET_PREVIOUS={previous}\n"
    )
    secrets_file.chmod(0o600)
    proc = start_logd(tmp_path, "--secrets-file", str(secrets_file), secrets=False)
    outputs: list[str] = []
    try:
        proc.write(Msg(txt="ok"), secret=previous)
        proc.send_frame(Signer(READ_SECRET.encode()).sign(b"\x12\x00", time.time_ns()))
        guesses = (READ_SECRET[:-1], WRITE_SECRET, f"Bearer {previous}")
        outputs += [json.dumps(proc.get("/", secret=guess)[1]) for guess in guesses]
        # A broken file on reload: the error must name the problem, not the values.
        secrets_file.write_text(
            f"LOGD_READ_SECRET={READ_SECRET}\nLOGD_WRITE_SECRETS={WRITE_SECRET}\n"
        )
        proc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: proc.info()["secrets"]["last_error"])
        outputs += [json.dumps(proc.info()), proc.get("/metrics", secret="")[1]]
        outputs.append(json.dumps(proc.get("/?lvl=x")[1]))
    finally:
        proc.stop()
    outputs.append(proc.log())
    everything = "\n".join(outputs)
    assert "LOGD_WRITE_SECRETS" in everything  # the reload error was reported...
    for secret in (READ_SECRET, WRITE_SECRET, previous):
        assert secret not in everything  # ...without any secret
