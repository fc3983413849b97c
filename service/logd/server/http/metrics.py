"""Prometheus text exposition of the /info counters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(info: dict[str, Any]) -> str:
    udp, store, tail = info["udp"], info["store"], info["tail"]
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP logd_{name} {help_text}")
        lines.append(f"# TYPE logd_{name} {kind}")
        lines.extend(f"logd_{name}{labels} {value}" for labels, value in samples)

    metric("uptime_seconds", "gauge", "Seconds since start.", [("", info["uptime_s"])])
    metric("udp_received_total", "counter", "Datagrams received.", [("", udp["received"])])
    metric("udp_accepted_total", "counter", "Datagrams accepted.", [("", udp["accepted"])])
    metric(
        "udp_rejected_total",
        "counter",
        "Datagrams dropped, by reason.",
        [(f'{{reason="{r}"}}', n) for r, n in udp["rejected"].items()],
    )
    metric("events_stored_total", "counter", "Events stored.", [("", udp["events"])])
    if udp["kernel_drops"] is not None:
        metric(
            "udp_kernel_drops_total",
            "counter",
            "Datagrams the kernel dropped (buffer full).",
            [("", udp["kernel_drops"])],
        )
    metric(
        "replay_guard_entries",
        "gauge",
        "MACs the replay guard holds.",
        [("", udp["replay_guard"]["entries"])],
    )
    metric(
        "replay_guard_overflows_total",
        "counter",
        "Frames refused because the guard was full.",
        [("", udp["replay_guard"]["overflows"])],
    )
    writers = udp["writers"]
    metric("writers", "gauge", "Writers (senders) the table holds.", [("", writers["tracked"])])
    metric(
        "writer_frames_total",
        "counter",
        "WRITE frames counted for loss accounting (those carrying a sender).",
        [("", writers["frames"])],
    )
    # A gauge: a late frame that fills a gap takes one off (docs/protocol.md).
    metric(
        "writer_frames_lost_total",
        "gauge",
        "WRITE frames lost, from the writers' sequence gaps, less those that came late.",
        [("", writers["lost"])],
    )
    # The largest rings by name, the rest as ring="other" (a ring key always has a "/").
    rings = [(f'{{ring="{_label(r["key"])}"}}', r) for r in store["rings"]]
    if store["rings_other"]["rings"]:
        rings.append(('{ring="other"}', store["rings_other"]))
    metric("rings", "gauge", "Rings in the store.", [("", store["ring_count"])])
    metric("ring_events", "gauge", "Events held per ring.", [(k, r["events"]) for k, r in rings])
    metric("ring_bytes", "gauge", "Bytes held per ring.", [(k, r["bytes"]) for k, r in rings])
    metric(
        "ring_evicted_total",
        "counter",
        "Events evicted per ring.",
        [(k, r["evicted"]) for k, r in rings],
    )
    by = store["evicted_by"]  # every ring's, by reason: the byte budget or age
    metric(
        "evicted_events_total",
        "counter",
        "Events evicted from the rings, by reason (bytes: the budget; age: a max age).",
        [(f'{{reason="{reason}"}}', n["events"]) for reason, n in by.items()],
    )
    metric(
        "evicted_bytes_total",
        "counter",
        "Bytes the evicted events held, by reason.",
        [(f'{{reason="{reason}"}}', n["bytes"]) for reason, n in by.items()],
    )
    memory = info["memory"]
    metric("memory_limit_bytes", "gauge", "The memory budget.", [("", memory["limit_bytes"])])
    metric(
        "memory_reserved_bytes",
        "gauge",
        "What each part of the budget may hold.",
        [(f'{{part="{part}"}}', n) for part, n in memory["reserved"].items()],
    )
    metric(
        "memory_used_bytes",
        "gauge",
        "What each part of the budget holds now.",
        [(f'{{part="{part}"}}', n) for part, n in memory["used"].items()],
    )
    if memory["rss_bytes"] is not None:
        metric("memory_rss_bytes", "gauge", "Resident memory.", [("", memory["rss_bytes"])])
    queries = info["queries"]
    metric("queries_running", "gauge", "Queries being answered.", [("", queries["running"])])
    metric(
        "queries_refused_total",
        "counter",
        "Queries refused with 429: LOGD_MAX_QUERIES were running.",
        [("", queries["refused"])],
    )
    metric(
        "queries_truncated_total",
        "counter",
        "Answers that reached LOGD_QUERY_MAX_BYTES and ended with a truncation marker.",
        [("", queries["truncated"])],
    )
    metric("tail_subscribers", "gauge", "Live tail subscribers.", [("", tail["subscribers"])])
    metric(
        "tail_dropped_total",
        "counter",
        "Events slow tail subscribers missed.",
        [("", tail["dropped"])],
    )
    _alert_metrics(info.get("alerts"), metric)
    backend = store.get("backend")
    if backend is not None:  # a Valkey/Redis store
        metric(
            "store_reachable",
            "gauge",
            "1 while the Valkey/Redis store answers.",
            [("", int(backend["reachable"]))],
        )
        metric(
            "store_buffered_events",
            "gauge",
            "Events waiting to be sent to the store.",
            [("", backend["buffered_events"])],
        )
        metric(
            "store_dropped_events_total",
            "counter",
            "Events dropped because the store buffer was full.",
            [("", backend["dropped_events"])],
        )
    return "\n".join(lines) + "\n"


def _alert_metrics(alerts: dict[str, Any] | None, metric: Callable[..., None]) -> None:
    if alerts is None:
        return
    notices = alerts["notices"]
    metric("alert_rules", "gauge", "Alert rules loaded.", [("", alerts["rules"])])
    metric("alert_firing", "gauge", "Alert rules firing now.", [("", alerts["firing"])])
    for what, help_text in (
        ("sent", "Alert notices delivered."),
        ("retried", "Alert notice attempts retried after a failure."),
        ("dropped", "Alert notices dropped: queue full, or every attempt failed."),
    ):
        metric(f"alert_notices_{what}_total", "counter", help_text, [("", notices[what])])
    metric("alert_notices_queued", "gauge", "Alert notices waiting.", [("", notices["queued"])])
