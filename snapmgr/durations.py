"""Calendar durations such as ``7d`` or ``1y6m``, and subtracting them from a time.

Used by ``keep_within`` (retention), ``check --max-age`` and ``orphan_grace``.
The syntax follows restic's ``--keep-within`` (``6y5m234d37h``) so users can
carry their habits over, plus weeks, minutes and seconds:

====  =======  ==================================================
unit  meaning  arithmetic in :meth:`Duration.before`
====  =======  ==================================================
y     years    calendar: same day and time N years earlier
m     months   calendar: same day and time N months earlier
w     weeks    calendar: 7 x N days, wall clock
d     days     calendar: same time of day N days earlier
h     hours    elapsed time (3600 s each), whatever the clock says
min   minutes  elapsed time
s     seconds  elapsed time
====  =======  ==================================================

Units combine (``1y6m``, ``2d12h``, ``1h30min``), each at most once, in any
order; ``str()`` gives the canonical order y m w d h min s. ``m`` is months,
as in restic, so a duration mixing months with minutes or seconds
(``1m30s``) is refused: it reads like Go's or systemd's "one minute thirty"
and would silently mean a month.

When a month has no such day, the date is clamped to its last day:
2024-03-31 minus ``1m`` is 2024-02-29. restic (Go's ``AddDate``) would roll
over to 2024-03-02 instead, a window two days *shorter* than a month; for a
retention window the clamped, longer reading is the safe one. The two agree
on every day up to the 28th.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

_UNITS = (
    ("years", "y"),
    ("months", "m"),
    ("weeks", "w"),
    ("days", "d"),
    ("hours", "h"),
    ("minutes", "min"),
    ("seconds", "s"),
)
_FIELD_FOR_UNIT = {unit: name for name, unit in _UNITS}

# ``min`` must be tried before ``m``; [0-9], not \d, which also matches
# non-ASCII digits.
_TOKEN = re.compile(r"([0-9]+)(min|[ymwdhs])")
_WHOLE = re.compile(r"(?:[0-9]+(?:min|[ymwdhs]))+")

ACCEPTED_FORMS = (
    "a whole number and a unit, combinable: y (years), m (months), w (weeks), d (days), "
    "h (hours), min (minutes), s (seconds); e.g. 36h, 7d, 2w, 6m, 1y6m, 2d12h"
)

# What ``before`` answers when the true result predates year 1: every real
# time is later, so "within 10000y" simply covers everything.
EARLIEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Duration:
    """A positive span of calendar and clock units; see the module docstring.

    Units are kept as written, not normalised (``2w`` stays ``2w``, not
    ``14d``), so messages and retention reasons show what the user wrote.
    """

    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"duration {field.name} must be a whole number >= 0, got {value!r}"
                )
        if not any(getattr(self, field.name) for field in fields(self)):
            raise ValueError("a duration must be greater than zero")
        if self.months and (self.minutes or self.seconds):
            raise ValueError(
                "months (m) cannot be combined with minutes or seconds: "
                "'m' means months; write 'min' for minutes"
            )

    def __str__(self) -> str:
        return "".join(f"{value}{unit}" for name, unit in _UNITS if (value := getattr(self, name)))

    def before(self, when: datetime) -> datetime:
        """The time this duration before ``when``, in ``when``'s time zone.

        Years, months, weeks and days move the calendar date and keep the wall
        clock time (as restic does), so ``1d`` before noon is noon the day
        before even across a daylight-saving change; hours, minutes and seconds
        are elapsed time. Results before year 1 are :data:`EARLIEST`.
        """
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError(f"{when.isoformat()} has no time zone; durations need an aware time")
        try:
            wall = _months_before(when, 12 * self.years + self.months)
            wall -= timedelta(days=7 * self.weeks + self.days)
            elapsed = timedelta(hours=self.hours, minutes=self.minutes, seconds=self.seconds)
            # Via UTC, so elapsed time is exact and a wall time that the
            # calendar step put into a DST gap or overlap gets a real offset.
            return (wall.astimezone(UTC) - elapsed).astimezone(when.tzinfo)
        except (OverflowError, ValueError):
            return EARLIEST


def _months_before(when: datetime, months: int) -> datetime:
    """``when`` moved back by whole months, the day clamped to the month's end."""
    if not months:
        return when
    year, month0 = divmod(when.year * 12 + (when.month - 1) - months, 12)
    if year < 1:
        raise OverflowError("before year 1")
    day = min(when.day, calendar.monthrange(year, month0 + 1)[1])
    return when.replace(year=year, month=month0 + 1, day=day)


def parse_duration(text: str) -> Duration:
    """Parse ``36h``, ``7d``, ``2w``, ``6m``, ``1y6m``, ``2d12h``...

    Raises ``ValueError`` naming the text and the accepted forms; the caller
    adds which setting or flag it came from.
    """
    stripped = text.strip()
    if not _WHOLE.fullmatch(stripped):
        raise ValueError(f"invalid duration {text!r}: expected {ACCEPTED_FORMS}")
    values: dict[str, int] = {}
    for number, unit in _TOKEN.findall(stripped):
        name = _FIELD_FOR_UNIT[unit]
        if name in values:
            raise ValueError(f"invalid duration {text!r}: unit {unit!r} given twice")
        values[name] = int(number)
    try:
        return Duration(**values)
    except ValueError as exc:
        raise ValueError(f"invalid duration {text!r}: {exc}") from None
