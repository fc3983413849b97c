"""SecretsManagerProvider: a writer's secret that follows rotations.

    from logd.logger import Logger
    from logd.secrets.provider import SecretsManagerProvider

    secret = SecretsManagerProvider("logd/write", server=("10.0.1.5", 6102))
    log = Logger(host="10.0.1.5", secret_provider=secret, env="prod", svc="api")

The Logger calls the provider on its sender thread before signing each frame, so a
call returns the cached AWSCURRENT value and never waits for AWS (except the very
first, which has nothing cached). The cache is refreshed in a short background
thread every `refresh_s` seconds, and at once when the server stops answering
PINGs signed with the cached key: every `ping_every_s` a call sends one PING
(non-blocking) and the next checks for its PONG. A secret that logd no longer
accepts (a rotation this writer missed) is so replaced within seconds, not at the
next refresh. boto3 is imported on first use; safe across fork() (the child
builds its own client and socket).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from logd.client.aws import boto_errors, describe_error, make_client
from logd.client.ping import is_pong
from logd.errors import SecretsError
from logd.wire import PING_PAYLOAD, Signer, signed_at

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

log = logging.getLogger(__name__)

PONG_MAX_AGE_NS = 30 * 1_000_000_000  # a PONG signed this long before our PING is no answer


class SecretsManagerProvider:
    def __init__(
        self,
        secret_id: str,
        *,
        server: tuple[str, int] | None = None,
        refresh_s: float = 60.0,
        ping_every_s: float = 5.0,
        min_gap_s: float = 5.0,
        client: SecretsManagerClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`server`: logd's UDP (host, port) to PING; None: refresh on the timer only.
        `min_gap_s`: least time between two refreshes caused by unanswered PINGs (it
        doubles while the refreshed value does not change, up to `refresh_s`)."""
        self.secret_id = secret_id
        self.server = server
        self.refresh_s = refresh_s
        self.ping_every_s = ping_every_s
        self.min_gap_s = min_gap_s
        self.refreshes = 0
        self.unanswered_pings = 0
        self._clock = clock
        self._given_client = client
        self._secret: str | None = None
        self._signer: Signer | None = None
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        """Everything a forked child must not share with its parent."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._client: SecretsManagerClient | None = self._given_client
        self._sock: socket.socket | None = None
        self._fetching = False
        self._next_refresh = 0.0
        self._gap_s = self.min_gap_s
        self._last_urgent = float("-inf")
        self._next_ping = 0.0
        self._ping_sent_ns: int | None = None  # the PING still waiting for its PONG
        self._ping_signer: Signer | None = None  # ... and the key that signed it
        self._failed_error: str | None = None

    def __repr__(self) -> str:
        return f"SecretsManagerProvider({self.secret_id!r}, server={self.server!r})"

    def __call__(self) -> str:
        if self._pid != os.getpid():
            self._reset_process_state()
        cached = self._secret
        if cached is None:
            return self.refresh()
        now = self._clock()
        with self._lock:
            if self.server is not None and now >= self._next_ping:
                self._check_pings(now)
            if now >= self._next_refresh:
                self._refresh_in_background(now)
        return self._secret or cached

    def refresh(self) -> str:
        """Fetch AWSCURRENT now (on this thread); raises SecretsError when it cannot."""
        if self._client is None:
            self._client = make_client(self.secret_id)
        try:
            answer = self._client.get_secret_value(
                SecretId=self.secret_id, VersionStage="AWSCURRENT"
            )
        except boto_errors() as err:
            raise describe_error(err, "GetSecretValue", self.secret_id) from None
        value = answer.get("SecretString")
        if not value:
            raise SecretsError(f"Secrets Manager secret {self.secret_id} holds no text")
        with self._lock:
            changed = value != self._secret
            if changed:
                self._secret, self._signer = value, Signer(value.encode())
            self._next_refresh = self._clock() + self.refresh_s
            self._gap_s = self.min_gap_s if changed else min(self._gap_s * 2, self.refresh_s)
            self.refreshes += 1
        if changed:
            log.info("secret loaded secret_id=%s key_id=%s", self.secret_id, self._key_id())
        return value

    def _key_id(self) -> str:
        return self._signer.key_id.hex() if self._signer else "-"

    # --- background refresh ---------------------------------------------------------

    def _refresh_in_background(self, now: float, *, urgent: bool = False) -> None:
        if self._fetching or (urgent and now - self._last_urgent < self._gap_s):
            return
        if urgent:
            self._last_urgent = now
        self._fetching = True
        self._next_refresh = now + self.refresh_s  # retried then if this one fails
        threading.Thread(target=self._fetch, name="logd-secret-refresh", daemon=True).start()

    def _fetch(self) -> None:
        try:
            self.refresh()
        except SecretsError as err:
            if str(err) != self._failed_error:
                log.warning("cannot refresh the secret, using the cached one error=%r", str(err))
            self._failed_error = str(err)
        else:
            self._failed_error = None
        finally:
            self._fetching = False

    # --- PINGs with the cached key ----------------------------------------------------

    def _check_pings(self, now: float) -> None:
        """Count the last PING unanswered if no PONG came, refresh at once if so, and send
        the next PING. Never blocks: the socket is non-blocking."""
        sock = self._socket()
        if sock is None or self._signer is None:
            return
        sent, signer = self._ping_sent_ns, self._ping_signer
        # A PING signed with a key replaced since then says nothing about the new one.
        if (
            sent is not None
            and signer is self._signer
            and not _pong_arrived(sock, signer, sent - PONG_MAX_AGE_NS)
        ):
            self.unanswered_pings += 1
            log.info(
                "logd did not answer a PING with the cached key key_id=%s: refreshing",
                self._key_id(),
            )
            self._refresh_in_background(now, urgent=True)
        self._ping_sent_ns, self._ping_signer = time.time_ns(), self._signer
        # Unreachable now (ICMP refused)? The next check counts this PING as unanswered.
        with contextlib.suppress(OSError):
            sock.send(self._signer.sign(PING_PAYLOAD, self._ping_sent_ns))
        self._next_ping = now + self.ping_every_s

    def _socket(self) -> socket.socket | None:
        if self._sock is None and self.server is not None:
            try:
                family, kind, proto, _, addr = socket.getaddrinfo(
                    *self.server, type=socket.SOCK_DGRAM
                )[0]
                sock = socket.socket(family, kind, proto)
                sock.setblocking(False)
                sock.connect(addr)  # only the server's datagrams arrive
            except OSError as err:
                log.warning("cannot PING logd at %s:%s (%s)", *self.server, err)
                self.server = None
                return None
            self._sock = sock
        return self._sock

    def close(self) -> None:
        """Stop PINGing and close the socket; calls still return the secret, refreshed
        on the timer."""
        with self._lock:
            self.server = None
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _pong_arrived(sock: socket.socket, signer: Signer, not_before_ns: int) -> bool:
    """Whether a valid PONG for `signer`, signed after `not_before_ns`, is waiting; reads
    every datagram waiting (the socket is non-blocking and connected to the server)."""
    found = False
    while True:
        try:
            frame = sock.recv(2048)
        except OSError:  # nothing more waiting, or ICMP "port unreachable"
            return found
        found = found or (is_pong(frame, signer) and signed_at(frame) >= not_before_ns)
