"""What issue 19 added to the writers: sender and seq on every WRITE frame (loss
accounting), host and pid on every event (origin), the HTTP fields, `warning`, the
bounded exit, and logd's own records kept out of a root LogdHandler. Against a real UDP
socket on 127.0.0.1 (tests/test_logger.py's Receiver)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from logd._pb.logd_pb2 import ERROR, INFO, POST, WARN, Cmd, Msg
from logd.errors import ConfigError
from logd.logger import HttpFields, LogdHandler, Logger, level_value
from logd.wire import PING_PAYLOAD, frame_payload
from support import WRITE_SECRET
from test_logger import Gate, Receiver, make


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    yield rx
    rx.sock.close()


def cmds(rx: Receiver, count: int) -> list[Cmd]:
    return [rx.cmd() for _ in range(count)]


# --- sender and seq -------------------------------------------------------------------


def test_every_write_frame_has_the_sender_and_the_next_seq(receiver: Receiver) -> None:
    log = make(receiver)
    for i in range(5):
        log.info("event %d", i)
        assert log.flush()
    frames = cmds(receiver, 5)
    assert [c.seq for c in frames] == [1, 2, 3, 4, 5]
    assert len({c.sender for c in frames}) == 1
    assert len(frames[0].sender) == 8
    assert frames[0].sender != bytes(8)
    log.close()


def test_two_loggers_have_different_senders(receiver: Receiver) -> None:
    a, b = make(receiver), make(receiver)
    a.info("a")
    assert a.flush()
    b.info("b")
    assert b.flush()
    first, second = cmds(receiver, 2)
    assert first.sender != second.sender
    assert (first.seq, second.seq) == (1, 1)
    a.close()
    b.close()


def test_a_frame_that_fails_to_send_keeps_its_seq(receiver: Receiver) -> None:
    gate = Gate()
    log = make(receiver, write_secret=None, secret_provider=gate)
    log.info("one")
    assert gate.entered.wait(5)
    gate.opened.set()
    assert log.flush()
    gate.entered.clear()
    gate.opened.clear()
    log.info("two: its socket breaks after signing")
    assert gate.entered.wait(5)  # the sender holds "two" in the provider, before sending
    sock = log._sender._sock
    assert sock is not None
    sock.close()  # the send fails (EBADF): counted, and the frame's number is spent
    gate.opened.set()
    assert log.flush()
    log.info("three")
    assert log.flush()
    one, three = cmds(receiver, 2)
    assert [(c.msg.txt, c.seq) for c in (one, three)] == [("one", 1), ("three", 3)]
    assert log.stats().failed == 1
    log.close()


def test_a_frame_never_signed_takes_no_seq(receiver: Receiver) -> None:
    calls = []

    def provider() -> str:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the secret store is down")
        return WRITE_SECRET

    log = make(receiver, write_secret=None, secret_provider=provider)
    for text in ("one", "two", "three"):
        log.info(text)
        assert log.flush()
    got = cmds(receiver, 2)
    assert [(c.msg.txt, c.seq) for c in got] == [("one", 1), ("three", 2)]
    assert log.stats().failed == 1
    log.close()


def test_packed_frames_are_numbered_and_stay_within_max_frame(receiver: Receiver) -> None:
    gate = Gate()
    log = make(receiver, write_secret=None, secret_provider=gate, max_frame=600)
    log.info("first")
    assert gate.entered.wait(5)
    for i in range(2000):  # seq passes 127: its varint grows to 2 bytes mid-drain
        log.info("event %d", i)
    gate.opened.set()
    assert log.flush(30)
    frames = cmds(receiver, log.stats().frames)
    assert [c.seq for c in frames] == list(range(1, len(frames) + 1))
    assert len(frames) > 130
    assert max(len(f) for f in receiver.frames) <= 600
    log.close()


def test_ping_frames_carry_neither_sender_nor_seq() -> None:
    ping = Cmd.FromString(PING_PAYLOAD)
    assert not ping.HasField("msg")
    assert (ping.sender, ping.seq) == (b"", 0)


FORK_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from logd.logger import Logger
    log = Logger(port=int(sys.argv[1]), write_secret="fork-secret-0123456789", svc="fork")
    log.info("parent 1")
    log.flush()
    pid = os.fork()
    if pid == 0:
        log.info("child 1")
        log.flush()
        log.info("child 2")
        log.flush()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    log.info("parent 2")
    log.flush()
    print(pid)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


def test_a_forked_child_has_its_own_sender_seq_and_pid(tmp_path: Path) -> None:
    rx = Receiver("fork-secret-0123456789")
    script = tmp_path / "fork.py"
    script.write_text(FORK_SCRIPT)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, str(script), str(rx.port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    child_pid = int(done.stdout)
    got = {c.msg.txt: c for c in cmds(rx, 4)}
    parent, child = got["parent 1"], got["child 1"]
    assert child.sender != parent.sender
    assert [got[t].seq for t in ("parent 1", "parent 2", "child 1", "child 2")] == [1, 2, 1, 2]
    assert got["parent 2"].sender == parent.sender
    assert child.msg.pid == child_pid != parent.msg.pid
    assert child.msg.host == parent.msg.host == socket.gethostname()
    rx.sock.close()


# --- origin ---------------------------------------------------------------------------


def test_events_carry_host_and_pid_by_default(receiver: Receiver) -> None:
    log = make(receiver)
    log.info("here")
    [msg] = receiver.events(1)
    assert (msg.host, msg.pid) == (socket.gethostname(), os.getpid())
    log.close()


@pytest.mark.parametrize("how", ["option", "env"])
def test_origin_can_be_switched_off(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "env":
        monkeypatch.setenv("LOGD_ORIGIN", "0")
        log = make(receiver)
    else:
        monkeypatch.setenv("LOGD_ORIGIN", "1")  # the option wins over the environment
        log = make(receiver, origin=False)
    log.info("nowhere")
    [msg] = receiver.events(1)
    assert (msg.host, msg.pid) == ("", 0)
    log.close()


def test_a_bad_logd_origin_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGD_ORIGIN", "maybe")
    with pytest.raises(ConfigError, match=r"^LOGD_ORIGIN must be 1 or 0 \(got 'maybe'\)$"):
        Logger(write_secret=WRITE_SECRET)


# --- the HTTP fields ------------------------------------------------------------------


def test_http_fields_set_the_events_fields_and_never_an_attribute(receiver: Receiver) -> None:
    log = make(receiver)
    log.info("served", http=HttpFields("post", "/v1/charge", 201), url="attr", method="m")
    log.info("an attribute named http", http="just text")
    served, plain = receiver.events(2)
    assert (served.http_method, served.url, served.response_status) == (POST, "/v1/charge", 201)
    assert dict(served.attrs) == {"url": "attr", "method": "m"}
    assert dict(plain.attrs) == {"http": "just text"}
    assert (plain.http_method, plain.url, plain.response_status) == (0, "", 0)
    log.close()


def test_handler_takes_http_fields_from_extra(receiver: Receiver) -> None:
    handler = LogdHandler(port=receiver.port, write_secret=WRITE_SECRET)
    app = logging.getLogger("test.http.extra")
    app.addHandler(handler)
    app.setLevel(logging.INFO)
    app.propagate = False
    app.info("served", extra={"http": HttpFields(url="/health", status=200), "user": "bob"})
    [msg] = receiver.events(1)
    assert (msg.url, msg.response_status, msg.http_method) == ("/health", 200, 0)
    assert (msg.host, msg.pid) == (socket.gethostname(), os.getpid())  # the handler's too
    assert dict(msg.attrs) == {"user": "bob", "logger": "test.http.extra"}
    app.removeHandler(handler)
    handler.close()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"method": "FETCH"}, "method must be one of DELETE, GET"),
        ({"status": 42}, "status must be an HTTP status code from 100 to 999"),
        ({"status": 1000}, "status must be an HTTP status code"),
        ({"status": "200"}, "status must be an HTTP status code"),
        ({"status": True}, "status must be an HTTP status code"),
        ({"url": 7}, "method and url must be str"),
    ],
)
def test_bad_http_fields_are_refused_when_made(kwargs: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        HttpFields(**kwargs)  # type: ignore[arg-type]


# --- levels ---------------------------------------------------------------------------


def test_warning_is_warn(receiver: Receiver) -> None:
    log = make(receiver)
    log.warning("a %s", "warning", code="w1")
    log.log("WARNING", "by name")
    log.log("error", "error by name")
    log.log(INFO, "by number")
    got = receiver.events(4)
    assert [(m.txt, m.lvl) for m in got] == [
        ("a warning", WARN),
        ("by name", WARN),
        ("error by name", ERROR),
        ("by number", INFO),
    ]
    assert dict(got[0].attrs) == {"code": "w1"}
    log.close()


@pytest.mark.parametrize("level", ["loud", "", 0, 7])
def test_an_unknown_level_is_a_value_error(receiver: Receiver, level: str | int) -> None:
    log = make(receiver)
    with pytest.raises(ValueError, match="unknown level"):
        log.log(level, "x")
    log.close()


def test_level_value_names() -> None:
    assert [level_value(n) for n in ("trace", "Debug", "INFO", "warn", "warning", " error ")] == [
        1,
        2,
        3,
        4,
        4,
        5,
    ]
    assert level_value("fatal") == 6


# --- no loop back into a root LogdHandler ---------------------------------------------


@pytest.fixture
def root_handler(receiver: Receiver) -> Iterator[LogdHandler]:
    handler = LogdHandler(port=receiver.port, write_secret=WRITE_SECRET)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)
    handler.close()


def test_logd_records_never_reach_a_root_handler(
    receiver: Receiver, root_handler: LogdHandler
) -> None:
    logging.getLogger("logd.client.sender").warning("logd's own warning")
    logging.getLogger("logd").error("logd's root logger")
    logging.getLogger("logdish").info("an app logger whose name starts like logd")
    assert root_handler.logger.flush()
    [msg] = receiver.events(1)
    assert msg.txt == "an app logger whose name starts like logd"
    assert receiver.nothing_more()


def test_the_senders_own_warning_is_not_sent_again(root_handler: LogdHandler) -> None:
    # A Logger whose every send fails: its sender warns once (logger logd.client.sender,
    # on the sender thread). Through the root handler that warning would be one more event.
    failing = LogdHandler(port=1, secret_provider=lambda: "")
    root = logging.getLogger()
    root.removeHandler(root_handler)
    root.addHandler(failing)
    try:
        logging.getLogger("app").info("cannot be signed")
        assert failing.logger.flush()
        time.sleep(0.2)  # room for a looped-back warning to be queued and fail too
        assert failing.logger.flush()
        stats = failing.logger.stats()
        assert (stats.failed, stats.sent, stats.queued) == (1, 0, 0)
    finally:
        root.removeHandler(failing)
        root.addHandler(root_handler)
        failing.close()


def test_records_made_by_a_secret_provider_are_not_sent(receiver: Receiver) -> None:
    provider_log = logging.getLogger("secretstore.client")  # like botocore's debug logs

    def provider() -> str:
        provider_log.warning("fetching the secret")
        return WRITE_SECRET

    handler = LogdHandler(port=receiver.port, secret_provider=provider)
    provider_log.addHandler(handler)
    app = logging.getLogger("app.provider")
    app.addHandler(handler)
    app.propagate = provider_log.propagate = False
    try:
        app.warning("from the app")
        assert handler.logger.flush()
        [msg] = receiver.events(1)
        assert msg.txt == "from the app"
        assert receiver.nothing_more()
    finally:
        provider_log.removeHandler(handler)
        app.removeHandler(handler)
        app.propagate = provider_log.propagate = True
        handler.close()


# --- the exit is bounded --------------------------------------------------------------

HANG_SCRIPT = textwrap.dedent(
    """
    import sys, threading
    from logd.logger import Logger
    never = threading.Event()

    def hang() -> str:  # a secret provider that never answers
        never.wait()
        return "never"

    kw = {} if sys.argv[2] == "-" else {"exit_timeout": float(sys.argv[2])}
    logs = [Logger(port=int(sys.argv[1]), secret_provider=hang, **kw) for _ in range(4)]
    for log in logs:
        log.info("stuck behind the provider")
    print("logged", flush=True)
    """
)


def _exit_time(tmp_path: Path, port: int, arg: str, env: dict[str, str]) -> float:
    script = tmp_path / "hang.py"
    script.write_text(HANG_SCRIPT)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script), str(port), arg],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "logged\n"), done.stderr
    return time.monotonic() - started


def _gone_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens once closed: the server is gone


def test_exit_is_bounded_by_default_with_a_hanging_provider(tmp_path: Path) -> None:
    # Four loggers, each stuck: closed at once, so the exit waits ~2 s, not 4 x 2 x 2 s.
    assert _exit_time(tmp_path, _gone_port(), "-", {}) < 2.0 + 3.0


@pytest.mark.parametrize(("arg", "env"), [("0.2", {}), ("-", {"LOGD_EXIT_TIMEOUT": "0.2"})])
def test_exit_timeout_from_the_option_or_the_environment(
    tmp_path: Path, arg: str, env: dict[str, str]
) -> None:
    assert _exit_time(tmp_path, _gone_port(), arg, env) < 0.2 + 1.5


def test_exit_still_sends_what_was_queued(tmp_path: Path, receiver: Receiver) -> None:
    script = tmp_path / "exit.py"
    script.write_text(
        "import sys\nfrom logd.logger import Logger\n"
        f"log = Logger(port={receiver.port}, write_secret={WRITE_SECRET!r})\n"
        "for i in range(3000):\n    log.info('at exit %d', i)\n"
    )
    subprocess.run([sys.executable, str(script)], timeout=30, check=True)
    got = receiver.events(3000)
    assert [m.txt for m in got[-2:]] == ["at exit 2998", "at exit 2999"]


@pytest.mark.parametrize("value", ["soon", "-1", "61", "nan"])
def test_a_bad_exit_timeout_is_one_sentence(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("LOGD_EXIT_TIMEOUT", value)
    with pytest.raises(ConfigError, match=r"^LOGD_EXIT_TIMEOUT must be a number of seconds"):
        Logger(write_secret=WRITE_SECRET)
    monkeypatch.delenv("LOGD_EXIT_TIMEOUT")
    with pytest.raises(ValueError, match="exit_timeout must be 0 to 60 s"):
        Logger(write_secret=WRITE_SECRET, exit_timeout=61)


def test_an_event_frame_parses_as_the_libraries_cmd(receiver: Receiver) -> None:
    log = make(receiver)
    log.info("a", user="u", http=HttpFields("GET", "/", 200))
    assert log.flush()
    frame = receiver.frame()
    payload = frame_payload(frame)
    cmd = Cmd.FromString(payload)
    assert payload == cmd.SerializeToString()  # byte for byte, fields in field order
    assert Msg.FromString(cmd.msg.SerializeToString()) == cmd.msg
    log.close()
