"""Logger cost: the time an app thread spends in `log.info()`, and the events/s one
Python process gets to the server through `logd.logger.Logger`.

It runs in its own process on the load core (as an app would), sending to the
server under test; the server's store count says how many events arrived.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.procs import Cores, LogdServer, pin, stop_pid

CHUNK = 500  # calls between flushes when timing calls: below any sane queue bound


def available() -> bool:
    return importlib.util.find_spec("logd.logger") is not None


def _emit(port: int, calls: int) -> dict[str, Any]:
    # Imported by name: the bench must also run (and type-check) before the logger exists.
    logger = importlib.import_module("logd.logger")
    # As an app runs it: every frame with its sender and seq, every event with host and pid.
    log = logger.Logger(
        host="127.0.0.1", port=port, env="bench", svc="logger", fn="emit", origin=True
    )
    try:
        # 1. Cost per call, with the queue never full: flushed between chunks, untimed.
        # Wall time (what the app waits, the sender thread's turns at the GIL included)
        # and the app thread's own CPU, which other processes on the machine cannot inflate.
        in_calls = cpu_in_calls = 0.0
        for start in range(0, calls, CHUNK):
            t0, c0 = time.perf_counter(), time.thread_time()
            for i in range(start, min(calls, start + CHUNK)):
                log.info("charged %s for %d cents", "user-42", i, request_id="r-1")
            in_calls += time.perf_counter() - t0
            cpu_in_calls += time.thread_time() - c0
            log.flush()
        timed = log.stats()
        # 2. Throughput: a tight loop, then wait until everything queued is sent.
        t0 = time.perf_counter()
        for i in range(calls):
            log.info("charged %s for %d cents", "user-42", i, request_id="r-1")
        log.flush()
        elapsed = time.perf_counter() - t0
        after = log.stats()
    finally:
        log.close()
    sent = after.sent - timed.sent
    return {
        "calls": calls,
        "call_us": 1e6 * in_calls / calls,
        "call_cpu_us": 1e6 * cpu_in_calls / calls,
        "dropped_while_timing": timed.dropped,
        "events_per_s": sent / elapsed,
        "sent": timed.sent + sent,
        "dropped": after.dropped,
        "frames": after.frames,
    }


def main() -> None:
    """`python -m bench.logger_cost PORT CALLS` (secret in LOGD_WRITE_SECRET)."""
    print(json.dumps(_emit(int(sys.argv[1]), int(sys.argv[2]))), flush=True)


def measure(server: LogdServer, cores: Cores, *, calls: int) -> dict[str, Any]:
    before = server.info()["store"]["writes"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGD_")}
    env["LOGD_WRITE_SECRET"] = server.write_secret
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.logger_cost", str(server.udp_port), str(calls)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).parent.parent,
    )
    try:
        pin(proc.pid, cores.load)
        out, _ = proc.communicate(timeout=300)
    finally:
        stop_pid(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"the logger run failed with exit code {proc.returncode}")
    result: dict[str, Any] = json.loads(out)
    # Every event the logger sent should arrive; if some never do, say how many did.
    deadline = time.monotonic() + 5
    while (stored := server.info()["store"]["writes"] - before) < result["sent"]:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    result["stored"] = stored
    return result


if __name__ == "__main__":
    main()
