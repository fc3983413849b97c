"""Commands packed by hand for the ingest path, sent on one of the client's connections.

redis-py packs each argument in Python (an isinstance, an encode and a join per
argument): ~4 us of this node's CPU per event appended as four script arguments,
more than the backend spends storing it. Here an event's arguments are one bytes
format; `send` writes the packed commands at once and reads their replies in order.
A command may be a list of chunks, written as they are: an event's bytes are then never
copied here (~0.1 us an event when they were, four times over).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from logd.server.store.valkey.client import Client


def bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


def command(*args: bytes | int | str, more: int = 0) -> bytes:
    """One command in RESP: an array of bulk strings; `more` of them packed by the caller
    follow."""
    parts = [b"*%d\r\n" % (len(args) + more)]
    for arg in args:
        if isinstance(arg, int):
            parts.append(bulk(b"%d" % arg))
        else:
            parts.append(bulk(arg if isinstance(arg, bytes) else arg.encode()))
    return b"".join(parts)


async def send(client: Client, commands: Sequence[bytes | list[bytes]]) -> list[Any]:
    """Send the packed commands (each bytes, or a list of chunks) in one write and return
    their replies; a failure part way (a timeout, an error reply) closes the connection,
    whose state is then unknown."""
    pool = client.connection_pool  # type: ignore[union-attr]  # one server only
    conn = await pool.get_connection()
    chunks: list[bytes] = []
    for command in commands:
        if isinstance(command, bytes):
            chunks.append(command)
        else:
            chunks += command
    try:
        await conn.send_packed_command(chunks, check_health=False)
        return [await conn.read_response() for _ in commands]
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)
