"""Two real `logd serve` processes on one real redis-server (issue 8): what A accepts,
B serves and tails; a frame accepted by one is a replay on the other; stopping A
loses nothing; a backend restart is survived; tail history, resume and paging by id
span both nodes (and a cluster refuses them)."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from logd._pb.logd_pb2 import ERROR, Cmd, Msg
from redis_support import RedisClusterNodes, RedisServer
from support import LogdProcess, start_logd, wait_for

pytestmark = pytest.mark.functional
PURE = os.environ.get("LOGD_PURE_PYTHON") == "1"  # `make unit-pure`: no C engine


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", persist=True).start()
    yield server
    server.stop()


@pytest.fixture
def nodes(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[LogdProcess, LogdProcess]]:
    env = {"LOGD_STORE_URL": redis_server.url}
    a = start_logd(tmp_path, env=env)
    try:
        b = start_logd(tmp_path, env=env)
    except BaseException:
        a.stop()
        raise
    try:
        yield a, b
    finally:
        try:
            a.stop()
        finally:
            b.stop()


def texts(node: LogdProcess, **params: str) -> list[str]:
    return [e["txt"] for e in node.query(limit="1000", **params)]


def test_events_written_to_a_are_queried_and_tailed_on_b(
    nodes: tuple[LogdProcess, LogdProcess],
) -> None:
    a, b = nodes
    request = urllib.request.Request(  # noqa: S310 - a 127.0.0.1 test URL
        b.http_url + "/tail?env=scale&lvl=error", headers={"Authorization": b.read_secret}
    )
    with urllib.request.urlopen(request, timeout=10) as tail:  # noqa: S310
        wait_for(lambda: b.info()["tail"]["subscribers"] == 1)
        a.write(Msg(env="scale", svc="api", lvl=ERROR, txt="from A"))
        a.write(Msg(env="scale", svc="api", txt="info from A"))
        wait_for(lambda: texts(b, env="scale") == ["info from A", "from A"])
        line = tail.readline()
        while line == b"\n":  # keep-alives
            line = tail.readline()
        assert b'"from A"' in line
    # /info on B shows the ring A created, with its length read from the backend.
    wait_for(lambda: ring_lengths(b) == {"scale/api": 2})
    assert b.info()["store"]["backend"]["reachable"] is True


def ring_lengths(node: LogdProcess) -> dict[str, int]:
    return {r["key"]: r["events"] for r in node.info()["store"]["rings"]}


def test_a_frame_accepted_by_one_node_is_a_replay_on_the_other(
    nodes: tuple[LogdProcess, LogdProcess],
) -> None:
    a, b = nodes
    frame = a.frame(Cmd(msg=Msg(env="replay", txt="once")))
    a.send_frame(frame)
    wait_for(lambda: a.info()["udp"]["accepted"] == 1)
    b.send_frame(frame)
    wait_for(lambda: b.info()["udp"]["rejected"]["replay"] == 1)
    assert b.info()["udp"]["accepted"] == 0
    # The C engine runs the check across nodes (held), unless logd was built without it.
    assert b.info()["udp"]["accept_path"] == ("python" if PURE else "c")
    assert b.info()["udp"]["replay_guard"]["across_nodes"]["replays"] == 1
    assert texts(b, env="replay") == ["once"]


def test_stopping_a_node_loses_none_of_its_events(
    nodes: tuple[LogdProcess, LogdProcess],
) -> None:
    a, b = nodes
    for i in range(200):
        a.write(*(Msg(env="stop", svc="s", txt=f"{i}-{j}") for j in range(5)))
    wait_for(lambda: a.info()["udp"]["events"] == 1000)
    assert a.stop() == 0
    assert len(texts(b, env="stop")) == 1000


def test_a_backend_restart_is_survived(
    nodes: tuple[LogdProcess, LogdProcess], redis_server: RedisServer
) -> None:
    a, b = nodes
    a.write(Msg(env="restart", txt="before"))
    wait_for(lambda: texts(b, env="restart") == ["before"])
    redis_server.stop()
    status, body, _ = b.get("/", {"env": "restart"})
    assert status == 503
    assert body == {"error": "the log store is unreachable; retry later"}
    # Frames need the check across nodes; with the backend away it falls back to the local
    # guard, and the events wait in A's buffer.
    a.write(Msg(env="restart", txt="during"))
    wait_for(lambda: a.info()["udp"]["events"] == 2)
    backend = a.info()["store"]["backend"]
    assert backend["reachable"] is False
    assert backend["buffered_events"] == 1
    _, metrics, _ = a.get("/metrics", secret="")
    assert "logd_store_reachable 0\n" in metrics
    assert "logd_store_buffered_events 1\n" in metrics
    redis_server.start()
    wait_for(lambda: texts(b, env="restart") == ["during", "before"], timeout=20)
    assert a.info()["store"]["backend"]["buffered_events"] == 0
    assert a.info()["udp"]["replay_guard"]["across_nodes"]["unchecked"] == 1


def tail_lines(node: LogdProcess, query: str, count: int) -> list[dict[str, Any]]:
    """The first `count` events of a /tail on `node` (keep-alives skipped)."""
    request = urllib.request.Request(  # noqa: S310 - a 127.0.0.1 test URL
        node.http_url + "/tail" + query, headers={"Authorization": node.read_secret}
    )
    events: list[dict[str, Any]] = []
    with urllib.request.urlopen(request, timeout=10) as tail:  # noqa: S310
        while len(events) < count:
            line = tail.readline()
            if line.strip():
                events.append(json.loads(line))
    return events


def test_tail_history_and_resume_cover_every_node_s_events_in_order(
    nodes: tuple[LogdProcess, LogdProcess],
) -> None:
    """Ids come from the backend: a tail on B has A's and B's events in the order they were
    stored, and resumes after an id that A gave."""
    a, b = nodes
    for i, node in enumerate([a, b, a, b, a]):
        node.write(Msg(env="hist", svc=f"s{i % 2}", txt=f"e{i}"))
        wait_for(lambda n=i + 1: len(texts(b, env="hist")) == n)
    history = tail_lines(b, "?env=hist&n=3", 3)
    assert [e["txt"] for e in history] == ["e2", "e3", "e4"]
    (first,) = a.query(env="hist", txt="e0")
    resumed = tail_lines(a, f"?env=hist&after={first['id']}", 4)
    assert [e["txt"] for e in resumed] == ["e1", "e2", "e3", "e4"]
    assert [int(e["id"]) for e in resumed] == sorted(int(e["id"]) for e in resumed)
    assert a.info()["store"]["backend"]["errors"] == 0


def test_pages_by_id_across_nodes_are_stable_while_both_write(
    nodes: tuple[LogdProcess, LogdProcess],
) -> None:
    a, b = nodes
    for i in range(20):
        (a if i % 2 else b).write(Msg(env="page", svc="api", txt=f"e{i:02d}"))
        wait_for(lambda n=i + 1: len(texts(a, env="page")) == n)
    first = a.query(env="page", limit="5")
    assert [e["txt"] for e in first] == ["e19", "e18", "e17", "e16", "e15"]
    b.write(Msg(env="page", svc="api", txt="new"))
    wait_for(lambda: len(texts(a, env="page")) == 21)
    page = b.query(env="page", limit="5", before=str(first[-1]["id"]))
    assert [e["txt"] for e in page] == ["e14", "e13", "e12", "e11", "e10"]


def test_a_cluster_refuses_history_and_paging_by_id_in_one_sentence(tmp_path: Path) -> None:
    """A cluster's ids have no order across rings (docs/scale-out.md): the asks that need one
    are a 400 that says so; a plain tail and since= still work."""
    cluster = RedisClusterNodes(tmp_path / "cluster").start()
    node = start_logd(tmp_path, env={"LOGD_STORE_URL": cluster.url})
    try:
        for params, needle in [
            ({"n": "5"}, "n, after and Last-Event-ID need ordered ids"),
            ({"after": "12"}, "n, after and Last-Event-ID need ordered ids"),
        ]:
            status, body, _ = node.get("/tail", params)
            assert (status, needle in body["error"]) == (400, True)
        status, body, _ = node.get("/", {"before": "12"})
        assert (status, body) == (
            400,
            {"error": "before= needs ordered event ids: not on a Valkey cluster"},
        )
        assert node.info()["tail"]["subscribers"] == 0
        node.write(Msg(env="c", txt="kept"))
        wait_for(lambda: texts(node, env="c") == ["kept"])
        assert [e["txt"] for e in tail_lines(node, "?env=c&since=1h", 1)] == ["kept"]
    finally:
        node.stop()
        cluster.stop()
