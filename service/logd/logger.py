"""Write logs to logd from Python: `Logger`, and `LogdHandler` for the `logging` module.

    from logd.logger import Logger
    log = Logger(env="prod", svc="billing-api", fn="ChargeCard")
    log.info("charged %s for %d cents", user, cents, request_id=req_id)  # kwargs -> attrs
    log.info("served", http=HttpFields("POST", "/charge", 201))  # the HTTP fields

A log call formats the text, captures the time and puts a tuple on a bounded queue:
a few microseconds, no I/O, no lock in the common case. It never blocks and never
raises; a full queue drops the event and counts it (`stats()`). A background thread
encodes, packs events into frames (`batch`), signs them (`logd.wire.Signer`) and sends
them over UDP (`logd.client.sender`). Only protobuf is needed: no aiohttp, click or boto3
(structlog only for `StructlogProcessor`, imported when one is made).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Mapping, MutableMapping
from time import monotonic, time_ns
from typing import Any, TypedDict, Unpack

from logd._pb.logd_pb2 import DEBUG, ERROR, FATAL, INFO, TRACE, WARN
from logd.client import env as clientenv
from logd.client.encoder import MIN_FRAME, Encoder, HttpFields
from logd.client.env import find_secret, http_base, missing_secret, udp_host, udp_port
from logd.client.sender import LoggerStats, RateLimit, Sender
from logd.devsecrets import WRITE_NAME
from logd.errors import ConfigError
from logd.events import LEVEL_NAMES, LEVEL_VALUES
from logd.wire import MAX_DATAGRAM

__all__ = [
    "HttpFields",
    "LogdHandler",
    "Logger",
    "LoggerOptions",
    "LoggerStats",
    "StructlogProcessor",
    "level_value",
]

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
    origin: bool | None
    exit_timeout: float | None


def level_value(name: str) -> int:
    """The logd level of a name, any case: trace ... fatal, `warning` for warn; ValueError
    otherwise."""
    upper = name.strip().upper()
    value = LEVEL_VALUES.get("WARN" if upper == "WARNING" else upper)
    if value is None:
        raise ValueError(f"unknown level {name!r}: trace, debug, info, warn(ing), error, fatal")
    return value


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
    origin: events carry this process's host name and pid (default: LOGD_ORIGIN, else
        on; False or LOGD_ORIGIN=0 leaves them out).
    exit_timeout: seconds the interpreter's exit waits for this logger's queued events
        (default: LOGD_EXIT_TIMEOUT, else 2; 0 to 60). A gone server or a secret provider
        that hangs never delays the exit longer.

    A log call's keyword arguments are attrs, except `http=HttpFields(method, url,
    status)`, which sets the event's HTTP fields: an attribute named `http` whose value
    is anything but an HttpFields stays an attribute.
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
        origin: bool | None = None,
        exit_timeout: float | None = None,
    ) -> None:
        if not MIN_FRAME <= max_frame <= MAX_DATAGRAM:
            raise ValueError(f"max_frame must be from {MIN_FRAME} to {MAX_DATAGRAM} bytes")
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if exit_timeout is None:
            exit_timeout = clientenv.exit_timeout(os.environ.get("LOGD_EXIT_TIMEOUT"))
        elif not 0 <= exit_timeout <= clientenv.MAX_EXIT_TIMEOUT_S:
            raise ValueError(f"exit_timeout must be 0 to {clientenv.MAX_EXIT_TIMEOUT_S:g} s")
        if origin is None:
            origin = clientenv.origin(os.environ.get("LOGD_ORIGIN"))
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
            origin=origin,
            exit_timeout=exit_timeout,
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

    warning = warn  # the name `logging` and structlog use

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

    def log(self, level: str | int, template: str, /, *args: object, **attrs: object) -> None:
        """Logs at `level`: a name (any case; `warning` is warn) or a number 1-6. An
        unknown level is a ValueError, the one way a log call raises."""
        lvl = level_value(level) if isinstance(level, str) else level
        if lvl not in LEVEL_NAMES:
            raise ValueError(f"unknown level {level!r}: trace, debug, info, warn, error, fatal")
        self._log(lvl, template, args, attrs, "")

    def _log(
        self,
        lvl: int,
        template: str,
        args: tuple[object, ...],
        attrs: dict[str, object],
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
            http = None
            if attrs:
                if "http" in attrs and isinstance(value := attrs["http"], HttpFields):
                    http = value
                    del attrs["http"]
                texts = {k: str(v) for k, v in attrs.items()} or None
            else:
                texts = None
            self._sender.put((time_ns(), lvl, txt, texts, stack, None, http))
            if self._stdout:
                _print_event(lvl, txt, texts, stack)
        except Exception:  # a failing __str__ or __repr__ of an argument: never raise
            self._sender.count_dropped()

    def _emit(
        self,
        t_ns: int,
        lvl: int,
        txt: str,
        attrs: dict[str, str],
        stack: str,
        fn: str | None,
        http: HttpFields | None = None,
    ) -> None:
        """The handler's and structlog's way in: the event is formatted already."""
        if self._rate is not None and not self._rate.allow(monotonic()):
            self._sender.count_rate_limited()
            return
        self._sender.put((t_ns, lvl, txt, attrs or None, stack, fn, http))
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
    fields -> attrs (as str; `extra={"http": HttpFields(...)}` sets the HTTP fields), the
    logger's name -> attrs["logger"], funcName -> fn unless the handler's fn is set (an
    `extra` "fn" wins over both). Formatters are not used: the fields are structured
    already. A record from structlog's stdlib integration (`wrap_for_formatter`) is
    read from its event dict, as StructlogProcessor does. Records of logd's own loggers
    (`logd.*`) and records made on the logger's sender thread (e.g. by a secret
    provider) are not sent: they would loop back into the sender that made them. In
    dictConfig:

        "handlers": {"logd": {"class": "logd.logger.LogdHandler", "svc": "billing-api"}}
    """

    def __init__(self, level: int | str = logging.NOTSET, **options: Unpack[LoggerOptions]):
        super().__init__(level)
        self.logger = Logger(**options)

    def emit(self, record: logging.LogRecord) -> None:
        name = record.name
        if name.__class__ is str and (name == "logd" or name.startswith("logd.")):
            return
        if record.thread is not None and record.thread == self.logger._sender.thread_id():
            return
        try:
            fields = vars(record)
            if isinstance(record.msg, dict) and "_logger" in fields:  # structlog's
                event = _from_event_dict(record.msg, "")
                event.attrs.setdefault("logger", str(record.name))
                self.logger._emit(
                    int(record.created * 1e9),
                    level_for(record.levelno),
                    event.txt,
                    event.attrs,
                    event.stack,
                    event.fn,
                    event.http,
                )
                return
            try:
                txt = record.getMessage()
            except Exception:
                txt = f"{record.msg} (logd: the arguments do not fit the template)"
            attrs = {"logger": str(record.name)}
            http = None
            for key, value in fields.items():
                if key not in _RECORD_FIELDS:
                    if key == "http" and isinstance(value, HttpFields):
                        http = value
                    else:
                        attrs[key] = str(value)
            fn = attrs.pop("fn", None) or (None if self.logger.fn else record.funcName)
            stack = ""
            if record.exc_info and record.exc_info[1] is not None:
                stack = "".join(traceback.format_exception(record.exc_info[1]))
            if record.stack_info:
                stack += record.stack_info + "\n"
            t_ns = int(record.created * 1e9)
            self.logger._emit(t_ns, level_for(record.levelno), txt, attrs, stack, fn, http)
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.logger.flush()

    def close(self) -> None:
        self.logger.close()
        super().close()


# --- structlog ----------------------------------------------------------------------

_STRUCTLOG_LEVELS = {
    "trace": TRACE,
    "debug": DEBUG,
    "info": INFO,
    "msg": INFO,
    "warn": WARN,
    "warning": WARN,
    "error": ERROR,
    "exception": ERROR,
    "err": ERROR,
    "critical": FATAL,
    "fatal": FATAL,
}
# Keys structlog adds for its own use (the stdlib integration's), never the app's.
_STRUCTLOG_META = frozenset({"_logger", "_name", "_record", "_from_structlog"})


class _Parts:
    __slots__ = ("attrs", "fn", "http", "lvl", "stack", "txt")

    def __init__(self, txt: str, lvl: int, stack: str, fn: str | None) -> None:
        self.txt, self.lvl, self.stack, self.fn = txt, lvl, stack, fn
        self.attrs: dict[str, str] = {}
        self.http: HttpFields | None = None


def _from_event_dict(event_dict: Mapping[str, Any], method_name: str) -> _Parts:
    """A structlog event dict as an event: `event` -> txt, `level` (else the method's
    name) -> lvl, `exception` / `exc_info` / `stack` -> stack_trace, `fn` -> fn, `http`
    (an HttpFields) -> the HTTP fields, every other key -> attrs (as str)."""
    fields = {k: v for k, v in event_dict.items() if k not in _STRUCTLOG_META}
    txt = fields.pop("event", None)
    txt = "" if txt is None else txt  # log.info() with no event: an empty text, not "None"
    level = str(fields.pop("level", method_name) or method_name).lower()
    stack = []
    exc_info = fields.pop("exc_info", None)
    if exc_info:
        if exc_info is True:
            exc_info = sys.exc_info()
        exc = exc_info[1] if isinstance(exc_info, tuple) else exc_info
        if isinstance(exc, BaseException):
            stack.append("".join(traceback.format_exception(exc)))
    stack += (str(fields.pop(k)).rstrip("\n") + "\n" for k in ("exception", "stack") if k in fields)
    fn = fields.pop("fn", None)
    parts = _Parts(
        txt if txt.__class__ is str else str(txt),
        _STRUCTLOG_LEVELS.get(level, INFO),
        "".join(stack),
        None if fn is None else str(fn),
    )
    http = fields.pop("http", None)
    if isinstance(http, HttpFields):
        parts.http = http
    elif http is not None:
        fields["http"] = http
    parts.attrs = {k: str(v) for k, v in fields.items()}
    return parts


class StructlogProcessor:
    """A structlog processor that sends each event to logd through a Logger: `event` is
    the text, `level` (add_log_level) or the method's name the level, exceptions and
    stacks the stack_trace, every other key an attribute. Last in the chain it ends the
    event there (structlog.DropEvent); with `drop=False` it passes the event dict on, so
    that a renderer after it still prints locally.

        log = Logger(svc="billing-api")
        structlog.configure(processors=[structlog.processors.add_log_level,
                                        StructlogProcessor(log)])

    Through structlog's stdlib integration, use `LogdHandler` instead: it reads the
    event dicts that `ProcessorFormatter.wrap_for_formatter` hands to `logging`.
    """

    def __init__(self, logger: Logger, *, drop: bool = True) -> None:
        import structlog  # here, not at logd's import: structlog is the app's choice

        self.logger = logger
        self._drop = drop
        self._drop_event = structlog.DropEvent

    def __call__(
        self, wrapped_logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        try:
            event = _from_event_dict(event_dict, method_name)
            self.logger._emit(
                time_ns(), event.lvl, event.txt, event.attrs, event.stack, event.fn, event.http
            )
        except Exception:  # a failing __str__ of a value: never raise into the app
            self.logger._sender.count_dropped()
        if self._drop:
            raise self._drop_event
        return event_dict
