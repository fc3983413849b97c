"""The results: medians of the runs (`summarise`), each beside the issue's target for it
(`table`), and the raw runs made fit for JSON."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bench import query
from bench.stats import median


@dataclass(frozen=True)
class Row:
    key: str  # in the summary
    label: str
    fmt: Callable[[float], str]
    target: str
    ok: Callable[[float], bool] | None = None


def _rate(v: float) -> str:
    return f"{v:,.0f}/s"


def _us(v: float) -> str:
    return f"{v:.2f} µs"


def _ms(v: float) -> str:
    return f"{v:.2f} ms" if v < 100 else f"{v:.0f} ms"


def _times(v: float) -> str:
    return f"{v:.2f}x"


def _mb(v: float) -> str:
    return f"{v / 1e6:.0f} MB"


ROWS = [
    Row("ingest.no_loss_frames_per_s", "per-frame ingest: highest rate with <=0.1% loss", _rate,
        ">= 120,000/s (<=0.5% loss)", lambda v: v >= 120_000),
    Row("ingest.saturation_frames_per_s", "per-frame ingest: saturation", _rate,
        "(Go: 270-285k/s)"),
    Row("ingest.cpu_us_per_frame", "per-frame ingest: CPU per frame, sender flat out", _us,
        ""),
    Row("ingest.drain_cpu_us_per_frame", "per-frame ingest kept busy: CPU per frame", _us,
        "(Go: 3.5-3.8 µs)"),
    Row("ingest.frames_per_cpu_s", "per-frame ingest: frames per CPU-second", _rate,
        "(Go: 263-286k)"),
    Row("bare.cpu_us_per_packet", "bare Python recv_into loop kept busy: CPU per packet",
        _us, "(ref. machine: 1.25-1.5 µs)"),
    Row("bare.live_cpu_us_per_packet", "bare loop fed live by the sender: CPU per packet",
        _us, ""),
    Row("ingest.ratio_to_bare", "per-frame CPU / bare recv loop, both kept busy", _times,
        "<= 2.7x",
        lambda v: v <= 2.7),
    Row("batched.events_per_s", "batched ingest (16 events/frame)", _rate,
        ">= 1,000,000 events/s", lambda v: v >= 1_000_000),
    Row("batched.cpu_us_per_event", "batched ingest: CPU per event", _us, ""),
    Row("batched.events_per_cpu_s", "batched ingest: events per CPU-second", _rate,
        ">= 1,000,000 (one core)", lambda v: v >= 1_000_000),
    Row("query.newest_100.p50_ms", "query: newest 100, p50", _ms, "<= 5 ms (ring of 1M)",
        lambda v: v <= 5),
    Row("query.newest_100.p99_ms", "query: newest 100, p99", _ms, ""),
    Row("query.txt_1pct.p50_ms", "query: txt matching 1% (limit 100), p50", _ms, ""),
    Row("query.txt_1pct.p99_ms", "query: txt matching 1% (limit 100), p99", _ms, ""),
    Row("query.full_scan_txt.p50_ms", "query: full scan, txt matches nothing, p50", _ms,
        "<= 300 ms (1M events)", lambda v: v <= 300),
    Row("query.full_scan_txt.p99_ms", "query: full scan, txt matches nothing, p99", _ms, ""),
    Row("query.full_scan_fn.p50_ms", "query: full scan, fn matches nothing, p50", _ms,
        "<= 300 ms (1M events)", lambda v: v <= 300),
    Row("query.lvl_error.p50_ms", "query: lvl=error (1% errors), p50", _ms, ""),
    Row("query.lvl_error.p99_ms", "query: lvl=error (1% errors), p99", _ms, ""),
    Row("tail.p50_ms", "tail: write -> received, p50", _ms, ""),
    Row("tail.p99_ms", "tail: write -> received, p99", _ms, "<= 10 ms (10 tails at 10k/s)",
        lambda v: v <= 10),
    Row("memory.rss_per_1m", "memory: RSS growth per 1M ~100-byte events", _mb, "<= 175 MB",
        lambda v: v <= 175e6),
    Row("memory.rss_over_payload", "memory: RSS growth / payload bytes", _times, "(Go: ~2.7x)"),
    Row("logger.call_us", "logger: one log.info() call", _us, "<= 5 µs", lambda v: v <= 5),
    Row("logger.events_per_s", "logger: events/s one Python process emits", _rate, ""),
]  # fmt: skip


def table(summary: Mapping[str, float | str], notes: list[str]) -> str:
    """A Markdown table (it reads as plain text too), then the notes."""
    lines = ["| measure | median | target | |", "|---|---|---|---|"]
    for row in ROWS:
        value = summary.get(row.key)
        if value is None:
            continue
        if isinstance(value, str):
            lines.append(f"| {row.label} | {value} | {row.target} | |")
            continue
        shown = "n/a" if math.isnan(value) else row.fmt(value)
        verdict = ""
        if row.ok is not None and not math.isnan(value):
            verdict = "ok" if row.ok(value) else "MISS"
        lines.append(f"| {row.label} | {shown} | {row.target} | {verdict} |")
    return "\n".join(lines + [""] + [f"- {note}" for note in notes])


def summarise(raw: dict[str, Any]) -> dict[str, float | str]:
    def med(section: str, *path: str) -> float:
        values = []
        for run in raw.get(section, []):
            for part in path:
                run = run[part]
            values.append(float(run))
        return median(values)

    out: dict[str, float | str] = {}
    if raw.get("saturation"):
        per_frame = med("logd_drain", "cpu_us_per_frame")
        bare = med("bare_drain", "cpu_us_per_packet")
        out["ingest.saturation_frames_per_s"] = med("saturation", "frames_per_s")
        out["ingest.cpu_us_per_frame"] = med("saturation", "cpu_us_per_frame")
        out["ingest.drain_cpu_us_per_frame"] = per_frame
        out["ingest.frames_per_cpu_s"] = 1e6 / per_frame if per_frame > 0 else math.nan
        out["bare.cpu_us_per_packet"] = bare
        out["bare.live_cpu_us_per_packet"] = med("bare", "cpu_us_per_packet")
        out["ingest.ratio_to_bare"] = per_frame / bare if bare > 0 else math.nan
        out["batched.events_per_s"] = med("batched", "events_per_s")
        per_event = med("batched", "cpu_us_per_event")
        out["batched.cpu_us_per_event"] = per_event
        out["batched.events_per_cpu_s"] = 1e6 / per_event if per_event > 0 else math.nan
    if raw.get("steps"):
        out["ingest.no_loss_frames_per_s"] = med("steps", "no_loss_frames_per_s")
    for name in query.QUERIES:
        if raw.get("query"):
            out[f"query.{name}.p50_ms"] = med("query", "queries", name, "p50_ms")
            out[f"query.{name}.p99_ms"] = med("query", "queries", name, "p99_ms")
    if raw.get("query"):
        out["memory.rss_per_1m"] = med("query", "fill", "rss_growth_per_1m")
        out["memory.rss_over_payload"] = med("query", "fill", "rss_over_payload")
    if raw.get("tail"):
        out["tail.p50_ms"] = med("tail", "p50_ms")
        out["tail.p99_ms"] = med("tail", "p99_ms")
    if raw.get("logger"):
        out["logger.call_us"] = med("logger", "call_us")
        out["logger.events_per_s"] = med("logger", "events_per_s")
    elif "logger" in raw:
        out["logger.call_us"] = "pending: logd.logger not written yet"
    return out


def jsonable(value: Any) -> Any:
    """NaN is not JSON: write null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
