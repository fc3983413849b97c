"""The background sender behind `logd.logger.Logger`.

An app thread only appends a tuple to a deque (`put`): it never waits and never raises.
One daemon thread drains the deque, encodes, packs, signs and sends. When idle it
sleeps on a lock that `put` releases, so a lone event leaves at once; when events pile
up (a burst, or while the app holds the GIL) it packs as many as fit into one frame.

Loss accounting (docs/protocol.md): each sender picks 8 random bytes as its `sender` id
and numbers the WRITE frames it signs 1, 2, 3, ... (`seq`), a frame that then fails to
send included, so the server can count what never arrived. Events carry the process's
host name and pid unless `origin` is off.

`flush` queues a marker and waits for the thread to reach it. After `fork()` the child
gets a fresh queue, fresh locks, a new sender id, its own pid and (on its first event) a
fresh thread: the parent's locks may have been held at fork time, and the parent's
queued events are the parent's to send. At interpreter exit every live sender is
flushed and closed within its `exit_timeout`, all of them at once (never one after the
other), so a gone server or a hanging secret provider delays the exit by that at most.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from logd.client.encoder import (
    SENDER_LEN,
    Encoder,
    Event,
    field_size,
    trailer_size,
    write_payload,
)
from logd.wire import HEADER_LEN, Signer

log = logging.getLogger(__name__)

_STOP = object()  # queue marker: the thread exits when it reaches it
_RESOLVE_RETRY_S = 1.0  # after a failed DNS lookup, frames fail fast for this long
_live: weakref.WeakSet[Sender] = weakref.WeakSet()


@dataclass(frozen=True, slots=True)
class LoggerStats:
    """Counters of one Logger since it was made (or since fork, in a child)."""

    queued: int  # events waiting for the sender now
    sent: int  # events sent in a frame
    frames: int  # datagrams sent
    dropped: int  # events refused because the queue was full (or the logger closed)
    rate_limited: int  # events refused by the optional rate limit
    failed: int  # events lost because sending failed (no secret, socket or DNS error)
    truncated: int  # events cut to fit into one frame (still sent)


class RateLimit:
    """A token bucket: `rate` events per second, bursts up to one second's worth. Pure:
    the caller passes the (monotonic) time."""

    __slots__ = ("_last", "_rate", "_tokens")

    def __init__(self, rate: float, now: float) -> None:
        if rate <= 0:
            raise ValueError("rate_limit must be a positive number of events per second")
        self._rate = rate
        self._tokens = max(rate, 1.0)
        self._last = now

    def allow(self, now: float) -> bool:
        self._tokens = min(max(self._rate, 1.0), self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class Sender:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        secret: Callable[[], str],
        encoder: Encoder,
        max_frame: int,
        queue_size: int,
        origin: bool,
        exit_timeout: float,
    ) -> None:
        self._host = host
        self._port = port
        self._secret = secret
        self._encoder = encoder
        self._max_frame = max_frame
        self._origin = origin
        self.exit_timeout = exit_timeout
        self.limit = queue_size  # 0 once closed: every later event is counted as dropped
        self._reset()
        self._wake()  # start the thread now, not on the first log call
        _live.add(self)

    def __repr__(self) -> str:
        return f"Sender(udp={self._host}:{self._port}, queued={len(self.queue)})"

    def _reset(self) -> None:
        """Fresh state: at start-up, and in a forked child."""
        self.queue: deque[Event | threading.Event | object] = deque()
        self.sleeping = True  # the next put() wakes (and first starts) the thread
        self._thread: threading.Thread | None = None
        self._wakeup = threading.Lock()
        self._wakeup.acquire()  # held means "nothing to do"; put() releases it
        self._start_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._addr: tuple[str, int] | None = None
        self._retry_at = 0.0
        self._signer: Signer | None = None
        self._secret_text = ""
        self._last_signed = 0
        self.sender_id = os.urandom(SENDER_LEN)
        self.seq = 0  # the last WRITE frame's number
        self._encoder.set_origin(
            *((socket.gethostname(), os.getpid()) if self._origin else ("", 0))
        )
        self._warned: set[str] = set()
        self.sent = self.frames = self.failed = 0
        self.dropped = self.rate_limited = 0
        self._encoder.truncated = 0

    # --- app threads ------------------------------------------------------------
    def put(self, event: Event) -> None:
        queue = self.queue
        if len(queue) < self.limit:
            queue.append(event)
            if self.sleeping:
                self._wake()
        else:
            self.count_dropped()

    def count_dropped(self) -> None:
        with self._count_lock:
            self.dropped += 1

    def count_rate_limited(self) -> None:
        with self._count_lock:
            self.rate_limited += 1

    def _wake(self) -> None:
        self.sleeping = False
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    thread = threading.Thread(target=self._run, name="logd-sender", daemon=True)
                    thread.start()
                    self._thread = thread
        with contextlib.suppress(RuntimeError):  # already released: the thread is awake
            self._wakeup.release()

    def thread_id(self) -> int | None:
        """The sender thread's ident (None before it starts)."""
        thread = self._thread
        return None if thread is None else thread.ident

    def flush(self, timeout: float) -> bool:
        """Wait until every event queued before this call is sent (or failed)."""
        if threading.current_thread() is self._thread:
            return False  # called from the sender thread (a secret provider): cannot wait
        done = self.flush_async()
        return True if done is None else done.wait(timeout)

    def flush_async(self) -> threading.Event | None:
        """A marker queued after every event so far, set once they are sent; None when
        nothing can be queued (closed, or a forked child that has not logged)."""
        if self.limit == 0 or self._thread is None:
            return None
        done = threading.Event()
        self.queue.append(done)
        self._wake()
        return done

    def close(self, timeout: float) -> bool:
        """Flush, then stop the thread, within `timeout` seconds in all."""
        if self.limit == 0:
            return True
        deadline = time.monotonic() + timeout
        flushed = self.flush(timeout)
        self.limit = 0
        thread = self._thread
        if thread is not None:
            self.queue.append(_STOP)
            self._wake()
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        _live.discard(self)
        return flushed

    def stats(self) -> LoggerStats:
        return LoggerStats(
            queued=sum(1 for item in list(self.queue) if isinstance(item, tuple)),
            sent=self.sent,
            frames=self.frames,
            dropped=self.dropped,
            rate_limited=self.rate_limited,
            failed=self.failed,
            truncated=self._encoder.truncated,
        )

    # --- the sender thread --------------------------------------------------------
    def _run(self) -> None:
        queue, wakeup = self.queue, self._wakeup
        try:
            while True:
                if not queue:
                    self.sleeping = True
                    if not queue:  # re-check: a put() may have come before `sleeping`
                        wakeup.acquire()
                    self.sleeping = False
                elif self._drain(queue):
                    return
        finally:
            if self._sock is not None:
                self._sock.close()

    def _drain(self, queue: deque[Event | threading.Event | object]) -> bool:
        """Send everything queued, packed into frames; True when told to stop."""
        msgs: list[bytes] = []
        size = self._empty_frame()
        encode, max_frame = self._encoder.encode, self._max_frame
        while queue:
            item = queue.popleft()
            if not isinstance(item, tuple):  # a marker: what came before it goes out now
                if msgs:
                    self._send(msgs)
                    msgs, size = [], self._empty_frame()
                if isinstance(item, threading.Event):  # from flush()
                    item.set()
                    continue
                return True  # _STOP
            try:
                data = encode(item)
            except Exception as err:  # a bug must not kill the thread: count and go on
                self.failed += 1
                self._warn_once(
                    "encode", "logd logger could not encode an event (%s)", type(err).__name__
                )
                continue
            entry = field_size(len(data))
            if size + entry > max_frame and msgs:
                self._send(msgs)
                msgs, size = [], self._empty_frame()
            msgs.append(data)
            size += entry
        if msgs:
            self._send(msgs)
        return False

    def _empty_frame(self) -> int:
        """Bytes of the next frame before its events: header, sender and seq."""
        return HEADER_LEN + trailer_size(self.seq + 1)

    def _send(self, msgs: list[bytes]) -> None:
        try:
            signer = self._signer_now()
            self.seq += 1  # from here the frame is signed: it has its number, sent or not
            frame = signer.sign(write_payload(msgs, self.sender_id, self.seq), self._signed_at())
            self._sendto(frame)
        except Exception as err:  # never let the thread die; the loss is counted
            self.failed += len(msgs)
            self._warn_once(
                type(err).__name__, "logd logger could not send %d events (%s)", len(msgs), err
            )
            return
        self.frames += 1
        self.sent += len(msgs)

    def _signer_now(self) -> Signer:
        """The Signer for the provider's current secret; rebuilt only when it changes."""
        try:
            secret = self._secret()
        except Exception as err:
            # The provider's own message might quote a secret: show only the type.
            raise SecretUnavailable(f"the secret provider raised {type(err).__name__}") from None
        if not isinstance(secret, str) or not secret:
            raise SecretUnavailable("the secret provider returned no secret")
        if self._signer is None or secret != self._secret_text:
            self._signer, self._secret_text = Signer(secret.encode()), secret
        return self._signer

    def _signed_at(self) -> int:
        # Strictly increasing: two equal frames could otherwise share a MAC (a "replay").
        self._last_signed = max(time.time_ns(), self._last_signed + 1)
        return self._last_signed

    def _sendto(self, frame: bytes) -> None:
        if self._sock is None or self._addr is None:
            if time.monotonic() < self._retry_at:
                raise OSError(f"{self._host} did not resolve; retrying soon")
            try:
                family, _, _, _, addr = socket.getaddrinfo(
                    self._host, self._port, type=socket.SOCK_DGRAM
                )[0]
            except OSError:
                self._retry_at = time.monotonic() + _RESOLVE_RETRY_S
                raise
            self._sock = socket.socket(family, socket.SOCK_DGRAM)
            self._addr = (str(addr[0]), int(addr[1]))
        try:
            self._sock.sendto(frame, self._addr)
        except OSError:
            self._sock.close()
            self._sock = self._addr = None  # resolve again: the host may have moved
            raise

    def _warn_once(self, reason: str, message: str, *args: object) -> None:
        """One warning per reason: a dead server must not turn into a flood of logs."""
        if reason not in self._warned:
            self._warned.add(reason)
            log.warning(message, *args)


class SecretUnavailable(Exception):
    """The secret provider failed; the message never holds a secret."""


def _after_fork_in_child() -> None:
    for sender in list(_live):
        sender._reset()


def _close_all() -> None:
    """At exit: flush every sender at once, then stop each, within its exit_timeout."""
    start, senders = time.monotonic(), list(_live)
    waits = [(sender, sender.flush_async()) for sender in senders]
    for sender, done in waits:
        if done is not None:
            done.wait(max(0.0, start + sender.exit_timeout - time.monotonic()))
    for sender in senders:
        sender.close(max(0.0, start + sender.exit_timeout - time.monotonic()))


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all)
