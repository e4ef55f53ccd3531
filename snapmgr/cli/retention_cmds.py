"""Commands that keep the history in shape and watch it: prune, delete, pin, unpin, check."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, tzinfo
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer

from snapmgr import validate
from snapmgr.catalog import Entry
from snapmgr.cli import reporting
from snapmgr.cli.common import Ctx, command
from snapmgr.errors import SafetyRefusal, SnapmgrError, StorageError
from snapmgr.health import (
    HealthReport,
    check_gauges,
    format_age,
    prune_gauges,
    render,
    write_metrics_file,
)
from snapmgr.manifest import validate_id
from snapmgr.prune import OrphanDecision, PruneResult, SnapshotDecision, StoreFailure
from snapmgr.redact import redact_url
from snapmgr.retention import POLICY_KEYS, flag_name, rule_help

log = logging.getLogger("snapmgr")
app = typer.Typer()


def _keep(key: str, metavar: str = "N") -> Any:
    """A ``--keep-*`` option: name and help from the retention policy's own field."""
    return typer.Option(flag_name(key), help=rule_help(key), metavar=metavar, show_default=False)


KeepLast = Annotated[int | None, _keep("keep_last")]
KeepHourly = Annotated[int | None, _keep("keep_hourly")]
KeepDaily = Annotated[int | None, _keep("keep_daily")]
KeepWeekly = Annotated[int | None, _keep("keep_weekly")]
KeepMonthly = Annotated[int | None, _keep("keep_monthly")]
KeepYearly = Annotated[int | None, _keep("keep_yearly")]
KeepWithin = Annotated[str | None, _keep("keep_within", "DUR")]
LabelOpt = Annotated[
    str | None, typer.Option(help="Only snapshots with this label.", show_default=False)
]
MetricsOpt = Annotated[
    str | None,
    typer.Option(help="Write Prometheus gauges here (node_exporter textfile collector).",
                 metavar="PATH", show_default=False),
]  # fmt: skip
IdArg = Annotated[str, typer.Argument(metavar="ID")]


@command(app, "prune")
def prune(
    ctx: Ctx,
    *,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would go; delete nothing.")
    ] = False,
    label: LabelOpt = None,
    keep_last: KeepLast = None,
    keep_hourly: KeepHourly = None,
    keep_daily: KeepDaily = None,
    keep_weekly: KeepWeekly = None,
    keep_monthly: KeepMonthly = None,
    keep_yearly: KeepYearly = None,
    keep_within: KeepWithin = None,
    metrics_file: MetricsOpt = None,
) -> int:
    """Remove snapshots the retention policy does not keep (restic's forget), and old orphans.

    Any --keep-* flag replaces the configured retention policy as a whole.
    """
    given = locals()
    flags = {key: given[key] for key in POLICY_KEYS}  # each --keep-* flag by its policy key
    if metrics_file is not None:
        validate.flag("--metrics-file", validate.path, metrics_file)
    started = time.monotonic()
    ctx.note(dry_run=dry_run)
    if not dry_run:
        reporting.started(ctx)
    try:
        manager = ctx.manager()
        plan = manager.plan_prune(manager.retention_policy(flags), label=label)
        result = manager.prune(plan, dry_run=dry_run)
    except SnapmgrError:
        if metrics_file and not dry_run:
            _record_prune(ctx, metrics_file, None, started)
        raise
    ctx.note(summary=_prune_summary(result))
    if ctx.json_output:
        ctx.emit_json(_prune_json(result))
    else:
        _print_prune(result, ZoneInfo(ctx.config.timezone))
    if metrics_file:
        if dry_run:
            log.info("dry run: %s not written", metrics_file)
        else:
            _record_prune(ctx, metrics_file, result, started)
    _raise_failures(result.failures, "prune")
    return 0


def _print_prune(result: PruneResult, tz: tzinfo) -> None:
    plan = result.plan
    print(f"policy ({plan.choice.source}): {plan.choice.policy.describe()}")
    width = len("would remove") if result.dry_run else len("not removed")
    for decision in plan.snapshots:
        created = decision.entry.manifest.created_at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")
        action = _snapshot_action(result, decision)
        reasons = f"  {', '.join(decision.reasons)}" if decision.keep else ""
        print(f"{action:<{width}} {decision.entry.id}  {created}{reasons}".rstrip())
    for orphan in plan.orphans:
        age = format_age(orphan.age_s)
        if orphan.remove:
            print(f"{_orphan_action(result, orphan)} orphan {orphan.location} (age {age})")
        else:
            print(f"keep orphan {orphan.location} (age {age} < orphan_grace {plan.grace})")
    print(_prune_summary(result))


def _snapshot_action(result: PruneResult, decision: SnapshotDecision) -> str:
    if decision.keep:
        return "keep"
    if result.dry_run:
        return "would remove"
    return "remove" if result.was_removed(decision) else "not removed"


def _orphan_action(result: PruneResult, orphan: OrphanDecision) -> str:
    if result.dry_run:
        return "would remove"
    return "remove" if result.orphan_removed(orphan) else "not removed"


def _prune_summary(result: PruneResult) -> str:
    plan = result.plan
    young = len(plan.orphans) - len(plan.old_orphans)
    young_note = f", {young} younger orphan(s) left alone" if young else ""
    if result.dry_run:
        return (
            f"dry run: would keep {len(plan.kept)}, remove {len(plan.removed)} snapshot(s) "
            f"and {len(plan.old_orphans)} orphan(s){young_note}; nothing was deleted"
        )
    return (
        f"kept {len(plan.kept)}, removed {len(result.deletion.removed_ids)} snapshot(s) "
        f"and {len(result.deletion.removed_orphans)} orphan(s){young_note}"
    )


def _prune_json(result: PruneResult) -> dict[str, Any]:
    plan = result.plan
    policy = plan.choice.policy
    return {
        "dry_run": result.dry_run,
        "label": plan.label,
        "policy": {
            "source": plan.choice.source,
            "description": policy.describe(),
            **policy.as_dict(),
        },
        "keep": [
            {**_snapshot_fields(d.entry), "reasons": list(d.reasons)} for d in plan.kept
        ],
        "remove": [
            {**_snapshot_fields(d.entry), "removed": result.was_removed(d)} for d in plan.removed
        ],
        "orphans": [
            {"store": o.orphan.store.name, "name": o.orphan.info.name,
             "location": redact_url(o.location), "size": o.orphan.info.size,
             "modified": o.orphan.info.modified, "age_seconds": round(o.age_s, 3),
             "remove": o.remove, "removed": result.orphan_removed(o)}
            for o in plan.orphans
        ],
        "failed_stores": _failures_json(result.failures),
    }  # fmt: skip


def _snapshot_fields(entry: Entry) -> dict[str, Any]:
    m = entry.manifest
    return {
        "id": m.id, "label": m.label, "created_at": m.created_at, "pinned": m.pinned,
        "stores": [store.name for store in entry.stores],
    }  # fmt: skip


def _failures_json(failures: tuple[StoreFailure, ...]) -> list[dict[str, str]]:
    return [{"store": f.store.name, "error": f.error} for f in failures]


def _raise_failures(failures: tuple[StoreFailure, ...], what: str) -> None:
    if failures:
        details = "; ".join(f"store {f.store.describe()}: {f.error}" for f in failures)
        raise StorageError(
            f"{what} could not finish in {len(failures)} store(s): {details}; the other stores "
            f"were handled and nothing left is inconsistent; re-run {what} when it is reachable"
        )


def _metrics_labels(ctx: Ctx) -> dict[str, str]:
    stores = ctx.config.selected_stores(ctx.stores)
    return {"stores": ",".join(redact_url(store.name) for store in stores)}


def _record_prune(ctx: Ctx, path: str, result: PruneResult | None, started: float) -> None:
    """Write the last-prune gauges; ``result`` is ``None`` when the prune failed early."""
    try:
        gauges = prune_gauges(
            success=result is not None and not result.failures,
            now=datetime.now(UTC),
            duration_s=round(time.monotonic() - started, 3),
            kept=len(result.plan.kept) if result else 0,
            removed=len(result.deletion.removed_ids) if result else 0,
            orphans=len(result.deletion.removed_orphans) if result else 0,
        )
        write_metrics_file(path, render(gauges, _metrics_labels(ctx)))
    except SnapmgrError as exc:
        if result is not None:
            raise
        log.warning("%s", exc)  # the prune's own error is the one to report


@command(app, "delete")
def delete(
    ctx: Ctx,
    snapshot_id: IdArg,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm the deletion.")] = False,
) -> int:
    """Delete one snapshot from every selected store holding it (manifest first)."""
    validate_id(snapshot_id)
    if not yes:
        raise SafetyRefusal(
            f"deleting {snapshot_id} needs confirmation: add --yes; nothing was deleted"
        )
    entry, deletion = ctx.manager().delete(snapshot_id)
    deleted = entry.id in deletion.removed_ids
    failed = [f.store for f in deletion.failures]
    done = [s for s in entry.stores if not any(s is f for f in failed)]
    if ctx.json_output:
        ctx.emit_json({
            "id": entry.id, "deleted": deleted, "stores": [s.name for s in done],
            "failed_stores": _failures_json(deletion.failures),
        })  # fmt: skip
    elif done:
        print(f"deleted {entry.id} from {', '.join(s.describe() for s in done)}")
    _raise_failures(deletion.failures, "delete")
    return 0


def _set_pinned(ctx: Ctx, snapshot_id: str, pinned: bool) -> int:
    entry = ctx.manager().set_pinned(snapshot_id, pinned)
    if ctx.json_output:
        ctx.emit_json({
            "id": entry.id, "pinned": entry.manifest.pinned,
            "stores": [store.name for store in entry.stores],
        })  # fmt: skip
    else:
        print(f"{'pinned' if entry.manifest.pinned else 'unpinned'} {entry.id}")
    return 0


@command(app, "pin")
def pin(ctx: Ctx, snapshot_id: Annotated[str, typer.Argument(metavar="ID|latest")]) -> int:
    """Pin a snapshot: prune always keeps it, delete refuses it."""
    return _set_pinned(ctx, snapshot_id, True)


@command(app, "unpin")
def unpin(ctx: Ctx, snapshot_id: Annotated[str, typer.Argument(metavar="ID|latest")]) -> int:
    """Unpin a snapshot: the retention policy decides again."""
    return _set_pinned(ctx, snapshot_id, False)


@command(app, "check")
def check(
    ctx: Ctx,
    *,
    max_age: Annotated[
        str,
        typer.Option(
            "--max-age", help="Unhealthy if the newest snapshot is older (26h, 7d).", metavar="DUR"
        ),
    ],
    min_count: Annotated[
        int, typer.Option("--min-count", help="Unhealthy with fewer committed snapshots.")
    ] = 1,
    label: LabelOpt = None,
    metrics_file: MetricsOpt = None,
    max_drill_age: Annotated[
        str | None,
        typer.Option(
            "--max-drill-age",
            help="Unhealthy if no snapshot passed a drill this recently (2d).",
            metavar="DUR",
            show_default=False,
        ),
    ] = None,
) -> int:
    """Monitoring probe: exit 0 and one line if the newest snapshot is recent enough, else 1."""
    limit = validate.flag("--max-age", validate.duration, max_age)
    min_count = validate.flag("--min-count", validate.min_count, min_count)
    if metrics_file is not None:
        validate.flag("--metrics-file", validate.path, metrics_file)
    drill_limit = (
        validate.flag("--max-drill-age", validate.duration, max_drill_age)
        if max_drill_age is not None
        else None
    )
    now = datetime.now(UTC)
    try:
        report = ctx.manager().check(
            limit,
            min_count,
            label=label,
            now=now,
            max_drill_age=drill_limit,
            with_drills=metrics_file is not None,
        )
    except SnapmgrError:
        if metrics_file:
            _record_check(ctx, metrics_file, None, now)
        raise
    if metrics_file:
        _record_check(ctx, metrics_file, report, now)
    if report.newest is not None:
        ctx.note(snapshot_id=report.newest.id, size=report.newest.size)
    ctx.note(summary=report.summary(), error=None if report.healthy else report.summary())
    if ctx.json_output:
        ctx.emit_json(_check_json(report))
    else:
        print(report.summary())
    return 0 if report.healthy else 1


def _check_json(report: HealthReport) -> dict[str, Any]:
    newest = report.newest
    return {
        "healthy": report.healthy,
        "problems": list(report.problems),
        "count": report.count,
        "newest": None if newest is None else {
            "id": newest.id, "created_at": newest.created_at, "size": newest.size,
            "age_seconds": round(report.age_s or 0.0, 3),
        },
        "max_age": str(report.max_age),
        "min_count": report.min_count,
        "label": report.label,
        "checked_at": report.now,
        "max_drill_age": None if report.max_drill_age is None else str(report.max_drill_age),
        "last_drill": None if report.last_drill is None else {
            "id": report.last_drill.id, "at": report.last_drill.at, "ok": report.last_drill.ok,
            "restore_s": report.last_drill.restore_s,
        },
    }  # fmt: skip


def _record_check(ctx: Ctx, path: str, report: HealthReport | None, now: datetime) -> None:
    try:
        write_metrics_file(path, render(check_gauges(report, now), _metrics_labels(ctx)))
    except SnapmgrError as exc:
        if report is not None:
            raise
        log.warning("%s", exc)
