"""Retention: restic's own expected results, a naive model, and the invariants users rely on.

Three oracles, from strongest to broadest:

* restic's golden files (tests/data/retention/restic_policy_golden.json):
  restic's TestApplyPolicy inputs and expected kept sets with reasons.
* ``model_reasons`` below: a deliberately different, set-based reading of
  the rules (rank the periods, take the first N, then the oldest-snapshot
  rule as a separate condition), checked against the production walk over
  random histories.
* Examples and invariants for the edges: ISO weeks across years, month ends,
  daylight saving in Europe/Berlin, pins, labels, future-dated snapshots.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapmgr.durations import Duration, parse_duration
from snapmgr.retention import Decision, EmptyPolicyError, Policy, apply_policy

BERLIN = ZoneInfo("Europe/Berlin")
KOLKATA = ZoneInfo("Asia/Kolkata")
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)
GOLDEN = json.loads(
    (Path(__file__).parent / "data" / "retention" / "restic_policy_golden.json").read_text()
)
PROPERTY = settings(max_examples=250, derandomize=True, deadline=None)


@dataclass(frozen=True)
class Snap:
    """A stand-in satisfying the SnapshotInfo protocol."""

    id: str
    label: str
    created_at: datetime
    pinned: bool = False


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def history(*times: datetime, label: str = "app", pinned: Sequence[int] = ()) -> list[Snap]:
    return [
        Snap(f"{label}_{n:03d}", label, when, pinned=n in pinned) for n, when in enumerate(times)
    ]


def kept(decisions: list[Decision[Snap]]) -> dict[datetime, tuple[str, ...]]:
    return {d.snapshot.created_at: d.reasons for d in decisions if d.keep}


# --- restic's golden files ---------------------------------------------------------------


def _golden_policy(spec: dict[str, Any]) -> Policy:
    if "keep_within" in spec:
        spec = {**spec, "keep_within": parse_duration(spec["keep_within"])}
    return Policy(**spec)


def _golden_id(case: dict[str, Any]) -> str:
    return case["golden"].split("/")[1] + "_" + case["golden"].rsplit("_", 1)[1]


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=_golden_id)
def test_matches_restic_golden_file(case: dict[str, Any]) -> None:
    snaps = [
        Snap(f"restic_{n:03d}", "restic", datetime.fromisoformat(text))
        for n, text in enumerate(GOLDEN["snapshots"])
    ]
    decisions = apply_policy(snaps, _golden_policy(case["policy"]), now=FAR_FUTURE)

    # restic says "daily snapshot" / "oldest daily snapshot"; we say "daily" / "oldest daily",
    # and add "newest" for the group's newest. Identical times are interchangeable.
    expected = [
        (
            datetime.fromisoformat(text),
            tuple(r.removesuffix(" snapshot") for r in reasons) + (("newest",) if n == 0 else ()),
        )
        for n, (text, reasons) in enumerate(case["keep"])
    ]
    assert [(d.snapshot.created_at, d.reasons) for d in decisions if d.keep] == expected
    assert len(decisions) == len(snaps)
    assert all(d.reasons == () for d in decisions if not d.keep)


# --- the rules, by example ---------------------------------------------------------------


def test_keep_last_and_ties_broken_by_id() -> None:
    same_second = utc(2025, 9, 30, 21, 25, 11)
    snaps = [
        Snap("pre_migration_20250930_212511", "pre_migration", same_second),
        Snap("pre_migration_20250930_212511_1", "pre_migration", same_second),
        Snap("pre_migration_20250929_000000", "pre_migration", utc(2025, 9, 29)),
    ]
    decisions = apply_policy(snaps, Policy(keep_last=2))
    assert [(d.snapshot.id, d.reasons) for d in decisions] == [
        ("pre_migration_20250930_212511_1", ("last", "newest")),
        ("pre_migration_20250930_212511", ("last",)),
        ("pre_migration_20250929_000000", ()),
    ]


def test_iso_weeks_across_new_year_2021() -> None:
    # 2020-12-31 and 2021-01-01..03 are ISO 2020-W53; 2021-01-04 starts 2021-W01.
    snaps = history(
        utc(2020, 12, 31, 12), utc(2021, 1, 1, 12), utc(2021, 1, 3, 12), utc(2021, 1, 4, 12)
    )
    assert kept(apply_policy(snaps, Policy(keep_weekly=2))) == {
        utc(2021, 1, 4, 12): ("weekly", "newest"),
        utc(2021, 1, 3, 12): ("weekly",),
    }
    # A third week would be allowed but there is none: the oldest snapshot is kept too.
    assert kept(apply_policy(snaps, Policy(keep_weekly=3))) == {
        utc(2021, 1, 4, 12): ("weekly", "newest"),
        utc(2021, 1, 3, 12): ("weekly",),
        utc(2020, 12, 31, 12): ("oldest weekly",),
    }


def test_iso_week_53_of_2026_and_calendar_years() -> None:
    # 2026-12-21 is 2026-W52; 2026-12-28..2027-01-03 is 2026-W53; 2027-01-04 is 2027-W01.
    snaps = history(
        utc(2026, 12, 21), utc(2026, 12, 28), utc(2027, 1, 3, 23), utc(2027, 1, 4, 0, 0, 1)
    )
    assert kept(apply_policy(snaps, Policy(keep_weekly=5))) == {
        utc(2027, 1, 4, 0, 0, 1): ("weekly", "newest"),
        utc(2027, 1, 3, 23): ("weekly",),
        utc(2026, 12, 21): ("weekly",),  # opens its own week, so plain "weekly"
    }
    # Years are calendar years, not ISO years: 2027-01-03 is in 2027.
    assert kept(apply_policy(snaps, Policy(keep_yearly=2))) == {
        utc(2027, 1, 4, 0, 0, 1): ("yearly", "newest"),
        utc(2026, 12, 28): ("yearly",),
    }


def test_month_ends_and_leap_day() -> None:
    snaps = history(
        utc(2024, 1, 31, 23, 59, 59), utc(2024, 2, 1), utc(2024, 2, 29, 23), utc(2024, 3, 1)
    )
    assert kept(apply_policy(snaps, Policy(keep_monthly=2))) == {
        utc(2024, 3, 1): ("monthly", "newest"),
        utc(2024, 2, 29, 23): ("monthly",),
    }
    assert set(kept(apply_policy(snaps, Policy(keep_daily=-1)))) == set(
        [s.created_at for s in snaps]
    )


def test_periods_are_read_in_the_given_time_zone() -> None:
    # 2024-01-31 23:30Z is 2024-02-01 00:30 in Berlin: same day and month as 2024-02-01 10:00Z.
    snaps = history(utc(2024, 1, 31, 20), utc(2024, 1, 31, 23, 30), utc(2024, 2, 1, 10))
    assert kept(apply_policy(snaps, Policy(keep_daily=2), tz=UTC)) == {
        utc(2024, 2, 1, 10): ("daily", "newest"),
        utc(2024, 1, 31, 23, 30): ("daily",),
    }
    assert kept(apply_policy(snaps, Policy(keep_daily=2), tz=BERLIN)) == {
        utc(2024, 2, 1, 10): ("daily", "newest"),
        utc(2024, 1, 31, 20): ("daily",),
    }


def test_repeated_hour_when_daylight_saving_ends_is_one_hour() -> None:
    # 2024-10-27 in Berlin: 00:30Z is 02:30 CEST, 01:30Z is 02:30 CET; both read as hour 02,
    # as restic reads the wall clock.
    snaps = history(
        utc(2024, 10, 26, 23, 30),
        utc(2024, 10, 27, 0, 30),
        utc(2024, 10, 27, 1, 30),
        utc(2024, 10, 27, 2, 30),
    )
    assert kept(apply_policy(snaps, Policy(keep_hourly=3), tz=BERLIN)) == {
        utc(2024, 10, 27, 2, 30): ("hourly", "newest"),  # 03:30 CET
        utc(2024, 10, 27, 1, 30): ("hourly",),  # 02:30 CET
        utc(2024, 10, 26, 23, 30): ("hourly",),  # 01:30 CEST
    }
    assert len(kept(apply_policy(snaps, Policy(keep_hourly=4), tz=UTC))) == 4


def test_order_is_by_instant_even_when_times_share_a_zone() -> None:
    # 02:30 CEST (00:30Z) is older than 02:10 CET (01:10Z), though its wall clock is later.
    summer = datetime(2024, 10, 27, 2, 30, tzinfo=BERLIN)
    winter = datetime(2024, 10, 27, 2, 10, tzinfo=BERLIN, fold=1)
    decisions = apply_policy(history(winter, summer), Policy(keep_last=1), tz=BERLIN)
    assert [(d.snapshot.created_at.utcoffset(), d.keep) for d in decisions] == [
        (timedelta(hours=1), True),
        (timedelta(hours=2), False),
    ]
    within = Policy(keep_within=parse_duration("50min"))
    assert len(kept(apply_policy(history(winter, summer), within, tz=BERLIN))) == 2


def test_skipped_hour_when_daylight_saving_starts() -> None:
    # 2024-03-31 in Berlin: 00:59Z is 01:59 CET, 01:00Z is 03:00 CEST; hour 02 never happens.
    snaps = history(utc(2024, 3, 31, 0, 1), utc(2024, 3, 31, 0, 59), utc(2024, 3, 31, 1))
    assert kept(apply_policy(snaps, Policy(keep_hourly=2), tz=BERLIN)) == {
        utc(2024, 3, 31, 1): ("hourly", "newest"),
        utc(2024, 3, 31, 0, 59): ("hourly",),
    }


def test_oldest_rule_only_while_a_count_is_left() -> None:
    days = [utc(2025, 5, d, h) for d in (1, 2, 3) for h in (8, 20)]
    snaps = history(*days)
    # Three days, daily 3: the count is used up on day 1's 20:00, so 08:00 goes.
    assert utc(2025, 5, 1, 8) not in kept(apply_policy(snaps, Policy(keep_daily=3)))
    # daily 4: one left when the walk reaches the oldest, which shares day 1.
    assert kept(apply_policy(snaps, Policy(keep_daily=4)))[utc(2025, 5, 1, 8)] == ("oldest daily",)
    # unlimited never runs out.
    assert kept(apply_policy(snaps, Policy(keep_daily=-1)))[utc(2025, 5, 1, 8)] == ("oldest daily",)


def test_every_applicable_reason_in_order() -> None:
    newest = utc(2025, 6, 30, 12)
    snaps = history(utc(2025, 6, 1), newest, pinned=[1])
    policy = Policy(keep_last=1, keep_daily=1, keep_monthly=1, keep_within=parse_duration("1d"))
    assert kept(apply_policy(snaps, policy))[newest] == (
        "pinned",
        "within 1d",
        "last",
        "daily",
        "monthly",
        "newest",
    )


def test_pinned_snapshots_are_kept_and_still_fill_periods() -> None:
    snaps = history(utc(2020, 1, 1), utc(2025, 6, 1, 8), utc(2025, 6, 1, 9), pinned=[0, 1])
    assert kept(apply_policy(snaps, Policy(keep_last=1))) == {
        utc(2025, 6, 1, 9): ("last", "newest"),
        utc(2025, 6, 1, 8): ("pinned",),
        utc(2020, 1, 1): ("pinned",),
    }
    # The pinned 08:00 is the newest of its hour, so it takes one of the two hourly slots.
    assert kept(apply_policy(snaps, Policy(keep_hourly=2))) == {
        utc(2025, 6, 1, 9): ("hourly", "newest"),
        utc(2025, 6, 1, 8): ("pinned", "hourly"),
        utc(2020, 1, 1): ("pinned",),
    }


def test_labels_are_separate_groups_in_label_order() -> None:
    snaps = [
        *history(utc(2025, 1, 1), utc(2025, 1, 2), label="zeta"),
        *history(utc(2025, 1, 3), utc(2025, 1, 4), label="alpha"),
    ]
    decisions = apply_policy(snaps, Policy(keep_last=1))
    assert [(d.snapshot.id, d.keep) for d in decisions] == [
        ("alpha_001", True),
        ("alpha_000", False),
        ("zeta_001", True),
        ("zeta_000", False),
    ]


def test_keep_within_is_measured_from_the_newest_snapshot_not_now() -> None:
    snaps = history(utc(2010, 1, 1), utc(2010, 3, 1), utc(2010, 3, 5), utc(2010, 3, 8))
    decisions = apply_policy(snaps, Policy(keep_within=parse_duration("1w")))  # now: today
    assert kept(decisions) == {
        utc(2010, 3, 8): ("within 1w", "newest"),
        utc(2010, 3, 5): ("within 1w",),
    }


def test_keep_within_boundary_is_exclusive_and_months_clamp() -> None:
    newest = utc(2024, 3, 31, 10)
    # One month before 2024-03-31 is 2024-02-29 (restic's Go arithmetic says 2024-03-02).
    cutoff = utc(2024, 2, 29, 10)
    snaps = history(cutoff, cutoff + timedelta(microseconds=1), utc(2024, 3, 1), newest)
    assert set(kept(apply_policy(snaps, Policy(keep_within=parse_duration("1m"))))) == {
        newest,
        utc(2024, 3, 1),
        cutoff + timedelta(microseconds=1),
    }


def test_keep_within_ignores_future_snapshots_as_reference() -> None:
    now = utc(2024, 6, 1)
    skewed = utc(2030, 1, 1)
    snaps = history(utc(2024, 5, 20), utc(2024, 5, 31), skewed)
    policy = Policy(keep_within=parse_duration("7d"))
    assert kept(apply_policy(snaps, policy, now=now)) == {
        skewed: ("within 7d", "newest"),
        utc(2024, 5, 31): ("within 7d",),
    }
    # Nothing in the past to measure from: like restic, everything is within.
    assert len(kept(apply_policy(snaps, policy, now=utc(2000, 1, 1)))) == 3


def test_keep_within_days_follow_the_wall_clock_in_tz() -> None:
    # Berlin moves to summer time on 2024-03-31: "1d" before 12:00 CEST (10:00Z) is
    # 2024-03-30 12:00 CET (11:00Z), 23 elapsed hours; in UTC it is 24 hours.
    snaps = history(utc(2024, 3, 30, 10, 59, 59), utc(2024, 3, 30, 11, 0, 1), utc(2024, 3, 31, 10))
    policy = Policy(keep_within=parse_duration("1d"))
    assert utc(2024, 3, 30, 10, 59, 59) not in kept(apply_policy(snaps, policy, tz=BERLIN))
    assert len(kept(apply_policy(snaps, policy, tz=BERLIN))) == 2
    assert len(kept(apply_policy(snaps, policy, tz=UTC))) == 3


@pytest.mark.parametrize(
    "policy",
    [Policy(), Policy(keep_last=0, keep_daily=0), Policy(keep_weekly=None)],
    ids=["default", "zeros", "none"],
)
def test_empty_policy_is_refused(policy: Policy) -> None:
    assert policy.is_empty()
    with pytest.raises(EmptyPolicyError, match="empty"):
        apply_policy(history(utc(2025, 1, 1)), policy)
    with pytest.raises(ValueError, match="keep_"):
        apply_policy([], policy)


def test_no_snapshots_no_decisions() -> None:
    assert apply_policy([], Policy(keep_last=1)) == []


@pytest.mark.parametrize(
    "kwargs",
    [{"keep_last": -2}, {"keep_daily": True}, {"keep_weekly": 1.5}, {"keep_within": "7d"}],
)
def test_bad_policy_values_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Policy(**kwargs)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="app_000"):
        apply_policy([Snap("app_000", "app", datetime(2025, 1, 1))], Policy(keep_last=1))


def test_describe() -> None:
    policy = Policy(keep_last=3, keep_daily=7, keep_monthly=-1, keep_within=parse_duration("2w"))
    assert policy.describe() == (
        "keep 3 latest, 7 daily, all monthly snapshots and all snapshots within 2w of the newest;"
        " pinned snapshots and each label's newest are always kept"
    )
    assert "empty" in Policy().describe()
    assert not policy.is_empty()
    assert not Policy(keep_yearly=-1).is_empty()


# --- a naive model, and properties over random histories ---------------------------------

_MODEL_PERIODS: dict[str, Callable[[datetime, int], Hashable]] = {
    "last": lambda local, position: position,
    "hourly": lambda local, position: local.strftime("%Y-%m-%d %H"),
    "daily": lambda local, position: local.date(),
    "weekly": lambda local, position: (local.isocalendar().year, local.isocalendar().week),
    "monthly": lambda local, position: local.strftime("%Y-%m"),
    "yearly": lambda local, position: local.year,
}


def model_reasons(
    snaps: Sequence[Snap], policy: Policy, tz: tzinfo, now: datetime
) -> dict[str, tuple[str, ...]]:
    """The reasons for every snapshot, computed per rule over whole groups.

    For a count rule: rank the distinct periods by their newest snapshot, keep
    the newest snapshot of the first N; and, as a separate condition, keep the
    oldest snapshot when fewer than N periods exist (or N is unlimited).
    """
    counts = {
        "last": policy.keep_last,
        "hourly": policy.keep_hourly,
        "daily": policy.keep_daily,
        "weekly": policy.keep_weekly,
        "monthly": policy.keep_monthly,
        "yearly": policy.keep_yearly,
    }
    out: dict[str, tuple[str, ...]] = {}
    for label in {s.label for s in snaps}:
        group = sorted(
            (s for s in snaps if s.label == label),
            key=lambda s: (s.created_at, s.id),
            reverse=True,
        )
        reasons: list[list[str]] = [["pinned"] if s.pinned else [] for s in group]
        if policy.keep_within is not None:
            past = [s.created_at for s in group if s.created_at < now]
            for n, s in enumerate(group):
                if not past or s.created_at > policy.keep_within.before(max(past).astimezone(tz)):
                    reasons[n].append(f"within {policy.keep_within}")
        for name, count in counts.items():
            if not count:
                continue
            periods = [
                _MODEL_PERIODS[name](s.created_at.astimezone(tz), n) for n, s in enumerate(group)
            ]
            first_of_period: dict[Hashable, int] = {}
            for n, period in enumerate(periods):
                first_of_period.setdefault(period, n)
            representatives = sorted(first_of_period.values())
            chosen = representatives if count == -1 else representatives[:count]
            for n in chosen:
                reasons[n].append(name)
            oldest = len(group) - 1
            if (count == -1 or len(representatives) < count) and oldest not in chosen:
                reasons[oldest].append(f"oldest {name}")
        reasons[0].append("newest")
        out.update({s.id: tuple(r) for s, r in zip(group, reasons, strict=True)})
    return out


# Instants where periods turn over: ISO week-year ends, month ends, leap day, Berlin DST.
_EDGES = [
    utc(2020, 12, 31, 23, 30),
    utc(2021, 1, 1, 0, 30),
    utc(2021, 1, 3, 23, 59, 59),
    utc(2021, 1, 4),
    utc(2026, 12, 28),
    utc(2027, 1, 3, 23),
    utc(2027, 1, 4, 0, 0, 1),
    utc(2024, 2, 29, 23, 30),
    utc(2024, 3, 31, 23, 59),
    utc(2023, 12, 31, 23, 0),
    utc(2024, 3, 31, 0, 59),
    utc(2024, 3, 31, 1, 0),
    utc(2024, 10, 27, 0, 30),
    utc(2024, 10, 27, 1, 30),
]
_GAPS = [
    timedelta(0),
    timedelta(seconds=1),
    timedelta(minutes=20),
    timedelta(hours=1),
    timedelta(hours=5),
    timedelta(days=1),
    timedelta(days=2),
    timedelta(days=6),
    timedelta(days=7),
    timedelta(days=31),
    timedelta(days=95),
    timedelta(days=366),
]
_COUNTS = st.sampled_from([None, 0, 1, 2, 3, 5, -1])
_WITHIN_VALUES = [parse_duration(t) for t in ("1h", "36h", "1d", "2d", "1w", "1m", "1m14d", "1y")]
_WITHINS = st.one_of(st.none(), st.sampled_from(_WITHIN_VALUES))
_POLICIES = st.builds(
    Policy,
    keep_last=_COUNTS,
    keep_hourly=_COUNTS,
    keep_daily=_COUNTS,
    keep_weekly=_COUNTS,
    keep_monthly=_COUNTS,
    keep_yearly=_COUNTS,
    keep_within=_WITHINS,
).filter(lambda policy: not policy.is_empty())
_ZONES = st.sampled_from([UTC, BERLIN, KOLKATA])


@st.composite
def histories(draw: st.DrawFn) -> list[Snap]:
    """Snapshots walking back from an edge or a random time, in clusters and gaps."""
    when = draw(
        st.one_of(
            st.sampled_from(_EDGES),
            st.datetimes(datetime(2019, 1, 1), datetime(2028, 12, 31), timezones=st.just(UTC)),
        )
    )
    snaps = []
    for n in range(draw(st.integers(1, 30))):
        label = draw(st.sampled_from(["app", "app", "db", "other"]))
        pinned = draw(st.integers(0, 7)) == 0
        snaps.append(Snap(f"{label}_{n:03d}", label, when, pinned))
        when -= draw(st.sampled_from(_GAPS)) + timedelta(
            seconds=draw(st.sampled_from([0, 7, 1799]))
        )
    return snaps


def _nows(snaps: list[Snap]) -> st.SearchStrategy[datetime]:
    return st.one_of(st.just(FAR_FUTURE), st.sampled_from([s.created_at for s in snaps]))


@PROPERTY
@given(data=st.data(), snaps=histories(), policy=_POLICIES, tz=_ZONES)
def test_agrees_with_the_naive_model(
    data: st.DataObject, snaps: list[Snap], policy: Policy, tz: tzinfo
) -> None:
    now = data.draw(_nows(snaps))
    decisions = apply_policy(snaps, policy, tz=tz, now=now)
    assert {d.snapshot.id: d.reasons for d in decisions} == model_reasons(snaps, policy, tz, now)


@PROPERTY
@given(snaps=histories(), policy=_POLICIES, tz=_ZONES)
def test_invariants(snaps: list[Snap], policy: Policy, tz: tzinfo) -> None:
    decisions = apply_policy(snaps, policy, tz=tz, now=FAR_FUTURE)

    assert sorted(d.snapshot.id for d in decisions) == sorted(s.id for s in snaps)
    assert all(d.keep == bool(d.reasons) for d in decisions)
    assert all(d.keep for d in decisions if d.snapshot.pinned)

    labels = [d.snapshot.label for d in decisions]
    assert labels == sorted(labels)
    for label in set(labels):
        group = [d for d in decisions if d.snapshot.label == label]
        order = [(d.snapshot.created_at, d.snapshot.id) for d in group]
        assert order == sorted(order, reverse=True)
        assert group[0].keep and group[0].reasons[-1] == "newest"
        assert [d for d in group if "newest" in d.reasons] == [group[0]]
        oldest_reasons = [r for d in group[:-1] for r in d.reasons if r.startswith("oldest ")]
        assert oldest_reasons == []
        for name, count in (
            ("last", policy.keep_last),
            ("daily", policy.keep_daily),
            ("weekly", policy.keep_weekly),
            ("yearly", policy.keep_yearly),
        ):
            hits = sum(name in d.reasons or f"oldest {name}" in d.reasons for d in group)
            if count and count > 0:
                assert hits <= count + 1
            elif not count:
                assert hits == 0


@PROPERTY
@given(snaps=histories(), policy=_POLICIES, tz=_ZONES, seed=st.randoms(use_true_random=False))
def test_input_order_does_not_matter(
    snaps: list[Snap], policy: Policy, tz: tzinfo, seed: Any
) -> None:
    shuffled = list(snaps)
    seed.shuffle(shuffled)
    assert apply_policy(shuffled, policy, tz=tz, now=FAR_FUTURE) == apply_policy(
        snaps, policy, tz=tz, now=FAR_FUTURE
    )


@PROPERTY
@given(snaps=histories(), within=st.sampled_from(_WITHIN_VALUES), years=st.integers(0, 50))
def test_keep_within_does_not_depend_on_the_clock(
    snaps: list[Snap], within: Duration, years: int
) -> None:
    policy = Policy(keep_within=within)
    newest = max(s.created_at for s in snaps)
    early = apply_policy(snaps, policy, now=newest + timedelta(seconds=1))
    late = apply_policy(snaps, policy, now=newest + timedelta(days=366 * years + 1))
    assert early == late
