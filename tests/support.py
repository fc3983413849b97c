"""Test helpers: a real `logd serve` process on free ports, and a minimal writer/reader
that follow only docs/protocol.md and docs/http-api.md (stdlib + protobuf)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from logd._pb.logd_pb2 import Cmd, Msg
from logd.server.tail import Subscription
from logd.wire import Signer

READ_SECRET = "read-secret-for-tests-0123456789abcdef"
WRITE_SECRET = "write-secret-for-tests-0123456789abcdef"
_READY = re.compile(r"ready udp=(?P<udp_host>[^ ]+):(?P<udp>\d+) http=(?P<http>\S+)")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for servers that cannot report their own)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM by PID, then SIGKILL if it does not exit within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        time.sleep(interval)


class LogdProcess:
    """A running `logd serve`; stop() sends SIGTERM and returns the exit code."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path, env: Mapping[str, str]):
        self.proc = proc
        self.log_path = log_path
        self.env = dict(env)
        # Generous: a busy CI machine can take a while to import and bind.
        match = wait_for(lambda: self._died() or _READY.search(self.log()), timeout=30)
        self.udp_addr = ("127.0.0.1", int(match.group("udp")))
        self.http_url = match.group("http")
        self.read_secret = self.env.get("LOGD_READ_SECRET", READ_SECRET)
        self.write_secret = self.env.get("LOGD_WRITE_SECRET", WRITE_SECRET)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(2.0)

    def _died(self) -> None:
        """Fail at once, with the log, if logd exited instead of getting ready."""
        if self.proc.poll() is not None:
            raise AssertionError(f"logd exited with {self.proc.returncode}:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    # --- writing (docs/protocol.md) -------------------------------------------------
    def frame(self, cmd: Cmd, *, secret: str | None = None, signed_at: int | None = None) -> bytes:
        signer = Signer((secret or self.write_secret).encode())
        return signer.sign(
            cmd.SerializeToString(), time.time_ns() if signed_at is None else signed_at
        )

    def send_frame(self, frame: bytes) -> None:
        self.sock.sendto(frame, self.udp_addr)

    def write(self, *msgs: Msg, secret: str | None = None) -> None:
        cmd = Cmd(msg=msgs[0])
        cmd.batch.extend(msgs[1:])
        self.send_frame(self.frame(cmd, secret=secret))

    # --- reading (docs/http-api.md) -------------------------------------------------
    def get(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        secret: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any, Mapping[str, str]]:
        url = self.http_url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310
        if secret != "":
            request.add_header("Authorization", secret or self.read_secret)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, _body(response.read(), response.headers), response.headers
        except urllib.error.HTTPError as err:
            return err.code, _body(err.read(), err.headers), err.headers

    def query(self, **params: str) -> list[dict[str, Any]]:
        status, body, _ = self.get("/", params)
        assert status == 200, (status, body)
        return body  # type: ignore[no-any-return]

    def info(self) -> dict[str, Any]:
        status, body, _ = self.get("/info", secret="")
        assert status == 200
        return body  # type: ignore[no-any-return]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            message = f"logd did not stop within {timeout} s of signal {sig}:\n{self.log()[-4000:]}"
            raise AssertionError(message) from None
        finally:
            self.sock.close()
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def _body(raw: bytes, headers: Mapping[str, str]) -> Any:
    if "json" in headers.get("Content-Type", "") and "ndjson" not in headers.get(
        "Content-Type", ""
    ):
        return json.loads(raw)
    return raw.decode()


def start_logd(
    tmp_path: Path, *args: str, env: Mapping[str, str] | None = None, secrets: bool = True
) -> LogdProcess:
    """Start `logd serve` on free 127.0.0.1 ports; with `secrets`, env secrets are set."""
    full_env = dict(os.environ)
    if secrets:
        full_env |= {"LOGD_READ_SECRET": READ_SECRET, "LOGD_WRITE_SECRET": WRITE_SECRET}
    full_env |= dict(env or {})
    log_path = tmp_path / f"logd-{time.monotonic_ns()}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "logd",
                "serve",
                "--udp-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
                "--udp-rcvbuf",
                "1MiB",
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=tmp_path,
        )
    try:
        return LogdProcess(proc, log_path, full_env)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


class HeldTransport:
    """A tail's connection whose client reads only when a test says so: what was written
    and not yet read is the transport's buffer, as logd would hold it for a slow client."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []  # each write's object, unread
        self.closing = False
        self._written = asyncio.Event()

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self._written.set()

    def writelines(self, list_of_data: Iterable[bytes]) -> None:
        self.writes.extend(list_of_data)
        self._written.set()

    def get_write_buffer_size(self) -> int:
        return sum(map(len, self.writes))

    def is_closing(self) -> bool:
        return self.closing

    async def read(self, wait_s: float) -> bytes:
        """All that was written and not read, once something is (or `wait_s` passed)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._written.wait(), wait_s)
        data, self.writes = b"".join(self.writes), []
        self._written.clear()
        return data


_FOLLOWING: dict[Subscription, tuple[HeldTransport, asyncio.Task[None]]] = {}


def follow(sub: Subscription, *, sse: bool = False, keepalive_s: float = 3600) -> HeldTransport:
    """Start `sub` following a HeldTransport, as /tail does once its history is sent."""
    out = HeldTransport()
    task = asyncio.ensure_future(sub.follow(out, sse=sse, chunked=False, keepalive_s=keepalive_s))
    _FOLLOWING[sub] = (out, task)
    task.add_done_callback(lambda _: _FOLLOWING.pop(sub, None))  # keyed by identity: forget it
    return out


def following(sub: Subscription) -> tuple[HeldTransport, asyncio.Task[None]]:
    if sub not in _FOLLOWING:
        follow(sub)
    return _FOLLOWING[sub]


def split_notice(lines: list[str]) -> tuple[list[str], int]:
    """NDJSON lines as (event lines, events dropped): the dropped notices taken out."""
    dropped = sum(json.loads(x)["dropped"] for x in lines if x.startswith('{"dropped":'))
    return [x for x in lines if x and not x.startswith('{"dropped":')], dropped  # events: {"t":


async def tail_batch(sub: Subscription, wait_s: float) -> tuple[list[str], int]:
    """What a tail's client reads next, as /tail sends it (NDJSON), as (event lines, events
    dropped); following a HeldTransport from its first call on."""
    out, _ = following(sub)
    return split_notice((await out.read(wait_s)).decode().splitlines())
