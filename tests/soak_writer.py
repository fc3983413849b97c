"""Soak load: send signed WRITE frames to logd as fast as allowed for a while.

Run as a separate process so the test's readers do not share its GIL:
    python soak_writer.py HOST PORT WRITE_SECRET SECONDS
Prints the number of datagrams sent.
"""

from __future__ import annotations

import socket
import sys
import time

from logd._pb.logd_pb2 import INFO, Cmd, Msg
from logd.wire import Signer


def main() -> None:
    host, port, secret, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    signer = Signer(secret.encode())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payloads = [
        Cmd(
            msg=Msg(env="soak", svc=f"svc-{i % 4}", lvl=INFO, txt=f"soak event {i} " + "x" * 80)
        ).SerializeToString()
        for i in range(1000)
    ]
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for payload in payloads[:100] if sent % 1000 else payloads:
            sock.sendto(signer.sign(payload, time.time_ns()), (host, port))
            sent += 1
        time.sleep(0)  # let the kernel breathe; still well above 10k/s
    print(sent)


if __name__ == "__main__":
    main()
