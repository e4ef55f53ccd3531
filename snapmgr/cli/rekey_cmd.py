"""The ``rekey`` command: re-encrypt stored snapshots to new age recipients."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

import typer

from snapmgr.cli.common import Ctx, command
from snapmgr.cli.snapshot_cmds import IdentityFileOpt
from snapmgr.encryption import parse_recipients, read_recipients_file, short_key
from snapmgr.errors import UsageError

if TYPE_CHECKING:
    from snapmgr.rekey import RekeyResult

log = logging.getLogger("snapmgr")
app = typer.Typer()

_DONE = {"rekeyed": "re-encrypted", "encrypted": "encrypted (was plaintext)"}
_WOULD = {"rekeyed": "would re-encrypt", "encrypted": "would encrypt (plaintext now)"}


@command(app, "rekey")
def rekey(
    ctx: Ctx,
    snapshot_id: Annotated[str | None, typer.Argument(metavar="[ID|latest]")] = None,
    *,
    all_snapshots: Annotated[bool, typer.Option("--all", help="Rekey every snapshot.")] = False,
    to_recipients: Annotated[
        list[str] | None,
        typer.Option(
            "--to-recipients",
            metavar="AGE1…",
            show_default=False,
            help="New recipient (age public key); repeatable.",
        ),
    ] = None,
    to_recipients_file: Annotated[
        str | None,
        typer.Option(
            "--to-recipients-file",
            metavar="FILE",
            show_default=False,
            help="File of new recipients, one age1… per line.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be re-encrypted; change nothing.")
    ] = False,
    identity_file: IdentityFileOpt = None,
) -> int:
    """Re-encrypt stored snapshots to new age recipients (key rotation), commit-safe;
    plaintext snapshots get encrypted. The old key (or none, for plaintext) reads them."""
    if all_snapshots == (snapshot_id is not None):
        raise UsageError("rekey takes one snapshot ID (or `latest`), or --all")
    ctx.overrides.update(age_identity_file=identity_file)
    recipients = _recipients(to_recipients or [], to_recipients_file)
    report = ctx.manager().rekey(
        None if all_snapshots else snapshot_id, recipients, dry_run=dry_run
    )
    if ctx.json_output:
        ctx.emit_json({
            "dry_run": dry_run,
            "recipients": list(recipients),
            "snapshots": [_result_json(r) for r in report.results],
            "failed": [{"id": e.id, "error": str(exc)} for e, exc in report.failures],
        })  # fmt: skip
    else:
        for result in report.results:
            print(_result_line(result, recipients))
    for entry, exc in report.failures:
        log.error("%s was not rekeyed: %s", entry.id, exc)
    if report.failures:
        entry, first = report.failures[0]
        more = len(report.failures) - 1
        raise type(first)(
            f"{entry.id} was not rekeyed: {first}"
            + (f" (and {more} more snapshot(s) failed, listed above)" if more else "")
        )
    return 0


def _recipients(values: list[str], path: str | None) -> tuple[str, ...]:
    try:
        found = parse_recipients([part for v in values for part in v.replace(",", " ").split()])
    except ValueError as exc:
        raise UsageError(f"--to-recipients: {exc}") from None
    if path:
        found += read_recipients_file(path, "--to-recipients-file")
    return tuple(dict.fromkeys(found))


def _result_line(result: RekeyResult, recipients: tuple[str, ...]) -> str:
    keys = ", ".join(short_key(key) for key in recipients)
    if result.action == "unchanged":
        return f"unchanged {result.entry.id}: already encrypted to {keys}"
    if result.dry_run:
        return f"{_WOULD[result.action]} {result.entry.id} to {keys}"
    return f"{_DONE[result.action]} {result.entry.id} to {keys}: {result.new_object}"


def _result_json(result: RekeyResult) -> dict[str, Any]:
    return {
        "id": result.entry.id,
        "action": result.action,
        "old_objects": list(result.old_objects),
        "new_object": result.new_object,
    }
