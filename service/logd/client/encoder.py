"""Client-side event encoding: a queued event -> protobuf `Msg` bytes -> a `Cmd` payload.

Pure (no I/O, no clock). A `Cmd` field holding a message is encoded as tag, length,
bytes; the sender concatenates such fields itself, so it knows each frame's size to
the byte while packing, and never re-serialises a whole `Cmd`. Fields are written in
field-number order, as the protobuf library writes them: an event's bytes and a frame's
payload equal the library's serialisation (tests check it). An event too large for one
frame is cut, with a visible marker saying how much was cut, instead of being dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from logd._pb.logd_pb2 import Msg
from logd.events import METHOD_VALUES
from logd.wire import HEADER_LEN


@dataclass(frozen=True, slots=True)
class HttpFields:
    """An event's HTTP fields (`http_method`, `url`, `response_status`); empty ones are
    left out. Checked when made: a method logd does not know (docs/protocol.md) or a
    status outside 100-999 is a ValueError. Pass as `http=HttpFields(...)` (Logger)."""

    method: str = ""
    url: str = ""
    status: int = 0

    def __post_init__(self) -> None:
        if self.method:
            if self.method.upper() not in METHOD_VALUES:
                raise ValueError(f"method must be one of {', '.join(METHOD_VALUES)}")
            object.__setattr__(self, "method", self.method.upper())
        if self.status.__class__ is not int or (self.status and not 100 <= self.status <= 999):
            raise ValueError("status must be an HTTP status code from 100 to 999")
        if self.url.__class__ is not str or self.method.__class__ is not str:
            raise ValueError("method and url must be str")


# (t_ns, lvl, txt, attrs, stack_trace, fn, http): what an app thread queues. A plain
# tuple, because building it is the cheapest thing a log call can do.
Event = tuple[int, int, str, dict[str, str] | None, str, str | None, HttpFields | None]

_T_TAG = b"\x0a"  # Msg field 1 (t), length-delimited
_MSG_TAG = b"\x12"  # Cmd field 2 (msg), length-delimited
_BATCH_TAG = b"\x22"  # Cmd field 4 (batch), length-delimited
_SENDER_TAG = b"\x2a\x08"  # Cmd field 5 (sender), length-delimited, always 8 bytes
_SEQ_TAG = b"\x30"  # Cmd field 6 (seq), varint
_HOST_TAG = b"\x72"  # Msg field 14 (host), length-delimited
_PID_TAG = b"\x78"  # Msg field 15 (pid), varint
MAX_NAME = 128  # bytes of env, svc, fn or an attribute key that a server accepts
SENDER_LEN = 8
# Room a frame keeps for sender and seq: tags, 8 bytes, a seq varint of up to 10 bytes.
TRAILER_ROOM = len(_SENDER_TAG) + SENDER_LEN + len(_SEQ_TAG) + 10
MIN_FRAME = 512
MARKER = "...[logd: cut {} bytes]"
_MARKER_ROOM = len(MARKER.format(10**9)) + 5  # a 10-digit count, the "\n" of a stack cut, slack
_ATTRS_DROPPED = {"logd_truncated": "attrs dropped: too large for one frame"}


def varint(n: int) -> bytes:
    if n < 0x80:  # the common lengths first, without a loop (nanoseconds take 4 or 5)
        return bytes((n,))
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 0x10000000:
        if n < 0x200000:
            return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21))
    if n < 0x800000000:
        return bytes(
            (
                n & 0x7F | 0x80,
                n >> 7 & 0x7F | 0x80,
                n >> 14 & 0x7F | 0x80,
                n >> 21 & 0x7F | 0x80,
                n >> 28,
            )
        )
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field_size(n: int) -> int:
    """Bytes that a length-delimited Cmd field holding `n` bytes takes (tag + varint + data).
    Frames are at most 65,507 bytes, so the length varint has at most 3 bytes."""
    return 1 + (1 if n < 0x80 else 2 if n < 0x4000 else 3) + n


def write_payload(msgs: list[bytes], sender: bytes = b"", seq: int = 0) -> bytes:
    """The serialised `Cmd{name: WRITE, msg: msgs[0], batch: msgs[1:], sender, seq}`
    (WRITE is 0, the default, so it takes no bytes; sender and seq only when given)."""
    parts = [_MSG_TAG, varint(len(msgs[0])), msgs[0]]
    for data in msgs[1:]:
        parts += (_BATCH_TAG, varint(len(data)), data)
    if sender:
        if len(sender) != SENDER_LEN:
            raise ValueError(f"sender must be {SENDER_LEN} bytes")
        parts += (_SENDER_TAG, sender)
    if seq:
        parts += (_SEQ_TAG, varint(seq))
    return b"".join(parts)


def trailer_size(seq: int) -> int:
    """Bytes that sender and seq take at the end of a frame numbered `seq`."""
    return len(_SENDER_TAG) + SENDER_LEN + len(_SEQ_TAG) + len(varint(seq))


def origin_fields(host: str, pid: int) -> bytes:
    """Msg fields 14 (host) and 15 (pid), serialised; empty ones take no bytes. The host
    is cut to MAX_NAME bytes (at a character boundary), as the server caps names."""
    data = host.encode()[:MAX_NAME].decode("utf-8", "ignore").encode()
    out = _HOST_TAG + varint(len(data)) + data if data else b""
    return out + _PID_TAG + varint(pid) if pid else out


def msg_budget(max_frame: int) -> int:
    """The largest serialised Msg that fits alone in a frame of `max_frame` bytes, with
    room kept for sender and seq."""
    room = max_frame - HEADER_LEN - TRAILER_ROOM
    return max(n for n in range(room - 4, room) if field_size(n) <= room)


class Encoder:
    """Encodes events of one logger: env, svc, the default fn and the origin (host, pid)
    are serialised once."""

    __slots__ = (
        "_origin",
        "_prefix",
        "_prefix_fn",
        "_second",
        "_seconds",
        "_t5",
        "budget",
        "truncated",
    )

    def __init__(self, *, env: str, svc: str, fn: str, max_frame: int) -> None:
        for field, name in (("env", env), ("svc", svc), ("fn", fn)):
            if len(name.encode()) > MAX_NAME:
                raise ValueError(
                    f"{field} is {len(name.encode())} bytes; a server refuses names over "
                    f"{MAX_NAME} bytes (docs/protocol.md)"
                )
        self._prefix = Msg(env=env, svc=svc).SerializeToString()
        self._prefix_fn = Msg(env=env, svc=svc, fn=fn).SerializeToString()
        self.budget = msg_budget(max_frame)
        if len(self._prefix_fn) > self.budget // 2:
            raise ValueError(
                f"env, svc and fn take {len(self._prefix_fn)} bytes, more than half of the "
                f"{self.budget} bytes an event may take in a {max_frame}-byte frame"
            )
        self.truncated = 0
        self._origin = b""
        self._second, self._seconds, self._t5 = -1, b"", b""  # see _time

    def set_origin(self, host: str, pid: int) -> None:
        """The host and pid every event carries from now on ("" and 0: none)."""
        self._origin = origin_fields(host, pid)

    def encode(self, event: Event) -> bytes:
        t_ns, lvl, txt, attrs, stack_trace, fn, http = event
        msg = Msg(lvl=lvl, txt=txt)  # type: ignore[arg-type]  # lvl is a valid Lvl number
        if stack_trace:
            msg.stack_trace = stack_trace
        if http is not None:
            if http.method:
                msg.http_method = METHOD_VALUES[http.method]  # type: ignore[assignment]
            if http.url:
                msg.url = http.url
            if http.status:
                msg.response_status = http.status
        if attrs:
            msg.attrs.update(attrs)
        if fn is None:
            prefix = self._prefix_fn
        else:
            prefix = self._prefix
            msg.fn = fn
        # In field order: t (1), the prefix (env 3, svc 4, and fn 5), msg (fn 5, 6-13),
        # origin (14, 15). The time is written by hand: cheaper than a Timestamp message.
        head = self._time(t_ns) + prefix
        data = head + msg.SerializeToString() + self._origin
        if len(data) > self.budget:
            self.truncated += 1
            data = head + fit(msg, self.budget - len(head) - len(self._origin)) + self._origin
        return data

    def _time(self, t_ns: int) -> bytes:
        """Msg field 1 (t) for `t_ns`. The second's part is kept from one call to the next
        (it changes once a second); 3 in 4 nanosecond counts take 5 bytes, written inline."""
        second, n = divmod(t_ns, 1_000_000_000)
        if second != self._second:
            self._second, self._seconds = second, b"\x08" + varint(second) if second else b""
            self._t5 = _T_TAG + bytes((len(self._seconds) + 6,)) + self._seconds + b"\x10"
        if n >= 0x10000000:
            return self._t5 + bytes(
                (
                    n & 0x7F | 0x80,
                    n >> 7 & 0x7F | 0x80,
                    n >> 14 & 0x7F | 0x80,
                    n >> 21 & 0x7F | 0x80,
                    n >> 28,
                )
            )
        stamp = self._seconds + b"\x10" + varint(n) if n else self._seconds
        return _T_TAG + bytes((len(stamp),)) + stamp


def fit(msg: Msg, budget: int) -> bytes:
    """`msg` serialised in at most `budget` bytes. The texts (txt, stack_trace, fn, attr
    values) are cut down to a common length, longest first ("water-filling"), so a huge
    field does not wipe out a small one; a cut keeps the start of a text and the end of
    a stack trace, with MARKER in place of the rest. When that cannot work (many small
    attributes), the attributes are replaced by one `logd_truncated` attribute."""
    while (excess := msg.ByteSize() - budget) > 0:
        texts = _texts(msg)
        level = _water_level([len(data) for _, _, data in texts], excess)
        if level < _MARKER_ROOM:
            if not msg.attrs or dict(msg.attrs) == _ATTRS_DROPPED:
                break  # only short fields are left; Encoder's size check keeps this rare
            msg.attrs.clear()
            msg.attrs.update(_ATTRS_DROPPED)
            continue
        for field, key, data in texts:
            if len(data) > level:  # cut to at most `level` bytes, marker included
                new = _cut(data, level - _MARKER_ROOM, keep_end=field == "stack_trace")
                if field == "attrs":
                    msg.attrs[key] = new
                else:
                    setattr(msg, field, new)
    return msg.SerializeToString()


def _texts(msg: Msg) -> list[tuple[str, str, bytes]]:
    """(field, attrs key, UTF-8 value) of every text that may be cut."""
    out = [(f, "", getattr(msg, f).encode()) for f in ("txt", "stack_trace", "fn")]
    out += [("attrs", key, value.encode()) for key, value in msg.attrs.items()]
    return out


def _water_level(lengths: list[int], excess: int) -> int:
    """The highest level h such that cutting every length above h down to h removes at
    least `excess` bytes; -1 when even cutting everything is not enough."""
    lo, hi = -1, max(lengths, default=0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(n - mid for n in lengths if n > mid) >= excess:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _cut(data: bytes, keep: int, *, keep_end: bool) -> str:
    """`keep` bytes of `data` and a marker; "ignore" drops a UTF-8 sequence split by the cut."""
    if keep_end:
        kept = data[len(data) - keep :].decode("utf-8", "ignore")
        return MARKER.format(len(data) - len(kept.encode())) + "\n" + kept
    kept = data[:keep].decode("utf-8", "ignore")
    return kept + MARKER.format(len(data) - len(kept.encode()))
