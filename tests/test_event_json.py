"""event_json: the event object of docs/http-api.md, byte for byte what json.dumps writes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from logd._pb.logd_pb2 import Msg
from logd.events import LEVEL_NAMES, METHOD_NAMES, event_json, format_time, msg_time_ns


def reference(msg: Msg, event_id: str) -> dict[str, Any]:
    """The object as docs/http-api.md describes it, built as a dict."""
    out: dict[str, Any] = {"id": event_id, "t": format_time(msg_time_ns(msg))}
    for name in ("env", "svc", "fn", "host"):
        if getattr(msg, name):
            out[name] = getattr(msg, name)
    if msg.pid:
        out["pid"] = msg.pid
    if msg.lvl:
        out["lvl"] = LEVEL_NAMES.get(msg.lvl, str(msg.lvl))
    for name in ("txt", "stack_trace"):
        if getattr(msg, name):
            out[name] = getattr(msg, name)
    if msg.http_method:
        out["http_method"] = METHOD_NAMES.get(msg.http_method, str(msg.http_method))
    if msg.url:
        out["url"] = msg.url
    if msg.response_status:
        out["response_status"] = msg.response_status
    if msg.attrs:
        out["attrs"] = dict(sorted(msg.attrs.items()))
    return out


# Any text protobuf takes: quotes, backslashes, controls, non-ASCII, astral characters.
TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)
INT32 = st.integers(-(2**31), 2**31 - 1)


@st.composite
def messages(draw: st.DrawFn) -> Msg:
    msg = Msg(
        env=draw(TEXT),
        svc=draw(TEXT),
        fn=draw(TEXT),
        host=draw(TEXT),
        pid=draw(st.integers(0, 2**32 - 1)),
        lvl=draw(st.integers(0, 9)),
        txt=draw(TEXT),
        stack_trace=draw(TEXT),
        http_method=draw(st.integers(0, 12)),
        url=draw(TEXT),
        response_status=draw(INT32),
        attrs=draw(st.dictionaries(TEXT, TEXT, max_size=4)),
    )
    msg.t.seconds = draw(st.integers(-(2**33), 2**33))
    msg.t.nanos = draw(st.integers(0, 999_999_999))
    return msg


@settings(max_examples=400, deadline=None)
@given(msg=messages(), event_id=st.from_regex(r"[0-9]{1,20}(-[0-9]{1,5})?", fullmatch=True))
def test_event_json_is_json_dumps_of_the_object(msg: Msg, event_id: str) -> None:
    expected = reference(msg, event_id)
    assert event_json(msg, event_id) == json.dumps(expected, ensure_ascii=False).encode()
    assert json.loads(event_json(msg, event_id)) == expected


def test_an_empty_event_has_its_id_and_time_only() -> None:
    assert event_json(Msg(), "7") == b'{"id": "7", "t": "1970-01-01T00:00:00.000000000Z"}'
