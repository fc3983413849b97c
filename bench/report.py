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


def _mib(v: float) -> str:
    return f"{v / (1 << 20):.0f} MiB"


def _pct(v: float) -> str:
    return f"{v:.2%}"


def _share(v: float) -> str:
    return f"{v:.0%} of the limit"


def _s(v: float) -> str:
    return f"{v:.2f} s"


def _count(v: float) -> str:
    return f"{v:,.0f}"


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
    Row("ingest.origin_drain_cpu_us_per_frame",
        "per-frame ingest kept busy, sender/seq/host/pid set: CPU per frame", _us, ""),
    Row("ingest.origin_ratio", "per-frame CPU kept busy: with sender/seq/host/pid / without",
        _times, "<= 1.05x", lambda v: v <= 1.05),
    Row("ingest.origin_same_bytes_ratio",
        "per-frame CPU kept busy: with them / as many bytes of txt instead", _times, ""),
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
    Row("mix.cpu_us_per_event", "per-frame ingest, 8 rings interleaved: CPU per event", _us,
        ""),
    Row("mix.ratio", "per-frame ingest: CPU per event, 8 rings / 1 ring", _times, "<= 1.2x",
        lambda v: v <= 1.2),
    Row("mix.batched_events_per_s", "batched ingest, 8 rings interleaved", _rate, ""),
    Row("mix.batched_cpu_us_per_event", "batched ingest, 8 rings: CPU per event", _us, ""),
    Row("mix.batched_ratio", "batched ingest: CPU per event, 8 rings / 1 ring", _times,
        "<= 1.5x", lambda v: v <= 1.5),
    Row("mix.batched_events_per_cpu_s", "batched ingest, 8 rings: events per CPU-second",
        _rate, ">= 1,500,000 (one core)", lambda v: v >= 1_500_000),
    Row("ingest.live_over_busy",
        "per-frame CPU per frame: fed live at the sender's best / kept busy", _times,
        "<= 1.2x", lambda v: v <= 1.2),
    Row("mix.live_cpu_us_per_frame", "per-frame ingest, 8 rings, fed live: CPU per frame",
        _us, ""),
    Row("bare_c.live_cpu_us_per_packet",
        "bare C recvmmsg loop fed live by the sender: CPU per packet", _us, ""),
    Row("mix.live_ratio_to_bare_c",
        "fed live, 8 rings: CPU per frame / bare C recvmmsg loop", _times, "<= 1.5x",
        lambda v: v <= 1.5),
    Row("query.newest_100.p50_ms", "query: newest 100, p50", _ms, "<= 5 ms (ring of 1M)",
        lambda v: v <= 5),
    Row("query.newest_100.p99_ms", "query: newest 100, p99", _ms, "<= 5 ms", lambda v: v <= 5),
    Row("query.txt_1pct.p50_ms", "query: txt matching 1% (limit 100), p50", _ms, ""),
    Row("query.txt_1pct.p99_ms", "query: txt matching 1% (limit 100), p99", _ms, ""),
    Row("query.full_scan_txt.p50_ms", "query: full scan, txt matches nothing, p50", _ms,
        "<= 40 ms (1M events)", lambda v: v <= 40),
    Row("query.full_scan_txt.p99_ms", "query: full scan, txt matches nothing, p99", _ms, ""),
    Row("query.full_scan_txt_common.p50_ms",
        "query: full scan, txt of common bytes matches nothing, p50", _ms, "<= 40 ms",
        lambda v: v <= 40),
    Row("query.full_scan_fn.p50_ms", "query: full scan, fn matches nothing, p50", _ms,
        "<= 300 ms (1M events)", lambda v: v <= 300),
    Row("query.full_scan_attr.p50_ms", "query: full scan, attr.KEY matches nothing, p50", _ms,
        "<= 60 ms", lambda v: v <= 60),
    Row("query.hits_by_lvl.p50_ms", "/hits over all 1M, by=lvl, p50", _ms, "<= 50 ms",
        lambda v: v <= 50),
    Row("query.tail_backlog.first_byte_p50_ms", "tail n=1000 on the 1M ring: first byte, p50",
        _ms, "<= 20 ms", lambda v: v <= 20),
    Row("query.tail_backlog.first_byte_p99_ms", "tail n=1000: first byte, p99", _ms, ""),
    Row("query.tail_backlog.backlog_p50_ms", "tail n=1000: all 1,000 events, p50", _ms, ""),
    Row("query.lvl_error.p50_ms", "query: lvl=error (1% errors), p50", _ms, ""),
    Row("query.lvl_error.p99_ms", "query: lvl=error (1% errors), p99", _ms, ""),
    Row("tail.p50_ms", "tail: write -> received, p50", _ms, ""),
    Row("tail.p99_ms", "tail: write -> received, p99", _ms, "<= 10 ms (100 tails at 10k/s)",
        lambda v: v <= 10),
    Row("memory.rss_per_1m", "memory: RSS growth per 1M ~100-byte events", _mb, "<= 175 MB",
        lambda v: v <= 175e6),
    Row("memory.rss_over_payload", "memory: RSS growth / payload bytes", _times, "(Go: ~2.7x)"),
    Row("logger.call_us", "logger: one log.info() call (sender, seq, host, pid set)", _us,
        "<= 2.5 µs", lambda v: v <= 2.5),
    Row("logger.call_cpu_us", "logger: one log.info() call, the app thread's CPU", _us, ""),
    Row("logger.events_per_s", "logger: events/s one Python process emits", _rate, ""),
    Row("stuck_tails.loss", "64 stuck filtered tails, 8 KB events at 20k/s: ingest loss", _pct,
        "<= 0.1%", lambda v: v <= 0.001),
    Row("stuck_tails.rss_peak_share", "64 stuck filtered tails: peak RSS (worst run)", _share,
        "<= LOGD_MEMORY_LIMIT", lambda v: v <= 1),
    Row("stuck_tails.rss_growth", "64 stuck filtered tails: RSS growth (to the peak)", _mib,
        ""),
    Row("stuck_tails.tail_dropped", "64 stuck filtered tails: events dropped for them", _count,
        ""),
    Row("big_query.loss", "10,000 x 60 KB ring queried: ingest loss at 20k events/s", _pct,
        "<= 0.1%", lambda v: v <= 0.001),
    Row("big_query.status_5xx", "10,000 x 60 KB ring queried: 5xx answers (all runs)", _count,
        "0", lambda v: v == 0),
    Row("big_query.limit_10000_s", "query limit=10000 over 60 KB events: time", _s, ""),
    Row("big_query.limit_10000_bytes", "query limit=10000 over 60 KB events: answer size", _mb,
        "<= LOGD_QUERY_MAX_BYTES + marker"),
    Row("big_query.limit_10000_truncated", "query limit=10000: answers ending with the marker",
        _pct, "100% (past the bound)", lambda v: v == 1),
    Row("big_query.full_scan_s", "query full scan of the 60 KB ring (txt matches nothing)", _s,
        ""),
    Row("worst_mix.rss_peak_share", "worst mix: peak RSS (worst run)", _share,
        "<= LOGD_MEMORY_LIMIT", lambda v: v <= 1),
    Row("worst_mix.rss_peak", "worst mix: peak RSS in MiB (worst run)", _mib, ""),
    Row("worst_mix.ring_fill", "worst mix: ring bytes / capacity before the mix", _pct, ""),
    Row("worst_mix.loss", "worst mix: ingest loss (8 KB events at 20k/s)", _pct, ""),
    Row("worst_mix.status_5xx", "worst mix: 5xx answers (all runs)", _count, "0",
        lambda v: v == 0),
    Row("alerts.none_cpu_us_per_frame", "ingest kept busy, no alert rules: CPU per frame", _us,
        ""),
    Row("alerts.rules20_cpu_us_per_frame", "ingest kept busy, 20 alert rules: CPU per frame",
        _us, ""),
    Row("alerts.ratio", "ingest CPU per frame: 20 alert rules / none (same run)", _times,
        "<= 1.10x", lambda v: v <= 1.10),
    Row("alerts.search_cpu_us_per_frame",
        "ingest kept busy, 20 rules, 4 of them searching the busy ring: CPU per frame", _us, ""),
    Row("alerts.search_ratio", "ingest CPU per frame: 20 rules with 4 searches / none", _times,
        "<= 1.10x", lambda v: v <= 1.10),
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
        if raw.get("logd_drain_origin"):
            out["ingest.origin_drain_cpu_us_per_frame"] = med(
                "logd_drain_origin", "cpu_us_per_frame"
            )
            out["ingest.origin_ratio"] = _ratio(raw["logd_drain"], raw["logd_drain_origin"])
            out["ingest.origin_same_bytes_ratio"] = _ratio(
                raw["logd_drain_padded"], raw["logd_drain_origin"]
            )
        out["batched.events_per_s"] = med("batched", "events_per_s")
        per_event = med("batched", "cpu_us_per_event")
        out["batched.cpu_us_per_event"] = per_event
        out["batched.events_per_cpu_s"] = 1e6 / per_event if per_event > 0 else math.nan
    if raw.get("saturation_mix") and raw.get("batched_mix"):
        one = med("saturation", "cpu_us_per_event")
        mixed = med("saturation_mix", "cpu_us_per_event")
        out["mix.cpu_us_per_event"] = mixed
        out["mix.ratio"] = mixed / one if one > 0 else math.nan
        one = med("batched", "cpu_us_per_event")
        mixed = med("batched_mix", "cpu_us_per_event")
        out["mix.batched_events_per_s"] = med("batched_mix", "events_per_s")
        out["mix.batched_cpu_us_per_event"] = mixed
        out["mix.batched_ratio"] = mixed / one if one > 0 else math.nan
        out["mix.batched_events_per_cpu_s"] = 1e6 / mixed if mixed > 0 else math.nan
    if raw.get("saturation") and raw.get("logd_drain"):
        out["ingest.live_over_busy"] = _ratio(raw["logd_drain"], raw["saturation"])
    if raw.get("saturation_mix") and raw.get("bare_c"):
        out["mix.live_cpu_us_per_frame"] = med("saturation_mix", "cpu_us_per_frame")
        out["bare_c.live_cpu_us_per_packet"] = med("bare_c", "cpu_us_per_packet")
        out["mix.live_ratio_to_bare_c"] = median(
            [
                m["cpu_us_per_frame"] / b["cpu_us_per_packet"]
                for b, m in zip(raw["bare_c"], raw["saturation_mix"], strict=True)
                if b["cpu_us_per_packet"]
            ]
        )
    if raw.get("steps"):
        out["ingest.no_loss_frames_per_s"] = med("steps", "no_loss_frames_per_s")
    for name in query.QUERIES:
        if raw.get("query"):
            out[f"query.{name}.p50_ms"] = med("query", "queries", name, "p50_ms")
            out[f"query.{name}.p99_ms"] = med("query", "queries", name, "p99_ms")
    if raw.get("query"):
        out["query.hits_by_lvl.p50_ms"] = med("query", "queries", "hits_by_lvl", "p50_ms")
        for name in ("first_byte_p50_ms", "first_byte_p99_ms", "backlog_p50_ms"):
            out[f"query.tail_backlog.{name}"] = med("query", "queries", "tail_backlog", name)
        out["memory.rss_per_1m"] = med("query", "fill", "rss_growth_per_1m")
        out["memory.rss_over_payload"] = med("query", "fill", "rss_over_payload")
    if raw.get("tail"):
        out["tail.p50_ms"] = med("tail", "p50_ms")
        out["tail.p99_ms"] = med("tail", "p99_ms")
    if raw.get("logger"):
        out["logger.call_us"] = med("logger", "call_us")
        out["logger.call_cpu_us"] = med("logger", "call_cpu_us")
        out["logger.events_per_s"] = med("logger", "events_per_s")
    elif "logger" in raw:
        out["logger.call_us"] = "pending: logd.logger not written yet"
    out |= summarise_memory(raw)
    if raw.get("alerts_none") and raw.get("alerts_20"):
        out["alerts.none_cpu_us_per_frame"] = med("alerts_none", "cpu_us_per_frame")
        out["alerts.rules20_cpu_us_per_frame"] = med("alerts_20", "cpu_us_per_frame")
        out["alerts.ratio"] = _ratio(raw["alerts_none"], raw["alerts_20"])
    if raw.get("alerts_none") and raw.get("alerts_20_search"):
        out["alerts.search_cpu_us_per_frame"] = med("alerts_20_search", "cpu_us_per_frame")
        out["alerts.search_ratio"] = _ratio(raw["alerts_none"], raw["alerts_20_search"])
    return out


def _ratio(reference: list[dict[str, Any]], runs: list[dict[str, Any]]) -> float:
    """The median of the per-run ratios of CPU per frame (both measured in the same run)."""
    pairs = zip(reference, runs, strict=True)
    return median(
        [b["cpu_us_per_frame"] / a["cpu_us_per_frame"] for a, b in pairs if a["cpu_us_per_frame"]]
    )


def summarise_memory(raw: dict[str, Any]) -> dict[str, float | str]:
    """The memory budget's rows: medians, but the worst run for peaks and 5xx counts."""
    out: dict[str, float | str] = {}
    if raw.get("stuck_tails"):
        runs = raw["stuck_tails"]
        out["stuck_tails.loss"] = float(median([r["loss"] for r in runs]))
        out["stuck_tails.rss_peak_share"] = float(max(r["rss_peak_share"] for r in runs))
        out["stuck_tails.rss_growth"] = float(median([r["rss_growth"] for r in runs]))
        out["stuck_tails.tail_dropped"] = float(median([r["tail_dropped"] for r in runs]))
    if raw.get("big_query"):
        runs = raw["big_query"]

        def answers(name: str, key: str) -> float:
            return median([r["answers"][name][key] for r in runs if name in r["answers"]])

        out["big_query.loss"] = float(median([r["loss"] for r in runs]))
        out["big_query.status_5xx"] = float(sum(r["status_5xx"] + r["failed"] for r in runs))
        out["big_query.limit_10000_s"] = float(answers("limit_10000", "median_s"))
        out["big_query.limit_10000_bytes"] = float(answers("limit_10000", "median_bytes"))
        out["big_query.limit_10000_truncated"] = float(answers("limit_10000", "truncated_share"))
        out["big_query.full_scan_s"] = float(answers("full_scan", "median_s"))
    if raw.get("worst_mix"):
        runs = raw["worst_mix"]
        out["worst_mix.rss_peak_share"] = float(max(r["rss_peak_share"] for r in runs))
        out["worst_mix.rss_peak"] = float(max(r["rss_peak"] for r in runs))
        out["worst_mix.ring_fill"] = float(median([r["fill"]["fill"] for r in runs]))
        out["worst_mix.loss"] = float(median([r["mix"]["loss"] for r in runs]))
        out["worst_mix.status_5xx"] = float(sum(r["status_5xx"] + r["failed"] for r in runs))
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
