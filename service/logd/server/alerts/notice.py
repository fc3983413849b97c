"""What a notice says: the rule, its state, the count and the window, up to 5 sample
events (text cut), and a ready `logd query` line. Slack-compatible: a `text` field, with
the same facts structured under `logd`."""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from logd._pb.logd_pb2 import Msg
from logd.events import LEVEL_NAMES
from logd.server.alerts.rules import Rule

MAX_SAMPLES = 5
SAMPLE_TEXT = 200  # characters of an event's text in a notice


@dataclass(frozen=True, slots=True)
class Notice:
    rule: str
    state: str  # "firing" or "resolved"
    targets: tuple[str, ...]
    text: str
    body: dict[str, Any]


def build(rule: Rule, state: str, count: int, at_s: int, samples: Iterable[Msg]) -> Notice:
    shown = [_sample(m) for m in samples][-MAX_SAMPLES:]
    line = query_line(rule)
    if rule.threshold is None:
        head = (
            f"no matching event in the last {span(rule.over_s)}"
            if state == "firing"
            else f"{_events(count)} in the last {span(rule.over_s)} (was silent)"
        )
    else:
        head = f"{_events(count)} in the last {span(rule.over_s)} (threshold {rule.threshold})"
    lines = [f"logd alert {_slack(rule.name)} {state}: {head}"]
    lines += [f"> {_slack(_sample_line(s))}" for s in shown]
    lines.append(f"`{_slack(line)}`")
    body = {
        "rule": rule.name,
        "state": state,
        "count": count,
        "over_s": rule.over_s,
        "threshold": rule.threshold,
        "absent": rule.absent,
        "at": rfc3339(at_s),
        "samples": shown,
        "query": line,
    }
    return Notice(rule.name, state, rule.notify, "\n".join(lines), body)


def query_line(rule: Rule) -> str:
    """The `logd query` command that shows what the rule counts, over its window."""
    words = ["logd", "query"]
    for name, value in rule.params:
        negated = name.endswith("!")
        base = name.removesuffix("!")
        prefix = "--not-" if negated else "--"
        if base.startswith("attr."):
            words += [prefix + "attr", f"{base[5:]}={value}"]
        else:
            words += [prefix + base, value]
    words += ["--since", span(rule.over_s)]
    return shlex.join(words)


def span(seconds: int) -> str:
    """`10m`, `90s`, `2h`, `1d`: as a rule writes it (the largest whole unit)."""
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def rfc3339(at_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at_s))


def _events(count: int) -> str:
    return f"{count} event" + ("" if count == 1 else "s")


def _sample(msg: Msg) -> dict[str, Any]:
    text = msg.txt if len(msg.txt) <= SAMPLE_TEXT else msg.txt[:SAMPLE_TEXT] + "…"
    return {
        "t": rfc3339(msg.t.seconds) if msg.HasField("t") else None,
        "lvl": LEVEL_NAMES.get(msg.lvl, "none").lower(),
        "env": msg.env,
        "svc": msg.svc,
        "fn": msg.fn,
        "txt": text,
    }


def _sample_line(sample: dict[str, Any]) -> str:
    where = f"{sample['env'] or '-'}/{sample['svc'] or '-'}"
    fn = f" {sample['fn']}" if sample["fn"] else ""
    text = " ".join(str(sample["txt"]).split())  # one line: no newline or control spacing
    return f"{sample['t'] or '-'} {sample['lvl'].upper()} {where}{fn}: {text}"


def _slack(text: str) -> str:
    """Slack's escapes: event text must not become a mention or a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
