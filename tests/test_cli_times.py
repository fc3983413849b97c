"""logd.cli.times: what a person types after --since / --until, as the server's
parameter (docs/http-api.md is unchanged: the CLI converts before sending)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
from logd.cli.times import TimeError, server_time
from logd.server.filters import parse_time

PARIS = ZoneInfo("Europe/Paris")
# 2026-12-02 10:00 in Paris (09:00Z): winter, UTC+1
NOW = dt.datetime(2026, 12, 2, 10, 0, tzinfo=PARIS).timestamp()


@pytest.mark.parametrize(
    ("typed", "sent"),
    [
        ("15m", "15m"),  # the server's own forms pass as they are
        ("1.5h", "1.5h"),
        ("2026-11-29T21:56:54.123456789Z", "2026-11-29T21:56:54.123456789Z"),
        ("2026-11-29T21:56:54+05:30", "2026-11-29T21:56:54+05:30"),
        ("1h30m", "5400s"),
        ("2d12h", "216000s"),
        ("1m30.5s", "90.500000000s"),
        ("1s250ms", "1.250000000s"),
        ("today", "2026-12-01T23:00:00Z"),  # local midnight
        ("Yesterday", "2026-11-30T23:00:00Z"),
        ("2026-12-01", "2026-11-30T23:00:00Z"),
        ("2026-12-01 14:30", "2026-12-01T13:30:00Z"),
        ("2026-07-01 14:30", "2026-07-01T12:30:00Z"),  # summer time: UTC+2
        ("2026-12-01T14:30:05.123456789", "2026-12-01T13:30:05.123456789Z"),
        ("14:30", "2026-12-02T13:30:00Z"),  # today
        ("08:15:30", "2026-12-02T07:15:30Z"),
    ],
)
def test_typed_times_become_the_servers(typed: str, sent: str) -> None:
    assert server_time(typed, now=NOW, zone=PARIS) == sent


@pytest.mark.parametrize("typed", ["1h30m", "today", "2026-12-01 14:30", "14:30:00.5"])
def test_the_server_reads_every_converted_time(typed: str) -> None:
    parse_time("since", server_time(typed, now=NOW, zone=PARIS), time.time_ns())


@pytest.mark.parametrize(
    ("typed", "error"),
    [
        ("", "an empty time"),
        ("soon", "cannot read 'soon' as a time"),
        ("1h30", "cannot read '1h30'"),
        ("2026-13-01", "cannot read '2026-13-01'"),
        ("25:00", "cannot read '25:00'"),
        ("1" * 21 + "h30m", "at most 20 digits"),
    ],
)
def test_bad_times_say_what_would_do(typed: str, error: str) -> None:
    with pytest.raises(TimeError, match=error):
        server_time(typed, now=NOW, zone=PARIS)


@pytest.fixture
def machine_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("machine_zone")
def test_without_a_zone_argument_the_machines_zone_is_used_with_its_summer_time() -> None:
    assert server_time("2026-01-15 12:00") == "2026-01-15T17:00:00Z"  # EST, UTC-5
    assert server_time("2026-07-15 12:00") == "2026-07-15T16:00:00Z"  # EDT, UTC-4
    noon_utc = dt.datetime(2026, 7, 15, 16, 0, tzinfo=dt.UTC).timestamp()
    assert server_time("today", now=noon_utc) == "2026-07-15T04:00:00Z"
