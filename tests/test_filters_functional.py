"""The filters of HTTP_API.md "Filters, more" against a real `logd serve`: attr.KEY, OR of
a repeated parameter, NAME! excludes, on GET / and /tail alike (GET /hits:
test_hits_functional.py)."""

from __future__ import annotations

import contextlib
import http.client
import json
import time
import urllib.parse
from collections.abc import Iterator

import pytest
from logd._pb.logd_pb2 import ERROR, GET, INFO, POST, WARN, Msg
from support import READ_SECRET, LogdProcess, start_logd, wait_for

pytestmark = pytest.mark.functional

Pairs = list[tuple[str, str]]


def timed(t_ns: int, **fields: object) -> Msg:
    msg = Msg(**fields)  # type: ignore[arg-type]
    msg.t.FromNanoseconds(t_ns)
    return msg


EVENTS = [
    dict(env="prod", svc="api", fn="Charge", lvl=ERROR, txt="card declined",
         url="/v1/charge", response_status=402, http_method=POST,
         attrs={"request_id": "r-1", "user": "ann"}, host="web-1", pid=41),
    dict(env="prod", svc="api", lvl=INFO, txt="GET /healthz", url="/healthz",
         response_status=200, http_method=GET, attrs={"request_id": "r-2"}, host="web-2"),
    dict(env="prod", svc="billing", fn="Invoice", lvl=WARN, txt="invoice late",
         attrs={"request_id": "r-10", "user": "bob"}, host="web-1", pid=42),
    dict(env="prod", svc="web", lvl=INFO, txt="page served", url="/home", response_status=200,
         http_method=GET),
    dict(env="dev", svc="api", lvl=INFO, txt="dev call", attrs={"user": "ann"}),
]  # fmt: skip
TXT = [e["txt"] for e in EVENTS]


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogdProcess]:
    proc = start_logd(tmp_path_factory.mktemp("filters"))
    now = time.time_ns()
    proc.write(*(timed(now - (len(EVENTS) - i) * 10**6, **e) for i, e in enumerate(EVENTS)))
    wait_for(lambda: proc.info()["store"]["writes"] == len(EVENTS))
    yield proc
    proc.stop()


def newest_first(*txts: str) -> list[str]:
    return [t for t in reversed(TXT) if t in txts]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("attr.request_id", "r-1")], newest_first("card declined")),
        ([("attr.request_id", "r-1*")], newest_first("card declined", "invoice late")),
        ([("attr.user", "*")], newest_first("card declined", "invoice late", "dev call")),
        ([("attr.user", "ann"), ("attr.user", "bob")],
         newest_first("card declined", "invoice late", "dev call")),
        ([("svc", "api"), ("svc", "billing")],
         newest_first("card declined", "GET /healthz", "invoice late", "dev call")),
        ([("svc", "api"), ("svc", "billing"), ("env", "prod")],
         newest_first("card declined", "GET /healthz", "invoice late")),
        ([("svc!", "api")], newest_first("invoice late", "page served")),
        ([("svc!", "api"), ("svc!", "web")], newest_first("invoice late")),
        ([("env!", "dev"), ("txt!", "HEALTH")],
         newest_first("card declined", "invoice late", "page served")),
        ([("url!", "/health")], newest_first("card declined", "invoice late", "page served",
                                              "dev call")),
        ([("status!", "200")], newest_first("card declined", "invoice late", "dev call")),
        ([("status", "200"), ("status", "402")],
         newest_first("card declined", "GET /healthz", "page served")),
        ([("method!", "get")], newest_first("card declined", "invoice late", "dev call")),
        ([("fn!", "Charge"), ("attr.request_id", "*")],
         newest_first("GET /healthz", "invoice late")),
        ([("attr.user!", "ann")], newest_first("GET /healthz", "invoice late", "page served")),
        ([("txt", "declined"), ("txt", "LATE")], newest_first("card declined", "invoice late")),
        ([("attr.request_id", "r-3")], []),
        ([("host", "web-1")], newest_first("card declined", "invoice late")),
        ([("host", "web-1"), ("host", "web-2")],
         newest_first("card declined", "GET /healthz", "invoice late")),
        ([("host!", "web-1")], newest_first("GET /healthz", "page served", "dev call")),
        ([("host", "web")], []),  # exact, not a prefix
        ([("host", "web-1"), ("svc", "billing")], newest_first("invoice late")),
    ],
)  # fmt: skip
def test_filters_on_query(filled: LogdProcess, params: Pairs, expected: list[str]) -> None:
    status, body, _ = filled.get("/", params)  # type: ignore[arg-type]
    assert status == 200, body
    assert [e["txt"] for e in body] == expected


def test_events_carry_their_host_and_pid(filled: LogdProcess) -> None:
    status, body, _ = filled.get("/", [("host", "web-1"), ("host", "web-2")])  # type: ignore[arg-type]
    assert status == 200, body
    assert [(e["host"], e.get("pid")) for e in body] == [
        ("web-1", 42), ("web-2", None), ("web-1", 41),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("query", "param", "expected"),
    [
        ("attr.=x", "attr.", "attr.KEY with a KEY of 1 to 256 characters"),
        ("attr.!=x", "attr.!", "attr.KEY with a KEY of 1 to 256 characters"),
        ("attr." + "k" * 300 + "=x", "attr." + "k" * 300, "a KEY of 1 to 256 characters"),
        ("lvl!=warn", "lvl!", "no such parameter"),
        ("since!=1h", "since!", "no such parameter"),
        ("status!=abc", "status", "an HTTP status code"),
        ("since=1h&since=2h", "since", "one value"),
        ("limit=1&limit=2", "limit", "one value"),
        ("&".join(f"svc=s{i}" for i in range(101)), "svc", "at most 100 filter values"),
    ],
)
def test_bad_filters_are_400_naming_them(
    filled: LogdProcess, query: str, param: str, expected: str
) -> None:
    for path in ("/", "/tail"):
        if path == "/tail" and param == "limit":
            continue
        status, body, _ = get_raw(filled, path + "?" + query)
        assert status == 400, (path, body)
        assert f"bad parameter {param!r}" in body["error"]
        assert expected in body["error"]


def get_raw(proc: LogdProcess, target: str) -> tuple[int, dict[str, str], None]:
    host, port = urllib.parse.urlsplit(proc.http_url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", target, headers={"Authorization": READ_SECRET})
        response = conn.getresponse()
        return response.status, json.loads(response.read()), None
    finally:
        conn.close()


@contextlib.contextmanager
def open_tail(proc: LogdProcess, params: Pairs) -> Iterator[http.client.HTTPResponse]:
    host, port = urllib.parse.urlsplit(proc.http_url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(
            "GET", "/tail?" + urllib.parse.urlencode(params), headers={"Authorization": READ_SECRET}
        )
        response = conn.getresponse()
        assert response.status == 200
        yield response
    finally:
        conn.close()


def test_the_same_filters_on_tail(tmp_path_factory: pytest.TempPathFactory) -> None:
    proc = start_logd(tmp_path_factory.mktemp("tail"))
    try:
        params = [("svc", "api"), ("svc", "billing"), ("txt!", "health"), ("attr.user", "*"),
                  ("host!", "web-9")]  # fmt: skip
        with open_tail(proc, params) as response:
            wait_for(lambda: proc.info()["tail"]["subscribers"] == 1)
            last = Msg(svc="api", txt="last", attrs={"user": "x"})  # after every other one
            proc.write(*(Msg(**e) for e in EVENTS), last)  # type: ignore[arg-type]
            got = [json.loads(response.readline())["txt"] for _ in range(4)]
        assert got == ["card declined", "invoice late", "dev call", "last"]
    finally:
        proc.stop()
