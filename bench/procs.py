"""Processes under measurement: a pinned `logd serve`, the C sender, and /proc readings.

CPU time comes from /proc/PID/stat (utime + stime, all threads), memory from
/proc/PID/status (VmRSS). Every process started here is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
_READY = re.compile(r"ready udp=[^ ]+:(?P<udp>\d+) http=(?P<http>\S+)")
START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Cores:
    """Where things run: the server alone on one core, all load on another."""

    server: int | None
    load: int | None

    @classmethod
    def pick(cls) -> Cores:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return cls(None, None)  # one core: nothing to separate
        return cls(cpus[0], cpus[1])


SERVER_NICE = -10  # what is measured gets most of its core even on a busy machine


def pin(pid: int, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(pid, {cpu})


def favour(pid: int) -> bool:
    """Raise `pid`'s scheduling priority (root only): other processes that land on the
    server's core then take little of it. Its CPU per frame is the same either way.

    With autogroup scheduling (Linux's default on desktops and many VMs), a nice value
    counts only within the process's session: each session's group gets an equal share
    of the core. So `pid` should lead a session of its own (start_new_session=True), and
    that group's nice is raised too."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, SERVER_NICE)
    except PermissionError:
        return False
    if os.getsid(pid) == pid:  # its own session, so its own autogroup
        # No autogroup in this kernel: the nice value above is enough.
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/autogroup").write_text(str(SERVER_NICE))
    return True


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid`, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def core_busy_seconds(cpu: int | None) -> float:
    """Non-idle time of one core (all processes), to see what else ran on the server's core."""
    if cpu is None:
        return 0.0
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            ticks = [int(v) for v in line.split()[1:]]
            return (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLK_TCK  # minus idle and iowait
    return 0.0


def udp_rx_queue(port: int) -> int:
    """Bytes waiting in the receive queue of the IPv4 UDP socket bound to `port`."""
    suffix = f":{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        cols = line.split()
        if cols[1].endswith(suffix):
            return int(cols[4].split(":")[1], 16)
    return 0


def wait_quiet(cores: Cores, *, below: float, timeout: float) -> float:
    """Wait (up to `timeout` s) until both cores are less than `below` busy over half a
    second, so that a run does not start in the middle of someone else's burst on a
    shared machine. Returns the busiest core's share in the last half second."""
    deadline = time.monotonic() + timeout
    while True:
        before = [core_busy_seconds(c) for c in (cores.server, cores.load)]
        time.sleep(0.5)
        after = [core_busy_seconds(c) for c in (cores.server, cores.load)]
        busiest = max((b - a) / 0.5 for a, b in zip(before, after, strict=True))
        if busiest < below or time.monotonic() > deadline or cores.server is None:
            return busiest


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def stop_pid(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class LogdServer:
    """A real `logd serve` on free 127.0.0.1 ports, pinned to `cpu`, with fresh secrets."""

    def __init__(self, workdir: Path, *, cpu: int | None, flags: Sequence[str]) -> None:
        self.read_secret = "bench-read-" + secrets.token_hex(16)
        self.write_secret = "bench-write-" + secrets.token_hex(16)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOGD_")}
        env |= {"LOGD_READ_SECRET": self.read_secret, "LOGD_WRITE_SECRET": self.write_secret}
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"logd-{time.monotonic_ns()}.log"
        args = [sys.executable, "-m", "logd", "serve", "--udp-addr", "127.0.0.1:0"]
        args += ["--http-addr", "127.0.0.1:0", *flags]
        with self.log_path.open("wb") as out:
            # cwd=workdir: no logdrc.yml from the repository is picked up.
            self.proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=workdir,
                start_new_session=True,  # its own autogroup: see favour()
            )
        try:
            pin(self.proc.pid, cpu)
            self.favoured = favour(self.proc.pid)
            match = wait_for(self._ready, START_TIMEOUT_S, "logd to start")
        except BaseException:
            stop_pid(self.proc, signal.SIGKILL)
            raise
        self.pid = self.proc.pid
        self.udp_port = int(match.group("udp"))
        self.http_url = match.group("http")
        # /info's uptime_s is read when the server handles the request, which a busy
        # server may delay by a second or more; with this (read while idle) it becomes
        # the wall-clock time at which the counters were read.
        self.started_wall = time.time() - self.info()["uptime_s"]

    def _ready(self) -> re.Match[str] | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"logd exited with {self.proc.returncode}:\n{self.log()}")
        return _READY.search(self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def info(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.http_url + "/info", timeout=30) as response:  # noqa: S310
            return json.loads(response.read())  # type: ignore[no-any-return]

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def stop(self) -> None:
        stop_pid(self.proc)

    def __enter__(self) -> LogdServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Load:
    """What bench/sender.c sends: frames per second (0: flat out), for how long."""

    rate: float = 0
    seconds: float = 1.0
    count: int = 0
    batch: int = 1
    txt_len: int = 100
    marker_every: int = 0
    error_every: int = 0
    svc: str = "api"
    keys: int = 0  # frames cycle over services <svc>-0 .. <svc>-<keys-1> (0: svc alone)
    origin: bool = False  # sender and seq on every frame, host and pid on every event

    def args(self) -> list[str]:
        return [
            f"--rate={self.rate:.0f}",
            f"--duration={self.seconds}",
            f"--count={self.count}",
            f"--batch={self.batch}",
            f"--txt-len={self.txt_len}",
            f"--marker-every={self.marker_every}",
            f"--error-every={self.error_every}",
            f"--svc={self.svc}",
            f"--keys={self.keys}",
            *(["--origin"] if self.origin else []),
        ]


class Sender:
    """One run of the C sender; `result()` waits for it and returns its JSON summary."""

    def __init__(self, binary: Path, port: int, secret: str, load: Load, cpu: int | None) -> None:
        args = [str(binary), f"--port={port}", *load.args()]
        if cpu is not None:
            args.append(f"--cpu={cpu}")
        env = dict(os.environ, LOGD_WRITE_SECRET=secret)  # never on the command line
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, env=env, text=True)
        self.load = load

    def finish(self) -> dict[str, Any]:
        """Stop sending now; the summary of what was sent."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.result()

    def result(self) -> dict[str, Any]:
        timeout = self.load.seconds + 60
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_pid(self.proc, signal.SIGKILL)
            raise RuntimeError(f"the sender did not finish within {timeout:g}s") from None
        if self.proc.returncode != 0:
            raise RuntimeError(f"the sender failed with exit code {self.proc.returncode}")
        return json.loads(out)  # type: ignore[no-any-return]

    def stop(self) -> None:
        stop_pid(self.proc, signal.SIGKILL)


def send(binary: Path, port: int, secret: str, load: Load, cpu: int | None) -> dict[str, Any]:
    sender = Sender(binary, port, secret, load, cpu)
    try:
        return sender.result()
    finally:
        sender.stop()


class CpuQuota:
    """A share of one core for a process, as if it ran on a host of that size: a cgroup
    whose CFS quota is `cores` of each PERIOD_US (cgroup v1's cpu controller, or v2's
    cpu.max). `CpuQuota.available()` says whether this machine lets us (root, a writable
    cpu controller); the process leaves the group when it exits, and `remove` deletes it."""

    PERIOD_US = 10_000  # short, so that a throttled process waits at most a few ms

    def __init__(self, name: str, cores: float) -> None:
        root = self.root()
        if root is None:
            raise RuntimeError("no writable cgroup cpu controller here")
        self.path = root / f"logd-bench-{os.getpid()}-{name}"
        self.path.mkdir()
        quota = max(1000, round(cores * self.PERIOD_US))
        if (self.path / "cpu.max").exists():  # v2
            (self.path / "cpu.max").write_text(f"{quota} {self.PERIOD_US}")
        else:
            (self.path / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))

    @staticmethod
    def root() -> Path | None:
        """Where groups of the cpu controller go, if this process may make them."""
        for root in (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")):
            has_v1 = (root / "cpu.cfs_quota_us").exists()
            has_v2 = (
                "cpu" in (root / "cgroup.subtree_control").read_text().split()
                if (root / "cgroup.subtree_control").exists()
                else False
            )
            if (has_v1 or has_v2) and os.access(root, os.W_OK):
                return root
        return None

    @classmethod
    def available(cls) -> bool:
        return cls.root() is not None

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        """Delete the group once its processes are gone (moving any left to the root)."""
        for pid in (self.path / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (self.path.parent / "cgroup.procs").write_text(pid)
        with contextlib.suppress(OSError):
            self.path.rmdir()
