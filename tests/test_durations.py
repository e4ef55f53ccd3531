"""Durations: what parses, what is refused and why, and calendar arithmetic."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapmgr.durations import EARLIEST, Duration, parse_duration

BERLIN = ZoneInfo("Europe/Berlin")
PROPERTY = settings(max_examples=300, derandomize=True, deadline=None)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("36h", Duration(hours=36), "36h"),
        ("7d", Duration(days=7), "7d"),
        ("2w", Duration(weeks=2), "2w"),
        ("6m", Duration(months=6), "6m"),
        ("1y", Duration(years=1), "1y"),
        ("1y6m", Duration(years=1, months=6), "1y6m"),
        ("2d12h", Duration(days=2, hours=12), "2d12h"),
        ("12h2d", Duration(days=2, hours=12), "2d12h"),
        ("1y1d1m", Duration(years=1, months=1, days=1), "1y1m1d"),  # restic's own test input
        ("30min", Duration(minutes=30), "30min"),
        ("1h30min", Duration(hours=1, minutes=30), "1h30min"),
        ("90s", Duration(seconds=90), "90s"),
        ("1y2m3w4d5h", Duration(1, 2, 3, 4, 5), "1y2m3w4d5h"),
        ("2w3d4h5min6s", Duration(weeks=2, days=3, hours=4, minutes=5, seconds=6), "2w3d4h5min6s"),
        ("  7d\n", Duration(days=7), "7d"),
        ("007d", Duration(days=7), "7d"),
        ("0y6m", Duration(months=6), "6m"),
    ],
)
def test_parses(text: str, expected: Duration, canonical: str) -> None:
    assert parse_duration(text) == expected
    assert str(parse_duration(text)) == canonical


@pytest.mark.parametrize(
    "text",
    ["", "   ", "7", "d", "7D", "7H", "-1d", "+1d", "1.5d", "7 d", "1y 6m", "1x", "5mi", "1day",
     "P1D", "1dd", "d7", "\u0663d", "7d,", "1e3d"],
)  # fmt: skip
def test_refuses_malformed_text_naming_it_and_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    message = str(caught.value)
    assert repr(text) in message
    assert "y (years), m (months), w (weeks), d (days), h (hours), min (minutes)" in message


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("0d", "greater than zero"),
        ("0h0min", "greater than zero"),
        ("1d1d", "'d' given twice"),
        ("1m30s", "write 'min' for minutes"),
        ("2m5min", "'m' means months"),
    ],
)
def test_refuses_zero_repeats_and_month_minute_mixups(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as caught:
        parse_duration(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"days": -1}, {"days": True}, {"hours": 1.5}, {"months": 1, "seconds": 1}],
)
def test_constructor_refuses_what_parse_refuses(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Duration(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "start", "expected"),
    [
        ("1m", utc(2024, 3, 31, 10), utc(2024, 2, 29, 10)),  # clamped to the leap day
        ("1m", utc(2023, 3, 31, 10), utc(2023, 2, 28, 10)),
        ("1m", utc(2024, 5, 31), utc(2024, 4, 30)),
        ("2m", utc(2024, 1, 31), utc(2023, 11, 30)),
        ("15m", utc(2024, 3, 15), utc(2022, 12, 15)),
        ("1y", utc(2024, 2, 29, 6), utc(2023, 2, 28, 6)),
        ("4y", utc(2024, 2, 29, 6), utc(2020, 2, 29, 6)),
        ("1m1d", utc(2024, 3, 31), utc(2024, 2, 28)),  # months first, then days
        ("1w", utc(2024, 1, 3), utc(2023, 12, 27)),
        ("36h", utc(2024, 1, 1), utc(2023, 12, 30, 12)),
        ("1h30min15s", utc(2024, 1, 1), utc(2023, 12, 31, 22, 29, 45)),
        # restic's golden file 29 keeps back to 2014-11-15 10:20:30 from this reference.
        ("1y2m3d3h", utc(2016, 1, 18, 12, 2, 3), utc(2014, 11, 15, 9, 2, 3)),
    ],
)
def test_before(text: str, start: datetime, expected: datetime) -> None:
    assert parse_duration(text).before(start) == expected


def test_calendar_units_keep_the_wall_clock_across_daylight_saving() -> None:
    # Berlin springs forward on 2024-03-31: one day before noon is noon, 23 hours earlier.
    noon = datetime(2024, 3, 31, 12, tzinfo=BERLIN)
    day_before = parse_duration("1d").before(noon)
    assert (day_before.date(), day_before.hour, day_before.tzinfo) == (
        noon.date() - timedelta(days=1),
        12,
        BERLIN,
    )
    assert noon.astimezone(UTC) - day_before.astimezone(UTC) == timedelta(hours=23)


def test_clock_units_are_elapsed_time_across_daylight_saving() -> None:
    # 03:30 CEST on 2024-03-31 is 01:30Z; two hours earlier is 23:30Z, i.e. 00:30 CET.
    result = parse_duration("2h").before(datetime(2024, 3, 31, 3, 30, tzinfo=BERLIN))
    assert result == utc(2024, 3, 30, 23, 30)
    assert (result.hour, result.minute, result.utcoffset()) == (0, 30, timedelta(hours=1))


@pytest.mark.parametrize(
    ("duration", "start"),
    [
        (Duration(years=10_000), utc(2024, 1, 1)),
        (Duration(days=10**9), utc(2024, 1, 1)),
        (Duration(hours=10**12), utc(2024, 1, 1)),
        (Duration(seconds=1), utc(1, 1, 1)),
    ],
)
def test_before_year_one_is_the_earliest_time(duration: Duration, start: datetime) -> None:
    assert duration.before(start) == EARLIEST


def test_before_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        parse_duration("1d").before(datetime(2024, 1, 1))


_UNIT_VALUE = st.one_of(st.just(0), st.integers(1, 400))


@st.composite
def durations(draw: st.DrawFn) -> Duration:
    """Any valid duration: mostly sparse units, never months with minutes or seconds."""
    values = {
        name: draw(_UNIT_VALUE)
        for name in ("years", "months", "weeks", "days", "hours", "minutes", "seconds")
    }
    if values["months"]:
        values["minutes"] = values["seconds"] = 0
    if not any(values.values()):
        values["days"] = 1
    return Duration(**values)


_TIMES = st.datetimes(
    min_value=datetime(1900, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, BERLIN]),
)


@PROPERTY
@given(duration=durations())
def test_text_round_trips(duration: Duration) -> None:
    assert parse_duration(str(duration)) == duration
    assert parse_duration(f" {duration} ") == duration


@PROPERTY
@given(duration=durations(), start=_TIMES)
def test_before_is_earlier_and_in_the_same_zone(duration: Duration, start: datetime) -> None:
    result = duration.before(start)
    # Compared in UTC: Python compares times sharing a tzinfo by wall clock.
    assert result.astimezone(UTC) < start.astimezone(UTC)
    assert result.tzinfo is start.tzinfo


@PROPERTY
@given(hours=_UNIT_VALUE, minutes=_UNIT_VALUE, seconds=st.integers(1, 10**6), start=_TIMES)
def test_clock_units_subtract_exact_elapsed_time(
    hours: int, minutes: int, seconds: int, start: datetime
) -> None:
    elapsed = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    result = Duration(hours=hours, minutes=minutes, seconds=seconds).before(start)
    assert start.astimezone(UTC) - result.astimezone(UTC) == elapsed


@PROPERTY
@given(weeks=_UNIT_VALUE, days=st.integers(1, 5000), start=_TIMES.map(lambda t: t.astimezone(UTC)))
def test_day_units_in_utc_are_whole_days(weeks: int, days: int, start: datetime) -> None:
    result = Duration(weeks=weeks, days=days).before(start)
    assert start - result == timedelta(days=7 * weeks + days)


@PROPERTY
@given(years=st.integers(0, 50), months=st.integers(1, 600), start=_TIMES)
def test_month_units_move_the_calendar_and_clamp(years: int, months: int, start: datetime) -> None:
    result = Duration(years=years, months=months).before(start)
    total = (start.year - result.year) * 12 + start.month - result.month
    assert total == 12 * years + months
    assert result.day == min(start.day, calendar.monthrange(result.year, result.month)[1])
    if start.tzinfo is UTC:  # a Berlin wall time may land in a DST gap and move
        assert result.time() == start.time()
