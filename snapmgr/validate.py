"""One validation for every number, duration, path and host name a user gives.

Config keys, ``SNAPMGR_*`` variables and flags all pass through these before
any connection is made, so a non-finite, out-of-range or empty value is a
usage error (exit 2) naming the key or flag, never an ``OverflowError``, a
``UnicodeError`` from a host name or a silently accepted ``nan`` deep inside.

Each check raises ``ValueError`` with what is wrong; the caller says where
the value came from (``config.py`` for keys and variables, :func:`flag` for
command-line flags).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

from snapmgr.durations import Duration, parse_duration
from snapmgr.errors import ConfigError

T = TypeVar("T")

#: The largest count a retention rule or --min-count takes (-1 is unlimited).
MAX_COUNT = 2**31 - 1
#: Longest duration accepted (orphan_grace, keep_within, --max-age), in days.
MAX_DURATION_DAYS = 10_000 * 366
#: PostgreSQL's lock_timeout is an int of milliseconds.
MAX_LOCK_TIMEOUT_S = (2**31 - 1) / 1000
MAX_PROGRESS_INTERVAL_S = 86_400.0
MAX_HOST = 253


def lock_timeout(value: Any) -> float:
    """Seconds to wait for other sessions' locks: from 1 ms to PostgreSQL's limit."""
    return number(value, low=0.001, high=MAX_LOCK_TIMEOUT_S)


def min_count(value: Any) -> int:
    """``check --min-count``: a whole number from 0."""
    return whole(value, low=0, high=MAX_COUNT)


def number(value: Any, *, low: float, high: float, whole: bool = False) -> float:
    """A finite number in ``[low, high]`` from a number or its text; whole if asked."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("expected a number, got an empty value")
        try:
            value = int(text) if whole else float(text)
        except ValueError:
            kind = "whole number" if whole else "number"
            raise ValueError(f"expected a {kind}, got {text!r}") from None
    if not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    if whole and not float(value).is_integer():
        raise ValueError(f"expected a whole number, got {value!r}")
    if not low <= value <= high:
        kind = "whole number" if whole else "number"
        raise ValueError(f"expected a {kind} from {_show(low)} to {_show(high)}, got {value!r}")
    return value


def whole(value: Any, *, low: int, high: int) -> int:
    """A whole number in ``[low, high]`` (``3.0`` is 3, ``3.5`` is refused)."""
    return int(number(value, low=low, high=high, whole=True))


def count(value: Any) -> int:
    """A retention count: a whole number from -1 (unlimited) to :data:`MAX_COUNT`."""
    try:
        return whole(value, low=-1, high=MAX_COUNT)
    except ValueError as exc:
        raise ValueError(f"{exc} (-1 means unlimited)") from None


def duration(value: Any) -> Duration:
    """A duration such as ``36h`` or ``1y6m``, not empty and at most 10,000 years."""
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as 36h or 7d, got {value!r}")
    if not value.strip():
        raise ValueError("expected a duration such as 36h or 7d, got an empty value")
    parsed = parse_duration(value)
    days = (
        parsed.years * 366
        + parsed.months * 31
        + parsed.weeks * 7
        + parsed.days
        + (parsed.hours + (parsed.minutes + parsed.seconds / 60) / 60) / 24
    )
    if days > MAX_DURATION_DAYS:
        raise ValueError(f"duration {value.strip()!r} is longer than 10000 years")
    return parsed


def path(value: Any) -> str:
    """A file or directory path: a non-empty string without NUL bytes."""
    if not isinstance(value, str):
        raise ValueError(f"expected a path, got {value!r}")
    if not value.strip():
        raise ValueError("expected a path, got an empty value")
    if "\0" in value:
        raise ValueError("a path cannot contain a NUL byte")
    return value


def host(name: str) -> str:
    """A DNS host name (or IP address): every dot-separated label 1 to 63
    characters, 253 in all once IDNA-encoded, as resolvers require."""
    try:
        encoded = name.encode("idna")
    except UnicodeError:
        raise ValueError(
            f"invalid host name {_shorten(name)} ({len(name)} characters): each dot-separated "
            "part must be 1 to 63 characters"
        ) from None
    if len(encoded) > MAX_HOST:
        raise ValueError(f"host name {_shorten(name)} is longer than {MAX_HOST} characters")
    return name


def flag(name: str, check: Callable[[Any], T], value: Any) -> T:
    """``check(value)`` for the command-line flag ``name``: a ``ConfigError`` naming it."""
    try:
        return check(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _shorten(text: str, keep: int = 24) -> str:
    return repr(text) if len(text) <= keep else repr(text[:keep] + "…")


def _show(bound: float) -> str:
    return repr(bound).removesuffix(".0")
