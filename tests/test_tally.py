"""store/tally.py: buckets, default steps, grouping and its bounds, with a fixed clock."""

from __future__ import annotations

import pytest
from logd._pb.logd_pb2 import ERROR, Msg
from logd.server.store.tally import (
    CELL_BUDGET,
    MAX_BUCKETS,
    OTHER,
    TOP_GROUPS,
    TRACKED_GROUPS,
    Grouping,
    Tally,
    TooManyBuckets,
    default_step_s,
)

S = 1_000_000_000
NOW = 1_800_000_000 * S  # a whole hour: 2027-01-15T08:00:00Z


def tally(**kw: object) -> Tally:
    args: dict[str, object] = {
        "step_s": None, "since_ns": None, "until_ns": None, "now_ns": NOW, "grouping": None,
    }  # fmt: skip
    args.update(kw)
    return Tally(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("span_s", "step_s"),
    [(60, 1), (299, 1), (300, 10), (2990, 10), (3000, 60), (5 * 3600, 300), (24 * 3600, 300),
     (3 * 86400, 900), (12 * 86400, 3600), (299 * 86400, 86400), (300 * 86400, 2 * 86400)],
)  # fmt: skip
def test_the_default_step_is_the_smallest_giving_at_most_300_buckets(
    span_s: int, step_s: int
) -> None:
    assert default_step_s(NOW - span_s * S, NOW) == step_s
    t = tally(since_ns=NOW - span_s * S)
    assert t.step_ns == step_s * S
    assert len(t.result()["buckets"]) <= 300


def test_buckets_start_at_whole_steps_oldest_first_and_cover_the_range() -> None:
    t = tally(step_s=60, since_ns=NOW - 150 * S, until_ns=NOW + 5 * S)
    t.add(NOW - 150 * S, None)
    t.add(NOW - 61 * S, None)
    t.add(NOW + 5 * S, None, 3)
    body = t.result()
    assert body == {
        "step_s": 60,
        "total": 5,
        "buckets": [
            {"t": "2027-01-15T07:57:00Z", "total": 1},
            {"t": "2027-01-15T07:58:00Z", "total": 1},
            {"t": "2027-01-15T07:59:00Z", "total": 0},
            {"t": "2027-01-15T08:00:00Z", "total": 3},
        ],
    }


def test_without_since_the_range_starts_at_the_oldest_event_and_coarsens_exactly() -> None:
    t = tally(grouping=Grouping("lvl"))
    for i in range(3600):  # one event a second for an hour, then one 2 days back
        t.add(NOW - i * S, "INFO" if i % 2 else "ERROR")
    assert t.step_ns == 60 * S  # 3600 one-second buckets would be too many
    t.add(NOW - 2 * 86400 * S, "WARN")
    body = t.result()
    assert body["step_s"] == 900
    assert body["total"] == 3601
    assert sum(b["total"] for b in body["buckets"]) == 3601
    assert sum(b["by"].get("ERROR", 0) for b in body["buckets"]) == 1800
    assert body["buckets"][0]["by"] == {"WARN": 1}
    assert len(body["buckets"]) <= 300


def test_a_fixed_step_past_max_buckets_is_refused() -> None:
    with pytest.raises(TooManyBuckets, match="at most 10000 buckets"):
        tally(step_s=1, since_ns=NOW - MAX_BUCKETS * S)
    tally(step_s=1, since_ns=NOW - (MAX_BUCKETS - 1) * S)  # just fits
    t = tally(step_s=1)  # no since: the events found decide, and too many are refused
    t.add(NOW - 10 * S, None)
    with pytest.raises(TooManyBuckets):
        t.add(NOW - MAX_BUCKETS * S, None)


def test_the_10_largest_groups_and_the_rest_as_other() -> None:
    t = tally(step_s=60, since_ns=NOW - 60 * S, grouping=Grouping("svc"))
    for g in range(15):
        t.add(NOW - 30 * S, f"s{g:02d}", 100 - g)
    t.add(NOW - 30 * S, OTHER, 7)  # a group named "other" is part of the rest
    (first, last) = t.result()["buckets"]
    assert list(first["by"]) == [f"s{g:02d}" for g in range(TOP_GROUPS)] + [OTHER]
    assert first["by"][OTHER] == sum(100 - g for g in range(10, 15)) + 7
    assert sum(first["by"].values()) == first["total"]
    assert last == {"t": "2027-01-15T08:00:00Z", "total": 0, "by": {}}


def test_guard_against_unbounded_groups() -> None:
    """100,000 distinct attribute values: the table holds TRACKED_GROUPS at most (fewer over
    more buckets: CELL_BUDGET), a heavy group that arrives late still shows, and the
    counts still add up."""
    wide = tally(step_s=1, grouping=Grouping("fn"))
    for i in range(100):
        wide.add(NOW, f"f{i}", i + 1)
    assert len(wide.groups) == TRACKED_GROUPS
    wide.add(NOW - (MAX_BUCKETS - 1) * S, "f99")  # 10,000 buckets: 20 groups at most
    assert len(wide.groups) == wide.tracked == CELL_BUDGET // MAX_BUCKETS
    assert "f99" in wide.groups  # the heaviest stay
    assert wide.result()["total"] == sum(range(1, 101)) + 1
    t = tally(step_s=60, since_ns=NOW - 600 * S, grouping=Grouping("attrs", "request_id"))
    for i in range(100_000):
        t.add(NOW - (i % 600) * S, f"r-{i}")
        assert len(t.groups) <= t.tracked == TRACKED_GROUPS  # 11 buckets: 64 groups
    t.add(NOW, "heavy", 500)
    body = t.result()
    assert body["total"] == 100_500
    assert all(len(b["by"]) <= TOP_GROUPS + 1 for b in body["buckets"])
    assert body["buckets"][-1]["by"]["heavy"] == 500
    assert sum(sum(b["by"].values()) for b in body["buckets"]) == 100_500


def test_guard_against_unbounded_buckets() -> None:
    """Events spread over all of int64 time: the default step keeps coarsening."""
    t = tally()
    for t_ns in (-(2**63), 2**63 - 1, 0, NOW):
        t.add(t_ns, None)
    body = t.result()
    assert len(body["buckets"]) <= 300
    assert body["total"] == 4


@pytest.mark.parametrize(
    ("by", "msg", "group"),
    [("lvl", Msg(lvl=ERROR), "ERROR"), ("lvl", Msg(), "-"), ("env", Msg(env="prod"), "prod"),
     ("fn", Msg(), "-"), ("attr.u", Msg(attrs={"u": "ann"}), "ann"), ("attr.u", Msg(), "-"),
     ("host", Msg(host="web-1"), "web-1"), ("host", Msg(), "-")],
)  # fmt: skip
def test_groups_of_an_event(by: str, msg: Msg, group: str) -> None:
    grouping = Grouping.parse(by)
    assert grouping is not None
    assert grouping.of_msg(msg) == group
    assert Grouping.parse("pid") is None  # a number per process: not a grouping
