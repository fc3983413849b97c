"""logd.logger end to end: a real `logd serve` process stores what the logger sends."""

from __future__ import annotations

import logging
import logging.config
import os
import socket
from collections.abc import Iterator

import pytest
from logd.logger import LogdHandler, Logger
from support import WRITE_SECRET, LogdProcess, wait_for

pytestmark = pytest.mark.functional


def ring_events(logd: LogdProcess, key: str) -> int:
    return sum(r["events"] for r in logd.info()["store"]["rings"] if r["key"] == key)


def test_tight_loop_of_20000_calls_is_all_stored(logd: LogdProcess) -> None:
    log = Logger(port=logd.udp_addr[1], write_secret=WRITE_SECRET, env="load", svc="loop")
    for i in range(20_000):
        log.info("event %d", i)
    assert log.flush(timeout=60)
    stats = log.stats()
    assert (stats.sent, stats.dropped, stats.failed) == (20_000, 0, 0)
    assert stats.frames < 20_000 // 10  # packed, not one datagram per event
    try:
        wait_for(lambda: ring_events(logd, "load/loop") == 20_000, timeout=30)
    except AssertionError:
        raise AssertionError(f"not all stored: {logd.info()['udp']}") from None
    assert [e["txt"] for e in logd.query(svc="loop", limit="2")] == ["event 19999", "event 19998"]
    assert len(logd.query(svc="loop", txt="event 12345")) == 1
    log.close()


def test_attrs_and_stack_traces_arrive(logd: LogdProcess) -> None:
    log = Logger(
        port=logd.udp_addr[1], write_secret=WRITE_SECRET, env="prod", svc="billing", fn="Charge"
    )

    def charge() -> None:
        raise ValueError("card declined")

    log.info("charged %s for %d cents", "bob", 1250, request_id="r-1", cents=1250)
    try:
        charge()
    except ValueError:
        log.exception("charge failed", request_id="r-2")
    log.close()
    events = wait_for(lambda: len(logd.query(svc="billing")) == 2 and logd.query(svc="billing"))
    failed, charged = events
    assert charged == {
        "id": charged["id"],
        "t": charged["t"],
        "env": "prod",
        "svc": "billing",
        "fn": "Charge",
        "lvl": "INFO",
        "txt": "charged bob for 1250 cents",
        "attrs": {"cents": "1250", "request_id": "r-1"},
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    assert failed["lvl"] == "ERROR"
    assert failed["attrs"] == {"request_id": "r-2"}
    assert 'in charge\n    raise ValueError("card declined")' in failed["stack_trace"]
    assert failed["stack_trace"].endswith("ValueError: card declined\n")


@pytest.fixture
def app_logger(logd: LogdProcess) -> Iterator[logging.Logger]:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "logd": {
                    "class": "logd.logger.LogdHandler",
                    "level": "DEBUG",
                    "port": logd.udp_addr[1],
                    "write_secret": WRITE_SECRET,
                    "env": "prod",
                    "svc": "shop",
                }
            },
            "loggers": {"shop": {"handlers": ["logd"], "level": "DEBUG", "propagate": False}},
        }
    )
    logger = logging.getLogger("shop")
    yield logger
    for handler in [h for h in logger.handlers if isinstance(h, LogdHandler)]:
        logger.removeHandler(handler)
        handler.close()


def test_handler_from_dictconfig(logd: LogdProcess, app_logger: logging.Logger) -> None:
    [handler] = [h for h in app_logger.handlers if isinstance(h, LogdHandler)]

    def checkout() -> None:
        app_logger.debug("cart has %d items", 3, extra={"cart": "c-9"})
        try:
            {}["missing"]  # raises KeyError on purpose
        except KeyError:
            app_logger.error("checkout failed", exc_info=True)  # noqa: G201  # exc_info is the test

    checkout()
    handler.flush()
    failed, debug = wait_for(lambda: len(logd.query(svc="shop")) == 2 and logd.query(svc="shop"))
    assert (debug["lvl"], debug["txt"], debug["fn"]) == ("DEBUG", "cart has 3 items", "checkout")
    assert debug["attrs"] == {"cart": "c-9", "logger": "shop"}
    assert failed["lvl"] == "ERROR"
    assert "KeyError: 'missing'" in failed["stack_trace"]


def test_nothing_listening_never_blocks_or_raises(tmp_path: object) -> None:

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    log = Logger(port=port, write_secret=WRITE_SECRET, queue_size=100)
    for i in range(5_000):
        log.info("into the void %d", i)  # every call returns; a full queue only counts
    assert log.flush()
    stats = log.stats()
    assert stats.sent + stats.dropped == 5_000
    assert stats.failed == 0  # UDP cannot tell; the server's counters would
    log.close()
