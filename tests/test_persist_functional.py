"""Durability end to end: a real `logd serve --data-dir`, stopped, killed and restarted."""

from __future__ import annotations

import json
import resource
import signal
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from logd._pb.logd_pb2 import Msg
from logd.server.store.segments import HEAD, MAGIC, RingId, encode, list_segments
from support import LogdProcess, start_logd, wait_for

pytestmark = pytest.mark.functional

KEYS = [("prod", "api"), ("../x", "日本"), ("", "")]


def write_events(proc: LogdProcess, n: int, *, start: int = 0, size: int = 0) -> None:
    """`n` events over three rings, ten per frame, each with its own time."""
    base = time.time_ns()
    msgs = []
    for i in range(start, start + n):
        env, svc = KEYS[i % len(KEYS)]
        msg = Msg(env=env, svc=svc, txt=f"event {i} " + "x" * size)
        msg.t.FromNanoseconds(base + i * 1000)
        msgs.append(msg)
    for first in range(0, n, 10):
        proc.write(*msgs[first : first + 10])
    wait_for(lambda: proc.info()["store"]["writes"] == start + n)


def persistence(proc: LogdProcess) -> dict[str, Any]:
    return proc.info()["persistence"]  # type: ignore[no-any-return]


def everything(proc: LogdProcess) -> list[dict[str, Any]]:
    """Every event, but for its id: a restart gives the loaded events new ids (above every
    id of the run before; the disk does not keep them yet)."""
    return [{k: v for k, v in e.items() if k != "id"} for e in proc.query(limit="10000")]


def test_sigterm_persists_everything_and_a_restart_loads_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # No periodic flush within the test: only the flush on SIGTERM can save the events.
    proc = start_logd(tmp_path, "--data-dir", str(data), "--flush-interval", "3600")
    write_events(proc, 300)
    before = everything(proc)
    assert persistence(proc)["written_events"] == 0
    assert proc.stop() == 0
    again = start_logd(tmp_path, "--data-dir", str(data))
    try:
        assert everything(again) == before
        assert persistence(again)["loaded_events"] == 300
    finally:
        again.stop()


def test_a_damaged_record_costs_only_itself_at_restart(tmp_path: Path) -> None:
    """A flipped length bit mid-segment, a zeroed block, and a checksummed record that is
    no event: each is skipped and counted once, everything else loads and is queried."""
    data = tmp_path / "data"
    proc = start_logd(tmp_path, "--data-dir", str(data), "--flush-interval", "3600")
    for i in range(30):
        proc.write(Msg(env="prod", svc="api", txt=f"event {i:02d} " + "y" * 200))
    wait_for(lambda: proc.info()["store"]["writes"] == 30)
    assert proc.stop() == 0
    [ring_dir] = [d for d in data.iterdir() if d.is_dir()]
    [(_seq, path)] = list_segments(ring_dir)
    blob = bytearray(path.read_bytes())
    starts, pos = [], len(MAGIC)  # where each record starts, the ring's header first
    while pos < len(blob):
        starts.append(pos)
        pos += HEAD.size + HEAD.unpack_from(blob, pos)[1]
    starts = starts[1:]
    assert len(starts) == 30
    blob[starts[5] + 4] ^= 0x40  # a length bit of record 5
    blob[starts[12] + 30 : starts[12] + 130] = bytes(100)  # zeros inside record 12
    bogus = encode([(time.time_ns(), 3, b"\xff\xff\xff", 1)])
    path.write_bytes(bytes(blob) + bogus)
    again = start_logd(tmp_path, "--data-dir", str(data))
    try:
        texts = [e["txt"][:8] for e in everything(again)]
        assert texts == [f"event {i:02d}"[:8] for i in reversed(range(30)) if i not in (5, 12)]
        assert persistence(again)["corrupt_records_skipped"] == 3
        assert persistence(again)["loaded_events"] == 28
        assert again.query(txt="event 2")[0]["txt"].startswith("event 29")
    finally:
        again.stop()


def test_without_data_dir_nothing_is_persisted(tmp_path: Path) -> None:
    proc = start_logd(tmp_path)
    try:
        write_events(proc, 10)
        assert persistence(proc) is None
    finally:
        proc.stop()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".log")) == ["home"]


def test_sigkill_after_a_flush_loses_nothing_but_a_torn_write(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = start_logd(tmp_path, "--data-dir", str(data), "--flush-interval", "0.1")
    write_events(proc, 300)
    wait_for(lambda: persistence(proc)["written_events"] == 300)
    before = everything(proc)
    proc.stop(signal.SIGKILL)
    # A crash in the middle of the next write: half a record at the end of a segment.
    ring_dir = next(p for p in data.iterdir() if p.name.startswith("prod.api."))
    _seq, newest = list_segments(ring_dir)[-1]
    with newest.open("ab") as f:
        f.write(newest.read_bytes()[-40:-5])
    again = start_logd(tmp_path, "--data-dir", str(data))
    try:
        assert everything(again) == before
        assert persistence(again)["corrupt_records_skipped"] == 1
        assert "skipped damaged records" in again.log()
    finally:
        again.stop()


def test_unwritable_data_dir_keeps_serving_reports_and_recovers(tmp_path: Path) -> None:
    # Tests run as root here, and root writes through chmod 0500. A data dir whose parent
    # is a regular file fails for root too (ENOTDIR), at load and at every flush.
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    data = blocker / "data"
    proc = start_logd(tmp_path, "--data-dir", str(data), "--flush-interval", "0.1")
    try:
        write_events(proc, 30)
        wait_for(lambda: persistence(proc)["errors"] >= 3)
        state = persistence(proc)
        assert (state["failing"], state["pending_events"]) == (True, 30)
        assert state["last_error"].startswith("Not a directory")
        assert len(everything(proc)) == 30  # still serving from memory
        assert proc.log().count("cannot persist") == 1  # logged once, then counted
        blocker.unlink()
        blocker.mkdir()
        wait_for(lambda: not persistence(proc)["failing"])
        assert persistence(proc)["pending_events"] == 0
        before = everything(proc)
    finally:
        proc.stop()
    again = start_logd(tmp_path, "--data-dir", str(data))
    try:
        assert everything(again) == before
    finally:
        again.stop()


def test_full_disk_keeps_serving_and_rewrites_the_torn_batch(tmp_path: Path) -> None:
    # A real write failure part-way through a batch: RLIMIT_FSIZE on the logd process makes
    # writes past 256 KiB fail with EFBIG (Python ignores SIGXFSZ), as a full disk would.
    data = tmp_path / "data"
    proc = start_logd(tmp_path, "--data-dir", str(data), "--flush-interval", "0.1")
    try:
        _soft, hard = resource.prlimit(proc.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(proc.proc.pid, resource.RLIMIT_FSIZE, (256 * 1024, hard))
        write_events(proc, 180, size=5000)  # 300 KB per ring
        wait_for(lambda: persistence(proc)["errors"] >= 1)
        assert "File too large" in persistence(proc)["last_error"]
        assert len(everything(proc)) == 180
        resource.prlimit(proc.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
        write_events(proc, 30, start=180)
        wait_for(lambda: persistence(proc)["pending_events"] == 0)
        assert persistence(proc)["written_events"] == 210  # each event once
        before = everything(proc)
    finally:
        proc.stop()
    again = start_logd(tmp_path, "--data-dir", str(data))
    try:
        assert everything(again) == before
        assert persistence(again)["corrupt_records_skipped"] == 0  # the torn part was cut off
    finally:
        again.stop()


def test_a_restart_gives_events_back_their_ids(tmp_path: Path) -> None:
    """Readers resume by id (after=, Last-Event-ID, before=): the disk keeps each event's id,
    and new events go on above them."""
    data = tmp_path / "data"
    proc = start_logd(tmp_path, "--data-dir", str(data))
    now = time.time_ns()
    for i, svc in enumerate(("api", "web", "api")):  # times apart: one order by time and id
        msg = Msg(env="prod", svc=svc, txt=svc)
        msg.t.FromNanoseconds(now + i * 1_000_000)
        proc.write(msg)
        wait_for(lambda n=i + 1: proc.info()["store"]["writes"] == n)
    wait_for(lambda: proc.info()["store"]["writes"] == 3)
    before = proc.query()
    assert proc.stop() == 0
    again = start_logd(tmp_path, "--data-dir", str(data))
    try:
        assert again.query() == before  # ids included
        again.write(Msg(env="prod", svc="api", txt="new"))
        newest = wait_for(lambda: (q := again.query(limit="1")) and q[0]["txt"] == "new" and q)
        assert int(newest[0]["id"]) > max(int(e["id"]) for e in before)
        status, body, _ = again.get("/", {"before": before[0]["id"]})
        assert status == 200
        assert body == before[1:]
    finally:
        again.stop()


def test_a_data_dir_from_before_ids_still_loads(tmp_path: Path) -> None:
    """A LOGDSEG1 segment (no id field): its events load and get new, increasing ids."""
    ring_dir = tmp_path / "data" / RingId("prod", "old").dir_name()
    ring_dir.mkdir(parents=True)

    def record(t_ns: int, data: bytes) -> bytes:  # crc | length | t_ns | lvl | data
        packed = struct.pack("<Iqi", len(data), t_ns, 3)
        return struct.pack("<I", zlib.crc32(data, zlib.crc32(packed))) + packed + data

    name = json.dumps({"env": "prod", "svc": "old"}).encode()
    now = time.time_ns()
    (ring_dir / "000000000001.seg").write_bytes(
        b"LOGDSEG1" + record(0, name) + b"".join(
            record(now + i, Msg(env="prod", svc="old", txt=f"v1 {i}").SerializeToString())
            for i in range(3)
        )
    )  # fmt: skip
    proc = start_logd(tmp_path, "--data-dir", str(tmp_path / "data"))
    try:
        events = proc.query()
        assert [e["txt"] for e in events] == ["v1 2", "v1 1", "v1 0"]
        ids = [int(e["id"]) for e in events]
        assert ids == sorted(ids, reverse=True)
        assert len(set(ids)) == 3
    finally:
        proc.stop()
