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

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, tzinfo
from itertools import groupby
from typing import Any, Generic, Protocol, TypeVar

from snapmgr import validate
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
#: The one rule that is a duration, not a count.
WITHIN_KEY = "keep_within"


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


def _count_rule(reason: str, period: str | None) -> Any:
    """A count rule's field: the reason it gives and the help of its ``--keep-*`` flag."""
    if period is None:
        text = "Keep the N newest snapshots."
    else:
        text = f"Keep the newest snapshot of each of the last N {period} (-1: all)."
    return field(default=None, metadata={"reason": reason, "help": text})


@dataclass(frozen=True)
class Policy:
    """A retention policy. Counts: ``None``/``0`` unused, ``-1`` unlimited, else N.

    The one definition of the policy's rules: the ``[retention]`` keys, their
    ``SNAPMGR_KEEP_*`` variables, the ``prune --keep-*`` flags with their help
    and the JSON of a prune are all derived from these fields (see
    :data:`POLICY_KEYS`, :func:`parse_rule`, :func:`rule_help`).
    """

    keep_last: int | None = _count_rule(REASON_LAST, None)
    keep_hourly: int | None = _count_rule(REASON_HOURLY, "hours")
    keep_daily: int | None = _count_rule(REASON_DAILY, "days")
    keep_weekly: int | None = _count_rule(REASON_WEEKLY, "ISO weeks")
    keep_monthly: int | None = _count_rule(REASON_MONTHLY, "months")
    keep_yearly: int | None = _count_rule(REASON_YEARLY, "years")
    keep_within: Duration | None = field(
        default=None,
        metadata={"help": "Keep every snapshot within DUR of the newest (36h, 7d, 2w, 6m, 1y6m)."},
    )

    def __post_init__(self) -> None:
        for name in COUNT_KEYS:
            value = getattr(self, name)
            if value is None:
                continue
            try:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"expected a whole number, got {value!r}")
                validate.count(value)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        if self.keep_within is not None and not isinstance(self.keep_within, Duration):
            raise ValueError(f"{WITHIN_KEY} must be a Duration, got {self.keep_within!r}")

    @classmethod
    def from_rules(cls, rules: Mapping[str, int | Duration | None]) -> Policy:
        """A policy from rule values by key, as :func:`parse_rule` gives them
        (``__post_init__`` checks each one's type)."""
        return cls(**rules)  # type: ignore[arg-type]

    def _counts(self) -> tuple[tuple[str, int | None], ...]:
        return tuple((_REASONS[name], getattr(self, name)) for name in COUNT_KEYS)

    def as_dict(self) -> dict[str, int | str | None]:
        """Every rule by its key, ``keep_within`` as text: for ``--json`` output."""
        out: dict[str, int | str | None] = {name: getattr(self, name) for name in COUNT_KEYS}
        out[WITHIN_KEY] = str(self.keep_within) if self.keep_within is not None else None
        return out

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


#: Every rule's key, in the order the ``Policy`` declares them.
POLICY_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Policy))
COUNT_KEYS: tuple[str, ...] = tuple(k for k in POLICY_KEYS if k != WITHIN_KEY)
_REASONS: dict[str, str] = {
    f.name: f.metadata["reason"] for f in fields(Policy) if f.name in COUNT_KEYS
}


def rule_help(key: str) -> str:
    """The help text of the ``--keep-*`` flag for rule ``key``."""
    help_text: str = next(f.metadata["help"] for f in fields(Policy) if f.name == key)
    return help_text


def flag_name(key: str) -> str:
    """``keep_daily`` -> ``--keep-daily``."""
    return "--" + key.replace("_", "-")


def parse_rule(key: str, raw: Any) -> int | Duration | None:
    """A rule's value from a flag, a variable or the config file: a count (``0``
    means unused, so ``None``) or, for ``keep_within``, a duration. Raises
    ``ValueError`` saying what is wrong; the caller names where it came from."""
    if key == WITHIN_KEY:
        return validate.duration(raw)
    if key not in COUNT_KEYS:
        raise ValueError(f"not a retention rule: {key!r}")
    return validate.count(raw) or None


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
