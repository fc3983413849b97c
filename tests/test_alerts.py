"""Alert rules and their evaluation, on a fixed clock: parsing and its refusals, windows,
cooldown, resolved notices, absent rules, the C engine's runs counted like single events,
and the bounds (the per-ring cache, samples)."""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import Any

import pytest
from logd._pb.logd_pb2 import Msg
from logd.errors import ConfigError
from logd.server.alerts.engine import RING_CACHE_MAX, AlertEngine, Window
from logd.server.alerts.notice import SAMPLE_TEXT, Notice
from logd.server.alerts.rules import MAX_RULES, MAX_TARGETS, AlertConfig, parse_alert_config
from logd.server.config import Config

S = 1_000_000_000
HOOK = "https://hooks.example/services/T000/B000/very-secret-token"

ISSUE_EXAMPLE = f"""
alerts:
  - name: prod-errors
    filter: {{env: prod, lvl: error}}
    over: 10m
    threshold: 50
    notify: [ops]
  - name: billing-silent
    filter: {{svc: billing}}
    over: 15m
    absent: true
notify:
  ops: {{webhook: "{HOOK}"}}
  page: {{sns_topic_arn: "arn:aws:sns:us-east-1:123456789012:alerts"}}
"""


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "logdrc.yml"
    path.write_text(text)
    return Config.load(file=path, environ={}, argv={})


def config(alerts: list[dict[str, Any]], notify: dict[str, Any] | None = None) -> AlertConfig:
    return parse_alert_config(alerts, notify or {"ops": {"webhook": HOOK}}, "test")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def engine(rules: list[dict[str, Any]], clock: Clock) -> tuple[AlertEngine, list[Notice]]:
    sent: list[Notice] = []
    return AlertEngine(config(rules), sent.append, clock), sent


def msg(env: str = "prod", svc: str = "api", lvl: int = 5, txt: str = "boom") -> Msg:
    m = Msg(env=env, svc=svc, lvl=lvl, txt=txt)
    m.t.seconds = 1_000_000
    return m


def at(clock: Clock) -> int:
    return int(clock.now * S)


# --- parsing ---------------------------------------------------------------------------


def test_the_issue_example_parses(tmp_path: Path) -> None:
    cfg = load(tmp_path, ISSUE_EXAMPLE)
    errors, silent = cfg.alerts
    assert (errors.name, errors.over_s, errors.threshold, errors.cooldown_s) == (
        "prod-errors",
        600,
        50,
        600,  # cooldown defaults to `over`
    )
    assert errors.flt.lvl == 5
    assert errors.notify == ("ops",)
    assert silent.absent
    assert silent.threshold is None
    assert silent.over_s == 900
    assert cfg.notify["page"].region == "us-east-1"
    assert cfg.notify["ops"].kind == "webhook"


def test_the_webhook_url_is_in_no_repr(tmp_path: Path) -> None:
    cfg = load(tmp_path, ISSUE_EXAMPLE)
    assert "very-secret-token" not in repr(cfg)
    assert "very-secret-token" not in repr(cfg.notify)
    assert "very-secret-token" not in repr(AlertConfig(cfg.alerts, cfg.notify))


@pytest.mark.parametrize(
    ("rule", "said"),
    [
        ({"over": "1m", "threshold": 1}, "needs a name"),
        ({"name": "a", "over": "1m", "threshold": 1, "colour": "red"}, "unknown key 'colour'"),
        ({"name": "a", "over": "ten minutes", "threshold": 1}, "over must be a duration"),
        ({"name": "a", "over": "1.5s", "threshold": 1}, "over must be a duration"),
        ({"name": "a", "over": "8d", "threshold": 1}, "over must be a duration"),
        ({"name": "a", "over": 600, "threshold": 1}, "over must be a duration"),
        ({"name": "a", "threshold": 1}, "needs over"),
        ({"name": "a", "over": "1m", "cooldown": "0s", "threshold": 1}, "cooldown must be"),
        ({"name": "a", "over": "1m", "threshold": 1, "absent": True}, "exactly one of"),
        ({"name": "a", "over": "1m"}, "exactly one of"),
        ({"name": "a", "over": "1m", "threshold": 0}, "at least 1"),
        ({"name": "a", "over": "1m", "threshold": True}, "at least 1"),
        ({"name": "a", "over": "1m", "absent": False}, "absent must be true"),
        ({"name": "a", "over": "1m", "threshold": 1, "notify": ["pager"]}, "notifies 'pager'"),
        ({"name": "a", "filter": {"colour": "x"}, "over": "1m", "threshold": 1}, "'colour'"),
        ({"name": "a", "filter": {"since": "1h"}, "over": "1m", "threshold": 1}, "no meaning"),
        ({"name": "a", "filter": {"limit": "5"}, "over": "1m", "threshold": 1}, "no meaning"),
        (
            {"name": "a", "filter": {"status": "abc"}, "over": "1m", "threshold": 1},
            "bad parameter 'status': expected an HTTP status code (100-999)",  # as GET / says
        ),
        (
            {"name": "a", "filter": {"lvl": "loud"}, "over": "1m", "threshold": 1},
            "bad parameter 'lvl'",
        ),
        (
            {"name": "a", "filter": {"attr.": "x"}, "over": "1m", "threshold": 1},
            "bad parameter 'attr.'",
        ),
        ({"name": "a", "filter": {"env": None}, "over": "1m", "threshold": 1}, "needs text"),
        ({"name": "a", "filter": "env=prod", "over": "1m", "threshold": 1}, "must be a mapping"),
    ],
)
def test_a_bad_rule_is_refused_in_one_sentence_naming_it(rule: dict[str, Any], said: str) -> None:
    with pytest.raises(ConfigError) as err:
        config([rule])
    message = str(err.value)
    assert said in message
    assert "\n" not in message
    assert HOOK not in message


@pytest.mark.parametrize(
    ("notify", "said"),
    [
        ({"ops": {"webhook": "ftp://x/very-secret-token"}}, "webhook must be an http"),
        ({"ops": {"webhook": HOOK, "sns_topic_arn": "arn:aws:sns:x"}}, "exactly one of"),
        ({"ops": {"sns_topic_arn": "arn:aws:s3:::bucket"}}, "sns_topic_arn must be"),
        ({"ops": {"webhook": HOOK, "retries": 11}}, "retries must be"),
        ({"ops": {"webhook": HOOK, "timeout": "2m"}}, "timeout must be"),
        ({"ops": {"webhook": HOOK, "secret": "x"}}, "unknown key 'secret'"),
        ({"ops": HOOK}, "must be {webhook: URL}"),
    ],
)
def test_a_bad_notify_target_is_refused_without_its_url(notify: dict[str, Any], said: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_alert_config([], notify, "test")
    assert said in str(err.value)
    assert "very-secret-token" not in str(err.value)


def test_two_rules_with_one_name_are_refused() -> None:
    rule = {"name": "a", "over": "1m", "threshold": 1}
    with pytest.raises(ConfigError, match="'a' in test is used twice"):
        config([rule, rule])


def test_a_config_file_with_a_bad_rule_stops_start_up(tmp_path: Path) -> None:
    text = ISSUE_EXAMPLE.replace("notify: [ops]", "notify: [nobody]")
    with pytest.raises(ConfigError, match="notifies 'nobody', which is not a target"):
        load(tmp_path, text)


def test_alerts_are_set_in_the_file_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"LOGD_ALERTS has a bad value: .*file only"):
        Config.load(file=None, environ={"LOGD_ALERTS": "x"}, argv={}, cwd=tmp_path)


# --- windows, firing, cooldown, resolved --------------------------------------------------


def test_a_window_counts_the_last_over_seconds_in_buckets() -> None:
    w = Window(600, 0)  # 60 buckets of 10 s
    assert (w.width, w.span_s) == (10, 600)
    w.add(0, 3)
    w.add(595, 2)
    assert w.total == 5
    w.roll(599)
    assert w.total == 5
    w.roll(600)  # the window is buckets 1-60 now: 10-609 s
    assert w.total == 2
    w.roll(100_000)  # long idle: everything forgotten at once
    assert w.total == 0
    assert Window(15, 0).width == 1  # short windows count per second


def test_threshold_fires_once_then_resolves_and_the_cooldown_rearms() -> None:
    clock = Clock()
    rule = {"name": "errs", "filter": {"lvl": "error"}, "over": "60s", "threshold": 3}
    eng, sent = engine([{**rule, "cooldown": "5m", "notify": ["ops"]}], clock)
    for _ in range(2):
        eng.event(msg(), at(clock))
    eng.event(msg(lvl=3), at(clock))  # info: below the rule's level
    assert sent == []
    eng.event(msg(), at(clock))
    assert [(n.state, n.body["count"]) for n in sent] == [("firing", 3)]
    for _ in range(10):
        eng.event(msg(), at(clock))
    eng.tick()
    assert len(sent) == 1  # fires once while the condition holds
    clock.now += 61
    eng.tick()
    assert [n.state for n in sent] == ["firing", "resolved"]
    assert sent[1].body["count"] == 0
    # Again above the threshold, within the cooldown: no notice until it is over.
    clock.now += 120
    for _ in range(3):
        eng.event(msg(), at(clock))
    assert len(sent) == 2
    clock.now += 121  # 302 s after it fired; the three events are 121 s old: gone
    eng.tick()
    assert len(sent) == 2
    for _ in range(3):
        eng.event(msg(), at(clock))
    assert [n.state for n in sent] == ["firing", "resolved", "firing"]
    status = eng.status()[0]
    assert (status["state"], status["count"], status["fired"]) == ("firing", 3, 2)


def test_a_condition_that_holds_through_the_cooldown_fires_when_it_ends() -> None:
    clock = Clock()
    start = clock.now
    rule = {"name": "r", "over": "1m", "threshold": 1, "cooldown": "10m", "notify": ["ops"]}
    eng, sent = engine([rule], clock)
    eng.event(msg(), at(clock))
    clock.now += 61
    eng.tick()
    assert [n.state for n in sent] == ["firing", "resolved"]
    while clock.now < start + 600:  # an event every 30 s: the condition holds again
        eng.event(msg(), at(clock))
        eng.tick()
        assert len(sent) == 2
        clock.now += 30
    eng.tick()
    assert [n.state for n in sent] == ["firing", "resolved", "firing"]
    assert clock.now - start == 601


def test_absent_fires_after_a_silent_window_and_resolves_on_the_next_match() -> None:
    clock = Clock()
    rule = {"name": "quiet", "filter": {"svc": "billing"}, "over": "15m", "absent": True}
    eng, sent = engine([{**rule, "notify": ["ops"]}], clock)
    clock.now += 899
    eng.tick()
    assert sent == []  # a whole window must pass since the rule was loaded
    eng.event(msg(svc="other"), at(clock))  # another service does not count
    clock.now += 1
    eng.tick()
    assert [n.state for n in sent] == ["firing"]
    assert "no matching event in the last 15m" in sent[0].text
    eng.tick()
    assert len(sent) == 1
    eng.event(msg(svc="billing"), at(clock))
    assert [n.state for n in sent] == ["firing", "resolved"]
    assert eng.status()[0]["state"] == "ok"


def test_a_rule_without_notify_changes_state_and_sends_nothing() -> None:
    clock = Clock()
    eng, sent = engine([{"name": "r", "over": "1m", "threshold": 1}], clock)
    eng.event(msg(), at(clock))
    assert sent == []
    assert eng.status()[0]["state"] == "firing"


# --- the notice -------------------------------------------------------------------------


def test_a_notice_says_rule_count_window_samples_and_a_query_line() -> None:
    clock = Clock()
    rule = {
        "name": "prod-errors",
        "filter": {"env": "prod", "lvl": "error", "svc!": "noisy", "attr.region": "eu-*"},
        "over": "10m",
        "threshold": 7,
        "notify": ["ops"],
    }
    eng, sent = engine([rule], clock)
    long_text = "x" * 5000
    for i in range(7):
        m = msg(txt=f"<!channel> failure {i}" if i < 6 else long_text)
        m.attrs["region"] = "eu-west-1"
        eng.event(m, at(clock))
    (notice,) = sent
    body = notice.body
    assert (body["rule"], body["state"], body["count"], body["over_s"]) == (
        "prod-errors",
        "firing",
        7,
        600,
    )
    assert len(body["samples"]) == 5  # the newest five
    assert body["samples"][0]["txt"] == "<!channel> failure 2"
    assert body["samples"][-1]["txt"] == "x" * SAMPLE_TEXT + "…"
    assert body["query"] == (
        "logd query --env prod --lvl error --not-svc noisy --attr 'region=eu-*' --since 10m"
    )
    text = notice.text
    assert text.startswith("logd alert prod-errors firing: 7 events in the last 10m (threshold 7)")
    assert "<!channel>" not in text
    assert "&lt;!channel&gt; failure 2" in text
    assert max(map(len, text.splitlines())) < SAMPLE_TEXT + 100
    assert notice.targets == ("ops",)


# --- the C engine's runs ----------------------------------------------------------------


def run_of(msgs: list[Msg]) -> tuple[bytes, bytes, bytes]:
    records = [m.SerializeToString() for m in msgs]
    ends = array("I")
    total = 0
    for r in records:
        total += len(r)
        ends.append(total)
    return b"".join(records), ends.tobytes(), bytes(m.lvl for m in msgs)


RULES = [
    {"name": "all", "filter": {"env": "prod", "svc": "api"}, "over": "1m", "threshold": 10**6},
    {"name": "level", "filter": {"lvl": "warn"}, "over": "1m", "threshold": 10**6},
    {"name": "text", "filter": {"txt": "timeout", "lvl": "info"}, "over": "1m", "threshold": 10**6},
    {"name": "other-ring", "filter": {"svc": "billing"}, "over": "1m", "threshold": 10**6},
    {"name": "excluded", "filter": {"env!": "prod"}, "over": "1m", "threshold": 10**6},
    {"name": "kelvin", "filter": {"txt": "kelvin"}, "over": "1m", "threshold": 10**6},
    {"name": "nowhere", "filter": {"txt": "deadlock"}, "over": "1m", "threshold": 10**6},
]


def test_a_run_counts_as_its_events_one_by_one() -> None:
    kinds = [(3, "ok"), (4, "slow"), (5, "TIMEOUT here"), (1, "timeout"), (6, "\u212aELVIN")]
    msgs = [msg(lvl=lvl, txt=txt) for lvl, txt in kinds * 7]
    clock = Clock()
    one, _ = engine(RULES, clock)
    for m in msgs:
        one.event(m, at(clock))
    runs, _ = engine(RULES, clock)
    data, ends, lvls = run_of(msgs)
    runs.run("prod", "api", data, ends, lvls)
    counts = {r["name"]: r["count"] for r in one.status()}
    assert counts == {
        "all": 35,
        "level": 21,
        "text": 7,
        "other-ring": 0,
        "excluded": 0,
        "kelvin": 7,  # KELVIN SIGN lowers to "k": the run's lowered bytes must not decide
        "nowhere": 0,
    }
    assert {r["name"]: r["count"] for r in runs.status()} == counts


def test_samples_of_a_run_are_its_newest_matches() -> None:
    clock = Clock()
    rules = [
        {**r, "threshold": 1, "notify": ["ops"]} for r in RULES if r["name"] in ("all", "level")
    ]
    eng, sent = engine(rules, clock)
    msgs = [msg(lvl=3 if i % 3 else 5, txt=f"event {i}") for i in range(30)]
    eng.run("prod", "api", *run_of(msgs))
    by_rule = {n.rule: [s["txt"] for s in n.body["samples"]] for n in sent}
    assert by_rule["all"] == [f"event {i}" for i in range(25, 30)]
    assert by_rule["level"] == [f"event {i}" for i in (15, 18, 21, 24, 27)]


def test_a_rule_that_cannot_match_a_ring_is_not_selected_for_it() -> None:
    clock = Clock()
    eng, _ = engine(RULES, clock)
    chosen = eng._select("dev", "billing")
    assert sorted(state.rule.name for state, _, _ in chosen) == [
        "excluded",
        "kelvin",
        "level",
        "nowhere",
        "other-ring",
        "text",  # a text search can match in any ring
    ]


def test_the_ring_cache_is_bounded_under_hostile_keys() -> None:
    clock = Clock()
    eng, _ = engine(RULES, clock)
    for i in range(RING_CACHE_MAX * 3):
        eng.event(msg(svc=f"svc-{i}", lvl=5), at(clock))
    assert 0 < len(eng._by_ring) <= RING_CACHE_MAX
    assert {r["name"]: r["count"] for r in eng.status()}["level"] == RING_CACHE_MAX * 3


def test_samples_of_huge_events_are_kept_cut() -> None:
    clock = Clock()
    eng, sent = engine([{"name": "r", "over": "1m", "threshold": 5, "notify": ["ops"]}], clock)
    big = [msg(txt="y" * 60_000) for _ in range(5)]
    eng.run("prod", "api", *run_of(big))
    held = eng._states["r"].samples
    assert all(len(s if isinstance(s, bytes) else s.SerializeToString()) < 1000 for _, s in held)
    assert sent[0].body["samples"][0]["txt"] == "y" * SAMPLE_TEXT + "…"


def test_a_reload_keeps_the_state_of_a_rule_that_did_not_change() -> None:
    clock = Clock()
    same = {"name": "same", "over": "1m", "threshold": 100}
    changed = {"name": "changed", "over": "1m", "threshold": 100}
    eng, _ = engine([same, changed], clock)
    eng.event(msg(), at(clock))
    eng.load(config([same, {**changed, "threshold": 50}, {**same, "name": "new"}]))
    assert {r["name"]: r["count"] for r in eng.status()} == {"same": 1, "changed": 0, "new": 0}


def test_rules_and_targets_are_bounded() -> None:
    rules = [{"name": f"r{i}", "over": "1m", "threshold": 1} for i in range(MAX_RULES + 1)]
    with pytest.raises(ConfigError, match=f"201 rules; at most {MAX_RULES}"):
        config(rules)
    config(rules[:MAX_RULES])  # the bound itself is fine
    targets = {f"t{i}": {"webhook": HOOK} for i in range(MAX_TARGETS + 1)}
    with pytest.raises(ConfigError, match=f"51 targets; at most {MAX_TARGETS}"):
        parse_alert_config([], targets, "test")


def test_an_sns_target_without_boto3_is_refused_in_one_sentence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    from logd.server.alerts import service

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "boto3" else real(name, *a)
    )
    sns = {"page": {"sns_topic_arn": "arn:aws:sns:us-east-1:123456789012:alerts"}}
    with pytest.raises(ConfigError, match=r"target 'page' publishes to SNS, which needs boto3"):
        service._check_sns_client(parse_alert_config([], sns, "test"))
    service._check_sns_client(config([]))  # a webhook needs nothing more
