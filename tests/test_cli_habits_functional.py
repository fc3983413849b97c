"""Issue 19's CLI habits against a real `logd serve`: `logd send` confirms by PING and
carries sender, seq, host and pid; -o text|json|ndjson; query -f; --since in forms the
server does not read itself (1h30m, local times)."""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from logd._pb.logd_pb2 import Msg
from support import LogdProcess, wait_for
from test_cli_functional import Tail, _pump, client_env, one_sentence, run

pytestmark = pytest.mark.functional
HOUR_NS = 3600 * 10**9


@pytest.fixture
def env(logd: LogdProcess) -> dict[str, str]:
    return client_env(logd)


def _gone_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- send ---------------------------------------------------------------------------


def test_send_confirms_and_carries_its_origin_and_numbers(
    logd: LogdProcess, env: dict[str, str]
) -> None:
    done = run(env, "send", "--svc", "cli", "--lvl", "warning", "confirmed")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    [event] = wait_for(lambda: logd.query(svc="cli"))
    assert (event["txt"], event["lvl"], event["host"]) == (
        "confirmed",
        "WARN",
        socket.gethostname(),
    )
    assert event["pid"] > 0
    writers = logd.info()["udp"]["writers"]
    assert (writers["tracked"], writers["frames"], writers["lost"]) == (1, 1, 0)
    done = run(env, "send", "--svc", "cli", stdin="a\nb\n")
    assert done.returncode == 0
    wait_for(lambda: len(logd.query(svc="cli")) == 3)
    assert logd.info()["udp"]["writers"]["tracked"] == 2  # each process is its own sender


def test_send_without_origin(logd: LogdProcess, env: dict[str, str]) -> None:
    done = run({**env, "LOGD_ORIGIN": "0"}, "send", "--svc", "anon", "no origin")
    assert done.returncode == 0, done.stderr
    [event] = wait_for(lambda: logd.query(svc="anon"))
    assert "host" not in event
    assert "pid" not in event


def test_send_fails_in_one_sentence_when_no_logd_answers(env: dict[str, str]) -> None:
    gone = {**env, "LOGD_UDP_PORT": str(_gone_port())}
    done = run(gone, "send", "into the void")
    assert done.returncode == 1
    sentence = one_sentence(done.stderr)
    assert sentence.startswith("logd: the event was sent, but no logd confirmed receiving them")
    assert "connection refused" in sentence
    assert sentence.endswith("(--no-confirm skips this check)")
    done = run(gone, "send", "--no-confirm", "into the void")
    assert (done.returncode, done.stderr) == (0, "")


def test_send_fails_when_the_write_key_is_refused(logd: LogdProcess, env: dict[str, str]) -> None:
    wrong = {**env, "LOGD_WRITE_SECRET": "not-the-servers-write-secret-0123456789"}
    done = run(wrong, "send", "a", "b")
    assert done.returncode == 1
    sentence = one_sentence(done.stderr)
    assert "no valid PONG from udp 127.0.0.1" in sentence
    assert "does it accept this secret?" in sentence
    assert "not-the-servers" not in done.stderr  # never the secret
    assert logd.info()["udp"]["rejected"]["unknown_key"] >= 2  # the event and the PING


# --- -o / --output --------------------------------------------------------------------


@pytest.fixture
def shop(logd: LogdProcess) -> LogdProcess:
    logd.write(
        Msg(svc="shop", txt="first", host="web-1", pid=41),
        Msg(svc="shop", txt="second", host="web-2"),
        Msg(svc="shop", txt="third"),
    )
    wait_for(lambda: len(logd.query(svc="shop")) == 3)
    return logd


def test_output_option_and_its_aliases(shop: LogdProcess) -> None:
    env = client_env(shop)
    as_json = run(env, "query", "--svc", "shop", "-o", "json")
    assert as_json.returncode == 0
    assert as_json.stdout == run(env, "query", "--svc", "shop", "--json").stdout
    assert [e["txt"] for e in json.loads(as_json.stdout)] == ["third", "second", "first"]
    nd = run(env, "query", "--svc", "shop", "--output", "ndjson")
    assert nd.stdout == run(env, "query", "--svc", "shop", "--ndjson").stdout
    assert [json.loads(line)["txt"] for line in nd.stdout.splitlines()] == [
        "third",
        "second",
        "first",
    ]
    text = run(env, "query", "--svc", "shop", "-o", "text")
    assert text.stdout == run(env, "query", "--svc", "shop").stdout
    info = run(env, "info", "-o", "json")
    assert json.loads(info.stdout)["udp"]["events"] == 3
    hits = run(env, "hits", "--svc", "shop", "-o", "json")
    assert json.loads(hits.stdout)["total"] == 3
    bad = run(env, "query", "-o", "yaml")
    assert bad.returncode == 2
    assert "'yaml' is not one of 'text', 'json', 'ndjson'" in bad.stderr
    assert run(env, "info", "-o", "ndjson").returncode == 2  # /info is one document


def test_text_output_shows_host_and_pid(shop: LogdProcess) -> None:
    lines = run(client_env(shop), "query", "--svc", "shop").stdout.splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == [
        "-     web-1[41] shop: first",  # as syslog writes them: host[pid]
        "-     web-2 shop: second",
        "-     shop: third",
    ]
    shop.write(Msg(svc="esc", txt="x", host="web\x1b[2J"))
    wait_for(lambda: shop.query(svc="esc"))
    line = run(client_env(shop), "query", "--svc", "esc").stdout
    assert line.split(" ", 2)[2] == "-     web\\x1b[2J esc: x\n"  # escaped like every field


# --- query -f -------------------------------------------------------------------------


class Follow(Tail):
    """`logd query -f ...` whose output lines are read by threads."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logd", "query", "-f", *args],
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


@pytest.fixture
def follows() -> Iterator[list[Follow]]:
    started: list[Follow] = []
    yield started
    for follow in started:
        follow.close()


def test_query_follow_shows_the_matches_then_new_ones(
    shop: LogdProcess, follows: list[Follow]
) -> None:
    env = client_env(shop)
    nd = Follow(env, "--svc", "shop", "--limit", "2", "-o", "ndjson")
    text = Follow(env, "--svc", "shop", "--txt", "i")
    follows += [nd, text]
    assert [json.loads(nd.line())["txt"] for _ in range(2)] == ["second", "third"]  # oldest 1st
    assert [text.line().split(": ")[-1] for _ in range(2)] == ["first", "third"]
    wait_for(lambda: shop.info()["tail"]["subscribers"] == 2)
    shop.write(
        Msg(svc="shop", txt="fourth"), Msg(svc="other", txt="fifth"), Msg(svc="shop", txt="sixth")
    )
    assert [json.loads(nd.line())["txt"] for _ in range(2)] == ["fourth", "sixth"]
    assert text.line().endswith(": sixth")  # its --txt still applies
    assert nd.stop() == 0  # Ctrl-C ends it quietly


def test_query_follow_pages_a_limit_past_the_servers_cap(
    shop: LogdProcess, follows: list[Follow]
) -> None:
    assert shop.get("/", {"limit": "10001"})[0] == 400  # one query may not ask that much
    big = Follow(client_env(shop), "--svc", "shop", "--limit", "10001", "-o", "ndjson")
    follows.append(big)
    assert [json.loads(big.line())["txt"] for _ in range(3)] == ["first", "second", "third"]
    wait_for(lambda: shop.info()["tail"]["subscribers"] == 1)
    shop.write(Msg(svc="shop", txt="fourth"))
    assert json.loads(big.line())["txt"] == "fourth"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("--until", "1h"), "--follow goes on from now: it cannot be used with --until"),
        (("--offset", "3"), "it cannot be used with --offset"),
        (("-o", "json"), "--follow writes one event per line: use -o ndjson"),
    ],
)
def test_query_follow_refuses_what_cannot_follow(
    shop: LogdProcess, args: tuple[str, ...], error: str
) -> None:
    done = run(client_env(shop), "query", "-f", *args)
    assert done.returncode == 1
    assert error in one_sentence(done.stderr)


# --- times ----------------------------------------------------------------------------


def test_since_compound_durations_and_local_times(logd: LogdProcess) -> None:
    now = time.time_ns()
    for hours in (3, 2, 1, 0):
        msg = Msg(svc="times", txt=f"{hours}h ago")
        msg.t.FromNanoseconds(now - hours * HOUR_NS)
        logd.write(msg)
    wait_for(lambda: len(logd.query(svc="times")) == 4)
    env = client_env(logd)

    def texts(*args: str, zone: str = "UTC") -> list[str]:
        done = run({**env, "TZ": zone}, "query", "--svc", "times", "--json", *args)
        assert done.returncode == 0, done.stderr
        return [e["txt"] for e in json.loads(done.stdout)]

    assert texts("--since", "1h30m") == ["0h ago", "1h ago"]
    assert texts("--since", "2h30m", "--until", "30m") == ["1h ago", "2h ago"]
    # A time without a zone is local: 90 minutes ago as Tokyo's wall clock (UTC+9)
    tokyo = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now / 1e9 - 5400 + 9 * 3600))
    assert texts("--since", tokyo, zone="Asia/Tokyo") == ["0h ago", "1h ago"]
    utc = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now / 1e9 - 5400))
    assert texts("--since", utc) == ["0h ago", "1h ago"]
    assert texts("--since", "today") == texts("--since", time.strftime("%Y-%m-%d", time.gmtime()))
    done = run(env, "query", "--since", "soon")
    assert done.returncode == 2
    assert "cannot read 'soon' as a time" in done.stderr


def test_lvl_warning_filters_reads_like_warn(logd: LogdProcess) -> None:
    logd.write(*(Msg(svc="lv", lvl=lvl, txt=f"at {lvl}") for lvl in (3, 4, 5)))
    wait_for(lambda: len(logd.query(svc="lv")) == 3)
    env = client_env(logd)
    done = run(env, "query", "--svc", "lv", "--lvl", "warning", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert [e["txt"] for e in json.loads(done.stdout)] == ["at 5", "at 4"]
    assert done.stdout == run(env, "query", "--svc", "lv", "--lvl", "WARN", "-o", "json").stdout
