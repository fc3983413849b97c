"""`python -m bench.profile`: where a saturated server spends its time, per frame.

Starts a server as the saturation measurement does, loads it flat out with the
C sender, and samples it with py-spy (`pip install py-spy`; not a dependency of
logd). Prints the share of samples per source line where the time was spent
(self) and per function including what it calls (inclusive), and keeps the raw
collapsed stacks (for flamegraph tools) beside the results.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.procs import Cores, Load, LogdServer, Sender, pin

HERE = Path(__file__).parent
MiB = 1 << 20
_LINE = re.compile(r":\d+\)$")  # "func (file.py:12)" -> "func (file.py)"


def record(seconds: float, batch: int, sender: Path, out: Path, keys: int = 0) -> None:
    spy = shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("py-spy is not on PATH; install it with `pip install py-spy`")
    cores = Cores.pick()
    pin(0, cores.load)
    flags = [f"--udp-rcvbuf={4 * MiB}", f"--ring-bytes={256 * MiB}", "--max-rings=16"]
    flags += ["--replay-capacity=5000000"]
    with tempfile.TemporaryDirectory(prefix="logd-profile-") as tmp:
        server = LogdServer(Path(tmp), cpu=cores.server, flags=flags)
        load = Load(seconds=seconds + 2.0, batch=batch, keys=keys)
        running = Sender(sender, server.udp_port, server.write_secret, load, cores.load)
        try:
            time.sleep(1.0)
            args = [spy, "record", f"--pid={server.pid}", f"--duration={seconds:g}"]
            # Not paused per sample (--nonblocking): a paused server falls behind and its
            # queued frames go stale, which changes what is measured. For the same reason
            # there is no --native (it needs the pauses).
            args += ["--rate=250", "--format=raw", f"--output={out}", "--nonblocking"]
            subprocess.run(args, check=True, timeout=60)
            running.result()
        finally:
            running.stop()
            server.stop()


def summarise(raw: Path, top: int) -> str:
    """Self share per leaf line, inclusive share per function, from collapsed stacks."""
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaf[frames[-1]] += count
        for func in {_LINE.sub(")", f) for f in frames}:
            inclusive[func] += count
    if not total:
        return "no samples (was the server busy?)"
    lines = [f"{total} samples", "", "self (where the time is spent):"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in leaf.most_common(top)]
    lines += ["", "inclusive (function and what it calls):"]
    lines += [f"  {100 * n / total:5.1f}%  {func}" for func, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=1, help="events per frame")
    parser.add_argument("--keys", type=int, default=0, help="services interleaved (0: one)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sender", type=Path, default=HERE / "build" / "sender")
    parser.add_argument("--out", type=Path, default=HERE / "build" / "profile.txt")
    args = parser.parse_args()
    try:
        record(args.seconds, args.batch, args.sender, args.out, args.keys)
    except (RuntimeError, subprocess.SubprocessError) as err:
        print(f"bench.profile: {err}", file=sys.stderr)
        return 1
    print(summarise(args.out, args.top))
    print(f"\nraw stacks: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
