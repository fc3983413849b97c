"""Write logs to logd from Python: `Logger`, and `LogdHandler` for the `logging` module.

    from logd.logger import Logger
    log = Logger(env="prod", svc="billing-api", fn="ChargeCard")
    log.info("charged %s for %d cents", user, cents, request_id=req_id)  # kwargs -> attrs

A log call formats the text, captures the time and puts a tuple on a bounded queue:
a few microseconds, no I/O, no lock in the common case. It never blocks and never
raises; a full queue drops the event and counts it (`stats()`). A background thread
encodes, packs events into frames (`batch`), signs them (`logd.wire.Signer`) and sends
them over UDP (`logd.client.sender`). Only protobuf is needed: no aiohttp, click or boto3.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from time import monotonic, time_ns
from typing import TypedDict, Unpack

from logd._pb.logd_pb2 import DEBUG, ERROR, FATAL, INFO, TRACE, WARN
from logd.client.encoder import MIN_FRAME, Encoder
from logd.client.env import find_secret, http_base, missing_secret, udp_host, udp_port
from logd.client.sender import LoggerStats, RateLimit, Sender
from logd.devsecrets import WRITE_NAME
from logd.errors import ConfigError
from logd.events import LEVEL_NAMES
from logd.wire import MAX_DATAGRAM

__all__ = ["LogdHandler", "Logger", "LoggerOptions", "LoggerStats"]

DEFAULT_MAX_FRAME = 1400
DEFAULT_QUEUE_SIZE = 100_000
DEFAULT_TIMEOUT_S = 5.0


class LoggerOptions(TypedDict, total=False):
    """The keyword arguments of Logger, which LogdHandler takes too."""

    host: str | None
    port: int | None
    write_secret: str | None
    secret_provider: Callable[[], str] | None
    env: str
    svc: str
    fn: str
    stdout: bool
    max_frame: int
    queue_size: int
    rate_limit: float | None


class Logger:
    """Sends events to logd over signed UDP, from a background thread.

    host, port: the server (default: LOGD_HOST's host, else 127.0.0.1; LOGD_UDP_PORT,
        else 6102).
    write_secret: the write secret; else LOGD_WRITE_SECRET, else the dev-mode file.
    secret_provider: instead of write_secret, a callable that returns the current write
        secret. The sender thread calls it before signing each frame, so it must be cheap
        (cache; refresh in the background or on a timer).
    env, svc, fn: the event fields that say where an event comes from.
    stdout: also print each event's level, text and attrs on stdout.
    max_frame: largest datagram, in bytes (default 1,400: no IP fragmentation).
    queue_size: events that may wait for the sender; beyond it events are dropped.
    rate_limit: most events per second this logger sends (bursts of one second's
        worth); the excess is dropped and counted. Off by default.
    """

    def __init__(
        self,
        *,
        host: str | None = None,
        port: int | None = None,
        write_secret: str | None = None,
        secret_provider: Callable[[], str] | None = None,
        env: str = "",
        svc: str = "",
        fn: str = "",
        stdout: bool = False,
        max_frame: int = DEFAULT_MAX_FRAME,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        rate_limit: float | None = None,
    ) -> None:
        if not MIN_FRAME <= max_frame <= MAX_DATAGRAM:
            raise ValueError(f"max_frame must be from {MIN_FRAME} to {MAX_DATAGRAM} bytes")
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        provider = _secret_provider(write_secret, secret_provider, os.environ)
        if host is None:
            host = udp_host(http_base(os.environ.get("LOGD_HOST")))
        self.host = host
        self.port = udp_port(os.environ.get("LOGD_UDP_PORT") if port is None else port)
        self.env, self.svc, self.fn = env, svc, fn
        self._stdout = stdout
        self._rate = None if rate_limit is None else RateLimit(rate_limit, monotonic())
        self._sender = Sender(
            host=self.host,
            port=self.port,
            secret=provider,
            encoder=Encoder(env=env, svc=svc, fn=fn, max_frame=max_frame),
            max_frame=max_frame,
            queue_size=queue_size,
        )

    def __repr__(self) -> str:
        return f"Logger(udp={self.host}:{self.port}, env={self.env!r}, svc={self.svc!r})"

    # Templates are printf-style, like the original logd's Go logger; keyword arguments
    # become attrs (their values as str). `template` is positional-only, so any name,
    # `template` included, can be an attribute.
    def trace(self, template: str, /, *args: object, **attrs: object) -> None:
        self._log(TRACE, template, args, attrs, "")

    def debug(self, template: str, /, *args: object, **attrs: object) -> None:
        self._log(DEBUG, template, args, attrs, "")

    def info(self, template: str, /, *args: object, **attrs: object) -> None:
        self._log(INFO, template, args, attrs, "")

    def warn(self, template: str, /, *args: object, **attrs: object) -> None:
        self._log(WARN, template, args, attrs, "")

    def error(self, template: str, /, *args: object, **attrs: object) -> None:
        self._log(ERROR, template, args, attrs, "")

    def fatal(self, template: str, /, *args: object, **attrs: object) -> None:
        """Logs at FATAL; unlike Go's log.Fatal it does not exit."""
        self._log(FATAL, template, args, attrs, "")

    def exception(self, template: str, /, *args: object, **attrs: object) -> None:
        """Logs at ERROR with the exception being handled as stack_trace (or, outside an
        `except` block, the current call stack)."""
        try:
            exc = sys.exc_info()[1]
            if exc is not None:
                stack = "".join(traceback.format_exception(exc))
            else:
                stack = "".join(traceback.format_stack(sys._getframe(1)))
        except Exception:
            stack = "(logd: the stack trace could not be formatted)"
        self._log(ERROR, template, args, attrs, stack)

    def flush(self, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
        """Wait until the events queued so far are sent; False if `timeout` ran out."""
        return self._sender.flush(timeout)

    def close(self, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Flush, then stop the sender. Later log calls are counted as dropped."""
        self._sender.close(timeout)

    def stats(self) -> LoggerStats:
        return self._sender.stats()

    def _log(
        self,
        lvl: int,
        template: str,
        args: tuple[object, ...],
        attrs: Mapping[str, object],
        stack: str,
    ) -> None:
        try:
            if self._rate is not None and not self._rate.allow(monotonic()):
                self._sender.count_rate_limited()
                return
            if args:
                try:
                    txt = template % args
                except Exception:
                    txt = f"{template} (logd: the arguments do not fit the template: {args!r})"
            else:
                txt = template if template.__class__ is str else str(template)
            texts = {k: str(v) for k, v in attrs.items()} if attrs else None
            self._sender.put((time_ns(), lvl, txt, texts, stack, None))
            if self._stdout:
                _print_event(lvl, txt, texts, stack)
        except Exception:  # a failing __str__ or __repr__ of an argument: never raise
            self._sender.count_dropped()

    def _emit(
        self, t_ns: int, lvl: int, txt: str, attrs: dict[str, str], stack: str, fn: str | None
    ) -> None:
        """LogdHandler's way in: the record is formatted already."""
        if self._rate is not None and not self._rate.allow(monotonic()):
            self._sender.count_rate_limited()
            return
        self._sender.put((t_ns, lvl, txt, attrs or None, stack, fn))
        if self._stdout:
            _print_event(lvl, txt, attrs, stack)


def _print_event(lvl: int, txt: str, attrs: dict[str, str] | None, stack: str) -> None:
    line = f"{LEVEL_NAMES[lvl]} {txt}"
    if attrs:
        line += " " + " ".join(f"{k}={v}" for k, v in attrs.items())
    with contextlib.suppress(Exception):  # stdout closed or broken: logd still gets it
        sys.stdout.write(line + "\n" + stack)


def _secret_provider(
    write_secret: str | None,
    secret_provider: Callable[[], str] | None,
    environ: Mapping[str, str],
) -> Callable[[], str]:
    if secret_provider is not None:
        if write_secret is not None:
            raise ValueError("pass write_secret or secret_provider, not both")
        return secret_provider
    if write_secret is not None:
        if not write_secret:
            raise ValueError("write_secret must not be empty")
        secret = write_secret
    else:
        found = find_secret(WRITE_NAME, environ)
        if found is None:
            raise ConfigError(missing_secret(WRITE_NAME, environ))
        secret = found[0]
    return lambda: secret


# --- the logging module ---------------------------------------------------------

_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def level_for(levelno: int) -> int:
    """logd level for a `logging` level number; levels below DEBUG are TRACE."""
    if levelno >= logging.CRITICAL:
        return FATAL
    if levelno >= logging.ERROR:
        return ERROR
    if levelno >= logging.WARNING:
        return WARN
    if levelno >= logging.INFO:
        return INFO
    if levelno >= logging.DEBUG:
        return DEBUG
    return TRACE


class LogdHandler(logging.Handler):
    """A `logging` handler that sends records through a Logger (same arguments).

    Level -> lvl, getMessage() -> txt, exc_info and stack_info -> stack_trace, `extra`
    fields -> attrs (as str), the logger's name -> attrs["logger"], funcName -> fn unless
    the handler's fn is set (an `extra` "fn" wins over both). Formatters are not used:
    the fields are structured already. In dictConfig:

        "handlers": {"logd": {"class": "logd.logger.LogdHandler", "svc": "billing-api"}}
    """

    def __init__(self, level: int | str = logging.NOTSET, **options: Unpack[LoggerOptions]):
        super().__init__(level)
        self.logger = Logger(**options)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            try:
                txt = record.getMessage()
            except Exception:
                txt = f"{record.msg} (logd: the arguments do not fit the template)"
            attrs = {"logger": str(record.name)}
            for key, value in vars(record).items():
                if key not in _RECORD_FIELDS:
                    attrs[key] = str(value)
            fn = attrs.pop("fn", None) or (None if self.logger.fn else record.funcName)
            stack = ""
            if record.exc_info and record.exc_info[1] is not None:
                stack = "".join(traceback.format_exception(record.exc_info[1]))
            if record.stack_info:
                stack += record.stack_info + "\n"
            t_ns = int(record.created * 1e9)
            self.logger._emit(t_ns, level_for(record.levelno), txt, attrs, stack, fn)
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.logger.flush()

    def close(self) -> None:
        self.logger.close()
        super().close()
