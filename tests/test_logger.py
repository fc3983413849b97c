"""logd.logger against a real UDP socket on 127.0.0.1 that checks every frame like the
server does (Signer.verify, Cmd parsing). The sender is held back, where a test needs
a queue, by a secret provider that waits: the public hook the sender calls per frame."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from logd._pb.logd_pb2 import DEBUG, ERROR, FATAL, INFO, TRACE, WARN, Cmd, Msg
from logd.devsecrets import dev_secrets_path
from logd.errors import ConfigError
from logd.logger import LogdHandler, Logger, level_for
from logd.wire import HEADER_LEN, Signer, frame_key_id, frame_payload, key_id
from support import WRITE_SECRET


class Receiver:
    """A UDP socket that collects frames and the events in them."""

    def __init__(self, secret: str = WRITE_SECRET) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5.0)
        self.port: int = self.sock.getsockname()[1]
        self.signer = Signer(secret.encode())
        self.frames: list[bytes] = []

    def frame(self) -> bytes:
        data = self.sock.recv(65_536)
        self.frames.append(data)
        return data

    def cmd(self) -> Cmd:
        frame = self.frame()
        assert self.signer.verify(frame), "frame is not signed with the write secret"
        return Cmd.FromString(frame_payload(frame))

    def events(self, count: int) -> list[Msg]:
        out: list[Msg] = []
        while len(out) < count:
            cmd = self.cmd()
            out.extend(([cmd.msg] if cmd.HasField("msg") else []) + list(cmd.batch))
        return out

    def nothing_more(self) -> bool:
        self.sock.settimeout(0.2)
        try:
            self.sock.recv(65_536)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(5.0)
        return False


class Gate:
    """A secret provider that blocks the sender until opened; `entered` is set once the
    sender is inside it, i.e. it has taken an event off the queue and is signing."""

    def __init__(self, secret: str = WRITE_SECRET) -> None:
        self.secret = secret
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        self.entered.set()
        self.opened.wait(10)
        return self.secret


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    yield rx
    rx.sock.close()


def make(rx: Receiver, **kw: object) -> Logger:
    kw.setdefault("write_secret", WRITE_SECRET)
    return Logger(port=rx.port, env="test", svc="unit", fn="f", **kw)  # type: ignore[arg-type]


def test_import_needs_only_protobuf() -> None:
    code = (
        "import sys, logd.logger\n"
        "print(sorted(m for m in ('aiohttp', 'click', 'boto3', 'yaml') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_event_arrives_signed_with_its_fields(receiver: Receiver) -> None:
    log = make(receiver)
    before = time.time_ns()
    log.info("charged %s for %d cents", "bob", 42, request_id="r-1", n=7, template="t")
    after = time.time_ns()
    [msg] = receiver.events(1)
    assert frame_key_id(receiver.frames[0]) == key_id(WRITE_SECRET.encode())
    assert (msg.env, msg.svc, msg.fn, msg.lvl) == ("test", "unit", "f", INFO)
    assert msg.txt == "charged bob for 42 cents"
    assert dict(msg.attrs) == {"request_id": "r-1", "n": "7", "template": "t"}
    assert before <= msg.t.ToNanoseconds() <= after
    log.close()


def test_each_level(receiver: Receiver) -> None:
    log = make(receiver)
    for name in ("trace", "debug", "info", "warn", "error", "fatal"):
        getattr(log, name)(name)
    events = receiver.events(6)
    assert [(m.txt, m.lvl) for m in events] == [
        ("trace", TRACE),
        ("debug", DEBUG),
        ("info", INFO),
        ("warn", WARN),
        ("error", ERROR),
        ("fatal", FATAL),
    ]
    log.close()


def test_idle_event_goes_out_alone_at_once(receiver: Receiver) -> None:
    log = make(receiver)
    log.info("alone")
    cmd = receiver.cmd()  # no flush(): the idle sender sends it by itself
    assert cmd.msg.txt == "alone"
    assert len(cmd.batch) == 0
    log.close()


@pytest.mark.parametrize("max_frame", [1400, 600])
def test_queued_events_are_packed_into_full_frames(receiver: Receiver, max_frame: int) -> None:
    gate = Gate()
    log = make(receiver, write_secret=None, secret_provider=gate, max_frame=max_frame)
    log.info("first")
    assert gate.entered.wait(5)  # the sender holds a frame with "first" alone
    for i in range(300):
        log.info("event %d", i, i=i)
    gate.opened.set()
    assert log.flush()
    events = receiver.events(301)
    assert [m.txt for m in events] == ["first"] + [f"event {i}" for i in range(300)]
    assert max(len(f) for f in receiver.frames) <= max_frame
    assert len(receiver.frames) < 300 // 5
    # Every frame after the lone first one, but the last, is full: the next event
    # (tag, length, bytes) would not have fitted.
    first_of_next = 1
    for frame in receiver.frames[1:-1]:
        cmd = Cmd.FromString(frame_payload(frame))
        first_of_next += 1 + len(cmd.batch)
        size = events[first_of_next].ByteSize()
        assert len(frame) + 1 + (1 if size < 128 else 2) + size > max_frame
    assert log.stats().frames == len(receiver.frames)
    log.close()


def test_oversize_event_is_cut_with_a_marker(receiver: Receiver) -> None:
    log = make(receiver)
    log.info("ü" * 3000, big="x" * 400)
    [msg] = receiver.events(1)
    assert len(receiver.frames[0]) <= 1400
    assert msg.txt.startswith("üüü")
    assert msg.txt.endswith("bytes]")
    assert "[logd: cut" in msg.txt
    assert msg.attrs["big"] == "x" * 400  # the longest field is cut, the rest kept
    assert log.stats().truncated == 1
    log.close()


def test_full_queue_drops_and_counts_instead_of_blocking(receiver: Receiver) -> None:
    gate = Gate()
    log = make(receiver, write_secret=None, secret_provider=gate, queue_size=10)
    log.info("in flight")
    assert gate.entered.wait(5)  # the sender holds this event and waits for the secret
    for i in range(100):
        log.info("event %d", i)  # each call returns: the proof that none blocks
    stats = log.stats()
    assert (stats.queued, stats.dropped) == (10, 90)
    gate.opened.set()
    assert log.flush()
    events = receiver.events(11)
    assert [m.txt for m in events] == ["in flight"] + [f"event {i}" for i in range(10)]
    assert log.stats().sent == 11
    assert receiver.nothing_more()
    log.close()


def test_flush_waits_until_queued_events_are_sent(receiver: Receiver) -> None:
    gate = Gate()
    log = make(receiver, write_secret=None, secret_provider=gate)
    for i in range(50):
        log.info("event %d", i)
    assert not log.flush(timeout=0.05)  # held back: not sent yet
    gate.opened.set()
    assert log.flush()
    stats = log.stats()
    assert (stats.sent, stats.queued) == (50, 0)
    assert len(receiver.events(50)) == 50
    log.close()


def test_secret_provider_is_asked_per_frame_and_a_new_secret_is_used(
    receiver: Receiver,
) -> None:
    secrets = iter(["old-secret-000000000000", "new-secret-111111111111"])
    current: list[str] = []

    def provider() -> str:
        if not current:
            current.append(next(secrets))
        return current[0]

    log = make(receiver, write_secret=None, secret_provider=provider)
    log.info("one")
    assert log.flush()
    current[:] = [next(secrets)]  # the provider refreshed itself
    log.info("two")
    assert log.flush()
    first, second = receiver.frame(), receiver.frame()
    assert frame_key_id(first) == key_id(b"old-secret-000000000000")
    assert frame_key_id(second) == key_id(b"new-secret-111111111111")
    assert Signer(b"new-secret-111111111111").verify(second)
    log.close()


def test_failing_secret_provider_is_counted_and_never_raises(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    def provider() -> str:
        raise RuntimeError("vault says: hunter2-secret")

    log = make(receiver, write_secret=None, secret_provider=provider)
    log.info("lost")
    assert log.flush()
    assert log.stats().failed == 1
    assert receiver.nothing_more()
    assert "RuntimeError" in caplog.text
    assert "hunter2" not in caplog.text
    log.close()


def test_bad_arguments_never_raise(receiver: Receiver) -> None:
    class Broken:
        def __str__(self) -> str:
            raise ValueError("no str")

    log = make(receiver)
    log.info("%d items", "not a number")
    log.info("%s and %s", "only one")
    log.info(42)  # type: ignore[arg-type]  # not a str: shown with str()
    log.info("attr", obj=Broken())  # cannot be made a str: counted as dropped
    events = receiver.events(3)
    assert events[0].txt.startswith("%d items (logd: the arguments do not fit")
    assert "'only one'" in events[1].txt
    assert events[2].txt == "42"
    assert log.stats().dropped == 1
    log.close()


def test_exception_adds_the_stack_trace(receiver: Receiver) -> None:
    log = make(receiver)

    def charge() -> None:
        raise ZeroDivisionError("card declined")

    try:
        charge()
    except ZeroDivisionError:
        log.exception("failed for %s", "bob")
    log.exception("no exception here")
    failed, here = receiver.events(2)
    assert (failed.lvl, failed.txt) == (ERROR, "failed for bob")
    assert "in charge" in failed.stack_trace
    assert failed.stack_trace.strip().endswith("ZeroDivisionError: card declined")
    assert here.stack_trace.startswith("...[logd: cut")  # pytest's stack is deep
    assert "test_exception_adds_the_stack_trace" in here.stack_trace  # the call stack
    log.close()


def test_close_flushes_and_later_calls_are_dropped(receiver: Receiver) -> None:
    log = make(receiver)
    texts = [f"event {i}" for i in range(20)]
    for txt in texts:
        log.info(txt)
    log.close()
    assert log.stats().sent == 20
    log.info("after close")
    log.close()  # twice is fine
    assert log.stats().dropped == 1
    assert log.flush()
    assert [m.txt for m in receiver.events(20)] == texts
    assert receiver.nothing_more()


def test_rate_limit_drops_and_counts(receiver: Receiver) -> None:
    log = make(receiver, rate_limit=5)
    for i in range(50):
        log.info("event %d", i)
    assert log.flush()
    stats = log.stats()
    assert stats.rate_limited > 0
    assert stats.sent + stats.rate_limited == 50
    log.close()


def test_stdout_prints_the_event(receiver: Receiver, capsys: pytest.CaptureFixture[str]) -> None:
    log = make(receiver, stdout=True)
    log.warn("disk %d%% full", 91, mount="/data")  # noqa: G010  # logd's level is named warn
    assert capsys.readouterr().out == "WARN disk 91% full mount=/data\n"
    log.close()


def test_secret_sources_in_order(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="no write secret: set LOGD_WRITE_SECRET"):
        Logger(port=receiver.port)
    path = dev_secrets_path()
    path.parent.mkdir(parents=True)
    path.write_text("LOGD_READ_SECRET=dev-read\nLOGD_WRITE_SECRET=dev-write-secret\n")
    sent_with = []
    for setup in ("dev", "env", "arg"):
        if setup == "env":
            monkeypatch.setenv("LOGD_WRITE_SECRET", "env-write-secret")
        log = Logger(port=receiver.port, write_secret="arg-secret" if setup == "arg" else None)
        log.info(setup)
        log.close()
        sent_with.append(frame_key_id(receiver.frame()))
    assert sent_with == [key_id(s.encode()) for s in ("dev-write-secret", "env-write-secret")] + [
        key_id(b"arg-secret")
    ]
    with pytest.raises(ValueError, match="not both"):
        Logger(port=receiver.port, write_secret="a", secret_provider=lambda: "b")


def test_host_and_port_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGD_HOST", "https://logd.internal:6101/")
    monkeypatch.setenv("LOGD_UDP_PORT", "7102")
    log = Logger(write_secret="s")
    assert (log.host, log.port) == ("logd.internal", 7102)
    log.close()


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="max_frame"):
        Logger(write_secret="s", max_frame=100)
    with pytest.raises(ValueError, match="env, svc and fn take"):
        Logger(write_secret="s", max_frame=512, env="e" * 100, svc="s" * 100, fn="f" * 100)
    with pytest.raises(ValueError, match="svc is 400 bytes; a server refuses names over 128"):
        Logger(write_secret="s", svc="s" * 400)
    with pytest.raises(ConfigError, match="LOGD_UDP_PORT"):
        Logger(write_secret="s", port=0)


FORK_SCRIPT = textwrap.dedent(
    """
    import os, sys, threading
    from logd.logger import Logger

    parent = os.getpid()
    held = threading.Event()
    go = threading.Event()

    def provider():
        if os.getpid() == parent and held.is_set():
            go.wait(10)  # the parent's sender is mid-frame when the fork happens
        return "fork-secret-0123456789"

    log = Logger(port=int(sys.argv[1]), secret_provider=provider, svc="fork")
    log.info("parent before fork")
    log.flush()
    held.set()
    log.info("parent, queued at fork")
    pid = os.fork()
    if pid == 0:
        log.info("child")
        os._exit(0 if log.flush(5) and log.stats().sent == 1 else 3)
    _, status = os.waitpid(pid, 0)
    go.set()
    log.info("parent after fork")
    log.close()
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


def test_fork_gives_the_child_a_fresh_sender(tmp_path: Path) -> None:
    rx = Receiver("fork-secret-0123456789")
    script = tmp_path / "fork.py"
    script.write_text(FORK_SCRIPT)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # 3.12+ warns about fork with threads
    done = subprocess.run(
        [sys.executable, str(script), str(rx.port)], env=env, timeout=30, check=False
    )
    assert done.returncode == 0
    texts = sorted(m.txt for m in rx.events(4))
    assert texts == sorted(
        ["parent before fork", "parent, queued at fork", "child", "parent after fork"]
    )
    assert rx.nothing_more()  # the child did not send the parent's queued event again
    rx.sock.close()


# --- LogdHandler --------------------------------------------------------------------


def test_level_mapping() -> None:
    assert [level_for(n) for n in (1, 5, 10, 15, 20, 30, 40, 50, 60)] == [
        TRACE,
        TRACE,
        DEBUG,
        DEBUG,
        INFO,
        WARN,
        ERROR,
        FATAL,
        FATAL,
    ]


def test_handler_maps_a_record(receiver: Receiver) -> None:
    handler = LogdHandler(port=receiver.port, write_secret=WRITE_SECRET, env="test", svc="h")
    logger = logging.getLogger("test.handler.map")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:

        def lookup() -> None:
            raise KeyError("missing")

        def charge_card() -> None:
            logger.warning("card %s declined", "4242", extra={"user": "bob", "cents": 42})
            try:
                lookup()
            except KeyError:
                logger.exception("lookup failed", extra={"fn": "Override"})

        charge_card()
        warned, failed = receiver.events(2)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert (warned.lvl, warned.txt, warned.fn, warned.svc) == (
        WARN,
        "card 4242 declined",
        "charge_card",
        "h",
    )
    assert dict(warned.attrs) == {"logger": "test.handler.map", "user": "bob", "cents": "42"}
    assert (failed.lvl, failed.fn) == (ERROR, "Override")
    assert "KeyError: 'missing'" in failed.stack_trace
    assert "fn" not in failed.attrs


def test_handler_fn_setting_wins_over_func_name(receiver: Receiver) -> None:
    handler = LogdHandler(port=receiver.port, write_secret=WRITE_SECRET, fn="Worker")
    record = logging.makeLogRecord({"msg": "hi", "levelno": logging.INFO, "funcName": "run"})
    handler.handle(record)
    [msg] = receiver.events(1)
    assert msg.fn == "Worker"
    handler.close()


def test_frame_header_is_protocol_v1(receiver: Receiver) -> None:
    log = make(receiver)
    log.info("hi")
    frame = receiver.frame()
    assert frame[0] == 1
    assert len(frame) > HEADER_LEN
    log.close()


def test_handler_applies_the_rate_limit(receiver: Receiver) -> None:
    handler = LogdHandler(port=receiver.port, write_secret=WRITE_SECRET, rate_limit=2)
    for i in range(10):
        handler.handle(logging.makeLogRecord({"msg": f"r{i}", "levelno": logging.INFO}))
    assert handler.logger.flush()
    stats = handler.logger.stats()
    assert stats.rate_limited > 0
    assert stats.sent + stats.rate_limited == 10
    handler.close()
