"""structlog into logd, with structlog itself: `StructlogProcessor` for structlog alone,
and `LogdHandler` under structlog's stdlib integration (`wrap_for_formatter`,
`render_to_log_kwargs`). Events arrive with their text, level and attrs: never a dict's
repr as text, never structlog's own `_logger` / `_name` / `_record` / `_from_structlog`."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from logd._pb.logd_pb2 import ERROR, FATAL, INFO, WARN, Msg
from logd.logger import HttpFields, LogdHandler, StructlogProcessor
from support import WRITE_SECRET
from test_logger import Receiver, make

META = {"_logger", "_name", "_record", "_from_structlog"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    yield rx
    rx.sock.close()


def plain(msg: Msg) -> tuple[str, int, dict[str, str]]:
    assert not META & set(msg.attrs), dict(msg.attrs)
    assert not msg.txt.startswith("{"), msg.txt  # not a dict's repr
    return msg.txt, msg.lvl, dict(msg.attrs)


def test_structlog_alone_with_the_processor_last(receiver: Receiver) -> None:
    log = make(receiver)
    printed: list[Any] = []

    class Out:  # what structlog would print to, if the processor let the event on
        def msg(self, *args: Any, **kw: Any) -> None:
            printed.append(args)

        info = warning = error = critical = msg

    slog = structlog.wrap_logger(
        Out(),
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            StructlogProcessor(log),
        ],
    ).bind(request_id="r-1")
    slog.info("charged", user="bob", cents=42)
    slog.warning("slow", ms=900)
    slog.critical("down")
    try:
        {}["missing"]  # raises KeyError on purpose
    except KeyError:
        slog.exception("checkout failed")
    slog.info("served", http=HttpFields("GET", "/health", 200))
    got = receiver.events(5)
    assert [plain(m) for m in got[:3]] == [
        ("charged", INFO, {"request_id": "r-1", "user": "bob", "cents": "42"}),
        ("slow", WARN, {"request_id": "r-1", "ms": "900"}),
        ("down", FATAL, {"request_id": "r-1"}),
    ]
    assert plain(got[3]) == ("checkout failed", ERROR, {"request_id": "r-1"})
    assert "KeyError: 'missing'" in got[3].stack_trace
    assert (got[4].url, got[4].response_status, dict(got[4].attrs)) == (
        "/health",
        200,
        {"request_id": "r-1"},
    )
    assert printed == []  # last in the chain, the processor ended each event
    log.close()


def test_drop_false_passes_the_event_on_to_a_renderer(receiver: Receiver) -> None:
    log = make(receiver)
    rendered: list[str] = []

    class Out:
        def info(self, text: str) -> None:
            rendered.append(text)

    slog = structlog.wrap_logger(
        Out(),
        processors=[
            structlog.processors.add_log_level,
            StructlogProcessor(log, drop=False),
            structlog.processors.KeyValueRenderer(key_order=["event"]),
        ],
    )
    slog.info("both places", n=1)
    assert plain(receiver.events(1)[0]) == ("both places", INFO, {"n": "1"})
    assert rendered == ["event='both places' n=1 level='info'"]
    log.close()


def test_a_value_whose_str_fails_drops_the_event_and_never_raises(receiver: Receiver) -> None:
    class Bad:
        def __str__(self) -> str:
            raise RuntimeError("no")

    log = make(receiver)
    slog = structlog.wrap_logger(None, processors=[StructlogProcessor(log)])
    slog.info("bad", value=Bad())
    slog.info("good")
    slog.info(None, n=1)  # no event text at all: an empty text, not "None"
    good, empty = receiver.events(2)
    assert plain(good) == ("good", INFO, {})
    assert plain(empty) == ("", INFO, {"n": "1"})
    assert log.stats().dropped == 1
    log.close()


@pytest.fixture
def app_logger(receiver: Receiver) -> Iterator[tuple[logging.Logger, LogdHandler]]:
    handler = LogdHandler(port=receiver.port, write_secret=WRITE_SECRET, svc="shop")
    # A formatter on the handler changes nothing: the handler reads the fields.
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processors=[structlog.dev.ConsoleRenderer()])
    )
    app = logging.getLogger("shop.checkout")
    app.addHandler(handler)
    app.setLevel(logging.DEBUG)
    app.propagate = False
    yield app, handler
    app.removeHandler(handler)
    handler.close()


def test_stdlib_integration_wrap_for_formatter(
    receiver: Receiver, app_logger: tuple[logging.Logger, LogdHandler]
) -> None:
    app, _ = app_logger
    slog = structlog.wrap_logger(
        app,
        wrapper_class=structlog.stdlib.BoundLogger,
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.TimeStamper(fmt="iso", key="ts"),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
    )
    slog.debug("cart has %d items", 3, cart="c-9")
    slog.warning("card declined", user="bob")
    try:
        1 / 0  # noqa: B018  # raises on purpose
    except ZeroDivisionError:
        slog.exception("charge failed", order=7)
    debug, warn, failed = receiver.events(3)
    txt, lvl, attrs = plain(debug)
    assert (txt, lvl) == ("cart has 3 items", 2)
    assert attrs.pop("ts").endswith("Z")
    assert attrs == {"cart": "c-9", "logger": "shop.checkout"}
    assert plain(warn)[:2] == ("card declined", WARN)
    assert plain(warn)[2]["user"] == "bob"
    assert plain(failed)[:2] == ("charge failed", ERROR)
    assert plain(failed)[2]["order"] == "7"
    assert "ZeroDivisionError: division by zero" in failed.stack_trace
    assert "exc_info" not in failed.attrs
    assert debug.svc == "shop"
    assert debug.fn == ""  # not structlog's own function name


def test_stdlib_integration_render_to_log_kwargs(
    receiver: Receiver, app_logger: tuple[logging.Logger, LogdHandler]
) -> None:
    app, _ = app_logger
    slog = structlog.wrap_logger(
        app,
        wrapper_class=structlog.stdlib.BoundLogger,
        processors=[structlog.stdlib.render_to_log_kwargs],
    )
    slog.info("shipped", parcel="p-1")
    assert plain(receiver.events(1)[0]) == (
        "shipped",
        INFO,
        {"parcel": "p-1", "logger": "shop.checkout"},
    )


def test_logd_imports_no_structlog() -> None:
    code = "import sys, logd.logger\nprint('structlog' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
