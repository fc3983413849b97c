"""Parts of the `logd` command that need no server: PONG checks against a real UDP
responder, output formatting, environment parsing."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator

import pytest
from logd.cli.output import clean, format_event, format_info, short_time, use_color
from logd.client import env as clientenv
from logd.client.ping import ping_once
from logd.errors import ClientError, ConfigError
from logd.wire import PING_PAYLOAD, PONG_PAYLOAD, Signer

SECRET = b"ping-secret-0123456789"


@pytest.fixture
def responder() -> Iterator[tuple[socket.socket, list[bytes]]]:
    """A UDP socket whose answers to each datagram the test sets in `answers`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    answers: list[bytes] = []

    def serve() -> None:
        try:
            data, addr = sock.recvfrom(2048)
        except OSError:
            return
        assert Signer(SECRET).verify(data)
        assert data[29:] == PING_PAYLOAD
        for answer in answers:
            sock.sendto(answer, addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock, answers
    sock.close()
    thread.join(5)


def test_ping_accepts_a_pong_signed_with_the_same_key(
    responder: tuple[socket.socket, list[bytes]],
) -> None:
    sock, answers = responder
    answers.append(Signer(SECRET).sign(PONG_PAYLOAD, 1))
    rtt, key_id = ping_once(sock.getsockname(), SECRET, timeout=5)
    assert rtt > 0
    assert key_id == Signer(SECRET).key_id


def test_guard_against_forged_pong(responder: tuple[socket.socket, list[bytes]]) -> None:
    sock, answers = responder
    good = Signer(SECRET).sign(PONG_PAYLOAD, 1)
    answers += [
        Signer(b"another-key").sign(PONG_PAYLOAD, 1),  # a PONG under another key
        good[:13] + bytes(16) + good[29:],  # our key_id, a wrong MAC
        Signer(SECRET).sign(PING_PAYLOAD, 1),  # our key, but not a PONG
        b"\x01short",
    ]
    with pytest.raises(ClientError, match=r"no valid PONG from udp 127\.0\.0\.1"):
        ping_once(sock.getsockname(), SECRET, timeout=0.5)


def test_event_lines() -> None:
    event = {
        "t": "2026-11-29T21:56:54.123456789Z",
        "env": "prod",
        "svc": "api",
        "fn": "Charge",
        "lvl": "ERROR",
        "txt": "two\nlines",
        "http_method": "POST",
        "url": "/v1/charge",
        "response_status": 402,
        "attrs": {"request_id": "r-1"},
        "stack_trace": "Traceback\n  File x\n",
    }
    line = format_event(event, color=False)
    assert line.split(" ", 2)[2] == (
        "ERROR prod/api Charge: two\n    lines POST /v1/charge 402 request_id=r-1\n"
        "    Traceback\n      File x"
    )
    assert "\x1b[31mERROR\x1b[0m" in format_event(event, color=True)
    assert format_event({"t": "x", "txt": "bare"}, color=False) == "x -     bare"


def test_control_characters_are_escaped() -> None:
    assert clean("a\x1b[2Jb\x07\tc\x9b") == "a\\x1b[2Jb\\x07\tc\\x9b"


def test_short_time_is_local_with_milliseconds() -> None:
    assert short_time("2026-11-29T21:56:54.1Z").endswith(":54.100")
    assert short_time("garbage\x1b") == "garbage\\x1b"


def test_colour_rules() -> None:
    tty, pipe = _Stream(tty=True), _Stream(tty=False)
    assert use_color("auto", tty, {})
    assert not use_color("auto", pipe, {})
    assert not use_color("auto", tty, {"NO_COLOR": "1"})
    assert use_color("auto", tty, {"NO_COLOR": ""})  # no-color.org: set and not empty
    assert use_color("always", pipe, {"NO_COLOR": "1"})
    assert not use_color("never", tty, {})


class _Stream(io.StringIO):
    def __init__(self, *, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_info_tolerates_missing_fields() -> None:
    assert format_info({}).startswith("logd ?, up 0.0s\nudp      received 0")
    text = format_info(
        {
            "version": "9",
            "uptime_s": 90061,
            "store": {
                "rings": [{"key": "a/b", "events": 2, "bytes": 3 << 20, "capacity_bytes": 6 << 20}]
            },
        }
    )
    assert "up 1d 1h 1m" in text
    assert "  ring   a/b  2 events, 3.0 MiB of 6.0 MiB (50%), evicted 0" in text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "http://127.0.0.1:6101"),
        ("http://10.0.1.5:6101/", "http://10.0.1.5:6101"),
        ("10.0.1.5:6101", "http://10.0.1.5:6101"),
        ("https://logd.internal", "https://logd.internal"),
    ],
)
def test_http_base(value: str | None, expected: str) -> None:
    assert clientenv.http_base(value) == expected


@pytest.mark.parametrize("value", ["ftp://x", "http://", "http://h:99999", "http://h:x"])
def test_bad_http_base(value: str) -> None:
    with pytest.raises(ConfigError, match="LOGD_HOST"):
        clientenv.http_base(value)


def test_udp_host_and_port() -> None:
    assert clientenv.udp_host("http://[::1]:6101") == "::1"
    assert clientenv.udp_port(None) == 6102
    assert clientenv.udp_port("7000") == 7000
    for bad in ("0", "70000", "x", "-1"):
        with pytest.raises(ConfigError, match="LOGD_UDP_PORT"):
            clientenv.udp_port(bad)


def test_hits_bars_escape_group_names_and_scale_to_the_busiest_bucket() -> None:
    from logd.cli.output import format_hits

    body = {
        "step_s": 60,
        "total": 6,
        "buckets": [
            {"t": "2026-12-01T20:00:00Z", "total": 4, "by": {"\x1b[2J": 3, "other": 1}},
            {"t": "2026-12-01T20:01:00Z", "total": 0, "by": {}},
            {"t": "2026-12-01T20:02:00Z", "total": 2, "by": {"\x1b[2J": 2}},
        ],
    }
    lines = format_hits(body, color=False, width=42)
    assert "\x1b" not in "".join(lines)  # a writer's attribute value cannot drive the terminal
    assert lines[0] == "6 events, 1m buckets"
    assert lines[1] == "\u2588 \\x1b[2J  \u2588 other"
    assert lines[2].endswith(" 4 " + "#" * 19 + "  \\x1b[2J 3, other 1")
    assert lines[3].endswith(" 0 ")
    assert lines[4].endswith(" 2 " + "#" * 10 + "  \\x1b[2J 2")  # half the busiest: round(9.5)
    painted = format_hits(body, color=True, width=42)
    assert "\x1b[" in painted[2]
    assert "\x1b[2J" not in "".join(painted)
