"""Commands that put a snapshot back: restore, and guard (snapshot, run, restore on failure)."""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from snapmgr import validate
from snapmgr.cli import reporting
from snapmgr.cli.common import Ctx, command
from snapmgr.cli.snapshot_cmds import IdentityFileOpt, NoLockOpt, WaitOpt
from snapmgr.deploylock import reuse_window, wait_seconds
from snapmgr.redact import redact_url
from snapmgr.restore_sql import DEFAULT_LOCK_TIMEOUT_S

if TYPE_CHECKING:
    from snapmgr.guard import GuardResult
    from snapmgr.restore import RestoreResult

if TYPE_CHECKING:
    from snapmgr.drill_record import DrillRecord

log = logging.getLogger("snapmgr")
app = typer.Typer()


def _confirmed(yes: bool) -> bool:
    return yes or os.environ.get("CONFIRM_RESTORE", "").strip().lower() == "yes"


def restore_line(result: RestoreResult) -> str:
    """The one-line summary of a committed restore."""
    checked = "counts and content match" if result.content_checked else "counts match"
    return (
        f"restored {result.manifest.id} into {result.target}: {result.tables} tables, "
        f"{result.rows:,} rows, {checked} ({result.duration_s:.1f}s)"
    )


def restore_json(result: RestoreResult) -> dict[str, object]:
    return {
        "id": result.manifest.id,
        "target": result.target,
        "tables": result.tables,
        "rows": result.rows,
        "duration_s": result.duration_s,
        "store": result.store.name,
        "location": redact_url(result.store.backend.location(result.manifest.dump_name)),
        "created": result.created,
        "terminated_sessions": result.terminated,
        "content_checked": result.content_checked,
    }


@command(app, "restore")
def restore(
    ctx: Ctx,
    snapshot_id: Annotated[str, typer.Argument(metavar="ID|latest")],
    *,
    target_url: Annotated[
        str | None,
        typer.Option(
            help="Restore into this database instead of DATABASE_URL.", show_default=False
        ),
    ] = None,
    create: Annotated[
        bool, typer.Option("--create", help="Create the target database if it is missing.")
    ] = False,
    terminate_connections: Annotated[
        bool,
        typer.Option(
            "--terminate-connections",
            help="End the target's other sessions first (they would block the restore).",
        ),
    ] = False,
    lock_timeout: Annotated[
        float,
        typer.Option(
            help="Give up (target unchanged) when other sessions' locks block "
            "the restore this many seconds.",
        ),
    ] = DEFAULT_LOCK_TIMEOUT_S,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            "-y",
            help="Confirm: replace everything in the target (or set CONFIRM_RESTORE=yes).",
        ),
    ] = False,
    no_owner: Annotated[
        bool,
        typer.Option(
            "--no-owner", help="Do not apply the snapshot's owners: the restoring role owns all."
        ),
    ] = False,
    no_privileges: Annotated[
        bool, typer.Option("--no-privileges", help="Do not apply the snapshot's grants.")
    ] = False,
    identity_file: IdentityFileOpt = None,
    table: Annotated[
        list[str] | None,
        typer.Option(
            "--table",
            metavar="SCHEMA.TABLE",
            help="Restore only this table (repeatable), next to what the target holds: "
            "no wipe, no --yes needed.",
            show_default=False,
        ),
    ] = None,
    schema: Annotated[
        list[str] | None,
        typer.Option(
            "--schema",
            metavar="SCHEMA",
            help="Restore only this schema's objects (repeatable), like --table.",
            show_default=False,
        ),
    ] = None,
    verify_content: Annotated[
        bool,
        typer.Option(
            "--verify-content",
            help="Before COMMIT, also compare each restored table's content with the "
            "snapshot's fingerprints (slower: reads every table back).",
        ),
    ] = False,
) -> int:
    """Replace the database with a snapshot: verified before commit, all-or-nothing, exact.
    With --table/--schema, restore only those into another database."""
    ctx.overrides.update(age_identity_file=identity_file)
    ctx.note(snapshot_id=snapshot_id)
    reporting.note_database(ctx, target_url)
    lock_timeout = validate.flag("--lock-timeout", validate.lock_timeout, lock_timeout)
    result = ctx.manager().restore(
        snapshot_id,
        target_url=target_url,
        create=create,
        terminate_connections=terminate_connections,
        lock_timeout_s=lock_timeout,
        confirmed=_confirmed(yes),
        no_owner=no_owner,
        no_privileges=no_privileges,
        tables=table,
        schemas=schema,
        verify_content=verify_content,
    )
    ctx.note(**reporting.facts_of_snapshot(result.manifest), summary=restore_line(result))
    if ctx.json_output:
        ctx.emit_json(restore_json(result))
    else:
        print(restore_line(result))
    return 0


def restore_command(ctx: Ctx, snapshot_id: str, flags: list[str]) -> str:
    """The exact command that restores ``snapshot_id`` with this invocation's config and stores."""
    words = ["snapmgr", "restore", snapshot_id, "--yes", *flags]
    if ctx.config_path:
        words += ["--config", ctx.config_path]
    for store in ctx.stores:
        words += ["--store", redact_url(store)]  # a password in a store URL stays out of logs
    return shlex.join(words)


@command(app, "guard")
def guard(
    ctx: Ctx,
    cmd: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="CMD",
            help="The command to guard and its arguments, after --.",
            show_default=False,
        ),
    ] = None,
    *,
    restore_on_failure: Annotated[
        bool,
        typer.Option(
            "--restore-on-failure",
            help="If CMD fails, restore the snapshot (this flag is the confirmation).",
        ),
    ] = False,
    label: Annotated[str | None, typer.Option(help="Snapshot label.")] = None,
    terminate_connections: Annotated[
        bool,
        typer.Option(
            "--terminate-connections",
            help="When restoring, end the database's other sessions first.",
        ),
    ] = False,
    lock_timeout: Annotated[
        float,
        typer.Option(
            help="When restoring, give up after waiting this many seconds for "
            "other sessions' locks.",
        ),
    ] = DEFAULT_LOCK_TIMEOUT_S,
    wait: WaitOpt = "30min",
    reuse_within: Annotated[
        str,
        typer.Option(
            metavar="DUR",
            help="Reuse the label's snapshot another instance committed while this one "
            "waited ('waited', the default), or one this recent (a duration); "
            "0: always take one.",
        ),
    ] = "waited",
    no_lock: NoLockOpt = False,
) -> int:
    """Snapshot, run CMD (e.g. a migration), exit with its code; on failure say how to
    restore, or restore. Instances of one deploy take turns (see --wait)."""
    lock_timeout = validate.flag("--lock-timeout", validate.lock_timeout, lock_timeout)
    ctx.overrides.update(label=label)
    wait_s = None if no_lock else wait_seconds(wait)
    reuse = reuse_window(reuse_within)
    reporting.note_database(ctx, None)
    result = ctx.manager().guard(
        list(cmd or []),
        restore_on_failure=restore_on_failure,
        terminate_connections=terminate_connections,
        lock_timeout_s=lock_timeout,
        wait_s=wait_s,
        reuse=reuse,
    )
    ctx.note(**reporting.facts_of_snapshot(result.snapshot.manifest))
    if ctx.json_output:
        ctx.emit_json(_guard_json(result))
    return _report(ctx, result, ["--terminate-connections"] if terminate_connections else [])


def _report(ctx: Ctx, result: GuardResult, flags: list[str]) -> int:
    """Say what happened on stderr; the guard's exit code."""
    code = result.exit_code
    covers = "(reused: taken by an earlier run of this deploy) " if result.snapshot.reused else ""
    if code == 0:
        log.info("command succeeded; snapshot %s %scovers this deploy", result.snapshot_id, covers)
        ctx.note(summary=f"command succeeded; snapshot {result.snapshot_id} {covers}covers it")
        return 0
    if result.restored is not None:
        log.warning("command failed (exit %d); %s", code, restore_line(result.restored))
        ctx.note(error=f"command failed (exit {code}); {restore_line(result.restored)}")
        return code
    if result.restore_error is not None:
        _say(
            f"command failed (exit {code}) and the restore of {result.snapshot_id} failed: "
            f"{result.restore_error}; to retry: {restore_command(ctx, result.snapshot_id, flags)}"
        )
        ctx.note(error=f"command failed (exit {code}) and the restore of {result.snapshot_id} "
                       f"failed: {result.restore_error}")  # fmt: skip
        return result.restore_error.exit_code
    why = f" after {result.stopped_by}" if result.stopped_by else ""
    _say(
        f"command failed (exit {code}){why}; the database was not restored. To roll back to "
        f"the snapshot taken before it: {restore_command(ctx, result.snapshot_id, flags)}"
    )
    ctx.note(error=f"command failed (exit {code}){why}; the database was not restored; "
                   f"snapshot {result.snapshot_id} holds it as it was before")  # fmt: skip
    return code


def _say(message: str) -> None:
    sys.stderr.write(f"snapmgr: {message}\n")
    sys.stderr.flush()


def _guard_json(result: GuardResult) -> dict[str, object]:
    return {
        "snapshot": result.snapshot_id,
        "reused": result.snapshot.reused,
        "exit_code": result.exit_code,
        "stopped_by": result.stopped_by,
        "restored": None if result.restored is None else restore_json(result.restored),
        "restore_error": None if result.restore_error is None else str(result.restore_error),
    }


def drill_line(record: DrillRecord) -> str:
    """The one-line verdict of a drill."""
    content = "content matches" if record.content_checked else "row counts match (no fingerprints)"
    return (
        f"proven: {record.id}: {record.tables} tables, {record.rows:,} rows, {content}, "
        f"restored in {record.restore_s:.1f} s"
    )


@command(app, "drill")
def drill(
    ctx: Ctx,
    snapshot_id: Annotated[str, typer.Argument(metavar="[ID|latest]")] = "latest",
    *,
    target_url: Annotated[
        str | None,
        typer.Option(
            help="Drill into this database (its contents are replaced; needs --yes) "
            "instead of a scratch database on DATABASE_URL's server.",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Confirm replacing --target-url's contents.")
    ] = False,
    identity_file: IdentityFileOpt = None,
) -> int:
    """Restore a snapshot into a scratch database, compare its content, report the time."""
    ctx.overrides.update(age_identity_file=identity_file)
    ctx.note(snapshot_id=snapshot_id)
    record = ctx.manager().drill(snapshot_id, target_url=target_url, confirmed=yes)
    ctx.note(summary=drill_line(record), duration_s=record.duration_s)
    if ctx.json_output:
        ctx.emit_json(json.loads(record.to_json()))
    else:
        print(drill_line(record))
    return 0
