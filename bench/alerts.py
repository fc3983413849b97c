"""The cost of alert rules on ingest (issue 18): logd kept busy (ingest.logd_drain) with no
rules, with 20 and with 20 that search, back to back in each run; the ratios of their CPU
per frame to the first's.

The 20 rules are what a deployment might have beside the bench's one ring (bench/api):
8 on other services (not selected for this ring: they cost nothing), 6 on its level (a
count of the run's level bytes) and 6 absent rules on it (a count). In the second set, 4
of the absent rules are text or attribute searches on that ring instead (`txt`, `attr.`,
`fn`: store/search.py's C search over each run's bytes; no event matches, so none is
parsed). Thresholds are out of reach: none fires."""

from __future__ import annotations

import json
from pathlib import Path

NEVER = 10**9


def rules(*, searches: bool) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i in range(8):
        flt = {"env": "prod", "svc": f"billing-{i}", "lvl": "error"}
        out.append({"name": f"other-{i}", "filter": flt, "over": "10m", "threshold": NEVER})
    for i, lvl in enumerate(("warn", "error", "fatal", "error", "warn", "info")):
        flt = {"env": "bench", "lvl": lvl} if i % 2 else {"lvl": lvl}
        out.append({"name": f"level-{i}", "filter": flt, "over": "5m", "threshold": NEVER})
    searched = (("txt", "out of memory"), ("txt", "deadlock"), ("attr.region", "us-east-1"),
                ("fn", "ChargeCard"))  # fmt: skip
    for i, (key, value) in enumerate(searched if searches else ()):
        flt = {"svc": "api", key: value}
        out.append({"name": f"search-{i}", "filter": flt, "over": "1m", "threshold": NEVER})
    for i in range(2 if searches else 6):
        flt = {"env": "bench", "svc": "api"} if i % 2 else {"svc": "api*"}
        out.append({"name": f"absent-{i}", "filter": flt, "over": f"{15 + i}m", "absent": True})
    return out


def write_config(workdir: Path, *, searches: bool) -> Path:
    """A logdrc.yml with one set of 20 rules (JSON is YAML)."""
    path = workdir / f"logdrc-alerts{'-searches' if searches else ''}.yml"
    path.write_text(json.dumps({"alerts": rules(searches=searches)}, indent=1))
    return path
