"""Monitoring: is the newest snapshot recent enough, and Prometheus gauges for node_exporter.

``check`` measures the newest committed snapshot's age against *now* (unlike
``keep_within``, which measures against the newest snapshot): a probe must
notice when snapshots stop. Gauges are written in Prometheus' text format for
node_exporter's textfile collector, atomically (temp file + rename in the same
directory, the temp name not ending in ``.prom``) so the collector never reads
half a file. ``check`` and ``prune`` each write their own file; every series
carries a ``stores`` label so two databases on one host do not collide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from snapmgr.catalog import Entry
from snapmgr.drill_record import DrillRecord
from snapmgr.durations import Duration
from snapmgr.errors import StorageError
from snapmgr.manifest import Manifest
from snapmgr.pointer import replace_file

_AGE_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


def format_age(seconds: float) -> str:
    """``3d``, ``3d4h``, ``2h15min``, ``45s``: the largest unit and the next one, in
    duration syntax, rounded down (``3d0h7s`` reads ``3d``)."""
    if seconds < 0:
        return f"{format_age(-seconds)} in the future"
    whole = int(seconds)
    for index, (unit, size) in enumerate(_AGE_UNITS):
        if whole >= size or size == 1:
            text = f"{whole // size}{unit}"
            if index + 1 < len(_AGE_UNITS):
                next_unit, next_size = _AGE_UNITS[index + 1]
                rest = whole % size // next_size
                text += f"{rest}{next_unit}" if rest else ""
            return text
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class HealthReport:
    """The verdict of ``check``, with what it was based on."""

    healthy: bool
    problems: tuple[str, ...]
    count: int
    newest: Manifest | None
    now: datetime
    max_age: Duration
    min_count: int
    label: str | None
    #: The newest drill of the label's snapshots, and the newest that passed.
    last_drill: DrillRecord | None = None
    last_good_drill: DrillRecord | None = None
    max_drill_age: Duration | None = None

    @property
    def age_s(self) -> float | None:
        return None if self.newest is None else (self.now - self.newest.created_at).total_seconds()

    def summary(self) -> str:
        """One line: ``ok: ...`` or ``unhealthy: ...`` with every problem."""
        if not self.healthy:
            return "unhealthy: " + "; ".join(self.problems)
        assert self.newest is not None and self.age_s is not None
        return (
            f"ok: newest snapshot {self.newest.id} is {format_age(self.age_s)} old "
            f"(max {self.max_age}), {self.count} snapshot{'s' if self.count != 1 else ''}"
        )


def assess(
    entries: Sequence[Entry],
    *,
    max_age: Duration,
    min_count: int,
    now: datetime,
    where: str,
    label: str | None = None,
    drills: Mapping[str, DrillRecord] | None = None,
    max_drill_age: Duration | None = None,
) -> HealthReport:
    """Judge committed snapshots: is the newest younger than ``max_age`` at ``now``,
    are there at least ``min_count``, and (``max_drill_age``) did a drill of one of
    them pass that recently? ``where`` names the stores in messages."""
    manifests = [e.manifest for e in entries if label is None or e.manifest.label == label]
    records = [drills[m.id] for m in manifests if drills and m.id in drills]
    last_drill = max(records, key=lambda r: r.at, default=None)
    last_good = max((r for r in records if r.ok), key=lambda r: r.at, default=None)
    newest = max(manifests, key=lambda m: (m.created_at, m.id), default=None)
    scope = f" with label {label}" if label else ""
    problems = []
    if newest is None:
        problems.append(f"no committed snapshot{scope} in {where}")
    else:
        if newest.created_at <= max_age.before(now):
            age = format_age((now - newest.created_at).total_seconds())
            problems.append(
                f"newest snapshot {newest.id} is {age} old, older than --max-age {max_age}"
            )
        if len(manifests) < min_count:
            problems.append(
                f"only {len(manifests)} snapshot{'s' if len(manifests) != 1 else ''}{scope}, "
                f"fewer than --min-count {min_count}"
            )
    if max_drill_age is not None and (
        last_good is None or last_good.at <= max_drill_age.before(now)
    ):
        problems.append(_drill_problem(last_good, last_drill, max_drill_age, now, scope))
    return HealthReport(
        healthy=not problems,
        problems=tuple(problems),
        count=len(manifests),
        newest=newest,
        now=now,
        max_age=max_age,
        min_count=min_count,
        label=label,
        last_drill=last_drill,
        last_good_drill=last_good,
        max_drill_age=max_drill_age,
    )


def _drill_problem(
    good: DrillRecord | None,
    last: DrillRecord | None,
    limit: Duration,
    now: datetime,
    scope: str,
) -> str:
    if good is None:
        text = f"no snapshot{scope} has a successful drill"
    else:
        age = format_age((now - good.at).total_seconds())
        text = f"the last successful drill ({good.id}) is {age} old, older than --max-drill-age"
        text += f" {limit}"
    if last is not None and not last.ok:
        text += f" (the last drill, of {last.id}, failed)"
    return text


@dataclass(frozen=True)
class Gauge:
    """One Prometheus gauge sample."""

    name: str
    help: str
    value: float


def check_gauges(report: HealthReport | None, now: datetime) -> list[Gauge]:
    """Gauges for ``check``; ``report`` is ``None`` when the stores could not be read."""
    gauges = [
        Gauge("snapmgr_check_healthy", "1 if the last check passed, else 0",
              1 if report is not None and report.healthy else 0),
        Gauge("snapmgr_check_timestamp_seconds", "When the last check ran (Unix time)",
              now.timestamp()),
    ]  # fmt: skip
    if report is None:
        return gauges
    gauges.append(Gauge("snapmgr_snapshots", "Committed snapshots", report.count))
    if report.newest is not None and report.age_s is not None:
        gauges += [
            Gauge("snapmgr_newest_snapshot_age_seconds", "Age of the newest committed snapshot",
                  report.age_s),
            Gauge("snapmgr_newest_snapshot_timestamp_seconds",
                  "created_at of the newest committed snapshot (Unix time)",
                  report.newest.created_at.timestamp()),
            Gauge("snapmgr_newest_snapshot_size_bytes", "Stored size of the newest snapshot",
                  report.newest.size),
        ]  # fmt: skip
    drill = report.last_drill
    if drill is not None:
        gauges += [
            Gauge("snapmgr_last_drill_timestamp_seconds", "When the last drill ran (Unix time)",
                  drill.at.timestamp()),
            Gauge("snapmgr_last_drill_success", "1 if the last drill proved its snapshot",
                  1 if drill.ok else 0),
            Gauge("snapmgr_last_drill_duration_seconds",
                  "How long the last drill's restore took (the recovery time)", drill.restore_s),
        ]  # fmt: skip
    if report.last_good_drill is not None:
        gauges.append(
            Gauge("snapmgr_last_successful_drill_timestamp_seconds",
                  "When the last successful drill ran (Unix time)",
                  report.last_good_drill.at.timestamp())
        )  # fmt: skip
    return gauges


def prune_gauges(
    *, success: bool, now: datetime, duration_s: float, kept: int, removed: int, orphans: int
) -> list[Gauge]:
    """Gauges for ``prune``: the outcome of this (the last) run."""
    return [
        Gauge("snapmgr_last_prune_success", "1 if the last prune completed, else 0",
              1 if success else 0),
        Gauge("snapmgr_last_prune_timestamp_seconds", "When the last prune ran (Unix time)",
              now.timestamp()),
        Gauge("snapmgr_last_prune_duration_seconds", "How long the last prune took",
              duration_s),
        Gauge("snapmgr_last_prune_kept_snapshots", "Snapshots the last prune kept", kept),
        Gauge("snapmgr_last_prune_removed_snapshots", "Snapshots the last prune removed",
              removed),
        Gauge("snapmgr_last_prune_removed_orphans", "Orphans the last prune removed", orphans),
    ]  # fmt: skip


def render(gauges: Sequence[Gauge], labels: dict[str, str]) -> str:
    """Prometheus text exposition format (version 0.0.4)."""
    label_text = ",".join(f'{key}="{_escape(value)}"' for key, value in sorted(labels.items()))
    selector = f"{{{label_text}}}" if label_text else ""
    lines = []
    for gauge in gauges:
        lines += [
            f"# HELP {gauge.name} {gauge.help}",
            f"# TYPE {gauge.name} gauge",
            f"{gauge.name}{selector} {_number(gauge.value)}",
        ]
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def write_metrics_file(path: str, text: str) -> None:
    """Replace ``path`` atomically, world-readable (node_exporter often runs as another user)."""
    try:
        replace_file(path, text, 0o644)
    except OSError as exc:
        raise StorageError(
            f"cannot write the metrics file {path}: {exc.strerror or exc}; "
            "check --metrics-file names a writable directory"
        ) from exc
