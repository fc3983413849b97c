"""Alerts end to end: a real `logd serve` with rules in its logdrc.yml, events sent over
UDP, notices received by a real webhook receiver (alerts_support.py); GET /alerts, /info,
/metrics and `logd alerts`; SIGHUP reloads; a bad config refused at start-up. Also the
ingest hook on both engines, with real sockets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alerts_support import Receiver, receiver
from ingest_support import Rig, key_ring
from logd._pb.logd_pb2 import Cmd, Msg
from logd.server.alerts.engine import AlertEngine
from logd.server.alerts.notice import Notice
from logd.server.alerts.rules import parse_alert_config
from logd.wire import Signer
from support import LogdProcess, start_logd, wait_for

pytestmark = pytest.mark.functional
SECRET_PATH = "/hook-secret-path-never-shown"


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def serve(tmp_path: Path, config: str) -> LogdProcess:
    (tmp_path / "logdrc.yml").write_text(config)  # found from logd's working directory
    return start_logd(tmp_path)


def events(logd: LogdProcess, n: int, *, svc: str = "api", lvl: int = 5, env: str = "prod") -> None:
    msgs = [Msg(env=env, svc=svc, lvl=lvl, txt=f"payment failed #{i}") for i in range(n)]
    logd.write(*msgs)


def alerts(logd: LogdProcess) -> dict[str, Any]:
    status, body, _ = logd.get("/alerts")
    assert status == 200, body
    return {rule["name"]: rule for rule in body["rules"]} | {"": body["notices"]}


def never_shows_the_url(logd: LogdProcess, url: str) -> None:
    secret = url.split("/")[-1]
    assert secret not in logd.log()
    assert secret not in str(logd.info())
    assert secret not in str(logd.get("/alerts")[1])
    assert secret not in logd.get("/metrics", secret="")[1]


def test_threshold_fires_once_resolves_and_shows_in_alerts_info_metrics_cli(
    tmp_path: Path, hooks: Receiver
) -> None:
    url = hooks.url("/ok") + "?token=" + SECRET_PATH.strip("/")
    logd = serve(
        tmp_path,
        f"""
alerts:
  - name: prod-errors
    filter: {{env: prod, lvl: error}}
    over: 2s
    threshold: 3
    notify: [ops]
notify:
  ops: {{webhook: "{url}"}}
""",
    )
    try:
        events(logd, 2)
        events(logd, 5, lvl=3)  # info: not counted
        wait_for(lambda: logd.info()["udp"]["events"] == 7)
        assert hooks.bodies("/ok") == []
        assert alerts(logd)["prod-errors"]["count"] == 2
        events(logd, 1)
        (fired,) = hooks.wait_bodies("/ok", 1)
        assert fired["logd"]["state"] == "firing"
        assert fired["logd"]["count"] == 3
        assert fired["text"].startswith("logd alert prod-errors firing: 3 events in the last 2s")
        assert "payment failed #0" in fired["text"]
        assert fired["logd"]["query"] == "logd query --env prod --lvl error --since 2s"
        events(logd, 3)
        rule = alerts(logd)["prod-errors"]
        assert (rule["state"], rule["fired"]) == ("firing", 1)
        assert rule["last_fired"] is not None
        resolved = hooks.wait_bodies("/ok", 2)[1]
        assert resolved["logd"]["state"] == "resolved"
        time.sleep(0.5)
        assert len(hooks.bodies("/ok")) == 2  # fired once while it held
        info = logd.info()["alerts"]
        assert (info["rules"], info["firing"]) == (1, 0)
        assert info["notices"]["sent"] == 2
        assert info["notices"]["dropped"] == 0
        metrics = logd.get("/metrics", secret="")[1]
        assert "logd_alert_notices_sent_total 2" in metrics
        assert "logd_alert_rules 1" in metrics
        env = {
            **os.environ,
            "LOGD_HOST": logd.http_url,
            "LOGD_READ_SECRET": logd.read_secret,
        }
        shown = subprocess.run(
            [sys.executable, "-m", "logd", "alerts"],
            capture_output=True, text=True, env=env, timeout=60, check=True,
        ).stdout  # fmt: skip
        assert shown.startswith("prod-errors  ok")
        assert "(threshold 3), last fired " in shown
        assert "notify ops" in shown
        assert "notices: sent 2, retried 0, dropped 0, queued 0" in shown
        # The notice's query line runs as written (over a longer past: 2 s have passed).
        argv = fired["logd"]["query"].replace("--since 2s", "--since 1h").split()[1:]
        found = subprocess.run(
            [sys.executable, "-m", "logd", *argv, "--json"],
            capture_output=True, text=True, env=env, timeout=60, check=True,
        ).stdout  # fmt: skip
        assert found.count("payment failed") == 6
        never_shows_the_url(logd, url)
        status, body, _ = logd.get("/alerts", secret="wrong-secret")
        assert status == 401
        status, body, _ = logd.get("/alerts", {"env": "prod"})
        assert status == 400
        assert "'env'" in body["error"]
    finally:
        logd.stop()


def test_absent_fires_and_resolves_on_the_next_event(tmp_path: Path, hooks: Receiver) -> None:
    logd = serve(
        tmp_path,
        f"""
alerts:
  - name: billing-silent
    filter: {{svc: billing}}
    over: 2s
    absent: true
    notify: [ops]
notify:
  ops: {{webhook: "{hooks.url("/ok")}"}}
""",
    )
    try:
        events(logd, 3, svc="other")  # another service keeps it silent
        (fired,) = hooks.wait_bodies("/ok", 1)
        assert fired["logd"]["state"] == "firing"
        assert fired["logd"]["absent"] is True
        assert "no matching event in the last 2s" in fired["text"]
        events(logd, 1, svc="billing", lvl=3)
        resolved = hooks.wait_bodies("/ok", 2)[1]
        assert resolved["logd"]["state"] == "resolved"
        assert resolved["logd"]["count"] == 1
        assert alerts(logd)["billing-silent"]["state"] == "ok"
    finally:
        logd.stop()


def test_a_receiver_answering_500_then_200_gets_the_notice_retried(
    tmp_path: Path, hooks: Receiver
) -> None:
    logd = serve(
        tmp_path,
        f"""
alerts:
  - {{name: any, over: 1m, threshold: 1, notify: [flaky]}}
notify:
  flaky: {{webhook: "{hooks.url("/flaky")}", retries: 2}}
""",
    )
    try:
        events(logd, 1)
        first, second = hooks.wait_bodies("/flaky", 2)
        assert first == second  # the same notice, sent again
        notices = wait_for(lambda: (n := alerts(logd)[""])["sent"] and n)
        assert (notices["sent"], notices["retried"], notices["dropped"]) == (1, 1, 0)
        assert notices["targets"]["flaky"]["kind"] == "webhook"
    finally:
        logd.stop()


def test_a_receiver_that_never_answers_costs_a_drop_and_never_slows_ingest(
    tmp_path: Path, hooks: Receiver
) -> None:
    logd = serve(
        tmp_path,
        f"""
alerts:
  - {{name: every-error, filter: {{lvl: error}}, over: 1s, threshold: 1, notify: [stuck]}}
  - {{name: silence, filter: {{svc: nobody}}, over: 1s, absent: true, notify: [stuck]}}
notify:
  stuck: {{webhook: "{hooks.url("/hang")}", timeout: 200ms, retries: 1}}
""",
    )
    try:
        sent = 0
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:  # the rules fire and resolve again and again
            events(logd, 20)
            sent += 20
            time.sleep(0.05)
        # Ingest never waited for the receiver: every event is stored and counted.
        wait_for(lambda: logd.info()["udp"]["events"] == sent)
        assert len(logd.query(limit="10000")) == sent
        notices = wait_for(lambda: (n := alerts(logd)[""])["dropped"] and n)
        assert notices["sent"] == 0
        assert notices["retried"] >= 1
        assert notices["queued"] <= 100
        assert hooks.hung >= 2  # each attempt reached it, and timed out
        assert "alert notice dropped target=stuck" in logd.log()
        assert "reason=timeout attempts=2" in logd.log()
        never_shows_the_url(logd, hooks.url("/hang"))
    finally:
        logd.stop()


def test_sighup_reloads_the_rules_and_a_refused_reload_keeps_them(
    tmp_path: Path, hooks: Receiver
) -> None:
    first = f"""
alerts:
  - {{name: old-rule, over: 1m, threshold: 100}}
notify:
  ops: {{webhook: "{hooks.url("/ok")}"}}
"""
    logd = serve(tmp_path, first)
    try:
        events(logd, 2)
        wait_for(lambda: alerts(logd)["old-rule"]["count"] == 2)
        (tmp_path / "logdrc.yml").write_text(
            first.replace("{name: old-rule, over: 1m, threshold: 100}", "{name: new-rule, "
                          "over: 1m, threshold: 1, notify: [ops]}")
        )  # fmt: skip
        logd.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "new-rule" in alerts(logd))
        assert "old-rule" not in alerts(logd)
        events(logd, 1)
        (fired,) = hooks.wait_bodies("/ok", 1)
        assert fired["logd"]["rule"] == "new-rule"
        # A refused reload (a bad duration) keeps the rules it had, and says why once.
        (tmp_path / "logdrc.yml").write_text(first.replace("over: 1m", "over: soon"))
        logd.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: logd.info()["alerts"]["reloads_refused"] == 1)
        assert set(alerts(logd)) == {"new-rule", ""}
        refused = [line for line in logd.log().splitlines() if "alerts reload refused" in line]
        assert len(refused) == 1
        assert "alert rule 'old-rule'" in refused[0]
        assert "over must be a duration" in refused[0]
        assert logd.info()["alerts"]["reloads"] == 1
    finally:
        logd.stop()


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (("threshold: 1", "threshold: 1\n    absent: true"), "exactly one of threshold"),
        (("over: 1m", "over: 1 minute"), "over must be a duration"),
        (("notify: [ops]", "notify: [pager]"), "notifies 'pager'"),
        (("{env: prod}", "{enviroment: prod}"), "unknown filter parameter 'enviroment'"),
        (("over: 1m", "over: 1m\n    severity: high"), "unknown key 'severity'"),
    ],
)
def test_a_bad_alert_config_stops_start_up_in_one_sentence(
    tmp_path: Path, change: tuple[str, str], said: str
) -> None:
    good = f"""
alerts:
  - name: r
    filter: {{env: prod}}
    over: 1m
    threshold: 1
    notify: [ops]
notify:
  ops: {{webhook: "https://hooks.example{SECRET_PATH}"}}
"""
    (tmp_path / "logdrc.yml").write_text(good.replace(*change))
    done = subprocess.run(
        [sys.executable, "-m", "logd", "serve", "--udp-addr", "127.0.0.1:0",
         "--http-addr", "127.0.0.1:0"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
        env={**os.environ, "LOGD_READ_SECRET": "r" * 32, "LOGD_WRITE_SECRET": "w" * 32},
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("logd: ")
    assert said in lines[0]
    assert SECRET_PATH not in done.stderr


def test_the_ingest_hook_counts_events_on_both_engines(impl: str) -> None:
    read, write = b"r" * 32, b"w" * 32
    rig = Rig(impl, key_ring(read, write))  # type: ignore[arg-type]
    sent: list[Notice] = []
    config = parse_alert_config(
        [
            {"name": "errors", "filter": {"lvl": "error"}, "over": "1h", "threshold": 10**6},
            {"name": "api", "filter": {"svc": "api", "txt": "card"}, "over": "1h", "threshold": 3},
            {"name": "dev", "filter": {"env": "dev"}, "over": "1h", "threshold": 10**6},
        ],
        {},
        "test",
    )
    rig.ingest.alerts = engine = AlertEngine(config, sent.append)
    signer = Signer(write)
    frames = []
    for i in range(40):
        batch = [
            Msg(env="prod", svc="api" if i % 2 else "web", lvl=5 if i % 4 else 3, txt=f"card {i}")
            for _ in range(3)
        ]
        cmd = Cmd(msg=batch[0])
        cmd.batch.extend(batch[1:])
        frames.append(signer.sign(cmd.SerializeToString(), rig.now))
    try:
        rig.feed(frames)
    finally:
        rig.close()
    assert rig.ingest.stats.events == 120
    counts = {r["name"]: r["count"] for r in engine.status()}
    assert counts == {"errors": 90, "api": 60, "dev": 0}
