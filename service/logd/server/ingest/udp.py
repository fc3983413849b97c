"""The UDP socket: bound non-blocking with a large receive buffer, and its kernel drops."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def bind_udp(addr: tuple[str, int], rcvbuf: int) -> tuple[socket.socket, int]:
    """A non-blocking UDP socket bound to `addr`, and the receive buffer the kernel granted."""
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        # FORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN; otherwise the cap applies.
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), rcvbuf)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    sock.bind(addr)
    # Linux reports double the usable size (it counts bookkeeping); report what it says.
    return sock, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def kernel_drops(sock: socket.socket) -> int | None:
    """The kernel's drop counter for this socket (Linux /proc/net/udp*), or None if unknown."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) >= 13 and cols[9] == inode:
                return int(cols[-1])
    return None
