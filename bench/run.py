"""`python -m bench.run`: every measurement of `make bench`, the table, bench/results.json.

Each measurement repeats `--runs` times on a fresh server and the table quotes
medians; results.json keeps every run. `--smoke` runs everything with tiny sizes
in a few seconds, to check that the harness works (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench import alerts, ingest, logger_cost, memory, query, report, tail
from bench.procs import SERVER_NICE, Cores, Load, LogdServer, pin, wait_quiet
from bench.stats import median

HERE = Path(__file__).parent
MiB = 1 << 20
SECTIONS = ("ingest", "steps", "query", "tail", "logger", "memory", "alerts")
BUSY = 0.15  # a share of a core taken by other processes that makes results doubtful
MIN_FILL_RATE = 20_000.0  # events/s
# What bench/sender.c --origin adds to a one-event frame: host (26 bytes) and pid (sender.c's
# fixed one, 2 bytes) per event, sender and seq per frame (seq 3 bytes: the sender numbers
# frames from 16,384), less the byte a txt past 127 bytes adds to its length. The smoke test
# checks that the frames match.
ORIGIN_BYTES = 44
SAT_RING_BYTES = 256 * MiB  # the flat-out runs' ring memory, split over the rings they fill


@dataclass(frozen=True)
class Settings:
    runs: int = 3
    warmup_s: float = 1.0
    sat_seconds: float = 4.0  # measured window of each saturation / batched / bare-loop run
    # At saturation the socket buffer stays full: it must hold well under max_age (1 s)
    # of work, or the server spends its time refusing stale frames (cheaply).
    sat_rcvbuf: int = 4 * MiB  # ~10k small frames
    batched_rcvbuf: int = 1 * MiB  # ~500 frames of 16 events
    # The reference loop kept busy: buffer fills of this many packets, drained and timed.
    drain_packets: int = 400_000
    drain_rounds: int = 2
    drain_rcvbuf: int = 256 * MiB  # holds a fill (~830 bytes of kernel memory per packet)
    big_rcvbuf: int = 64 * MiB  # the offered-rate steps and the rest: as deployed
    step_seconds: float = 4.0
    step_fractions: tuple[float, ...] = (0.6, 0.8, 0.9, 1.0, 1.1)  # of the saturation rate
    extra_rates: tuple[float, ...] = (120_000.0,)  # the target rate
    max_loss: float = 0.001
    max_lag_s: float = 0.25
    batch: int = 16
    mix_keys: int = 8  # the mixed rows: frames cycle over this many services (rings)
    query_runs: int = 1
    query_events: int = 1_000_000
    query_reps: tuple[tuple[str, int], ...] = (
        ("newest_100", 200),
        ("txt_1pct", 100),
        ("full_scan_txt", 5),
        ("full_scan_txt_common", 5),
        ("full_scan_fn", 5),
        ("full_scan_attr", 5),
        ("lvl_error", 100),
    )
    hits_reps: int = 5
    tail_backlog_reps: int = 20
    tail_rate: float = 10_000
    tail_seconds: float = 5.0
    tail_subscribers: int = 100
    logger_calls: int = 200_000
    # The memory budget (issue 13). stuck_tails and worst_mix: an explicit limit, the ring
    # size derived by the server to fit it, a replay guard sized for these rates.
    memory_limit: str = "512MiB"
    memory_max_rings: int = 16
    memory_replay_capacity: int = 200_000
    memory_flags: tuple[str, ...] = ()  # more `logd serve` flags for those servers
    stuck_tails: int = 64
    stuck_txt: str = memory.MATCH_ALL  # the filter of the stuck tails: every event matches
    stuck_rate: float = 20_000
    stuck_seconds: float = 4.0
    stuck_txt_len: int = 8_000  # ~8 KB events
    # big_query: a ring that holds every big event (none evicted); small events meanwhile.
    bigq_events: int = 10_000
    bigq_txt_len: int = 60_000  # ~60 KB events
    bigq_fill_rate: float = 2_000
    bigq_ring_bytes: str = "768MiB"
    bigq_memory_limit: str = "3GiB"
    bigq_rate: float = 20_000
    bigq_seconds: float = 8.0
    bigq_lead_s: float = 1.0  # sending before the first query and after the last one starts
    bigq_max_rounds: int = 50
    # worst_mix: max_rings + mix_extra_keys services (the extra ones fill the overflow ring).
    mix_extra_keys: int = 1
    mix_fill_factor: float = 1.5
    mix_txt_len: int = 8_000
    mix_rate: float = 20_000
    mix_seconds: float = 6.0
    mix_queries: int = 4
    mix_max_rounds: int = 50
    # Before each run, wait up to quiet_timeout_s for both cores to be under quiet_below
    # busy (a shared machine has bursts); None: do not wait.
    quiet_below: float = BUSY
    quiet_timeout_s: float | None = 5.0


SMOKE = Settings(
    runs=1,
    warmup_s=0.3,
    sat_seconds=0.6,
    drain_packets=20_000,
    drain_rounds=1,
    drain_rcvbuf=32 * MiB,
    step_seconds=0.4,
    step_fractions=(0.5,),
    extra_rates=(),
    query_events=3_200,
    query_reps=tuple((name, 3) for name in query.QUERIES),
    hits_reps=2,
    tail_backlog_reps=2,
    tail_rate=500,
    tail_seconds=1.0,
    tail_subscribers=2,
    logger_calls=2_000,
    memory_limit="256MiB",
    memory_max_rings=2,
    memory_replay_capacity=20_000,
    memory_flags=("--ring-bytes=2MiB", "--max-tails=8", "--max-queries=2"),
    stuck_tails=2,
    stuck_rate=1_000,
    stuck_seconds=0.5,
    bigq_events=100,
    bigq_fill_rate=1_000,
    bigq_ring_bytes="16MiB",
    bigq_memory_limit="512MiB",
    bigq_rate=1_000,
    bigq_seconds=1.5,
    bigq_lead_s=0.3,
    bigq_max_rounds=2,
    mix_fill_factor=1.2,
    mix_rate=2_000,
    mix_seconds=1.0,
    mix_queries=2,
    mix_max_rounds=2,
    quiet_timeout_s=None,
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, settings: Settings, sender: Path, workdir: Path) -> None:
        self.s = settings
        self.sender = sender
        self.workdir = workdir
        self.cores = Cores.pick()
        self.raw: dict[str, Any] = {}
        self.granted_rcvbuf: dict[str, int] = {}
        self.favoured = False
        self.busy_at_start: list[float] = []  # the busiest core's share as each run started

    def quiet(self) -> None:
        if self.s.quiet_timeout_s is not None:
            busy = wait_quiet(self.cores, below=self.s.quiet_below, timeout=self.s.quiet_timeout_s)
            self.busy_at_start.append(busy)

    @contextmanager
    def server(
        self, rcvbuf: int, ring_bytes: int = 256 * MiB, extra: Sequence[str] = ()
    ) -> Iterator[LogdServer]:
        # A few rings (the bench mixes up to 8 services): 256MiB each fits the memory budget.
        flags = [f"--udp-rcvbuf={rcvbuf}", f"--ring-bytes={ring_bytes}", "--max-rings=16"]
        flags += ["--replay-capacity=5000000", *extra]
        with self.serve(rcvbuf, flags) as server:
            yield server

    @contextmanager
    def serve(self, rcvbuf: int, flags: Sequence[str]) -> Iterator[LogdServer]:
        """`logd serve` with exactly these flags (`rcvbuf`: what --udp-rcvbuf asks for)."""
        with LogdServer(self.workdir, cpu=self.cores.server, flags=flags) as server:
            self.granted_rcvbuf[str(rcvbuf)] = server.info()["udp"]["rcvbuf_bytes"]
            self.favoured = server.favoured
            self.quiet()
            yield server

    def budget_server(self) -> contextlib.AbstractContextManager[LogdServer]:
        """A server with an explicit --memory-limit, its ring size derived to fit."""
        s = self.s
        flags = [f"--udp-rcvbuf={s.big_rcvbuf}", f"--memory-limit={s.memory_limit}"]
        flags += [f"--max-rings={s.memory_max_rings}"]
        flags += [f"--replay-capacity={s.memory_replay_capacity}", *s.memory_flags]
        return self.serve(s.big_rcvbuf, flags)

    def repeat(self, name: str, runs: int, one: Callable[[], dict[str, Any]]) -> list[Any]:
        out = self.raw.setdefault(name, [])
        for i in range(runs):
            log(f"{name} run {i + 1}/{runs}")
            out.append(one())
        return out  # type: ignore[no-any-return]

    def ingest(self) -> None:
        s = self.s
        flat = Load(seconds=s.sat_seconds)

        def saturation(load: Load, rcvbuf: int) -> dict[str, Any]:
            # The same memory whatever the mix: 8 rings of 32 MiB hold what one of 256 MiB
            # does. With 256 MiB each, 8 rings were still filling fresh memory for the whole
            # run (the kernel zeroing new pages: 28 % of the server in perf) while one ring
            # was full and reusing its evicted chunks, so the 8-to-1 ratios measured that.
            ring = SAT_RING_BYTES // max(1, load.keys)
            with self.server(rcvbuf, ring_bytes=ring) as server:
                return ingest.saturate(server, self.sender, self.cores, load, s.warmup_s)

        # Interleaved, so that a noisy spell on the machine hits all three alike.
        for i in range(s.runs):
            log(f"ingest run {i + 1}/{s.runs}: bare loop, per-frame, batched (1 and 8 rings)")
            self.quiet()
            self.raw.setdefault("bare", []).append(
                ingest.bare_reference(self.sender, self.cores, flat, s.sat_rcvbuf)
            )
            # The machine's limit: a bare C recvmmsg loop fed the mixed traffic the same way.
            self.raw.setdefault("bare_c", []).append(
                ingest.bare_reference(
                    self.sender, self.cores, replace(flat, keys=s.mix_keys), s.sat_rcvbuf, c=True
                )
            )
            self.raw.setdefault("bare_drain", []).append(
                ingest.bare_drain(
                    self.sender,
                    self.cores,
                    packets=s.drain_packets,
                    rounds=s.drain_rounds,
                    rcvbuf=s.drain_rcvbuf,
                )
            )
            # Frames wait in the buffer while logd is stopped: a long max_age keeps them fresh.
            # Then the same frames numbered and with their origin (sender, seq, host, pid),
            # and frames as long as those without them (txt longer by as many bytes).
            drains = {
                "logd_drain": Load(),
                "logd_drain_origin": Load(origin=True),
                "logd_drain_padded": Load(txt_len=Load().txt_len + ORIGIN_BYTES),
            }
            for name, frames in drains.items():
                with self.server(s.drain_rcvbuf, extra=["--max-age=120"]) as server:
                    self.raw.setdefault(name, []).append(
                        ingest.logd_drain(
                            server,
                            self.sender,
                            self.cores,
                            packets=s.drain_packets,
                            rounds=s.drain_rounds,
                            load=frames,
                        )
                    )
            self.raw.setdefault("saturation", []).append(saturation(flat, s.sat_rcvbuf))
            batched = replace(flat, batch=s.batch)
            self.raw.setdefault("batched", []).append(saturation(batched, s.batched_rcvbuf))
            # The same with services interleaved frame by frame: a ring each.
            mixed = replace(flat, keys=s.mix_keys)
            self.raw.setdefault("saturation_mix", []).append(saturation(mixed, s.sat_rcvbuf))
            mixed_batched = replace(batched, keys=s.mix_keys)
            self.raw.setdefault("batched_mix", []).append(
                saturation(mixed_batched, s.batched_rcvbuf)
            )

    def steps(self) -> None:
        s = self.s
        sat = median([r["frames_per_s"] for r in self.raw.get("saturation", [])])
        sat = 50_000.0 if math.isnan(sat) else sat
        rates = sorted({round(f * sat, -2) for f in s.step_fractions} | set(s.extra_rates))

        def one() -> dict[str, Any]:
            with self.server(s.big_rcvbuf) as server:
                return ingest.rate_steps(
                    server,
                    self.sender,
                    self.cores,
                    rates,
                    s.step_seconds,
                    s.max_loss,
                    s.max_lag_s,
                    before_step=self.quiet,
                )

        self.repeat("steps", s.runs, one)

    def query(self) -> None:
        s = self.s
        # Well below the batched saturation rate, so nothing is lost; never slower than
        # MIN_FILL_RATE, so a starved or skipped batched run cannot stretch the fill.
        batched = median([r["events_per_s"] for r in self.raw.get("batched", [])])
        rate = max(MIN_FILL_RATE, 0.0 if math.isnan(batched) else 0.6 * batched)

        def one() -> dict[str, Any]:
            ring = max(64 * MiB, s.query_events * 512)  # room for every event: none evicted
            with self.server(s.big_rcvbuf, ring_bytes=ring) as server:
                filled = query.fill(
                    server, self.sender, self.cores, events=s.query_events, rate=rate, batch=s.batch
                )
                reps = dict(s.query_reps)
                stored = filled["events_stored"]
                queries = query.run_queries(server, reps, stored)
                queries["hits_by_lvl"] = query.run_hits(server, s.hits_reps, stored)
                queries["tail_backlog"] = query.run_tail_backlog(server, s.tail_backlog_reps)
                return {"fill": filled, "queries": queries}

        self.repeat("query", s.query_runs, one)

    def tail(self) -> None:
        s = self.s

        def one() -> dict[str, Any]:
            tails = f"--max-tails={s.tail_subscribers}"
            with self.server(s.big_rcvbuf, extra=[tails]) as server:
                return tail.measure(
                    server,
                    self.sender,
                    self.cores,
                    rate=s.tail_rate,
                    seconds=s.tail_seconds,
                    subscribers=s.tail_subscribers,
                )

        self.repeat("tail", s.runs, one)

    def logger(self) -> None:
        if not logger_cost.available():
            log("logger: logd.logger is not there yet; reported as pending")
            self.raw["logger"] = []
            return

        def one() -> dict[str, Any]:
            with self.server(self.s.big_rcvbuf) as server:
                return logger_cost.measure(server, self.cores, calls=self.s.logger_calls)

        self.repeat("logger", self.s.runs, one)

    def alerts(self) -> None:
        """Ingest kept busy with no alert rules and with 20 of two kinds (bench/alerts.py),
        in each run."""
        s = self.s
        servers: list[tuple[str, list[str]]] = [("alerts_none", [])]
        for name, searches in (("alerts_20", False), ("alerts_20_search", True)):
            path = alerts.write_config(self.workdir, searches=searches)
            servers.append((name, [f"--config={path}"]))
        for i in range(s.runs):
            log(f"alerts run {i + 1}/{s.runs}: no rules, 20 rules, 20 rules with 4 searches")
            for name, extra in servers:
                with self.server(s.drain_rcvbuf, extra=["--max-age=120", *extra]) as server:
                    run = ingest.logd_drain(
                        server,
                        self.sender,
                        self.cores,
                        packets=s.drain_packets,
                        rounds=s.drain_rounds,
                    )
                    run["rules"] = server.info()["alerts"]["rules"]
                    self.raw.setdefault(name, []).append(run)

    def memory(self) -> None:
        """The memory budget under the read side's worst (issue 13), interleaved runs."""
        s = self.s
        for i in range(s.runs):
            log(f"memory run {i + 1}/{s.runs}: stuck tails, big query, worst mix")
            with self.budget_server() as server:
                self.raw.setdefault("stuck_tails", []).append(
                    memory.measure_stuck_tails(
                        server,
                        self.sender,
                        self.cores,
                        tails=s.stuck_tails,
                        txt=s.stuck_txt,
                        rate=s.stuck_rate,
                        seconds=s.stuck_seconds,
                        txt_len=s.stuck_txt_len,
                    )
                )
            flags = [f"--udp-rcvbuf={s.big_rcvbuf}", f"--memory-limit={s.bigq_memory_limit}"]
            flags += [f"--ring-bytes={s.bigq_ring_bytes}", "--max-rings=2"]
            flags += [f"--replay-capacity={s.memory_replay_capacity}"]
            with self.serve(s.big_rcvbuf, flags) as server:
                self.raw.setdefault("big_query", []).append(
                    memory.measure_big_query(
                        server,
                        self.sender,
                        self.cores,
                        events=s.bigq_events,
                        txt_len=s.bigq_txt_len,
                        fill_rate=s.bigq_fill_rate,
                        rate=s.bigq_rate,
                        seconds=s.bigq_seconds,
                        lead_s=s.bigq_lead_s,
                        max_rounds=s.bigq_max_rounds,
                    )
                )
            with self.budget_server() as server:
                self.raw.setdefault("worst_mix", []).append(
                    memory.measure_worst_mix(
                        server,
                        self.sender,
                        self.cores,
                        tails=s.stuck_tails,
                        max_rings=s.memory_max_rings,
                        extra_keys=s.mix_extra_keys,
                        fill_factor=s.mix_fill_factor,
                        txt_len=s.mix_txt_len,
                        rate=s.mix_rate,
                        seconds=s.mix_seconds,
                        queries=s.mix_queries,
                        max_rounds=s.mix_max_rounds,
                    )
                )


def code_version() -> str:
    """The commit measured, and whether the server's code had uncommitted changes."""
    git = shutil.which("git")
    if git is None:
        return "unknown (no git)"

    def out(*args: str) -> str:
        run = subprocess.run([git, *args], cwd=HERE.parent, capture_output=True, text=True)
        return run.stdout.strip()

    dirty = out("status", "--porcelain", "--", "service")
    return out("rev-parse", "--short", "HEAD") + (
        " + uncommitted changes in service/" * bool(dirty)
    )


def notes(bench: Bench, version: str) -> list[str]:
    raw, s, cores = bench.raw, bench.s, bench.cores
    out = []
    others = median([r["others_on_server_core"] for r in raw.get("saturation", [])])
    busy = median(bench.busy_at_start) if bench.busy_at_start else 0.0
    if others > BUSY or busy > BUSY:
        out.append(
            "WARNING: other processes kept this machine busy (their share of the server's core "
            f"at saturation: {others:.0%}; busiest core as runs started: {busy:.0%}). Rates are "
            "low and unsteady then; CPU per frame/event is the steadier figure."
        )
    out += [
        f"code: {version}",
        f"Python {platform.python_version()} on {os.cpu_count()} CPUs; "
        + (
            f"server pinned to CPU {cores.server}, sender/clients/driver to CPU {cores.load}"
            if cores.server is not None
            else "one CPU: nothing pinned"
        ),
        f"medians of {s.runs} runs ({s.query_runs} for the query ring and its memory rows); "
        + "server and bare loop "
        + (f"at nice {SERVER_NICE}; " if bench.favoured else "at normal priority; ")
        + "UDP receive buffer asked -> granted (bytes, as the kernel reports): "
        + ", ".join(f"{k} -> {v}" for k, v in bench.granted_rcvbuf.items()),
    ]
    if raw.get("saturation"):
        others = median([r["others_on_server_core"] for r in raw["saturation"]])
        busy = median([r["busy"] for r in raw["bare"]])
        util = median([r["server_core_util"] for r in raw["saturation"]])
        out.append(
            f"saturation: other processes used {others:.1%} of the server's core (a shared "
            "machine is noisy). The ratio compares logd and the bare loop both kept busy "
            "(each drains a buffer filled while it was stopped). Fed live by the sender flat "
            f"out, the bare loop was busy {busy:.0%} of the time and logd {util:.0%}: "
            "when below 100% the sender is the limit, and both pay wake-ups for short bursts"
        )
    if raw.get("steps"):
        by_rate: dict[float, list[dict[str, Any]]] = {}
        for run in raw["steps"]:
            for step in run["steps"]:
                by_rate.setdefault(step["target_frames_per_s"], []).append(step)
        out.append(
            "offered rate -> loss, lag after the sender stopped (medians): "
            + "; ".join(
                f"{rate:,.0f}/s -> {median([x['loss'] for x in steps]):.2%}, "
                f"{median([x['lag_s'] for x in steps]):.2f}s"
                for rate, steps in sorted(by_rate.items())
            )
        )
    for run in raw.get("query", []):
        fill = run["fill"]
        out.append(
            f"query ring: {fill['events_stored']:,} of {fill['events_sent']:,} events stored, "
            f"{fill['payload_bytes_per_event']:.0f} payload bytes each (serialised Msg, "
            "txt 100 bytes)"
        )
        for name, q in run["queries"].items():
            if not q["as_expected"]:
                out.append(f"query {name} returned {q['returned']} events, not {q['expected']}")
    if raw.get("tail"):
        delivered = median([r["delivered"] for r in raw["tail"]])
        util = median([r["server"]["server_core_util"] for r in raw["tail"]])
        loss = median([r["ingest_loss"] for r in raw["tail"]])
        out.append(
            f"tail: {s.tail_subscribers} subscribers at {s.tail_rate:,.0f} events/s; "
            f"{delivered:.2%} of the lines delivered, {loss:.2%} of the events lost at ingest, "
            f"server core {util:.0%} busy while sending (medians); "
            f"{sum(r['dropped'] for r in raw['tail'])} dropped by the server's tail queues"
        )
    if raw.get("logger"):
        runs = raw["logger"]
        dropped = median([r["dropped"] / (2 * r["calls"]) for r in runs])
        lost = median([1 - r["stored"] / max(1, r["sent"]) for r in runs])
        out.append(
            f"logger: {s.logger_calls:,} calls timed in chunks of {logger_cost.CHUNK} with a "
            f"flush between; then a tight loop of as many: of all calls {dropped:.1%} were "
            f"dropped by the logger's full queue and {lost:.1%} of those sent never stored"
        )
    out += memory_notes(raw, s)
    if bench.busy_at_start:
        out.append(
            "busiest core when runs started (after waiting for quiet): median "
            f"{median(bench.busy_at_start):.0%}, max {max(bench.busy_at_start):.0%}"
        )
    return out


def memory_notes(raw: dict[str, Any], s: Settings) -> list[str]:
    """What the memory budget's rows measured, beside the table."""
    out = []
    mib = float(MiB)
    if raw.get("stuck_tails"):
        runs = raw["stuck_tails"]
        r0 = runs[0]
        out.append(
            f"stuck tails: {s.stuck_tails} /tail?txt={s.stuck_txt} subscribers (every event "
            f"matches) that never read, {r0['event_bytes']:,.0f}-byte events at "
            f"{s.stuck_rate:,.0f}/s for {s.stuck_seconds:g} s; --memory-limit={s.memory_limit} "
            f"--max-rings={s.memory_max_rings}, ring size derived; per run (sent -> stored, "
            "offered rate, kernel drops, rejected, server core busy, RSS before -> peak, tail "
            "drops): "
            + "; ".join(
                f"{r['events_sent']:,} -> {r['events_stored']:,}, "
                f"{r['offered_events_per_s']:,.0f}/s, {r['kernel_drops']:,}, "
                f"{sum(r['rejected'].values()):,}, {r['server_cpu_util']:.0%}, "
                f"{r['rss_before'] / mib:.0f} -> {r['rss_peak'] / mib:.0f} MiB, "
                f"{r['tail_dropped']:,} ({r['tail_dropped_share']:.0%} of what they matched)"
                for r in runs
            )
        )
    if raw.get("big_query"):
        runs = raw["big_query"]
        parts = []
        for r in runs:
            a = r["answers"]
            shown = ", ".join(
                f"{name} x{q['count']} {q['median_s']:.2f} s (max {q['max_s']:.2f}) "
                f"{q['median_bytes'] / 1e6:.1f} MB {q['median_events']:.0f} events "
                f"statuses {q['statuses']}"
                for name, q in a.items()
            )
            parts.append(
                f"ring {r['fill']['events_stored']:,} of {r['fill']['events_sent']:,} stored "
                f"({r['fill']['event_bytes']:,.0f} B each); {r['events_sent']:,} -> "
                f"{r['events_stored']:,} ({r['kernel_drops']:,} kernel drops); {shown}; "
                f"RSS {r['rss_before'] / mib:.0f} -> {r['rss_peak'] / mib:.0f} MiB"
            )
        out.append(
            f"big query: --ring-bytes={s.bigq_ring_bytes} --memory-limit={s.bigq_memory_limit}; "
            f"`GET /?svc=bulk&limit=10000` and `GET /?txt={memory.NOTHING}&limit=10000` in turn, "
            f"back to back, while {s.bigq_rate:,.0f} small events/s go to another ring; "
            "per run: " + "; ".join(parts)
        )
    if raw.get("worst_mix"):
        runs = raw["worst_mix"]
        r0 = runs[0]
        out.append(
            f"worst mix: --memory-limit={s.memory_limit} ({r0['limit_bytes'] / mib:.0f} MiB), "
            f"ring size derived {r0['ring_bytes_default'] / mib:.1f} MiB, reserved "
            + ", ".join(f"{k} {v / mib:.0f}" for k, v in r0["reserved"].items())
            + f" MiB; {r0['keys']} services over --max-rings={s.memory_max_rings}, "
            f"{s.stuck_tails} stuck tails, {s.mix_queries} query clients (limit=10000 and a full "
            f"scan in turn) for {s.mix_seconds:g} s while {s.mix_txt_len:,}-byte events come at "
            f"{s.mix_rate:,.0f}/s; per run (rings filled first: bytes/capacity; RSS before -> "
            "peak (VmHWM); answers; 429s; sent -> stored in the mix): "
            + "; ".join(
                f"{r['fill']['ring_count']} rings {r['fill']['fill']:.0%}, "
                f"{r['rss_before'] / mib:.0f} -> {r['rss_peak'] / mib:.0f} MiB "
                f"({r['vm_hwm'] / mib:.0f}), "
                f"{sum(q['count'] for q in r['answers'].values())}, "
                f"{sum(q['refused_429'] for q in r['answers'].values())}, "
                f"{r['mix']['events_sent']:,} -> {r['mix']['events_stored']:,}"
                for r in runs
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness")
    parser.add_argument("--runs", type=int, help="repetitions of each measurement")
    parser.add_argument("--query-events", type=int, help="events in the query ring")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--sender", type=Path, default=HERE / "build" / "sender")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else Settings()
    if args.runs:
        settings = replace(settings, runs=args.runs)
    if args.query_events:
        settings = replace(settings, query_events=args.query_events)
    sections = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section {sorted(unknown)[0]!r}; known: {', '.join(SECTIONS)}")
    if not os.access(args.sender, os.X_OK):
        print(f"bench: no sender at {args.sender}; `make bench` builds it", file=sys.stderr)
        return 2
    if "ingest" in sections and not os.access(ingest.BARE_RECV_C, os.X_OK):
        print(f"bench: no {ingest.BARE_RECV_C}; `make bench` builds it", file=sys.stderr)
        return 2

    version = code_version()  # before the run: the tree may change while it runs
    with tempfile.TemporaryDirectory(prefix="logd-bench-") as tmp:
        bench = Bench(settings, args.sender, Path(tmp))
        pin(os.getpid(), bench.cores.load)
        started = time.monotonic()
        try:
            for section in SECTIONS:
                if section in sections:
                    getattr(bench, section)()
        except RuntimeError as err:
            print(f"bench: {err}", file=sys.stderr)
            return 1
    summary = report.summarise(bench.raw)
    text = report.table(summary, notes(bench, version))
    print(text)
    result = {
        "settings": asdict(settings),
        "seconds": time.monotonic() - started,
        "code": version,
        "summary": summary,
        "table": text,
        "raw": bench.raw,
    }
    args.out.write_text(json.dumps(report.jsonable(result), indent=1) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
