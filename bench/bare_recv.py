"""The reference receiver of `make bench`: the cheapest way Python can take datagrams.

A blocking `recv_into` loop into one preallocated buffer, nothing else: what any
Python UDP server pays per packet before doing any work. The driver measures its
CPU from /proc/PID/stat exactly as it measures logd's, with the same sender.

Prints `ready <port>` once bound; stops at the first 4-byte datagram (`stop`) and
then prints `{"packets": N}` (the stop datagram not counted).
"""

from __future__ import annotations

import json
import socket
import sys

STOP = b"stop"


def serve(rcvbuf: int) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), rcvbuf)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind(("127.0.0.1", 0))
    print("ready", sock.getsockname()[1], flush=True)
    buf = bytearray(65_536)
    recv_into = sock.recv_into
    packets = 0
    while True:
        if recv_into(buf) == len(STOP) and buf[:4] == STOP:
            break
        packets += 1
    sock.close()
    return packets


def main() -> None:
    rcvbuf = int(sys.argv[1]) if len(sys.argv) > 1 else 8 << 20
    print(json.dumps({"packets": serve(rcvbuf)}), flush=True)


if __name__ == "__main__":
    main()
