"""The `alerts:` and `notify:` keys of logdrc.yml as frozen dataclasses, checked.

A rule's `filter` takes the filters of GET / under the same names and is parsed by
Filter.from_params, so names and errors match the HTTP API's. Every refusal is one
ConfigError sentence that names the rule or the notify target (never a webhook URL:
it holds a secret).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from logd.errors import ConfigError
from logd.server.filters import TERM_PARAMS, Filter, FilterError, duration_ns, is_filter_param

S = 1_000_000_000
MAX_RULES = 200  # the periodic check walks every rule once a second
MAX_TARGETS = 50  # each holds a queue of notices (notify.QUEUE_MAX)
MIN_OVER_S, MAX_OVER_S = 1, 7 * 86_400
RULE_KEYS = ("name", "filter", "over", "threshold", "absent", "cooldown", "notify")
TARGET_KEYS = ("webhook", "sns_topic_arn", "timeout", "retries")
# Parameters of GET / that select a time or a page: a rule counts what arrives now.
NOT_IN_RULES = frozenset({"since", "until", "limit", "offset", "before", "format", "n", "after"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SNS_ARN = re.compile(r"^arn:aws[a-z-]*:sns:([a-z0-9-]+):(\d{12}):[A-Za-z0-9_-]{1,256}$")
DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S = 5.0, 60.0
DEFAULT_RETRIES, MAX_RETRIES = 3, 10


@dataclass(frozen=True, slots=True)
class Rule:
    """One alert rule. `params` are its filter as (name, value) pairs, as GET / takes them."""

    name: str
    params: tuple[tuple[str, str], ...]
    flt: Filter = field(compare=False)
    over_s: int
    threshold: int | None  # None: an absent rule
    cooldown_s: int
    notify: tuple[str, ...]

    @property
    def absent(self) -> bool:
        return self.threshold is None


@dataclass(frozen=True, slots=True)
class Target:
    """Where notices go: a webhook (its URL holds a secret: never in a repr, a log line or
    an error) or an SNS topic."""

    name: str
    webhook: str | None = field(default=None, repr=False)
    sns_topic_arn: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES

    @property
    def kind(self) -> str:
        return "webhook" if self.webhook is not None else "sns"

    @property
    def region(self) -> str | None:
        """The SNS topic's region, from its ARN."""
        match = _SNS_ARN.match(self.sns_topic_arn or "")
        return match.group(1) if match else None


@dataclass(frozen=True, slots=True)
class AlertConfig:
    rules: tuple[Rule, ...] = ()
    targets: Mapping[str, Target] = field(default_factory=dict)

    @property
    def uses_sns(self) -> bool:
        return any(t.sns_topic_arn for t in self.targets.values())


def env_refused(text: str) -> Any:
    """`alerts:` and `notify:` have no one-line form: LOGD_ALERTS is refused, not half-read."""
    raise ValueError("a list or mapping in logdrc.yml (alerts are set in the file only)")


def parse_alert_config(alerts: Any, notify: Any, where: str) -> AlertConfig:
    """Both keys of a config file (None when absent), checked together: every name a rule
    notifies must be a target of `notify:`."""
    targets = parse_targets(notify, where)
    rules = parse_rules(alerts, where)
    check_references(rules, targets, where)
    return AlertConfig(rules=rules, targets=targets)


def check_references(rules: tuple[Rule, ...], targets: Mapping[str, Target], where: str) -> None:
    for rule in rules:
        for name in rule.notify:
            if name not in targets:
                raise ConfigError(
                    f"alert rule {rule.name!r} in {where} notifies {name!r}, "
                    "which is not a target under notify:"
                )


def parse_rules(value: Any, where: str) -> tuple[Rule, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"alerts in {where} must be a list of rules")
    if len(value) > MAX_RULES:
        raise ConfigError(f"alerts in {where} has {len(value)} rules; at most {MAX_RULES}")
    rules: list[Rule] = []
    for i, item in enumerate(value):
        rule = _rule(item, f"alert rule {i + 1} in {where}", where)
        if any(r.name == rule.name for r in rules):
            raise ConfigError(f"alert rule name {rule.name!r} in {where} is used twice")
        rules.append(rule)
    return tuple(rules)


def _rule(item: Any, label: str, where: str) -> Rule:
    if not isinstance(item, dict):
        raise ConfigError(f"{label} must be a mapping with name, filter, over, ...")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{label} needs a name of 1 to 64 letters, digits, '.', '_' or '-'")
    label = f"alert rule {name!r} in {where}"
    for key in item:
        if key not in RULE_KEYS:
            raise ConfigError(f"{label} has an unknown key {key!r}; known: " + ", ".join(RULE_KEYS))
    params = _filter_params(item.get("filter"), label)
    try:
        flt = Filter.from_params(params, 0)
    except FilterError as err:
        raise ConfigError(f"{label}: filter {err}") from None
    over_s = _duration(item.get("over"), "over", label, required=True)
    cooldown_s = _duration(item.get("cooldown"), "cooldown", label, required=False) or over_s
    threshold, absent = item.get("threshold"), item.get("absent")
    if absent is not None and absent is not True:
        raise ConfigError(f"{label}: absent must be true (or left out)")
    if (threshold is None) == (absent is None):
        raise ConfigError(f"{label} needs exactly one of threshold: N or absent: true")
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1
    ):
        raise ConfigError(f"{label}: threshold must be a whole number of at least 1")
    return Rule(
        name=name,
        params=params,
        flt=flt,
        over_s=over_s,
        threshold=threshold,
        cooldown_s=cooldown_s,
        notify=_notify_names(item.get("notify"), label),
    )


def _filter_params(value: Any, label: str) -> tuple[tuple[str, str], ...]:
    """`{env: prod, svc: [a, b], "svc!": c}` as (name, value) pairs: a list is an OR."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigError(f"{label}: filter must be a mapping like {{env: prod, lvl: error}}")
    pairs: list[tuple[str, str]] = []
    for name, given in value.items():
        name = str(name)
        if name in NOT_IN_RULES:
            raise ConfigError(
                f"{label}: filter parameter {name!r} has no meaning in a rule "
                "(a rule counts events as they arrive, within `over`)"
            )
        if name != "lvl" and not is_filter_param(name):
            known = ", ".join((*TERM_PARAMS, "lvl", "attr.KEY"))
            raise ConfigError(
                f"{label}: unknown filter parameter {name!r}; known: {known}, and NAME! to exclude"
            )
        values = given if isinstance(given, list) else [given]
        if name == "lvl" and len(values) != 1:
            raise ConfigError(f"{label}: filter lvl takes one level")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, str | int) or v == "":
                raise ConfigError(f"{label}: filter {name!r} needs text or a number")
            pairs.append((name, str(v)))
    return tuple(pairs)


def _duration(value: Any, key: str, label: str, *, required: bool) -> int:
    """Whole seconds from `10m`, `90s`, `1h`, `2d`: 1 s to 7 days."""
    if value is None:
        if required:
            raise ConfigError(f"{label} needs {key}: a duration like 10m, 1h or 90s")
        return 0
    expected = f"{label}: {key} must be a duration of whole seconds from 1s to 7d (10m, 1h, 90s)"
    try:
        ns = duration_ns(key, value) if isinstance(value, str) else None
    except FilterError:
        ns = None
    if ns is None or ns % S or not MIN_OVER_S * S <= ns <= MAX_OVER_S * S:
        raise ConfigError(expected)
    return ns // S


def _notify_names(value: Any, label: str) -> tuple[str, ...]:
    if value is None:
        return ()
    names = value if isinstance(value, list) else [value]
    if not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{label}: notify must be a list of target names under notify:")
    return tuple(dict.fromkeys(names))


def parse_targets(value: Any, where: str) -> dict[str, Target]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"notify in {where} must map a target name to {{webhook: URL}} or ...")
    if len(value) > MAX_TARGETS:
        raise ConfigError(f"notify in {where} has {len(value)} targets; at most {MAX_TARGETS}")
    targets: dict[str, Target] = {}
    for name, spec in value.items():
        name = str(name)
        label = f"notify target {name!r} in {where}"
        if not _NAME.match(name):
            raise ConfigError(
                f"notify target names in {where} are 1 to 64 letters, digits, '.', '_' or '-'"
            )
        targets[name] = _target(name, spec, label)
    return targets


def _target(name: str, spec: Any, label: str) -> Target:
    if not isinstance(spec, dict):
        raise ConfigError(f"{label} must be {{webhook: URL}} or {{sns_topic_arn: ARN}}")
    for key in spec:
        if key not in TARGET_KEYS:
            raise ConfigError(
                f"{label} has an unknown key {key!r}; known: " + ", ".join(TARGET_KEYS)
            )
    webhook, arn = spec.get("webhook"), spec.get("sns_topic_arn")
    if (webhook is None) == (arn is None):
        raise ConfigError(f"{label} needs exactly one of webhook or sns_topic_arn")
    if webhook is not None and (
        not isinstance(webhook, str) or not re.match(r"^https?://[^/\s?#]+", webhook)
    ):
        raise ConfigError(f"{label}: webhook must be an http:// or https:// URL")  # not echoed
    if arn is not None and (not isinstance(arn, str) or not _SNS_ARN.match(arn)):
        raise ConfigError(
            f"{label}: sns_topic_arn must be a topic ARN like arn:aws:sns:REGION:ACCOUNT:NAME"
        )
    timeout = spec.get("timeout")
    timeout_s = DEFAULT_TIMEOUT_S
    if timeout is not None:
        try:
            ns = duration_ns("timeout", timeout) if isinstance(timeout, str) else None
        except FilterError:
            ns = None
        if ns is None or not 0.1 * S <= ns <= MAX_TIMEOUT_S * S:
            raise ConfigError(f"{label}: timeout must be a duration from 100ms to 60s (5s)")
        timeout_s = ns / S
    retries = spec.get("retries", DEFAULT_RETRIES)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise ConfigError(f"{label}: retries must be a whole number from 0 to {MAX_RETRIES}")
    return Target(name, webhook=webhook, sns_topic_arn=arn, timeout_s=timeout_s, retries=retries)
