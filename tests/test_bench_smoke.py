"""The benchmark harness keeps working: the C sender signs exactly per docs/protocol.md, and
`python -m bench.run --smoke` (tiny sizes) yields a well-formed table and results file.

No timing is asserted here; speed is what `make bench` reports.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.procs import CpuQuota
from bench.valkey_ingest import HOST_CORES

pytestmark = pytest.mark.functional

REPO = Path(__file__).resolve().parent.parent
# docs/protocol.md's test vector: secret "test-secret", signed_at 1700000000000000000.
VECTOR_FRAME = (
    "01434b5c9717979cfe362a0000cd64e3d6bcb5154dbfeae4cffe0d4f22"
    "12141a0470726f64220361706930033a0568656c6c6f"
)
# Rates and CPU shares can be 0 when a busy machine starves the server for a whole
# (tiny) window, and the RSS growth of a tiny fill can be anything: only finite.
NUMBERS = [
    "ingest.no_loss_frames_per_s",
    "ingest.saturation_frames_per_s",
    "ingest.cpu_us_per_frame",
    "ingest.drain_cpu_us_per_frame",
    "ingest.origin_drain_cpu_us_per_frame",
    "bare.cpu_us_per_packet",
    "batched.events_per_s",
    "batched.cpu_us_per_event",
    "memory.rss_per_1m",
    "memory.rss_over_payload",
]
# A timed request or a delivered line always takes some time.
LATENCIES = [
    "query.newest_100.p50_ms",
    "query.txt_1pct.p99_ms",
    "query.full_scan_txt.p50_ms",
    "query.lvl_error.p50_ms",
    "tail.p50_ms",
    "tail.p99_ms",
]


@pytest.fixture(scope="module")
def sender() -> Path:
    """Built by the Makefile rule that `make bench` uses (and the C reference receiver)."""
    subprocess.run(
        ["make", "-s", "bench/build/sender", "bench/build/bare_recv"], cwd=REPO, check=True
    )
    return REPO / "bench" / "build" / "sender"


def test_sender_signs_the_protocol_test_vector(sender: Path) -> None:
    out = subprocess.run(
        [str(sender), "--test-vector"], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == VECTOR_FRAME


def test_sender_origin_numbers_frames_and_names_the_host(sender: Path) -> None:
    """--origin: what logd.logger sends (sender and seq per frame, from 2**14 so that
    each takes 3 bytes; host and pid per event), encoded as protobuf would encode it."""
    import os
    import socket

    from logd._pb.logd_pb2 import Cmd
    from logd.wire import HEADER_LEN

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        env = {**os.environ, "LOGD_WRITE_SECRET": "bench-smoke-secret"}
        args = [str(sender), f"--port={rx.getsockname()[1]}", "--count=3", "--batch=2", "--origin"]
        subprocess.run(args, env=env, check=True, capture_output=True)
        payloads = [rx.recv(65_536)[HEADER_LEN:] for _ in range(3)]
    finally:
        rx.close()
    cmds = [Cmd.FromString(p) for p in payloads]
    assert [c.SerializeToString() for c in cmds] == payloads  # field order, shortest varints
    assert [c.seq for c in cmds] == [16384, 16385, 16386]
    assert len({c.sender for c in cmds}) == 1
    assert len(cmds[0].sender) == 8
    assert {(m.host, m.pid > 0) for c in cmds for m in c.batch} == {
        ("ip-10-0-12-34.ec2.internal", True)
    }


@pytest.mark.timeout(240)
def test_smoke_run_writes_well_formed_results(sender: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", f"--sender={sender}", f"--out={out}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert run.returncode == 0, run.stderr
    results = json.loads(out.read_text())
    summary = results["summary"]
    for key in NUMBERS + LATENCIES:
        assert isinstance(summary[key], float), key
        assert math.isfinite(summary[key]), key
    for key in LATENCIES:
        assert summary[key] > 0, key
    assert "ingest.ratio_to_bare" in summary
    for run_ in results["raw"]["saturation"] + results["raw"]["batched"]:
        assert "bad_mac" not in run_["rejected"]
    assert "ingest.origin_ratio" in summary
    raw = results["raw"]
    for origin, padded in zip(raw["logd_drain_origin"], raw["logd_drain_padded"], strict=True):
        # The same bytes (every seq takes 3), but for the event time: its nanoseconds are
        # a varint of 4 bytes in the first 27 % of a second and 5 after, and a short run
        # sends all its frames within one part of a second.
        assert abs(origin["bytes_per_frame"] - padded["bytes_per_frame"]) <= 1
    for run_ in raw["logd_drain"] + raw["logd_drain_origin"] + raw["logd_drain_padded"]:
        # kept busy: nothing queued went stale
        assert run_["stored"] == run_["received"] == run_["sent"]
    logger = summary.get("logger.call_us")
    assert isinstance(logger, float | str)
    assert results["table"] in run.stdout
    assert "| per-frame CPU / bare recv loop, both kept busy |" in run.stdout


def test_smoke_run_frames_are_all_accepted(sender: Path, tmp_path: Path) -> None:
    """Every frame of the sender passes logd's checks, and the queries see what it sent."""
    out = tmp_path / "results.json"
    args = ["--smoke", "--only=query", f"--sender={sender}", f"--out={out}"]
    subprocess.run(
        [sys.executable, "-m", "bench.run", *args],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=60,
    )
    run = json.loads(out.read_text())["raw"]["query"][0]
    assert run["fill"]["events_stored"] == run["fill"]["events_sent"]
    assert {name: q["as_expected"] for name, q in run["queries"].items()} == dict.fromkeys(
        run["queries"], True
    )


# The memory budget's rows (issue 13): finite numbers, every answer a 200 and the stuck tails
# really stuck (their queues dropped events). Loss and RSS are what `make bench` reports.
MEMORY_ROWS = [
    "stuck_tails.loss",
    "stuck_tails.rss_peak_share",
    "stuck_tails.rss_growth",
    "stuck_tails.tail_dropped",
    "big_query.loss",
    "big_query.status_5xx",
    "big_query.limit_10000_s",
    "big_query.limit_10000_bytes",
    "big_query.full_scan_s",
    "worst_mix.rss_peak_share",
    "worst_mix.rss_peak",
    "worst_mix.ring_fill",
    "worst_mix.status_5xx",
]


@pytest.mark.timeout(90)
def test_smoke_memory_rows(sender: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    args = ["--smoke", "--only=memory", f"--sender={sender}", f"--out={out}"]
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert run.returncode == 0, run.stderr
    results = json.loads(out.read_text())
    summary = results["summary"]
    for key in MEMORY_ROWS:
        assert isinstance(summary[key], float), key
        assert math.isfinite(summary[key]), key
    assert summary["big_query.status_5xx"] == summary["worst_mix.status_5xx"] == 0
    raw = results["raw"]
    (stuck,) = raw["stuck_tails"]
    assert stuck["tails"] == 2
    assert stuck["tail_dropped"] > 0  # they never read
    assert 0 < stuck["rss_before"] <= stuck["rss_peak"]
    (big,) = raw["big_query"]
    assert big["fill"]["events_stored"] == big["fill"]["events_sent"]
    assert {q["statuses"][0] for q in big["answers"].values()} == {200}
    (mix,) = raw["worst_mix"]
    assert mix["fill"]["ring_count"] == 3  # --max-rings=2 and the overflow ring
    assert mix["fill"]["fill"] > 0.5
    assert sum(q["count"] for q in mix["answers"].values()) > 0
    assert "| worst mix: peak RSS (worst run) |" in run.stdout


@pytest.mark.timeout(120)
def test_valkey_bench_writes_well_formed_results(sender: Path, tmp_path: Path) -> None:
    """`python -m bench.valkey_ingest` (one short step): one and two nodes on a real
    redis-server, each step with its rates and CPU per event; where this machine lets a
    cgroup hold a process to a share of a core, the same again with each node and
    redis-server so held, and no group is left behind."""
    out = tmp_path / "valkey.json"
    args = ["--rates=100", "--seconds=1", f"--out={out}"]
    root = CpuQuota.root()
    groups = set(root.glob("logd-bench-*")) if root else set()
    run = subprocess.run(
        [sys.executable, "-m", "bench.valkey_ingest", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert run.returncode == 0, run.stderr
    results = json.loads(out.read_text())
    held = CpuQuota.available()
    for run_name in ("node", "node_hosts") if held else ("node",):
        for count in (1, 2):
            (step,) = results[f"{count}_{run_name}"]["steps"]
            assert len(step) == count
            for node in step:
                assert node["offered_events_per_s"] == 1600
                assert node["accepted_events_per_s"] > 0
                for key in ("node", "redis", "sender"):
                    assert math.isfinite(node[f"{key}_cpu_us_per_event"]), key
        assert results[f"1_{run_name}"]["highest_step_held"] is True  # one slow step: a floor
    assert "two_nodes_over_one" in results
    assert "two nodes / one node, every process on this machine's cores:" in run.stdout
    if held:
        assert results["host_cores"] == HOST_CORES
        assert "two_nodes_over_one_hosts" in results
        assert f"each node and redis-server held to {HOST_CORES:g} core:" in run.stdout
        assert root is not None
        assert set(root.glob("logd-bench-*")) == groups  # each run's groups removed
    else:
        assert "no writable cgroup cpu controller" in run.stdout
