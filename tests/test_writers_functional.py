"""Loss accounting end to end: hand-built frames with chosen seqs over real UDP to a real
`logd serve`; /info, /metrics and `logd info` show exactly what the rule counts."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from logd._pb.logd_pb2 import Cmd, Msg
from logd.events import format_time
from support import LogdProcess, start_logd, wait_for

pytestmark = pytest.mark.functional

A, B = bytes.fromhex("a1a2a3a4a5a6a7a8"), bytes.fromhex("b1b2b3b4b5b6b7b8")


def send(
    proc: LogdProcess, sender: bytes, seq: int, host: str, *, secret: str | None = None
) -> None:
    msg = Msg(env="prod", svc="api", txt=f"{sender.hex()} {seq}", host=host, pid=7)
    proc.send_frame(proc.frame(Cmd(sender=sender, seq=seq, msg=msg), secret=secret))


def test_info_metrics_and_the_cli_count_lost_frames_exactly(tmp_path: Path) -> None:
    proc = start_logd(tmp_path)
    try:
        started = time.time_ns()
        for seq in (1, 2, 3, 6, 5, 10):  # 4 and 5 lost at 6, 5 came late, 7-9 lost at 10
            send(proc, A, seq, "web-1")
        for seq in (1, 2, 3):
            send(proc, B, seq, "web-2")
        proc.write(Msg(txt="no sender: not counted"))
        send(proc, b"short", 4, "web-3")  # not 8 bytes: malformed, stored
        send(proc, B, 0, "web-2")  # seq 0: malformed, stored
        send(proc, A, 99, "web-1", secret="not-the-write-secret")  # refused: counts nothing
        wait_for(lambda: proc.info()["udp"]["received"] == 13)
        info = proc.info()
        assert info["udp"]["events"] == 12
        writers = info["udp"]["writers"]
        seen = [w.pop("last_seen") for w in writers["most_lost"]]
        assert writers == {
            "tracked": 2, "capacity": 4096, "frames": 9, "lost": 4, "forgotten": 0,
            "malformed": 2,
            "most_lost": [
                {"sender": A.hex(), "host": "web-1", "svc": "api", "frames": 6, "lost": 4},
                {"sender": B.hex(), "host": "web-2", "svc": "api", "frames": 3, "lost": 0},
            ],
        }  # fmt: skip
        assert all(format_time(started) <= t <= format_time(time.time_ns()) for t in seen)

        status, text, _ = proc.get("/metrics", secret="")
        assert status == 200
        lines = set(text.splitlines())
        assert {"logd_writers 2", "logd_writer_frames_total 9",
                "logd_writer_frames_lost_total 4"} <= lines  # fmt: skip
        assert "# TYPE logd_writer_frames_lost_total gauge" in lines  # a late frame takes off

        cli = subprocess.run(
            [sys.executable, "-m", "logd", "info", "--host", proc.http_url],
            capture_output=True, text=True, timeout=30, check=True, env=proc.env,
        )  # fmt: skip
        out = cli.stdout.splitlines()
        assert "writers  2 tracked, frames 9, lost 4, forgotten 0, malformed 2" in out
        assert f"  writer {A.hex()} web-1/api: lost 4 of 10, last seen {seen[0]}" in out
        assert not any(B.hex() in line for line in out)  # only writers that lost frames

        # The events carry their origin, and host= finds them.
        found = proc.query(host="web-2")
        assert [(e["txt"], e["host"], e["pid"]) for e in found] == [
            (f"{B.hex()} 0", "web-2", 7), *((f"{B.hex()} {s}", "web-2", 7) for s in (3, 2, 1)),
        ]  # fmt: skip
    finally:
        proc.stop()
