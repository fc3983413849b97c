"""The logger's pure parts: event encoding, frame payloads, cutting, the rate limit."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st
from logd._pb.logd_pb2 import INFO, WARN, Cmd, Msg
from logd.client.encoder import (
    MAX_NAME,
    MIN_FRAME,
    TRAILER_ROOM,
    Encoder,
    HttpFields,
    field_size,
    fit,
    msg_budget,
    trailer_size,
    varint,
    write_payload,
)
from logd.client.sender import RateLimit
from logd.wire import HEADER_LEN

T_NS = 1_700_000_000_123_456_789


def test_encoded_event_is_the_msg() -> None:
    enc = Encoder(env="prod", svc="api", fn="Charge", max_frame=1400)
    data = enc.encode((T_NS, WARN, "card declined", {"user": "bob"}, "trace", None, None))
    expected = Msg(
        env="prod", svc="api", fn="Charge", lvl=WARN, txt="card declined", stack_trace="trace"
    )
    expected.t.FromNanoseconds(T_NS)
    expected.attrs["user"] = "bob"
    assert Msg.FromString(data) == expected
    assert len(data) == expected.ByteSize()


def test_per_event_fn_replaces_the_default() -> None:
    enc = Encoder(env="prod", svc="api", fn="Default", max_frame=1400)
    assert Msg.FromString(enc.encode((T_NS, INFO, "x", None, "", "Other", None))).fn == "Other"


@given(st.lists(st.text(max_size=300), min_size=1, max_size=8))
def test_payload_equals_the_protobuf_library(texts: list[str]) -> None:
    msgs = [Msg(txt=t, lvl=INFO) for t in texts]
    payload = write_payload([m.SerializeToString() for m in msgs])
    assert payload == Cmd(msg=msgs[0], batch=msgs[1:]).SerializeToString()
    assert len(payload) == sum(field_size(m.ByteSize()) for m in msgs)


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16383, 16384, 65507, 2**35])
def test_varint(n: int) -> None:
    assert Timestamp.FromString(b"\x08" + varint(n)).seconds == n


@pytest.mark.parametrize("max_frame", [MIN_FRAME, 1400, 20_000, 65_507])
def test_budget_fills_the_frame_exactly(max_frame: int) -> None:
    budget = msg_budget(max_frame)  # with room for sender and any seq
    assert HEADER_LEN + field_size(budget) + TRAILER_ROOM <= max_frame
    assert HEADER_LEN + field_size(budget + 1) + TRAILER_ROOM > max_frame
    assert trailer_size(2**64 - 1) == TRAILER_ROOM


@given(
    txt=st.text(max_size=3000),
    stack=st.text(max_size=3000),
    attrs=st.dictionaries(st.text(max_size=40), st.text(max_size=400), max_size=60),
    max_frame=st.sampled_from([MIN_FRAME, 700, 1400]),
)
def test_cut_events_fit_and_say_so(
    txt: str, stack: str, attrs: dict[str, str], max_frame: int
) -> None:
    enc = Encoder(env="prod", svc="api", fn="f", max_frame=max_frame)
    data = enc.encode((T_NS, INFO, txt, attrs or None, stack, None, None))
    assert len(data) <= enc.budget
    msg = Msg.FromString(data)  # valid protobuf, valid UTF-8
    if enc.truncated:
        shown = [msg.txt, msg.stack_trace, *msg.attrs.values()]
        assert any("[logd: cut" in s for s in shown) or "logd_truncated" in msg.attrs
    else:
        assert (msg.txt, msg.stack_trace, dict(msg.attrs)) == (txt, stack, attrs)


def test_cut_keeps_the_start_of_text_and_the_end_of_a_stack_trace() -> None:
    msg = Msg(txt="T" * 2000, stack_trace="frames\n" * 300 + "ValueError: boom")
    out = Msg.FromString(fit(msg, 1000))
    assert out.txt.startswith("TTT")
    assert out.txt.endswith("bytes]")
    assert out.stack_trace.startswith("...[logd: cut")
    assert out.stack_trace.endswith("ValueError: boom")


def test_many_small_attrs_are_replaced_by_one() -> None:
    msg = Msg(txt="hi", attrs={f"key-{i:04d}": "v" for i in range(500)})
    out = Msg.FromString(fit(msg, 1000))
    assert dict(out.attrs) == {"logd_truncated": "attrs dropped: too large for one frame"}
    assert out.txt == "hi"


def test_rate_limit_token_bucket() -> None:
    limit = RateLimit(2, now=0.0)
    assert [limit.allow(0.0) for _ in range(3)] == [True, True, False]  # burst of 2
    assert limit.allow(0.5)  # one token back after 0.5 s
    assert not limit.allow(0.5)
    assert [limit.allow(10.0) for _ in range(3)] == [True, True, False]  # never above burst
    with pytest.raises(ValueError, match="positive"):
        RateLimit(0, now=0.0)


@pytest.mark.parametrize("field", ["env", "svc", "fn"])
def test_a_name_past_the_servers_cap_is_refused_when_the_encoder_is_made(field: str) -> None:
    names = {"env": "prod", "svc": "api", "fn": ""} | {field: "n" * (MAX_NAME + 1)}
    with pytest.raises(ValueError, match=f"{field} is 129 bytes; a server refuses names over 128"):
        Encoder(**names, max_frame=1400)
    Encoder(**(names | {field: "é" * (MAX_NAME // 2)}), max_frame=1400)  # 128 bytes: fine


@given(
    t_ns=st.one_of(
        st.integers(0, 2**63 - 1),
        st.integers(0, 10**9 - 1),  # second 0: the field holds nanos alone
        st.integers(1, 2**33).map(lambda s: s * 1_000_000_000),  # nanos 0
    ),
    fn=st.sampled_from([None, "Other", ""]),
    http=st.sampled_from([None, HttpFields(), HttpFields("post", "/v1", 201), HttpFields(url="/")]),
    origin=st.sampled_from([("", 0), ("web-1", 4242), ("h" * 300, 2**32 - 1), ("", 7)]),
    # One attribute at most: the library itself writes a parsed map in no fixed order.
    attrs=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=1),
)
def test_an_event_is_the_libraries_msg_byte_for_byte(
    t_ns: int,
    fn: str | None,
    http: HttpFields | None,
    origin: tuple[str, int],
    attrs: dict[str, str],
) -> None:
    enc = Encoder(env="prod", svc="api", fn="Default", max_frame=65_507)
    enc.set_origin(*origin)
    enc.encode((max(0, t_ns - 10**9), INFO, "before", None, "", None, None))  # a cached second
    data = enc.encode((t_ns, WARN, "txt", attrs or None, "stack", fn, http))
    msg = Msg.FromString(data)
    assert data == msg.SerializeToString()  # fields in field order, as the library writes
    assert msg.t.ToNanoseconds() == t_ns
    assert (msg.fn, msg.host, msg.pid) == (
        "Default" if fn is None else fn,
        origin[0][:128],
        origin[1],
    )
    if http is not None:
        assert (msg.url, msg.response_status) == (http.url, http.status)


@given(
    sender=st.binary(min_size=8, max_size=8),
    seq=st.integers(0, 2**64 - 1),
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=5),
)
def test_a_write_payload_with_sender_and_seq_is_the_libraries_cmd(
    sender: bytes, seq: int, sizes: list[int]
) -> None:
    msgs = [Msg(txt="x" * n, lvl=INFO) for n in sizes]
    payload = write_payload([m.SerializeToString() for m in msgs], sender, seq)
    assert payload == Cmd(msg=msgs[0], batch=msgs[1:], sender=sender, seq=seq).SerializeToString()
    if seq:
        assert len(payload) == sum(field_size(m.ByteSize()) for m in msgs) + trailer_size(seq)


def test_a_sender_id_is_8_bytes() -> None:
    with pytest.raises(ValueError, match="sender must be 8 bytes"):
        write_payload([b""], b"short", 1)
