"""End to end against a real `logd serve` process: UDP in, HTTP out."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from logd._pb.logd_pb2 import DEBUG, ERROR, INFO, PING, POST, WARN, Cmd, Msg
from logd.wire import PONG_PAYLOAD, Signer
from support import READ_SECRET, WRITE_SECRET, LogdProcess, start_logd, wait_for

pytestmark = pytest.mark.functional

PURE = os.environ.get("LOGD_PURE_PYTHON") == "1"  # `make unit-pure`: no C engine


def event(txt: str, **fields: object) -> Msg:
    return Msg(env="prod", svc="api", txt=txt, **fields)  # type: ignore[arg-type]


def timed(msg: Msg, t_ns: int) -> Msg:
    msg.t.FromNanoseconds(t_ns)
    return msg


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogdProcess]:
    """One server holding a known set of events, for the read-only query tests."""
    # Many tests here fail authentication on purpose: keep them clear of the throttle.
    proc = start_logd(tmp_path_factory.mktemp("filled"), "--auth-fail-limit", "10000")
    now = time.time_ns()
    proc.write(event("first", lvl=DEBUG, fn="Boot"))  # no time: gets the receive time
    wait_for(lambda: proc.info()["store"]["writes"] == 1)
    # One frame with a batch; explicit times order events across rings (newest first).
    proc.write(
        timed(event("card declined", lvl=ERROR, fn="Charge", url="/v1/charge",
                    response_status=402, http_method=POST, attrs={"request_id": "r-1"},
                    stack_trace="Traceback ..."), now + 10**6),
        timed(Msg(env="prod", svc="web", txt="page served", lvl=INFO, url="/home",
                  response_status=200), now + 2 * 10**6),
        timed(Msg(env="dev", svc="api-2", txt="Card test", lvl=WARN), now + 3 * 10**6),
    )  # fmt: skip
    wait_for(lambda: proc.info()["store"]["writes"] == 4)
    yield proc
    proc.stop()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["Card test", "page served", "card declined", "first"]),
        ({"limit": "2"}, ["Card test", "page served"]),
        ({"limit": "2", "offset": "1"}, ["page served", "card declined"]),
        ({"env": "prod"}, ["page served", "card declined", "first"]),
        ({"svc": "api"}, ["card declined", "first"]),
        ({"svc": "api*"}, ["Card test", "card declined", "first"]),
        ({"fn": "Charge"}, ["card declined"]),
        ({"lvl": "warn"}, ["Card test", "card declined"]),
        ({"lvl": "5"}, ["card declined"]),
        ({"txt": "CARD"}, ["Card test", "card declined"]),
        ({"url": "/v1"}, ["card declined"]),
        ({"status": "200"}, ["page served"]),
        ({"method": "post"}, ["card declined"]),
        ({"since": "10m"}, ["Card test", "page served", "card declined", "first"]),
        ({"until": "10m"}, []),
        ({"since": "2000-01-01T00:00:00Z", "until": "2999-01-01T00:00:00+02:00"},
         ["Card test", "page served", "card declined", "first"]),
    ],
)  # fmt: skip
def test_every_filter(filled: LogdProcess, params: dict[str, str], expected: list[str]) -> None:
    assert [e["txt"] for e in filled.query(**params)] == expected


def test_event_shape(filled: LogdProcess) -> None:
    (ev,) = filled.query(fn="Charge")
    assert list(ev)[:2] == ["id", "t"]  # the server's id first
    assert ev.pop("id").isdigit()
    assert ev.pop("t").endswith("Z")
    assert ev == {
        "env": "prod", "svc": "api", "fn": "Charge", "lvl": "ERROR", "txt": "card declined",
        "stack_trace": "Traceback ...", "http_method": "POST", "url": "/v1/charge",
        "response_status": 402, "attrs": {"request_id": "r-1"},
    }  # fmt: skip


def test_ndjson_by_header_and_by_format(filled: LogdProcess) -> None:
    for kwargs in ({"headers": {"Accept": "application/x-ndjson"}}, {}):
        params = {"svc": "api"} | ({} if kwargs else {"format": "ndjson"})
        status, body, headers = filled.get("/", params, **kwargs)  # type: ignore[arg-type]
        assert status == 200
        assert headers["Content-Type"].startswith("application/x-ndjson")
        assert [json.loads(line)["txt"] for line in body.splitlines()] == ["card declined", "first"]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": "-1"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "10001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": "x"}, "offset"),
        ({"lvl": "loud"}, "lvl"),
        ({"method": "FETCH"}, "method"),
        ({"since": "tomorrow"}, "since"),
        ({"status": "2000"}, "status"),
        ({"format": "xml"}, "format"),
        ({"colour": "red"}, "colour"),
        # Nothing a client sends is a 500: Unicode digits, Python's 4,300-digit int limit,
        # durations past a float's range.
        ({"limit": "\u00b2"}, "limit"),
        ({"offset": "\u0661"}, "offset"),
        ({"lvl": "\u00b2"}, "lvl"),
        ({"status": "\u00b2\u00b2\u00b2"}, "status"),
        ({"limit": "1" * 5000}, "limit"),
        ({"offset": "9" * 4301}, "offset"),
        ({"status": "2" * 4400}, "status"),
        ({"since": "9" * 400 + "s"}, "since"),
        ({"until": "1" * 309 + "d"}, "until"),
        ({"since": "9" * 300 + "d"}, "since"),
    ],
)
def test_bad_parameters_are_400_naming_them(
    filled: LogdProcess, params: dict[str, str], param: str
) -> None:
    status, body, _ = filled.get("/", params)
    assert status == 400
    assert f"'{param}'" in body["error"]


def test_unknown_path_and_wrong_method(filled: LogdProcess) -> None:
    assert filled.get("/nope")[0] == 404
    conn = http.client.HTTPConnection(*urllib.parse.urlsplit(filled.http_url).netloc.split(":"))
    conn.request("POST", "/", body=b"x", headers={"Authorization": READ_SECRET})
    response = conn.getresponse()
    assert response.status == 405
    assert "error" in json.loads(response.read())
    conn.close()


@pytest.mark.parametrize("secret", ["", "wrong", WRITE_SECRET, READ_SECRET[:-1], "Bearer "])
def test_reads_need_the_read_secret(filled: LogdProcess, secret: str) -> None:
    for path in ("/", "/tail"):
        status, body, _ = filled.get(path, secret=secret)
        assert status == 401
        assert body == {"error": "missing or wrong read secret in the Authorization header"}


def test_non_utf8_authorization_is_a_401(filled: LogdProcess) -> None:
    """Raw bytes that are not UTF-8 in the header: a wrong secret, not a 500."""
    host, port = urllib.parse.urlsplit(filled.http_url).netloc.split(":")
    for path in ("/", "/tail"):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.putrequest("GET", path)
        conn.putheader("Authorization", b"\xff\xfe" + READ_SECRET.encode())
        conn.endheaders()
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())) == (
            401, {"error": "missing or wrong read secret in the Authorization header"},
        )  # fmt: skip
        conn.close()


def test_bearer_scheme_is_accepted(filled: LogdProcess) -> None:
    assert filled.get("/", {"limit": "1"}, secret=f"Bearer {READ_SECRET}")[0] == 200


def test_info_health_and_metrics_need_no_secret_and_show_none(filled: LogdProcess) -> None:
    assert filled.get("/healthz", secret="")[:2] == (200, "ok\n")
    info = filled.info()
    assert info["store"]["writes"] == 4
    # The memory store on one node runs the C engine, unless the build has none.
    assert info["udp"]["accept_path"] == ("python" if PURE else "c")
    assert {r["key"] for r in info["store"]["rings"]} == {"prod/api", "prod/web", "dev/api-2"}
    assert info["secrets"]["source"] == "env"
    assert {k["role"] for k in info["secrets"]["keys"]} == {"read", "write"}
    status, metrics, _ = filled.get("/metrics", secret="")
    assert status == 200
    assert "logd_events_stored_total 4" in metrics
    for text in (json.dumps(info), metrics, filled.log()):
        assert READ_SECRET not in text
        assert WRITE_SECRET not in text
    assert "card declined" not in json.dumps(info) + metrics  # no log text either


def test_each_reject_reason_is_counted_and_stores_nothing(logd: LogdProcess) -> None:
    good = Signer(WRITE_SECRET.encode())
    payload = Cmd(msg=event("never stored")).SerializeToString()
    now = time.time_ns()
    replayed = good.sign(Cmd(msg=event("stored once")).SerializeToString(), now)
    tampered = bytearray(good.sign(payload, now))
    tampered[-1] ^= 1
    frames = {
        "bad_frame": [b"\x01short", b"\x09" + good.sign(payload, now)[1:]],
        "unknown_key": [Signer(b"stranger").sign(payload, now)],
        "bad_mac": [bytes(tampered)],
        "stale": [good.sign(payload, now - 5 * 10**9)],
        "future": [good.sign(payload, now + 5 * 10**9)],
        "replay": [replayed, replayed],
        "bad_payload": [good.sign(b"\xff\xff", now)],
        "forbidden": [Signer(READ_SECRET.encode()).sign(payload, now)],
    }
    for batch in frames.values():
        for frame in batch:
            logd.send_frame(frame)
    expected = {"bad_frame": 2, "unknown_key": 1, "bad_mac": 1, "stale": 1, "future": 1,
                "replay": 1, "overload": 0, "bad_payload": 1, "forbidden": 1,
                "long_name": 0}  # fmt: skip
    udp = wait_for(lambda: (u := logd.info()["udp"])["received"] == 10 and u)
    assert udp["rejected"] == expected
    assert udp["accepted"] == 1
    assert udp["received"] == udp["accepted"] + sum(udp["rejected"].values())
    assert [e["txt"] for e in logd.query()] == ["stored once"]
    # Logged once per reason, not per packet.
    assert logd.log().count("reason=replay") == 1


def test_guard_against_replay_guard_flood_shows_overload(tmp_path: Path) -> None:
    """A full replay guard refuses fresh frames as `overload` in /info and /metrics."""
    logd = start_logd(tmp_path, env={"LOGD_REPLAY_CAPACITY": "1"})
    try:
        now = time.time_ns()
        signer = Signer(WRITE_SECRET.encode())
        first = signer.sign(Cmd(msg=event("kept")).SerializeToString(), now)
        for frame in (first, signer.sign(Cmd(msg=event("refused")).SerializeToString(), now),
                      first):  # fmt: skip
            logd.send_frame(frame)
        udp = wait_for(lambda: (u := logd.info()["udp"])["received"] == 3 and u)
        assert (udp["accepted"], udp["rejected"]["overload"], udp["rejected"]["replay"]) == (
            1, 1, 1,
        )  # fmt: skip
        _, metrics, _ = logd.get("/metrics", secret="")
        assert 'logd_udp_rejected_total{reason="overload"} 1' in metrics
        assert 'logd_udp_rejected_total{reason="replay"} 1' in metrics
    finally:
        logd.stop()


def test_guard_against_replay_across_a_restart_functional(tmp_path: Path) -> None:
    """A frame accepted before a restart is still a replay after it, however long max_age."""
    first = start_logd(tmp_path, "--max-age", "300")
    frame = first.frame(Cmd(msg=event("once")))
    first.send_frame(frame)
    wait_for(lambda: first.info()["udp"]["accepted"] == 1)
    assert first.stop() == 0
    second = start_logd(tmp_path, "--max-age", "300")
    try:
        second.send_frame(frame)
        udp = wait_for(lambda: (u := second.info()["udp"])["received"] == 1 and u)
        assert (udp["accepted"], udp["rejected"]["stale"]) == (0, 1)
        second.write(event("after the restart"))
        wait_for(lambda: second.info()["udp"]["accepted"] == 1)
        assert [e["txt"] for e in second.query()] == ["after the restart"]
    finally:
        second.stop()


def test_ping_gets_a_pong_signed_with_the_same_key(logd: LogdProcess) -> None:
    for secret in (READ_SECRET, WRITE_SECRET):
        signer = Signer(secret.encode())
        ping = signer.sign(Cmd(name=PING).SerializeToString(), time.time_ns())
        logd.send_frame(ping)
        pong = logd.sock.recv(100)
        assert signer.verify(pong)
        assert pong[29:] == PONG_PAYLOAD
        assert len(pong) <= len(ping)


def test_events_without_time_get_the_receive_time(logd: LogdProcess) -> None:
    before = time.time_ns()
    logd.write(event("no time"))
    (ev,) = wait_for(lambda: logd.query())
    stamp = ev["t"]
    assert stamp[:19] >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(before // 10**9))


@contextlib.contextmanager
def open_tail(
    proc: LogdProcess, accept: str | None = None, **params: str
) -> Iterator[http.client.HTTPResponse]:
    host, port = urllib.parse.urlsplit(proc.http_url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Authorization": READ_SECRET} | ({"Accept": accept} if accept else {})
    try:
        conn.request("GET", "/tail?" + urllib.parse.urlencode(params), headers=headers)
        response = conn.getresponse()
        assert response.status == 200
        yield response
    finally:
        conn.close()


def _wait_subscribers(proc: LogdProcess, n: int) -> None:
    wait_for(lambda: proc.info()["tail"]["subscribers"] == n)


def test_tail_streams_ndjson_with_filters(logd: LogdProcess) -> None:
    with open_tail(logd, lvl="error") as response:
        _wait_subscribers(logd, 1)
        logd.write(event("quiet", lvl=INFO), event("loud", lvl=ERROR))
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        assert json.loads(response.readline())["txt"] == "loud"


def test_tail_streams_sse(logd: LogdProcess) -> None:
    with open_tail(logd, accept="text/event-stream", svc="api") as response:
        _wait_subscribers(logd, 1)
        logd.write(event("live"))
        assert response.headers["Content-Type"].startswith("text/event-stream")
        id_line, line = response.readline(), response.readline()
        assert line.startswith(b"data: ")
        assert json.loads(line[6:])["txt"] == "live"
        assert id_line == f"id: {json.loads(line[6:])['id']}\n".encode()


def test_tail_rejects_query_only_parameters(logd: LogdProcess) -> None:
    status, body, _ = logd.get("/tail", {"limit": "5"})
    assert status == 400
    assert "'limit'" in body["error"]


def test_tail_cap_is_a_429(tmp_path: Path) -> None:
    proc = start_logd(tmp_path, "--max-tails", "1")
    try:
        with open_tail(proc):
            _wait_subscribers(proc, 1)
            status, _, headers = proc.get("/tail")
            assert status == 429
            assert headers["Retry-After"]
        _wait_subscribers(proc, 0)  # a closed stream frees its place
    finally:
        proc.stop()


def test_guessing_the_read_secret_is_throttled(tmp_path: Path) -> None:
    proc = start_logd(tmp_path, "--auth-fail-limit", "3")
    try:
        codes = [proc.get("/", secret=f"guess-{i}")[0] for i in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        # The right secret is never refused for others' failures from the same address...
        assert proc.get("/")[0] == 200
        # ...and a wrong one is still throttled.
        status, _, headers = proc.get("/", secret="guess-5")
        assert status == 429
        assert int(headers["Retry-After"]) >= 1
        assert proc.info()["http"]["auth_throttled"] >= 3
    finally:
        proc.stop()


def test_guard_against_a_neighbour_locking_the_reader_out(tmp_path: Path) -> None:
    """Someone failing from the same address (a shared NAT) at any rate never costs the
    real client a read: each of its reads between the failures gets a 200."""
    proc = start_logd(tmp_path, "--auth-fail-limit", "1")
    try:
        codes = []
        for i in range(6):
            codes.append(proc.get("/", secret=f"wrong-{i}")[0])
            assert proc.get("/", {"limit": "1"})[0] == 200
        assert codes == [401, 429, 429, 429, 429, 429]
    finally:
        proc.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signals_exit_zero_quickly_and_end_tails(tmp_path: Path, sig: int) -> None:
    proc = start_logd(tmp_path)
    with open_tail(proc) as response:
        _wait_subscribers(proc, 1)
        started = time.monotonic()
        assert proc.stop(sig, timeout=5) == 0
        assert time.monotonic() - started < 5
        response.read()  # the stream ended rather than hanging


OLD_WRITE, NEW_WRITE = "old-write-secret-" + "o" * 16, "new-write-secret-" + "n" * 16


def test_sighup_reloads_a_changed_secrets_file(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.env"
    secrets.write_text(f"LOGD_READ_SECRET={READ_SECRET}\nLOGD_WRITE_SECRET={OLD_WRITE}\n")
    secrets.chmod(0o600)
    proc = start_logd(tmp_path, "--secrets-file", str(secrets), secrets=False)
    try:
        proc.write(event("old key"), secret=OLD_WRITE)
        wait_for(lambda: proc.query())
        secrets.write_text(f"LOGD_READ_SECRET={READ_SECRET}\nLOGD_WRITE_SECRET={NEW_WRITE}\n")
        proc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: proc.info()["secrets"]["reloads"] == 1)
        proc.write(event("new key"), secret=NEW_WRITE)
        proc.write(event("old key again"), secret=OLD_WRITE)
        wait_for(lambda: proc.info()["udp"]["received"] == 3)
        assert [e["txt"] for e in proc.query()] == ["new key", "old key"]
        assert proc.info()["udp"]["rejected"]["unknown_key"] == 1
    finally:
        proc.stop()


def test_guard_against_a_pasted_secret_line_reaching_the_log_and_info(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.env"
    good = f"LOGD_READ_SECRET={READ_SECRET}\nLOGD_WRITE_SECRET={WRITE_SECRET}\n"
    secrets.write_text(good)
    secrets.chmod(0o600)
    proc = start_logd(tmp_path, "--secrets-file", str(secrets), secrets=False)
    try:
        pasted = "Pasted0Secret_without_a_name"
        secrets.write_text(good + pasted + "\n")
        proc.proc.send_signal(signal.SIGHUP)
        error = wait_for(lambda: proc.info()["secrets"]["last_error"])
        assert "line 3" in error
        wait_for(lambda: "secrets reload failed" in proc.log())
        assert pasted not in error + json.dumps(proc.info()) + proc.log()
    finally:
        proc.stop()


def test_dev_mode_creates_private_secrets_and_never_prints_them(tmp_path: Path) -> None:
    home = tmp_path / "devhome"
    proc = start_logd(tmp_path, secrets=False, env={"HOME": str(home)})
    try:
        path = home / ".config/logd/dev-secrets.env"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        values = dict(line.split("=", 1) for line in path.read_text().splitlines()[1:])
        assert str(path) in proc.log()
        for value in values.values():
            assert value not in proc.log()
        proc.write(event("dev"), secret=values["LOGD_WRITE_SECRET"])
        assert (
            wait_for(lambda: proc.get("/", secret=values["LOGD_READ_SECRET"])[1])[0]["txt"] == "dev"
        )
    finally:
        proc.stop()


def test_config_errors_stop_start_up_with_one_sentence(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "logd", "serve", "--max-age", "soon"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "logd: --max-age has a bad value: expected a number from 0.01 to 300"
    )


def test_weak_secrets_stop_start_up_with_one_sentence(tmp_path: Path) -> None:
    weak = "only-23-bytes-of-secret"
    result = subprocess.run(
        [sys.executable, "-m", "logd", "serve", "--udp-addr", "127.0.0.1:0",
         "--http-addr", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
        env={**os.environ, "LOGD_READ_SECRET": weak, "LOGD_WRITE_SECRET": WRITE_SECRET},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.endswith(
        "logd: the read secret (AWSCURRENT) is 23 bytes, too short to resist guessing; "
        "use at least 32 random bytes (openssl rand -base64 32)\n"
    )
    assert weak not in result.stderr + result.stdout


def test_port_in_use_is_one_sentence(logd: LogdProcess, tmp_path: Path) -> None:
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "logd", "serve", "--udp-addr", "127.0.0.1:0",
             "--http-addr", f"127.0.0.1:{busy.getsockname()[1]}"],
            capture_output=True, text=True, timeout=30, cwd=tmp_path,
            env={**logd.env},
        )  # fmt: skip
    finally:
        busy.close()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "address already in use" in result.stderr.lower()
