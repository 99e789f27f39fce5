"""A technician's shift pattern as on-shift intervals in hours from the plan start: days,
midnight crossing, clipping to the horizon, and DST through zoneinfo."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from maintenance.shifts import shift_intervals
from schemas.maintenance import Shift

MONDAY_UTC = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday


def test_day_shifts_monday_to_friday() -> None:
    got = shift_intervals(Shift(start="06:00", end="14:00"), "UTC", MONDAY_UTC, 168)
    assert got == tuple((24.0 * d + 6, 24.0 * d + 14) for d in range(5))


def test_only_the_listed_days() -> None:
    got = shift_intervals(Shift(start="08:00", end="12:00", days=[2, 6]), "UTC", MONDAY_UTC, 168)
    assert got == ((56.0, 60.0), (152.0, 156.0))  # Wednesday and Sunday


def test_night_shift_crosses_midnight_and_is_clipped_at_both_ends() -> None:
    # Sunday's night shift started before the plan (its remainder counts) and the next
    # Sunday's runs past the horizon
    got = shift_intervals(Shift(start="22:00", end="06:00", days=[6]), "UTC", MONDAY_UTC, 168)
    assert got == ((0.0, 6.0), (166.0, 168.0))


def test_a_horizon_that_ends_inside_a_shift() -> None:
    got = shift_intervals(Shift(start="06:00", end="14:00"), "UTC", MONDAY_UTC, 10)
    assert got == ((6.0, 10.0),)


def test_a_start_that_is_not_midnight() -> None:
    got = shift_intervals(Shift(start="06:00", end="14:00"), "UTC", MONDAY_UTC.replace(hour=9), 30)
    assert got == ((0.0, 5.0), (21.0, 29.0))


def test_equal_start_and_end_is_a_24_hour_shift() -> None:
    got = shift_intervals(Shift(start="06:00", end="06:00", days=[0]), "UTC", MONDAY_UTC, 168)
    assert got == ((6.0, 30.0),)


def test_local_time_of_the_site() -> None:
    # Berlin is at +01:00 in November, New York at -05:00
    berlin = shift_intervals(Shift(days=[0]), "Europe/Berlin", MONDAY_UTC, 24)
    new_york = shift_intervals(Shift(days=[0]), "America/New_York", MONDAY_UTC, 24)
    assert berlin == ((5.0, 13.0),)
    assert new_york == ((11.0, 19.0),)


def test_spring_dst_change_shortens_a_night_shift() -> None:
    monday = datetime(2026, 3, 23, tzinfo=UTC)
    night = shift_intervals(
        Shift(start="22:00", end="06:00", days=[5]), "Europe/Berlin", monday, 168
    )
    assert night == ((141.0, 148.0),)  # 21:00 UTC to 04:00 UTC: 7 hours
    # day shifts before and after the change keep 06:00 local time
    day = shift_intervals(Shift(days=[0]), "Europe/Berlin", monday, 200)
    assert day == ((5.0, 13.0), (172.0, 180.0))  # 05:00 UTC, then 04:00 UTC a week later


def test_autumn_dst_change_lengthens_a_night_shift() -> None:
    monday = datetime(2026, 10, 19, tzinfo=UTC)  # Berlin goes back on Sunday 25 October
    night = shift_intervals(
        Shift(start="22:00", end="06:00", days=[5]), "Europe/Berlin", monday, 168
    )
    assert night == ((140.0, 149.0),)  # 20:00 UTC to 05:00 UTC: 9 hours


def test_a_start_in_another_offset_is_the_same_instant() -> None:
    start = MONDAY_UTC.astimezone(timezone(timedelta(hours=3)))
    assert shift_intervals(Shift(), "UTC", start, 48) == shift_intervals(
        Shift(), "UTC", MONDAY_UTC, 48
    )


def test_errors() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        shift_intervals(Shift(), "UTC", datetime(2026, 11, 2), 24)
    with pytest.raises(ValueError, match="unknown timezone"):
        shift_intervals(Shift(), "Mars/Olympus", MONDAY_UTC, 24)
    with pytest.raises(ValueError, match="horizon_h"):
        shift_intervals(Shift(), "UTC", MONDAY_UTC, float("nan"))
