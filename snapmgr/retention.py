"""Which snapshots a retention policy keeps, and why: restic's ``forget``, exactly.

Pure functions over snapshot metadata; nothing here touches a store. The
rules, per label (a "group"), walking its snapshots newest first:

* ``keep_last N`` keeps the N newest snapshots.
* ``keep_hourly/daily/weekly/monthly/yearly N`` keep the newest snapshot of
  each of the N most recent hours / days / ISO weeks / months / years *that
  have snapshots* (empty periods do not count). Periods are read on the wall
  clock of ``tz``, as restic does in the snapshot's zone: during the hour a
  daylight-saving change repeats, two snapshots an hour apart share an hour.
* ``-1`` for a count means unlimited (restic's ``unlimited``): every such
  period keeps its newest snapshot. ``None`` or ``0`` means the rule is unused.
* The oldest snapshot: when a count is not used up by the time the walk
  reaches the group's oldest snapshot, that snapshot is kept too, so history
  reaches back as far as it can while the policy still has room. It gets the
  plain reason ("daily") when it opens a new period anyway, and "oldest
  daily" when its period already kept a newer snapshot.
* ``keep_within DUR`` keeps every snapshot strictly newer than DUR before the
  group's newest snapshot (not before now, so a stale history is never
  wiped by the clock alone). Like restic, a snapshot dated in the future
  (clock skew) is not used as that reference; the newest one not in the
  future is.
* The rules are ORed and every kept snapshot lists every rule that keeps it.

snapmgr adds: pinned snapshots are always kept ("pinned"), so is each group's
newest snapshot ("newest"), and an empty policy is refused
(:class:`EmptyPolicyError`) rather than read as "delete everything". Pinned
snapshots take part in the walk like any other (as restic's ``--keep-tag``
ones do), so a pinned snapshot that is the newest of its day also counts as
that day's daily.

Reasons are listed in this order: pinned, within, last, hourly, daily,
weekly, monthly, yearly, newest.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, tzinfo
from itertools import groupby
from typing import Generic, Protocol, TypeVar

from snapmgr.durations import Duration

REASON_PINNED = "pinned"
REASON_NEWEST = "newest"
REASON_LAST = "last"
REASON_HOURLY = "hourly"
REASON_DAILY = "daily"
REASON_WEEKLY = "weekly"
REASON_MONTHLY = "monthly"
REASON_YEARLY = "yearly"
OLDEST_PREFIX = "oldest "
WITHIN_PREFIX = "within "

UNLIMITED = -1


class EmptyPolicyError(ValueError):
    """The policy has no rule; applying it would remove every snapshot but the newest."""


class SnapshotInfo(Protocol):
    """What retention needs to know about a snapshot (``Manifest`` has it)."""

    @property
    def id(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def pinned(self) -> bool: ...


T = TypeVar("T", bound=SnapshotInfo)


@dataclass(frozen=True)
class Decision(Generic[T]):
    """Keep or remove one snapshot; a kept one says why, a removed one has no reasons."""

    snapshot: T
    keep: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    """A retention policy. Counts: ``None``/``0`` unused, ``-1`` unlimited, else N."""

    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    keep_within: Duration | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            if field.name == "keep_within":
                continue
            value = getattr(self, field.name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < UNLIMITED:
                raise ValueError(
                    f"{field.name} must be a whole number >= 0, or -1 for unlimited; got {value!r}"
                )
        if self.keep_within is not None and not isinstance(self.keep_within, Duration):
            raise ValueError(f"keep_within must be a Duration, got {self.keep_within!r}")

    def _counts(self) -> tuple[tuple[str, int | None], ...]:
        return (
            (REASON_LAST, self.keep_last),
            (REASON_HOURLY, self.keep_hourly),
            (REASON_DAILY, self.keep_daily),
            (REASON_WEEKLY, self.keep_weekly),
            (REASON_MONTHLY, self.keep_monthly),
            (REASON_YEARLY, self.keep_yearly),
        )

    def is_empty(self) -> bool:
        """True when no rule is set: every count unused and no ``keep_within``."""
        return self.keep_within is None and not any(count for _, count in self._counts())

    def describe(self) -> str:
        """One line for humans, e.g. ``keep 7 daily, all monthly snapshots and ...``."""
        counts = []
        for name, count in self._counts():
            word = "latest" if name == REASON_LAST else name  # restic: "keep 3 latest snapshots"
            if count:
                counts.append(f"all {word}" if count == UNLIMITED else f"{count} {word}")
        rules = [f"{', '.join(counts)} snapshots"] if counts else []
        if self.keep_within is not None:
            rules.append(f"all snapshots within {self.keep_within} of the newest")
        if not rules:
            return "empty policy (refused: it would keep nothing)"
        return (
            f"keep {' and '.join(rules)}; pinned snapshots and each label's newest are always kept"
        )


def apply_policy(
    snapshots: Iterable[T],
    policy: Policy,
    *,
    tz: tzinfo = UTC,
    now: datetime | None = None,
) -> list[Decision[T]]:
    """Decide, for every snapshot, whether ``policy`` keeps it and why.

    Groups are by label, in label order; within a group decisions run newest
    first by ``created_at``, ties broken by descending ID (snapmgr gives the
    later of two same-second snapshots the suffixed, greater ID). Periods are
    read in ``tz``. ``now`` (default: the current time) only serves to skip
    future-dated snapshots when anchoring ``keep_within``.

    Raises :class:`EmptyPolicyError` for an empty policy, even with no
    snapshots: the refusal is about the policy.
    """
    if policy.is_empty():
        raise EmptyPolicyError(
            "the retention policy is empty: set at least one keep_* rule "
            "(an empty policy would remove every snapshot but the newest)"
        )
    items = list(snapshots)
    for item in items:
        if item.created_at.tzinfo is None or item.created_at.utcoffset() is None:
            raise ValueError(f"snapshot {item.id}: created_at has no time zone")
    if now is not None and now.utcoffset() is None:
        raise ValueError("now has no time zone")
    reference = datetime.now(UTC) if now is None else now
    items.sort(key=lambda item: item.label)
    decisions: list[Decision[T]] = []
    for _, group in groupby(items, key=lambda item: item.label):
        ordered = sorted(group, key=lambda item: (_instant(item), item.id), reverse=True)
        decisions.extend(_apply_to_group(ordered, policy, tz, reference))
    return decisions


def _apply_to_group(
    ordered: Sequence[T], policy: Policy, tz: tzinfo, now: datetime
) -> list[Decision[T]]:
    """The decisions for one label's snapshots, given newest first."""
    rules = [
        _CountRule(name, count, _PERIOD_KEYS[name]) for name, count in policy._counts() if count
    ]
    is_within = _within_test(ordered, policy.keep_within, tz, now)
    decisions = []
    for position, item in enumerate(ordered):
        is_oldest = position == len(ordered) - 1
        local = item.created_at.astimezone(tz)
        reasons = [REASON_PINNED] if item.pinned else []
        if is_within(_instant(item)):
            reasons.append(f"{WITHIN_PREFIX}{policy.keep_within}")
        for rule in rules:
            reason = rule.offer(local, position, is_oldest)
            if reason is not None:
                reasons.append(reason)
        if position == 0:
            reasons.append(REASON_NEWEST)
        decisions.append(Decision(item, keep=bool(reasons), reasons=tuple(reasons)))
    return decisions


def _within_test(
    ordered: Sequence[SnapshotInfo], within: Duration | None, tz: tzinfo, now: datetime
) -> Callable[[datetime], bool]:
    """Whether a UTC creation time is inside ``keep_within`` of the group's reference."""
    if within is None:
        return lambda _: False
    now = now.astimezone(UTC)
    anchor = next((_instant(item) for item in ordered if _instant(item) < now), None)
    if anchor is None:
        # restic measures from its zero time then, which keeps everything.
        return lambda _: True
    cutoff = within.before(anchor.astimezone(tz)).astimezone(UTC)
    return lambda created_at: created_at > cutoff


def _instant(item: SnapshotInfo) -> datetime:
    """``created_at`` in UTC: Python compares two times that share a tzinfo by wall
    clock, which misorders the hour a daylight-saving change repeats."""
    return item.created_at.astimezone(UTC)


# The period a local time falls in, as restic's bucket functions define them;
# the position stands in for keep_last, where every snapshot is its own period.
_PERIOD_KEYS: dict[str, Callable[[datetime, int], Hashable]] = {
    REASON_LAST: lambda _, position: position,
    REASON_HOURLY: lambda local, _: (local.year, local.month, local.day, local.hour),
    REASON_DAILY: lambda local, _: (local.year, local.month, local.day),
    REASON_WEEKLY: lambda local, _: local.isocalendar()[:2],
    REASON_MONTHLY: lambda local, _: (local.year, local.month),
    REASON_YEARLY: lambda local, _: local.year,
}


class _CountRule:
    """One ``keep_<period> N`` rule's state during a walk from newest to oldest.

    Mirrors restic's bucket: a snapshot is kept when it opens a period other
    than the last kept one and the count is not used up (``-1`` never is);
    the group's oldest snapshot is kept whenever the count is not used up.
    """

    def __init__(self, name: str, count: int, period_of: Callable[[datetime, int], Hashable]):
        self._name = name
        self._remaining = count
        self._period_of = period_of
        self._last_kept: Hashable = None

    def offer(self, local: datetime, position: int, is_oldest: bool) -> str | None:
        """The reason this rule keeps the snapshot, or ``None``; updates the count."""
        if self._remaining == 0:
            return None
        period = self._period_of(local, position)
        same_period = self._last_kept is not None and period == self._last_kept
        if same_period and not is_oldest:
            return None
        self._last_kept = period
        if self._remaining != UNLIMITED:
            self._remaining -= 1
        return f"{OLDEST_PREFIX}{self._name}" if same_period else self._name
