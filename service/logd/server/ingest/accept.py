"""The acceptance pipeline of PROTOCOL.md, in its order. Pure: the clock is an argument.

`FrameChecker.check(frame, now_ns)` returns either a reject reason or the
authenticated key and parsed command. Nothing here parses, stores or answers a
datagram before its MAC is verified.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from google.protobuf.message import DecodeError

from logd._pb.logd_pb2 import PING, WRITE, Cmd
from logd.server.ingest.replay import MacGuard
from logd.server.keys import Key, KeyHolder, Role
from logd.wire import HEADER_LEN, SIGNED_LEN, VERSION


class Reject(StrEnum):
    """Why a datagram was dropped; the order is PROTOCOL.md's order of checks."""

    BAD_FRAME = "bad_frame"
    UNKNOWN_KEY = "unknown_key"
    BAD_MAC = "bad_mac"
    STALE = "stale"
    FUTURE = "future"
    REPLAY = "replay"
    # the replay guard is full (a fresh frame refused, failing closed), or a shared store
    # has no room (ValkeyStore.room)
    OVERLOAD = "overload"
    BAD_PAYLOAD = "bad_payload"
    FORBIDDEN = "forbidden"
    LONG_NAME = "long_name"  # an env, svc, fn, host or attribute key past MAX_NAME bytes


# Which roles may send each command; anything else (PONG, unknown names) is forbidden.
_NOBODY: frozenset[Role] = frozenset()
_ALLOWED: dict[int, frozenset[Role]] = {
    WRITE: frozenset({Role.WRITE}),
    PING: frozenset({Role.READ, Role.WRITE}),
}


class Accepted(NamedTuple):
    """An authenticated, fresh, first-seen frame. A NamedTuple because one is built per
    accepted datagram: about a third of the cost of a frozen dataclass."""

    key: Key
    cmd: Cmd
    mac: bytes  # for the replay check across nodes (replay_shared.py)
    signed_at_ns: int


class FrameChecker:
    """Holds what the checks need: the keys, the replay guard and the limits."""

    __slots__ = ("_guard", "_keys", "_max_age_ns", "_max_frame", "_max_future_ns", "_not_before_ns")

    def __init__(
        self,
        *,
        keys: KeyHolder,
        guard: MacGuard,
        max_frame: int,
        max_age_ns: int,
        max_future_ns: int,
        not_before_ns: int,
    ) -> None:
        self._keys = keys
        self._guard = guard
        self._max_frame = max_frame
        self._max_age_ns = max_age_ns
        self._max_future_ns = max_future_ns
        self._not_before_ns = not_before_ns  # see engine.restart_floor

    def check(self, frame: bytes, now_ns: int) -> Accepted | Reject:
        if not HEADER_LEN <= len(frame) <= self._max_frame or frame[0] != VERSION:
            return Reject.BAD_FRAME
        candidates = self._keys.ring.lookup(frame[1:5])
        if not candidates:
            return Reject.UNKNOWN_KEY
        for key in candidates:
            if key.signer.verify(frame):
                break
        else:
            return Reject.BAD_MAC
        signed_at = int.from_bytes(frame[5:SIGNED_LEN], "big", signed=True)
        if signed_at < now_ns - self._max_age_ns or signed_at < self._not_before_ns:
            return Reject.STALE
        if signed_at > now_ns + self._max_future_ns:
            return Reject.FUTURE
        mac = frame[SIGNED_LEN:HEADER_LEN]
        fresh = self._guard.check_and_remember(mac, signed_at, now_ns)
        if not fresh:
            # False is a replay; None is a full guard failing closed (also counted by the guard).
            return Reject.REPLAY if fresh is False else Reject.OVERLOAD
        return read_payload(key, frame, mac, signed_at)


def read_payload(key: Key, frame: bytes, mac: bytes, signed_at: int) -> Accepted | Reject:
    """The last check, for a frame that passed the others: parse the payload, then
    authorise its command for the key's role."""
    try:
        cmd = Cmd.FromString(frame[HEADER_LEN:])
    except DecodeError:
        return Reject.BAD_PAYLOAD
    if key.role not in _ALLOWED.get(cmd.name, _NOBODY):
        return Reject.FORBIDDEN
    if cmd.name == WRITE and _long_name(cmd):
        return Reject.LONG_NAME
    return Accepted(key, cmd, mac, signed_at)


# Names become ring keys, /info and /metrics labels and /hits groups: each is bounded,
# so that what a writer sends cannot grow them (docs/protocol.md).
MAX_NAME = 128


def _long_name(cmd: Cmd) -> bool:
    for msg in (cmd.msg, *cmd.batch) if cmd.HasField("msg") else cmd.batch:
        for name in (msg.env, msg.svc, msg.fn, msg.host, *msg.attrs):
            # A str of n characters is at least n bytes and at most 4n in UTF-8.
            if len(name) > MAX_NAME // 4 and len(name.encode()) > MAX_NAME:
                return True
    return False
