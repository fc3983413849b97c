"""PING a logd server over UDP (docs/protocol.md, `PING`): one signed frame out, and the
round trip of the first answer that is a PONG signed with the same key.

Anything else that arrives (a stray or forged datagram, a PONG under another key) is
ignored until the deadline: only a valid PONG counts.
"""

from __future__ import annotations

import socket
import time

from logd.errors import ClientError
from logd.wire import HEADER_LEN, PING_PAYLOAD, PONG_PAYLOAD, VERSION, Signer, frame_key_id


def is_pong(frame: bytes, signer: Signer) -> bool:
    return (
        len(frame) >= HEADER_LEN
        and frame[0] == VERSION
        and frame_key_id(frame) == signer.key_id
        and frame[HEADER_LEN:] == PONG_PAYLOAD
        and signer.verify(frame)
    )


def ping_once(target: tuple[str, int], secret: bytes, timeout: float) -> tuple[float, bytes]:
    """(round trip in seconds, key_id) of a valid PONG from `target`, or ClientError."""
    signer = Signer(secret)
    where = f"udp {target[0]}:{target[1]}"
    try:
        family, _, _, _, addr = socket.getaddrinfo(*target, type=socket.SOCK_DGRAM)[0]
    except OSError:
        raise ClientError(f"cannot resolve {target[0]}; check LOGD_HOST") from None
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            # Connected: the kernel drops datagrams from other addresses and reports an
            # ICMP "port unreachable" as ConnectionRefusedError.
            sock.connect(addr)
            started = time.perf_counter()
            sock.send(signer.sign(PING_PAYLOAD, time.time_ns()))
            deadline = started + timeout
            while (left := deadline - time.perf_counter()) > 0:
                sock.settimeout(left)
                try:
                    answer = sock.recv(2048)
                except TimeoutError:
                    break
                if is_pong(answer, signer):
                    return time.perf_counter() - started, signer.key_id
        except ConnectionRefusedError:
            raise ClientError(f"nothing listens on {where} (connection refused)") from None
        except OSError as err:
            raise ClientError(f"cannot ping {where} ({err.strerror or err})") from None
    raise ClientError(
        f"no valid PONG from {where} within {timeout:g}s: is logd running there, "
        "and does it accept this secret?"
    )
