"""Commands that put a snapshot back: restore, and guard (snapshot, run, restore on failure)."""

from __future__ import annotations

import logging
import os
import shlex
import sys
from typing import Annotated

import typer

from snapmgr import validate
from snapmgr.cli.common import Ctx, command
from snapmgr.guard import GuardResult
from snapmgr.redact import redact_url
from snapmgr.restore import DEFAULT_LOCK_TIMEOUT_S, RestoreResult

log = logging.getLogger("snapmgr")
app = typer.Typer()


def _confirmed(yes: bool) -> bool:
    return yes or os.environ.get("CONFIRM_RESTORE", "").strip().lower() == "yes"


def restore_line(result: RestoreResult) -> str:
    """The one-line summary of a committed restore."""
    return (
        f"restored {result.manifest.id} into {result.target}: {result.tables} tables, "
        f"{result.rows:,} rows, counts match ({result.duration_s:.1f}s)"
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
) -> int:
    """Replace the database with a snapshot: verified before commit, all-or-nothing, exact."""
    lock_timeout = validate.flag("--lock-timeout", validate.lock_timeout, lock_timeout)
    result = ctx.manager().restore(
        snapshot_id,
        target_url=target_url,
        create=create,
        terminate_connections=terminate_connections,
        lock_timeout_s=lock_timeout,
        confirmed=_confirmed(yes),
    )
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
) -> int:
    """Snapshot, run CMD (e.g. a migration), exit with its code; on failure say how to
    restore, or restore."""
    lock_timeout = validate.flag("--lock-timeout", validate.lock_timeout, lock_timeout)
    ctx.overrides.update(label=label)
    result = ctx.manager().guard(
        list(cmd or []),
        restore_on_failure=restore_on_failure,
        terminate_connections=terminate_connections,
        lock_timeout_s=lock_timeout,
    )
    if ctx.json_output:
        ctx.emit_json(_guard_json(result))
    return _report(ctx, result, ["--terminate-connections"] if terminate_connections else [])


def _report(ctx: Ctx, result: GuardResult, flags: list[str]) -> int:
    """Say what happened on stderr; the guard's exit code."""
    code = result.exit_code
    if code == 0:
        log.info("command succeeded; snapshot %s kept", result.snapshot_id)
        return 0
    if result.restored is not None:
        log.warning("command failed (exit %d); %s", code, restore_line(result.restored))
        return code
    if result.restore_error is not None:
        _say(
            f"command failed (exit {code}) and the restore of {result.snapshot_id} failed: "
            f"{result.restore_error}; to retry: {restore_command(ctx, result.snapshot_id, flags)}"
        )
        return result.restore_error.exit_code
    why = f" after {result.stopped_by}" if result.stopped_by else ""
    _say(
        f"command failed (exit {code}){why}; the database was not restored. To roll back to "
        f"the snapshot taken before it: {restore_command(ctx, result.snapshot_id, flags)}"
    )
    return code


def _say(message: str) -> None:
    sys.stderr.write(f"snapmgr: {message}\n")
    sys.stderr.flush()


def _guard_json(result: GuardResult) -> dict[str, object]:
    return {
        "snapshot": result.snapshot_id,
        "exit_code": result.exit_code,
        "stopped_by": result.stopped_by,
        "restored": None if result.restored is None else restore_json(result.restored),
        "restore_error": None if result.restore_error is None else str(result.restore_error),
    }
