"""One memory budget: the parts and their sum, the derived ring size, the refusal with the
numbers, the machine's memory from the cgroup or MemTotal, and a real server that shows it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from logd._pb.logd_pb2 import Msg
from logd.errors import ConfigError
from logd.server.budget import (
    FIXED_BYTES,
    REPLAY_ENTRY_BYTES,
    RING_DEFAULT_MAX,
    RING_SLACK,
    TAIL_SNDBUF,
    machine_memory,
    plan,
    rss_bytes,
)
from logd.server.config import Config
from support import LogdProcess, start_logd, wait_for

MiB = 1024 * 1024
GiB = 1024 * MiB


def config(tmp_path: Path, **flags: str) -> Config:
    return Config.load(file=None, environ={}, argv=flags, cwd=tmp_path)


def test_the_parts_sum_to_what_the_limit_must_hold(tmp_path: Path) -> None:
    c = config(tmp_path, memory_limit="4GiB", ring_bytes="2MiB", max_rings="100",
               max_tails="10", tail_buffer_bytes="1MiB", query_max_bytes="4MiB",
               max_queries="3", replay_capacity="1000")  # fmt: skip
    b = plan(c, engine="c")
    assert (b.limit, b.source, b.ring_bytes) == (4 * GiB, "LOGD_MEMORY_LIMIT", 2 * MiB)
    assert b.parts() == {
        "rings": int(101 * 2 * MiB * RING_SLACK),  # every ring slot and the overflow ring
        "tails": 10 * (2 * MiB + TAIL_SNDBUF),  # queue, chunk in flight, kernel buffer
        "queries": 3 * 2 * 4 * MiB,  # the events found and the part being rendered
        "replay_guard": 1000 * REPLAY_ENTRY_BYTES["c"],
        "fixed": FIXED_BYTES,
    }


def test_per_ring_sizes_count_at_their_worst(tmp_path: Path) -> None:
    (tmp_path / "logdrc.yml").write_text(
        "rings:\n  prod/api: 32MiB\n  'dev/*': 8MiB\n  _overflow: 4MiB\n"
    )
    c = config(tmp_path, memory_limit="4GiB", ring_bytes="2MiB", max_rings="10")
    # prod/api is one ring; any of the other 9 slots may be a dev/* ring of 8MiB.
    assert plan(c, engine="c").rings == int((32 * MiB + 9 * 8 * MiB + 4 * MiB) * RING_SLACK)


def test_the_default_ring_size_is_derived_to_fit(tmp_path: Path) -> None:
    b = plan(config(tmp_path, memory_limit="1GiB"), engine="c")
    assert 256 * 1024 <= b.ring_bytes < RING_DEFAULT_MAX
    assert sum(b.parts().values()) <= b.limit
    # It is the largest that fits: one MiB more per ring does not.
    with pytest.raises(ConfigError):
        plan(config(tmp_path, memory_limit="1GiB", ring_bytes=str(b.ring_bytes + MiB)), engine="c")
    few = plan(config(tmp_path, memory_limit="1GiB", max_rings="8"), engine="c")
    assert few.ring_bytes == RING_DEFAULT_MAX  # the cap, when it fits


def test_a_configuration_that_cannot_fit_is_refused_with_the_numbers(tmp_path: Path) -> None:
    c = config(tmp_path, memory_limit="1GiB", ring_bytes="64MiB")
    with pytest.raises(ConfigError) as err:
        plan(c, engine="c")
    sentence = str(err.value)
    assert sentence.startswith("the configuration needs 72")
    assert "the memory limit is 1024MiB (LOGD_MEMORY_LIMIT)" in sentence
    assert "rings 72160MiB (1024 + 1 of up to 64MiB)" in sentence  # with RING_SLACK
    assert "lower LOGD_MAX_RINGS" in sentence
    assert "\n" not in sentence


def test_the_limit_defaults_to_a_share_of_the_cgroup_or_the_machine(tmp_path: Path) -> None:
    cgroup, meminfo, own = tmp_path / "cg", tmp_path / "meminfo", tmp_path / "self-cgroup"
    meminfo.write_text("MemTotal:       2048000 kB\nMemFree: 1 kB\n")
    unit = cgroup / "system.slice" / "logd.service"
    unit.mkdir(parents=True)
    own.write_text("0::/system.slice/logd.service\n")
    (unit / "memory.max").write_text("max\n")  # no cgroup limit: the machine's
    assert machine_memory(cgroup, meminfo, own) == (2048000 * 1024, "MemTotal")
    (unit / "memory.max").write_text(f"{1536 * MiB}\n")  # systemd's MemoryMax=75%
    (cgroup / "system.slice" / "memory.max").write_text(f"{1800 * MiB}\n")  # a looser parent
    total = machine_memory(cgroup, meminfo, own)
    assert total == (1536 * MiB, f"cgroup {unit / 'memory.max'}")
    b = plan(config(tmp_path, max_rings="16"), engine="python", memory=total)
    assert b.limit == int(1536 * MiB * 0.7)
    assert b.source.startswith("70% of cgroup")
    # cgroup v1, as on this machine: memory:/<path> and memory.limit_in_bytes.
    v1 = cgroup / "memory" / "job"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{512 * MiB}\n")
    (cgroup / "memory" / "memory.limit_in_bytes").write_text(f"{1 << 62}\n")  # no limit
    own.write_text("4:memory:/job\n1:cpu:/\n")
    assert machine_memory(cgroup, meminfo, own) == (512 * MiB, f"cgroup {v1}/memory.limit_in_bytes")


def test_rss_is_read_from_proc() -> None:
    rss = rss_bytes()
    assert rss is not None
    assert rss > 10 * MiB


def test_serve_refuses_a_budget_it_cannot_keep_in_one_sentence(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "logd", "serve", "--memory-limit", "256MiB",
         "--ring-bytes", "64MiB", "--udp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
             "LOGD_READ_SECRET": "r" * 40, "LOGD_WRITE_SECRET": "w" * 40},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("logd: the configuration needs ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_info_and_metrics_show_the_budget(logd: LogdProcess) -> None:
    memory = logd.info()["memory"]
    assert memory["limit_bytes"] >= sum(memory["reserved"].values())
    assert set(memory["used"]) == {"rings", "tails", "queries", "replay_guard"}
    assert memory["rss_bytes"] < memory["limit_bytes"]
    status, text, _ = logd.get("/metrics", secret="")
    assert status == 200
    assert f"logd_memory_limit_bytes {memory['limit_bytes']}" in text
    assert 'logd_memory_reserved_bytes{part="rings"}' in text
    assert 'logd_memory_used_bytes{part="tails"} 0' in text


def test_a_restart_with_a_smaller_budget_loads_only_what_fits(tmp_path: Path) -> None:
    """The data dir holds more than the new budget's ring: only the newest part comes back."""
    data = tmp_path / "data"
    common = ["--data-dir", str(data), "--max-rings", "2", "--max-tails", "2",
              "--max-queries", "1", "--replay-capacity", "1000"]  # fmt: skip
    big = start_logd(tmp_path, "--memory-limit", "1GiB", *common)
    try:
        for start in range(0, 2000, 10):  # ~8 MB into one ring
            big.write(*(Msg(env="p", svc="a", txt=f"{i:05d} " + "x" * 4000)
                        for i in range(start, start + 10)))  # fmt: skip
            wait_for(lambda n=start + 10: big.info()["store"]["writes"] >= n)
        assert big.info()["store"]["rings"][0]["bytes"] > 7 * MiB
    finally:
        assert big.stop() == 0
    small = start_logd(tmp_path, "--memory-limit", "128MiB", *common)
    try:
        info = small.info()
        (ring,) = info["store"]["rings"]
        assert ring["capacity_bytes"] == info["memory"]["ring_bytes_default"] < 7 * MiB
        assert ring["bytes"] <= ring["capacity_bytes"]
        assert info["memory"]["used"]["rings"] <= info["memory"]["reserved"]["rings"]
        newest = small.query(limit="1")[0]["txt"]
        assert newest.startswith("01999 ")  # the newest events are the ones kept
    finally:
        small.stop()
