"""Query parameters -> Filter, and matching (prefilter never wrong, exact on parse)."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from logd._pb.logd_pb2 import ERROR, GET, INFO, POST, WARN, Msg
from logd.server.filters import Filter, FilterError, parse_time

S = 1_000_000_000
NOW = 1_800_000_000 * S


def flt(**params: str) -> Filter:
    return Filter.from_params(params, NOW)


def test_empty_params_match_everything() -> None:
    f = flt()
    assert f.matches(Msg())
    assert not f.needs_message


@pytest.mark.parametrize(
    ("params", "msg", "expected"),
    [
        ({"env": "prod"}, Msg(env="prod"), True),
        ({"env": "prod"}, Msg(env="production"), False),
        ({"svc": "api"}, Msg(svc="api-2"), False),
        ({"svc": "api*"}, Msg(svc="api-2"), True),
        ({"svc": "api*"}, Msg(svc="web"), False),
        ({"fn": "Charge"}, Msg(fn="Charge"), True),
        ({"lvl": "warn"}, Msg(lvl=ERROR), True),
        ({"lvl": "WARN"}, Msg(lvl=INFO), False),
        ({"lvl": "4"}, Msg(lvl=WARN), True),
        ({"lvl": "warning"}, Msg(lvl=WARN), True),  # Python's name for warn
        ({"lvl": "Warning"}, Msg(lvl=INFO), False),
        ({"txt": "DECLINED"}, Msg(txt="card declined"), True),
        ({"txt": "déclin"}, Msg(txt="carte DÉCLINÉE"), True),
        ({"txt": "x"}, Msg(txt="card declined"), False),
        ({"url": "/v1/"}, Msg(url="/v1/charge"), True),
        ({"url": "/v2/"}, Msg(url="/v1/charge"), False),
        ({"status": "402"}, Msg(response_status=402), True),
        ({"status": "402"}, Msg(response_status=200), False),
        ({"method": "post"}, Msg(http_method=POST), True),
        ({"method": "POST"}, Msg(http_method=GET), False),
    ],
)
def test_matching(params: dict[str, str], msg: Msg, expected: bool) -> None:
    f = flt(**params)
    assert f.matches(msg) is expected
    if expected:
        assert f.prefilter(msg.SerializeToString())


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"lvl": "loud"}, "lvl"),
        ({"lvl": "7"}, "lvl"),
        ({"method": "FETCH"}, "method"),
        ({"status": "abc"}, "status"),
        ({"status": "42"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01T00:00:00Z"}, "until"),
        ({"since": "2026-11-29T10:00:00"}, "since"),
        ({"since": "-5m"}, "since"),
    ],
)
def test_bad_values_name_the_parameter(params: dict[str, str], param: str) -> None:
    with pytest.raises(FilterError) as err:
        flt(**params)
    assert err.value.param == param
    assert param in str(err.value)


def test_times() -> None:
    assert parse_time("since", "15m", NOW) == NOW - 15 * 60 * S
    assert parse_time("since", "90s", NOW) == NOW - 90 * S
    assert parse_time("since", "2h", NOW) == NOW - 7200 * S
    assert parse_time("since", "1970-01-01T00:00:01Z", NOW) == S
    assert parse_time("since", "1970-01-01T01:00:01+01:00", NOW) == S
    assert parse_time("since", "1970-01-01T00:00:01.123456789Z", NOW) == S + 123_456_789
    f = flt(since="10s", until="5s")
    assert f.time_match(NOW - 7 * S)
    assert not f.time_match(NOW - 11 * S)
    assert not f.time_match(NOW - 4 * S)


def test_durations_are_exact_and_stay_within_event_times() -> None:
    assert parse_time("since", "1.1s", NOW) == NOW - 1_100_000_000
    assert parse_time("since", "0.000000001s", NOW) == NOW - 1
    # Longer than int64 nanoseconds reach: the earliest time an event can have.
    assert parse_time("since", "9" * 20 + "d", NOW) == -(2**63)
    assert parse_time("until", "9999-12-31T23:59:59Z", NOW) == 2**63 - 1
    for value in ("9" * 21 + "s", "1." + "5" * 21 + "s", "\u0661\u0662s"):
        with pytest.raises(FilterError) as err:
            parse_time("since", value, NOW)
        assert err.value.param == "since"


def test_for_ring_resolves_env_and_svc_at_ring_level() -> None:
    f = flt(env="prod", svc="api*", txt="x")
    assert f.for_ring("dev", "api") is None
    assert f.for_ring("prod", "web") is None
    inner = f.for_ring("prod", "api-2")
    assert inner is not None
    assert [(t.name, t.contains) for t in inner.terms] == [("txt", ("x",))]  # env, svc: done
    assert f.for_ring(None, None) is f  # the overflow ring mixes keys: check per event


text = st.text(max_size=40)


@given(
    msg=st.builds(Msg, env=text, svc=text, fn=text, txt=text, url=text),
    needle=st.sampled_from(["env", "svc", "fn", "txt", "url"]),
    start=st.integers(0, 40),
    length=st.integers(1, 10),
)
def test_prefilter_never_rejects_a_match(msg: Msg, needle: str, start: int, length: int) -> None:
    value: str = getattr(msg, needle)
    part = value[start : start + length] if needle in ("txt",) else value
    if needle in ("url",):
        part = value[: start % (len(value) + 1)]
    if not part:
        return
    if needle == "txt":
        part = part.upper()
    f = Filter.from_params({needle: part.replace("*", "")}, NOW)
    if f.matches(msg):
        assert f.prefilter(msg.SerializeToString())


@pytest.mark.parametrize(
    ("txt", "needle"),
    [
        ("\u212a", "k"),
        ("\u0130stanbul", "i"),
        ("caf\u00c9", "café"),
        ("ÀB", "àb"),
        ("PLAIN", "plain"),
    ],
)
def test_lowered_bytes_never_miss_a_case_insensitive_match(txt: str, needle: str) -> None:
    f = Filter.from_params({"txt": needle}, NOW)
    msg = Msg(txt=txt)
    msg.t.FromNanoseconds(NOW)  # binary bytes beside the text must not matter
    assert f.matches(msg)
    assert f.prefilter(msg.SerializeToString())


# --- more filters: attr.KEY, OR of repeated parameters, NAME! excludes ---------------


def pairs(*items: tuple[str, str]) -> Filter:
    return Filter.from_params(list(items), NOW)


@pytest.mark.parametrize(
    ("items", "msg", "expected"),
    [
        ((("attr.request_id", "r-1"),), Msg(attrs={"request_id": "r-1"}), True),
        ((("attr.request_id", "r-1"),), Msg(attrs={"request_id": "r-10"}), False),
        ((("attr.request_id", "r-1"),), Msg(txt="r-1"), False),  # no such attribute
        ((("attr.request_id", "r-*"),), Msg(attrs={"request_id": "r-10"}), True),
        ((("attr.request_id", "*"),), Msg(attrs={"request_id": ""}), True),  # has the key
        ((("attr.request_id", "*"),), Msg(attrs={"user": "x"}), False),
        ((("svc", "api"), ("svc", "billing")), Msg(svc="billing"), True),
        ((("svc", "api"), ("svc", "billing")), Msg(svc="web"), False),
        ((("svc", "api"), ("svc", "bill*")), Msg(svc="billing-2"), True),
        ((("attr.u", "a"), ("attr.u", "b")), Msg(attrs={"u": "b"}), True),
        ((("status", "500"), ("status", "502")), Msg(response_status=502), True),
        ((("method", "get"), ("method", "POST")), Msg(http_method=POST), True),
        ((("txt", "foo"), ("txt", "BAR")), Msg(txt="a bar"), True),
        ((("url", "/a"), ("url", "/b")), Msg(url="/c"), False),
        ((("svc!", "api"),), Msg(svc="api"), False),
        ((("svc!", "api"),), Msg(svc="api-2"), True),
        ((("svc!", "api*"),), Msg(svc="api-2"), False),
        ((("svc!", "api"), ("svc!", "web")), Msg(svc="web"), False),
        ((("txt!", "health"),), Msg(txt="GET /Healthz"), False),
        ((("txt!", "health"),), Msg(txt="card declined"), True),
        ((("env!", "dev"),), Msg(env="prod"), True),
        ((("fn!", "F"),), Msg(fn="F"), False),
        ((("url!", "/health"),), Msg(url="/healthz"), False),
        ((("status!", "200"),), Msg(response_status=500), True),
        ((("method!", "get"),), Msg(http_method=GET), False),
        ((("attr.k!", "v"),), Msg(attrs={"k": "v"}), False),
        ((("attr.k!", "v"),), Msg(attrs={"k": "w"}), True),
        ((("attr.k!", "v"),), Msg(), True),  # no attribute: not excluded
        ((("svc", "api*"), ("svc!", "api-internal")), Msg(svc="api-internal"), False),
        ((("svc", "api*"), ("svc!", "api-internal")), Msg(svc="api-public"), True),
        ((("env", "prod"), ("attr.k", "v")), Msg(env="prod", attrs={"k": "x"}), False),  # AND
        ((("lvl", "error"), ("lvl", "warn")), Msg(lvl=WARN), True),  # OR of minimums
        ((("svc", ""), ("svc", "api")), Msg(svc="api"), True),  # empty: not given
    ],
)
def test_or_exclude_and_attr_matching(
    items: tuple[tuple[str, str], ...], msg: Msg, expected: bool
) -> None:
    f = pairs(*items)
    assert f.matches(msg) is expected
    if expected:
        assert f.prefilter(msg.SerializeToString())


@pytest.mark.parametrize(
    ("name", "param"),
    [("attr.", "attr."), ("attr.!", "attr.!"), ("attr." + "k" * 257, "attr." + "k" * 257)],
)
def test_a_malformed_attr_name_is_refused_by_name(name: str, param: str) -> None:
    with pytest.raises(FilterError) as err:
        flt(**{name: "v"})
    assert err.value.param == param
    assert "attr.KEY with a KEY of 1 to 256 characters" in str(err.value)


def test_an_attr_key_of_256_characters_is_fine() -> None:
    assert flt(**{"attr." + "k" * 256: "v"}).matches(Msg(attrs={"k" * 256: "v"}))


def test_guard_against_a_flood_of_filter_values() -> None:
    """Every OR'd value costs per event: at most MAX_VALUES in one request."""
    assert len(pairs(*[("svc", f"s{i}") for i in range(100)]).terms[0].exact) == 100
    with pytest.raises(FilterError) as err:
        pairs(*[("svc", f"s{i}") for i in range(60)], *[("attr.k", f"v{i}") for i in range(41)])
    assert err.value.param == "svc"
    assert "at most 100 filter values" in str(err.value)


def test_bad_values_among_repeated_ones_name_the_parameter() -> None:
    with pytest.raises(FilterError) as err:
        pairs(("status!", "200"), ("status!", "2000"))
    assert err.value.param == "status"


def test_for_ring_applies_or_and_exclusions_of_env_and_svc() -> None:
    f = pairs(("svc", "api"), ("svc", "billing"), ("env!", "dev"), ("attr.k", "v"))
    assert f.for_ring("prod", "web") is None
    assert f.for_ring("dev", "api") is None
    inner = f.for_ring("prod", "billing")
    assert inner is not None
    assert [t.name for t in inner.terms] == ["attr.k"]
    assert f.for_ring(None, None) is f


def test_the_search_takes_the_most_selective_term_and_every_value() -> None:
    assert pairs(("env", "prod"), ("fn", "ChargeCard")).search == (b"ChargeCard",)
    assert set(pairs(("svc", "api"), ("svc", "billing")).search or ()) == {b"api", b"billing"}
    assert pairs(("attr.request_id", "r-77")).search == (b"r-77",)
    assert pairs(("attr.request_id", "*")).search == (b"request_id",)
    assert pairs(("svc!", "api")).search is None  # an exclusion is no search
    assert pairs(("status", "500")).search is None
    assert pairs(("txt", "Foo"), ("txt", "bar")).text_search == (b"foo", b"bar")
    assert pairs(("txt", "déjà")).text_search is None  # not exact on lowered bytes


@given(
    attrs=st.dictionaries(text, text, max_size=4),
    key=text,
    value=text,
    negated=st.booleans(),
    prefix=st.booleans(),
)
def test_prefilter_never_rejects_an_attr_match(
    attrs: dict[str, str], key: str, value: str, negated: bool, prefix: bool
) -> None:
    if not key:
        return
    msg = Msg(attrs=attrs)
    want = attrs.get(key, value)[: len(value)] if prefix else attrs.get(key, value)
    name = f"attr.{key}" + ("!" if negated else "")
    f = Filter.from_params({name: want + ("*" if prefix else "")}, NOW)
    if f.matches(msg):
        assert f.prefilter(msg.SerializeToString())


def _varint(n: int, pad: int = 0) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n or pad:
            out.append(byte | 0x80)
            if not n:
                pad -= 1
                while pad:
                    out.append(0x80)
                    pad -= 1
                out.append(0)
                return bytes(out)
        else:
            out.append(byte)
            return bytes(out)


@given(value=st.text(min_size=1, max_size=300), pad=st.integers(0, 3), before=text)
@example(value="*", pad=0, before="")
@example(value="r-5", pad=3, before="r-")
def test_a_whole_field_is_found_however_its_length_is_encoded(
    value: str, pad: int, before: str
) -> None:
    """A writer's own encoder may pad varints: the exact search must still find the field,
    and the parse must agree that it is the attribute."""
    if value.endswith("*"):
        value += "x"  # a trailing * asks for a prefix, not this exact value
    raw = value.encode()
    entry = b"\x0a\x01k\x12" + _varint(len(raw), pad) + raw
    data = Msg(txt=before + value[:-1]).SerializeToString() + b"\x6a" + _varint(len(entry)) + entry
    assert Msg.FromString(data).attrs["k"] == value
    f = pairs(("attr.k", value))
    assert f.whole == {raw}
    assert f.prefilter(data)
    from logd.server.filters import whole_field_in

    assert whole_field_in(raw, data) >= 0


def test_an_exact_value_inside_a_longer_one_is_no_candidate() -> None:
    from logd.server.filters import whole_field_in

    longer = Msg(attrs={"request_id": "r-50"}, txt="xr-5y").SerializeToString()
    assert b"r-5" in longer
    assert whole_field_in(b"r-5", longer) == -1
    assert not pairs(("attr.request_id", "r-5")).prefilter(longer)
    assert pairs(("attr.request_id", "r-5*")).prefilter(longer)  # a prefix: any occurrence
    both = pairs(("attr.request_id", "r-5"), ("attr.request_id", "r-5*"))
    assert both.whole == frozenset()  # r-5 is a prefix too: not only a whole field


def test_the_ring_search_finds_a_padded_exact_field_and_skips_longer_ones() -> None:
    from logd.server.store.ring import Ring

    ring = Ring("p/a", "p", "a", 1 << 20)
    for i in range(2000):
        ring.append(i, 3, Msg(attrs={"request_id": f"r-5{i}"}).SerializeToString())
    entry = b"\x0a\x0arequest_id\x12" + _varint(3, 2) + b"r-5"
    padded = b"\x6a" + _varint(len(entry)) + entry
    ring.append(2000, 3, padded)
    ring.append(2001, 3, Msg(attrs={"request_id": "r-5"}).SerializeToString())
    found = [hit[1] for hit in ring.scan(pairs(("attr.request_id", "r-5")))]
    assert found == [Msg(attrs={"request_id": "r-5"}).SerializeToString(), padded]
