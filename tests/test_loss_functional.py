"""Loss accounting end to end: a real Logger -> a UDP relay on 127.0.0.1 that discards
chosen frames and delivers one late -> a real `logd serve`, whose /info `udp.writers`
must count exactly the frames that never arrived (a late frame that fills a gap is not
lost)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from logd._pb.logd_pb2 import Cmd
from logd.logger import Logger
from logd.wire import frame_payload
from support import WRITE_SECRET, LogdProcess, wait_for

pytestmark = pytest.mark.functional

DROPPED = {3, 7, 8}
LATE, AFTER = 5, 10  # frame 5 is held back and delivered right after frame 10


class LossyRelay:
    """Forwards datagrams to `target`, but for the WRITE frames whose seq is in DROPPED
    (discarded) and LATE (held until AFTER has gone through)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.target = target
        self.forwarded: list[int] = []
        self.discarded: list[int] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        held: bytes | None = None
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        while True:
            try:
                frame = self.sock.recv(65_536)
            except OSError:
                out.close()
                return
            seq = Cmd.FromString(frame_payload(frame)).seq
            if seq in DROPPED:
                self.discarded.append(seq)
                continue
            if seq == LATE:
                held = frame
                continue
            out.sendto(frame, self.target)
            self.forwarded.append(seq)
            if seq == AFTER and held is not None:
                out.sendto(held, self.target)
                self.forwarded.append(LATE)

    def close(self) -> None:
        self.sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def relay(logd: LogdProcess) -> Iterator[LossyRelay]:
    r = LossyRelay(logd.udp_addr)
    yield r
    r.close()


def test_writers_count_exactly_the_frames_lost_on_the_way(
    logd: LogdProcess, relay: LossyRelay
) -> None:
    log = Logger(port=relay.port, write_secret=WRITE_SECRET, env="test", svc="lossy")
    for i in range(1, 13):
        log.info("frame %d", i)
        assert log.flush()  # one event per frame: frame i carries event i
    wait_for(lambda: len(relay.forwarded) == 9)
    assert relay.forwarded == [1, 2, 4, 6, 9, 10, 5, 11, 12]
    assert sorted(relay.discarded) == sorted(DROPPED)

    stored = wait_for(lambda: len(logd.query(svc="lossy")) == 9 and logd.query(svc="lossy"))
    assert sorted(int(e["txt"].split()[1]) for e in stored) == [1, 2, 4, 5, 6, 9, 10, 11, 12]
    writers = logd.info()["udp"]["writers"]
    assert (writers["frames"], writers["lost"], writers["tracked"]) == (9, 3, 1)
    [worst] = writers["most_lost"]
    assert worst["sender"] == log._sender.sender_id.hex()
    assert (worst["host"], worst["svc"], worst["frames"], worst["lost"]) == (
        socket.gethostname(),
        "lossy",
        9,
        3,
    )
    metrics = logd.get("/metrics")[1]
    assert "logd_writer_frames_lost_total 3" in metrics.splitlines()
    log.close()
