"""The `logd` client commands, run as `python -m logd ...` against a real server."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from logd._pb.logd_pb2 import ERROR, INFO, WARN, Msg
from logd.logger import Logger
from support import READ_SECRET, WRITE_SECRET, LogdProcess, start_logd, wait_for

pytestmark = pytest.mark.functional
ESC = "\x1b"


def client_env(logd: LogdProcess, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "LOGD_HOST": logd.http_url,
        "LOGD_UDP_PORT": str(logd.udp_addr[1]),
        "LOGD_READ_SECRET": READ_SECRET,
        "LOGD_WRITE_SECRET": WRITE_SECRET,
        **extra,
    }


def run(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logd", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def one_sentence(stderr: str) -> str:
    """stderr of a failed command: one line, `logd: ...`, no traceback."""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("logd: ")
    return lines[0]


def run_on_tty(env: dict[str, str], *args: str) -> str:
    """Run with stdout on a pseudo-terminal; return what it printed."""
    leader, follower = pty.openpty()
    with subprocess.Popen([sys.executable, "-m", "logd", *args], stdout=follower, env=env) as proc:
        os.close(follower)
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            out += chunk
        os.close(leader)
        assert proc.wait(timeout=60) == 0
    return out.decode()


@pytest.fixture
def env(logd: LogdProcess) -> dict[str, str]:
    return client_env(logd)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogdProcess]:
    """One server, shared by the read-only tests, with three events in svc `shop`, the
    newest an ERROR with a stack trace. Started with a clean environment, as the
    per-test fixtures in conftest.py do."""
    tmp = tmp_path_factory.mktemp("shop")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(("LOGD_", "AWS_")) or name == "XDG_CONFIG_HOME":
                mp.delenv(name)
        (tmp / "home").mkdir()
        mp.setenv("HOME", str(tmp / "home"))
        logd = start_logd(tmp)
    try:
        logd.write(
            Msg(env="prod", svc="shop", fn="List", lvl=INFO, txt="listed 3 items"),
            Msg(env="prod", svc="shop", fn="Pay", lvl=WARN, txt="slow card", attrs={"ms": "900"}),
            Msg(
                env="prod",
                svc="shop",
                fn="Pay",
                lvl=ERROR,
                txt="declined\x1b[2J",  # an escape sequence a writer slipped in
                stack_trace="Traceback (most recent call last):\n  File x\nValueError: no",
                http_method=6,
                url="/pay",
                response_status=402,
            ),
        )
        wait_for(lambda: len(logd.query(svc="shop")) == 3)
        yield logd
    finally:
        logd.stop()


# --- send ---------------------------------------------------------------------------


def test_send_text_and_stdin_lines(logd: LogdProcess, env: dict[str, str]) -> None:
    done = run(env, "send", "--svc", "cli", "--env", "dev", "--fn", "main", "--lvl", "WARN",
               "--attr", "user=bob", "--attr", "eq=a=b", "hello", "world")  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    done = run(env, "send", "--svc", "cli", stdin="line one\n\nline two\r\n")
    assert done.returncode == 0
    stored = wait_for(lambda: len(logd.query(svc="cli")) == 3 and logd.query(svc="cli"))
    assert [e["txt"] for e in stored] == ["line two", "line one", "hello world"]
    hello = stored[2]
    assert (hello["env"], hello["fn"], hello["lvl"]) == ("dev", "main", "WARN")
    assert hello["attrs"] == {"user": "bob", "eq": "a=b"}


def test_send_rejects_a_bad_attr_and_a_missing_secret(
    logd: LogdProcess, env: dict[str, str]
) -> None:
    done = run(env, "send", "--attr", "novalue", "x")
    assert done.returncode == 2
    assert "key=value" in done.stderr
    no_secret = {k: v for k, v in env.items() if k != "LOGD_WRITE_SECRET"}
    done = run(no_secret, "send", "x")
    assert done.returncode == 1
    assert "no write secret: set LOGD_WRITE_SECRET" in one_sentence(done.stderr)


# --- query --------------------------------------------------------------------------


def test_query_human_output_oldest_first(events: LogdProcess) -> None:
    env = client_env(events)
    done = run(env, "query", "--svc", "shop")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert " INFO  prod/shop List: listed 3 items" in lines[0]
    assert " WARN  prod/shop Pay: slow card ms=900" in lines[1]
    assert lines[2].endswith(" ERROR prod/shop Pay: declined\\x1b[2J POST /pay 402")
    assert lines[3:] == [
        "    Traceback (most recent call last):",
        "      File x",
        "    ValueError: no",
    ]
    assert ESC not in done.stdout  # not a TTY: no colour, and no raw escape from the event


def test_query_json_and_ndjson(events: LogdProcess) -> None:
    env = client_env(events)
    done = run(env, "query", "--svc", "shop", "--json")
    assert json.loads(done.stdout) == events.query(svc="shop")
    done = run(env, "query", "--svc", "shop", "--ndjson", "--lvl", "warn", "--limit", "1")
    assert [json.loads(line)["txt"] for line in done.stdout.splitlines()] == ["declined\x1b[2J"]


FILTER_CASES = [
    (["--lvl", "warn"], ["declined\x1b[2J", "slow card"]),
    (["--fn", "List"], ["listed 3 items"]),
    (["--txt", "CARD"], ["slow card"]),
    (["--status", "402", "--method", "post", "--url", "/p"], ["declined\x1b[2J"]),
    (["--since", "1h", "--offset", "2"], ["listed 3 items"]),
    (["--until", "2000-01-01T00:00:00Z"], []),
    (["--env", "prod", "--svc", "sh*"], ["declined\x1b[2J", "slow card", "listed 3 items"]),
    (["--svc", "sh"], []),
    # A repeated flag ORs, --not-NAME excludes, --attr KEY=VALUE matches an attribute.
    (["--fn", "List", "--fn", "Pay", "--lvl", "warn"], ["declined\x1b[2J", "slow card"]),
    (["--svc", "shop", "--svc", "nope"], ["declined\x1b[2J", "slow card", "listed 3 items"]),
    (["--not-fn", "Pay"], ["listed 3 items"]),
    (["--not-txt", "CARD", "--not-status", "402"], ["listed 3 items"]),
    (["--not-svc", "shop"], []),
    (["--not-method", "post", "--not-url", "/x"], ["slow card", "listed 3 items"]),
    (["--not-env", "dev"], ["declined\x1b[2J", "slow card", "listed 3 items"]),
    (["--attr", "ms=900"], ["slow card"]),
    (["--attr", "ms=9*", "--attr", "ms=1"], ["slow card"]),
    (["--not-attr", "ms=900"], ["declined\x1b[2J", "listed 3 items"]),
    # --from-host is host= (these events name no host); --host stays logd's URL.
    (["--from-host", "web-1"], []),
    (
        ["--not-from-host", "web-1", "--not-from-host", "web-2"],
        ["declined\x1b[2J", "slow card", "listed 3 items"],
    ),
]


def test_query_filters(events: LogdProcess) -> None:
    env = client_env(events)
    for flags, expected in FILTER_CASES:
        svc = [] if "--svc" in flags else ["--svc", "shop"]
        done = run(env, "query", "--json", *svc, *flags)
        assert done.returncode == 0, done.stderr
        assert [e["txt"] for e in json.loads(done.stdout)] == expected, flags


def test_query_refuses_a_malformed_attr_flag(events: LogdProcess) -> None:
    env = client_env(events)
    done = run(env, "query", "--attr", "novalue")
    assert done.returncode == 2
    assert "expected KEY=VALUE, got 'novalue'" in done.stderr
    done = run(env, "query", "--not-attr", "=v")
    assert done.returncode == 2
    assert "expected KEY=VALUE" in done.stderr
    done = run(env, "query", "--attr", "k" * 300 + "=v")
    assert done.returncode == 1
    assert "bad parameter 'attr." in one_sentence(done.stderr)


def test_colour_only_on_a_tty_and_never_with_no_color(events: LogdProcess) -> None:
    env = client_env(events)
    on_tty = run_on_tty(env, "query", "--svc", "shop")
    assert f"{ESC}[31mERROR" in on_tty  # red level
    assert "declined\\x1b[2J" in on_tty  # the event's own escape stays harmless
    assert ESC not in run_on_tty({**env, "NO_COLOR": "1"}, "query", "--svc", "shop")
    forced = run(env, "query", "--svc", "shop", "--color", "always")
    assert f"{ESC}[33mWARN" in forced.stdout


def test_query_errors_are_one_sentence(events: LogdProcess) -> None:
    env = client_env(events)
    done = run({**env, "LOGD_READ_SECRET": "wrong-read-secret"}, "query")
    assert done.returncode == 1
    line = one_sentence(done.stderr)
    assert "refused the read secret from LOGD_READ_SECRET (401)" in line
    assert "wrong-read-secret" not in line
    done = run({**env, "LOGD_HOST": "http://127.0.0.1:1"}, "query")
    assert done.returncode == 1
    assert "cannot reach logd at http://127.0.0.1:1 (connection refused" in one_sentence(
        done.stderr
    )
    done = run(env, "query", "--lvl", "loud")
    assert done.returncode == 1
    assert "bad parameter 'lvl'" in one_sentence(done.stderr)
    done = run(env, "query", "--no-such-flag")
    assert done.returncode == 2
    assert "No such option" in done.stderr
    assert "Traceback" not in done.stderr
    done = run({**env, "LOGD_HOST": "ftp://x"}, "query")
    assert done.returncode == 1
    assert "LOGD_HOST must be an http(s) URL" in one_sentence(done.stderr)


# --- hits ---------------------------------------------------------------------------


def test_hits_draws_bars_by_level(events: LogdProcess) -> None:
    env = client_env(events, COLUMNS="100")  # the bars fit the terminal: 60 columns at most
    done = run(env, "hits", "--since", "1h", "--by", "lvl", "--svc", "shop")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "3 events, 1m buckets"
    assert lines[1] == "\u2588 ERROR  \u2588 INFO  \u2588 WARN"  # the legend, heaviest first
    assert len(lines) - 2 in (60, 61)  # one line per minute, oldest first
    (last,) = [line for line in lines[2:] if "#" in line]
    assert last.endswith(" 3 " + "#" * 60 + "  ERROR 1, INFO 1, WARN 1")
    narrow = run({**env, "COLUMNS": "60"}, "hits", "--since", "1h", "--svc", "shop")
    assert " 3 " + "#" * 37 in narrow.stdout
    assert ESC not in done.stdout  # not a TTY: plain
    on_tty = run_on_tty(env, "hits", "--since", "1h", "--by", "lvl", "--svc", "shop")
    assert f"{ESC}[31m\u2588" in on_tty  # ERROR's part of the bar, in red
    assert f"{ESC}[33m\u2588" in on_tty  # WARN, yellow
    plain = run_on_tty({**env, "NO_COLOR": "1"}, "hits", "--since", "1h", "--by", "lvl")
    assert ESC not in plain
    assert "ERROR 1, INFO 1, WARN 1" in plain


def test_hits_json_and_filters_and_errors(events: LogdProcess) -> None:
    env = client_env(events)
    done = run(env, "hits", "--json", "--svc", "shop", "--not-fn", "List", "--step", "1h")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert (body["step_s"], body["total"]) == (3600, 2)
    done = run(env, "hits", "--by", "color")
    assert done.returncode == 1
    assert "bad parameter 'by': expected lvl, env, svc, fn, host or attr.KEY" in one_sentence(
        done.stderr
    )
    done = run(env, "hits", "--step", "0s")
    assert done.returncode == 1
    assert "bad parameter 'step'" in one_sentence(done.stderr)


def test_dev_mode_secrets_when_nothing_is_set(tmp_path: Path) -> None:
    logd = start_logd(tmp_path, secrets=False)  # dev mode: makes ~/.config/logd/dev-secrets.env
    try:
        env = {k: v for k, v in client_env(logd).items() if not k.endswith("_SECRET")}
        assert run(env, "send", "--svc", "dev", "from dev mode").returncode == 0
        done = wait_for(lambda: "from dev mode" in (d := run(env, "query")).stdout and d)
        assert done.returncode == 0
        assert run(env, "ping").returncode == 0
    finally:
        logd.stop()


# --- ping and info ------------------------------------------------------------------


def test_ping(logd: LogdProcess, env: dict[str, str]) -> None:
    done = run(env, "ping")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"PONG from 127.0.0.1:{logd.udp_addr[1]} in ")
    assert "write key" in done.stdout
    assert run(env, "ping", "--key", "read").returncode == 0
    done = run({**env, "LOGD_WRITE_SECRET": "not-the-secret"}, "ping", "--timeout", "0.5")
    assert done.returncode == 1
    assert "no valid PONG" in one_sentence(done.stderr)
    assert logd.info()["udp"]["pongs"] == 2


def test_ping_nothing_listening(env: dict[str, str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    done = run({**env, "LOGD_UDP_PORT": str(port)}, "ping", "--timeout", "2")
    assert done.returncode == 1
    assert f"nothing listens on udp 127.0.0.1:{port}" in one_sentence(done.stderr)


def test_info(events: LogdProcess) -> None:
    env = client_env(events)
    done = run(env, "info")
    assert done.returncode == 0
    assert done.stdout.startswith("logd 0.1.0, up ")
    assert "  ring   prod/shop  3 events" in done.stdout
    assert "secrets  env; keys: read AWSCURRENT" in done.stdout
    assert READ_SECRET not in done.stdout
    raw = json.loads(run(env, "info", "--json").stdout)
    assert raw["udp"]["events"] == 3


# --- tail ---------------------------------------------------------------------------


class Tail:
    """A `logd tail` subprocess whose stdout and stderr lines are read by threads."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logd", "tail", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        self._pumps = [
            threading.Thread(target=_pump, args=(stream, sink), daemon=True)
            for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for pump in self._pumps:
            pump.start()

    def line(self, sink: queue.Queue[str] | None = None) -> str:
        return (sink or self.out).get(timeout=20)

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.stop(signal.SIGKILL)
        for pump in self._pumps:
            pump.join(timeout=5)  # they end at EOF, once the process is gone
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _pump(stream: IO[str], sink: queue.Queue[str]) -> None:
    for line in stream:
        sink.put(line.rstrip("\n"))


@pytest.fixture
def tails() -> Iterator[list[Tail]]:
    started: list[Tail] = []
    yield started
    for tail in started:
        tail.close()


def subscribers(logd: LogdProcess) -> Any:
    return logd.info()["tail"]["subscribers"]


def test_tail_sees_new_events_and_survives_a_restart(
    tmp_path: Path, logd: LogdProcess, tails: list[Tail]
) -> None:
    tail = Tail(client_env(logd), "--json", "--svc", "live")
    tails.append(tail)
    wait_for(lambda: subscribers(logd) == 1)
    logd.write(Msg(svc="live", lvl=INFO, txt="before restart"))
    assert json.loads(tail.line())["txt"] == "before restart"

    udp_port, http_addr = logd.udp_addr[1], logd.http_url.removeprefix("http://")
    assert logd.stop() == 0
    assert tail.line(tail.err).endswith("; reconnecting")  # said once per outage
    again = start_logd(tmp_path, "--udp-addr", f"127.0.0.1:{udp_port}", "--http-addr", http_addr)
    try:
        wait_for(lambda: subscribers(again) == 1, timeout=30)
        again.write(Msg(svc="live", lvl=WARN, txt="after restart"))
        assert json.loads(tail.line())["txt"] == "after restart"
        assert tail.line(tail.err) == f"logd: reconnected to {again.http_url}"
        assert tail.stop(signal.SIGINT) == 0  # Ctrl-C ends a tail normally
    finally:
        again.stop()


def tail_dropped_soon(logd: LogdProcess) -> bool:
    try:
        wait_for(lambda: logd.info()["tail"]["dropped"] > 0, timeout=3)
    except AssertionError:
        return False
    return True


def test_tail_human_output_and_dropped_notice(tmp_path: Path, tails: list[Tail]) -> None:
    logd = start_logd(tmp_path, "--tail-queue", "1")
    try:
        tail = Tail(client_env(logd), "--svc", "flood")
        tails.append(tail)
        wait_for(lambda: subscribers(logd) == 1)
        logd.write(Msg(svc="flood", lvl=INFO, txt="first"))
        assert tail.line().endswith(" INFO  flood: first")
        tail.proc.send_signal(signal.SIGSTOP)  # a reader that stops reading
        log = Logger(port=logd.udp_addr[1], write_secret=WRITE_SECRET, svc="flood")
        for _ in range(10):  # until the socket buffers between logd and the tail are full
            for i in range(10_000):
                log.info("flood %d", i)
            log.flush()
            if tail_dropped_soon(logd):
                break
        log.close()
        assert logd.info()["tail"]["dropped"] > 0
        tail.proc.send_signal(signal.SIGCONT)
        notice = tail.line(tail.err)
        assert notice.startswith("logd: ")
        assert notice.endswith(" events were not shown: this tail fell behind the server")
        assert tail.stop() == 0
    finally:
        logd.stop()


def test_tail_cannot_connect_fails_at_once(env: dict[str, str]) -> None:
    done = run({**env, "LOGD_HOST": "http://127.0.0.1:1"}, "tail")
    assert done.returncode == 1
    assert "cannot reach logd" in one_sentence(done.stderr)
    done = run({**env, "LOGD_READ_SECRET": "nope"}, "tail")
    assert done.returncode == 1
    assert "refused the read secret" in one_sentence(done.stderr)


def test_tail_shows_a_backlog_first_like_tail_f(logd: LogdProcess, tails: list[Tail]) -> None:
    logd.write(*(Msg(svc="hist", txt=f"old {i}") for i in range(15)))
    wait_for(lambda: len(logd.query(svc="hist")) == 15)
    default = Tail(client_env(logd), "--json", "--svc", "hist")
    tails.append(default)
    assert [json.loads(default.line())["txt"] for _ in range(10)] == [
        f"old {i}" for i in range(5, 15)
    ]  # the newest 10, oldest first
    three = Tail(client_env(logd), "--json", "-n", "3", "--svc", "hist")
    tails.append(three)
    assert [json.loads(three.line())["txt"] for _ in range(3)] == ["old 12", "old 13", "old 14"]
    wait_for(lambda: subscribers(logd) == 2)
    logd.write(Msg(svc="hist", txt="new"))
    assert json.loads(three.line())["txt"] == "new"  # then it follows: no gap, no repeat
    assert json.loads(default.line())["txt"] == "new"


class Relay:
    """A TCP relay to logd's HTTP port whose connections the test can cut: a network drop
    while the server stays up."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._open = []

    def close(self) -> None:
        self.cut()
        self._listener.close()


def test_tail_resumes_after_a_network_drop_with_nothing_missed(
    logd: LogdProcess, tails: list[Tail]
) -> None:
    host, port = logd.http_url.removeprefix("http://").split(":")
    relay = Relay((host, int(port)))
    try:
        tail = Tail(client_env(logd, LOGD_HOST=relay.address), "--json", "-n", "0", "--svc", "r")
        tails.append(tail)
        wait_for(lambda: subscribers(logd) == 1)
        logd.write(Msg(svc="r", txt="before"))
        assert json.loads(tail.line())["txt"] == "before"
        relay.cut()  # the network drops; the server keeps running and storing
        assert tail.line(tail.err).endswith("; reconnecting")
        logd.write(Msg(svc="r", txt="during 1"), Msg(svc="r", txt="during 2"))
        wait_for(lambda: len(logd.query(svc="r")) == 3)
        got = [json.loads(tail.line())["txt"] for _ in range(2)]
        assert got == ["during 1", "during 2"]  # sent while it was away, not missed
        assert tail.line(tail.err).startswith("logd: reconnected to ")
        logd.write(Msg(svc="r", txt="after"))
        assert json.loads(tail.line())["txt"] == "after"
    finally:
        relay.close()


def test_query_pages_past_the_servers_cap_by_itself(logd: LogdProcess) -> None:
    """`--limit 22000` against the server's cap of 10,000 a query: three pages, each asking
    for the events before the last one it got; no gap, no repeat, newest first."""
    for start in range(0, 25_000, 50):
        logd.write(*(Msg(svc="p", txt=f"e{i:05d}") for i in range(start, start + 50)))
        if start % 2000 == 1950:  # let the 1 MiB receive buffer drain
            wait_for(lambda n=start + 50: logd.info()["store"]["writes"] >= n)
    wait_for(lambda: logd.info()["store"]["writes"] == 25_000)
    out = run(client_env(logd), "query", "--svc", "p", "--limit", "22000", "--json")
    assert out.returncode == 0, out.stderr
    texts = [e["txt"] for e in json.loads(out.stdout)]
    assert texts == [f"e{i:05d}" for i in range(24_999, 2_999, -1)]
    assert out.stderr == ""  # progress only on a terminal
