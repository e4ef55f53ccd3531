"""Commands that take and inspect snapshots: snapshot, list, show, verify, config, stores."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Annotated, Any

import typer

from snapmgr.catalog import Entry
from snapmgr.cli import reporting
from snapmgr.cli.common import Ctx, command, parse_tags
from snapmgr.config import StoreConfig
from snapmgr.deploylock import reuse_window, wait_seconds
from snapmgr.errors import SnapmgrError, StorageError, UsageError
from snapmgr.formats import COMPRESSIONS, DEFAULT_COMPRESSION
from snapmgr.progress import human_bytes
from snapmgr.redact import redact_url
from snapmgr.registry import available, open_backend

if TYPE_CHECKING:
    from snapmgr.drill_record import DrillRecord
    from snapmgr.verify import VerifyResult

log = logging.getLogger("snapmgr")
app = typer.Typer()
COMPRESSION_HELP = (
    f"{', '.join(COMPRESSIONS)} (default: the compression setting, "
    f"{DEFAULT_COMPRESSION} unless set)."
)

WaitOpt = Annotated[
    str,
    typer.Option("--wait", metavar="DUR",
                 help="Wait this long for another run of the label to finish (0: not at all)."),
]  # fmt: skip
NoLockOpt = Annotated[
    bool,
    typer.Option("--no-lock", help="Take no deploy lock (e.g. behind a transaction pooler)."),
]  # fmt: skip


IdentityFileOpt = Annotated[
    str | None,
    typer.Option("--identity-file", metavar="PATH", show_default=False,
                 help="age identity file (AGE-SECRET-KEY-1…) to decrypt encrypted snapshots "
                      "(or SNAPMGR_AGE_IDENTITY_FILE, or the key in SNAPMGR_AGE_IDENTITY)."),
]  # fmt: skip


def drill_text(record: DrillRecord | None) -> str:
    """``ok 2025-09-30 03:00 (restore 41.2s)``, ``FAILED …``, or ``-``."""
    if record is None:
        return "-"
    verdict = "ok" if record.ok else "FAILED"
    return f"{verdict} {record.at:%Y-%m-%d %H:%M} (restore {record.restore_s:.1f}s)"


def entry_dict(entry: Entry, drill: DrillRecord | None = None) -> dict[str, Any]:
    """A snapshot for ``--json``: the manifest's fields plus where its copies are
    and its last drill."""
    data = entry.manifest.to_dict()
    data["last_drill"] = None if drill is None else json.loads(drill.to_json())
    data["stores"] = [
        {
            "store": store.name,
            "location": redact_url(store.backend.location(entry.manifest_in(store).dump_name)),
        }
        for store in entry.stores
    ]
    return data


def encryption_text(entry: Entry) -> str:
    """How the snapshot's copies are stored: ``age`` (encrypted) or ``-`` (plaintext)."""
    kinds = {m.encryption or "-" for m in (entry.manifest_in(s) for s in entry.stores)}
    return "/".join(sorted(kinds))


@command(app, "snapshot")
def snapshot(
    ctx: Ctx,
    *,
    label: Annotated[str | None, typer.Option(help="Label: the ID's prefix.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE; repeatable.")] = None,
    compression: Annotated[
        str | None, typer.Option(help=COMPRESSION_HELP, show_default=False)
    ] = None,
    level: Annotated[int | None, typer.Option(help="Compression level.")] = None,
    no_owner: Annotated[
        bool, typer.Option("--no-owner", help="Leave object owners out (dump_owners = false).")
    ] = False,
    no_privileges: Annotated[
        bool,
        typer.Option("--no-privileges", help="Leave grants out (dump_privileges = false)."),
    ] = False,
    exclude_schema: Annotated[
        list[str] | None,
        typer.Option(help="Leave this schema out (exact name); repeatable.", show_default=False),
    ] = None,
    exclude_table: Annotated[
        list[str] | None,
        typer.Option(
            help="Leave this table out (schema.table, exact); repeatable.", show_default=False
        ),
    ] = None,
    wait: WaitOpt = "30min",
    reuse_within: Annotated[
        str,
        typer.Option(
            metavar="DUR",
            help="Print the label's snapshot committed while waiting, "
            "or this recent, instead of taking one (0: off).",
        ),
    ] = "0",
    no_lock: NoLockOpt = False,
) -> int:
    """Dump the database, store it in every selected store, verify, commit; print the ID."""
    ctx.overrides.update(
        label=label,
        compression=compression,
        compression_level=level,
        dump_owners=False if no_owner else None,
        dump_privileges=False if no_privileges else None,
        exclude_schemas=exclude_schema or None,
        exclude_tables=exclude_table or None,
    )
    tags = parse_tags(tag)
    wait_s = None if no_lock else wait_seconds(wait)
    reuse = reuse_window(reuse_within)
    manager = ctx.manager()
    reporting.started(ctx)
    reporting.note_database(ctx, None)
    result = manager.snapshot(tags=tags, wait_s=wait_s, reuse=reuse)
    manifest = result.manifest
    ctx.note(**reporting.facts_of_snapshot(manifest))
    ctx.note(summary=f"snapshot {manifest.id} {'reused' if result.reused else 'committed'} "
                     f"({human_bytes(manifest.size)}, {len(manifest.tables)} tables, "
                     f"{manifest.total_rows:,} rows)")  # fmt: skip
    for store in () if result.reused else result.committed:
        log.info("committed %s in %s", manifest.id, store.backend.location(manifest.dump_name))
    log.info(
        "%s: %s stored (%s raw), %d tables, %s rows, sha256 %s…, %.1fs",
        manifest.id, human_bytes(manifest.size), human_bytes(manifest.raw_size),
        len(manifest.tables), f"{manifest.total_rows:,}", manifest.sha256[:12],
        manifest.duration_s,
    )  # fmt: skip
    if ctx.json_output:
        data = entry_dict(Entry(manifest, result.committed))
        data["failed_stores"] = [
            {"store": store.name, "error": str(error)} for store, error in result.failed
        ]
        data["reused"] = result.reused
        ctx.emit_json(data)
    else:
        print(manifest.id)
    if result.failed:
        store, error = result.failed[0]
        raise StorageError(
            f"store {store.describe()} failed: {error}; {manifest.id} is committed only in "
            + ", ".join(s.describe() for s in result.committed)
        )
    return 0


@command(app, "list")
def list_snapshots(ctx: Ctx) -> int:
    """Committed snapshots, newest first: ID, created, size, stores."""
    manager = ctx.manager()
    entries = manager.list_snapshots()
    drills = manager.drill_records(entries)
    if ctx.json_output:
        ctx.emit_json([entry_dict(entry, drills.get(entry.id)) for entry in entries])
        return 0
    if not entries:
        log.info("no committed snapshots")
        return 0
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in (
        "ID",
        "CREATED (UTC)",
        "SIZE",
        "ROWS",
        "PIN",
        "ENCRYPTED",
        "LAST DRILL",
        "STORES",
    ):
        table.add_column(column)
    for entry in entries:
        m = entry.manifest
        table.add_row(
            m.id, m.created_at.strftime("%Y-%m-%d %H:%M:%S"), human_bytes(m.size),
            f"{m.total_rows:,}", "yes" if m.pinned else "", encryption_text(entry),
            drill_text(drills.get(entry.id)),
            ", ".join(store.name for store in entry.stores),
        )  # fmt: skip
    ctx.out.print(table)
    return 0


@command(app, "show")
def show(ctx: Ctx, snapshot_id: Annotated[str, typer.Argument(metavar="ID|latest")]) -> int:
    """A snapshot's manifest, readable or --json."""
    manager = ctx.manager()
    entry = manager.find(snapshot_id)
    drill = manager.drill_records([entry]).get(entry.id)
    if ctx.json_output:
        ctx.emit_json(entry_dict(entry, drill))
        return 0
    m = entry.manifest
    db = m.database
    lines = [
        ("id", m.id), ("label", m.label),
        ("created_at", m.created_at.isoformat()), ("duration", f"{m.duration_s:.1f}s"),
        ("database", f"{db.name} on {db.host}{':' + str(db.port) if db.port else ''} "
                     f"(PostgreSQL {db.server_version}, user {db.user})"),
        ("pg_dump", m.pg_dump_version),
        ("format", f"{m.format}, {m.compression}"
                   + (f" level {m.compression_level}" if m.compression_level is not None else "")),
        ("size", f"{human_bytes(m.size)} stored, {human_bytes(m.raw_size)} raw"),
        ("sha256", m.sha256), ("pinned", "yes" if m.pinned else "no"),
        ("encryption", f"{m.encryption} to {', '.join(m.recipients)}" if m.encrypted
                       else "none (plaintext)"),
        ("tags", ", ".join(f"{k}={v}" for k, v in m.tags.items()) or "-"),
        ("stores", ", ".join(s.backend.location(entry.manifest_in(s).dump_name)
                             for s in entry.stores)),
        ("tables", f"{len(m.tables)} ({m.total_rows:,} rows)"),
        ("content", ("owners " + ("yes" if m.content.owners else "no") + ", privileges "
                     + ("yes" if m.content.privileges else "no")
                     + "".join(f", excluded {n}" for n in (*m.content.exclude_schemas,
                                                           *m.content.exclude_tables)))),
        ("db object", database_props_text(m.database_props)),
        ("last drill", drill_text(drill)),
    ]  # fmt: skip
    for key, value in lines:
        print(f"{key:<11} {value}")
    for name, rows in m.tables.items():
        parent = m.partitions.get(name)
        print(f"  {name}: {rows:,}" + (f" (partition of {parent})" if parent else ""))
    return 0


def database_props_text(props: dict[str, Any]) -> str:
    """The database object's recorded grants, settings and comment, counted."""
    if not props:
        return "not recorded (a snapshot from before they were)"
    roles = props.get("role_settings") or {}
    parts = [
        f"{len(props.get('grants') or ())} grant(s)",
        f"{len(props.get('settings') or ())} setting(s)",
        f"settings for {len(roles)} role(s)",
    ]
    if "comment" in props:
        parts.append("a comment" if props["comment"] is not None else "no comment")
    return ", ".join(parts)


@command(app, "verify")
def verify(
    ctx: Ctx,
    snapshot_id: Annotated[str | None, typer.Argument(metavar="[ID|latest]")] = None,
    all_snapshots: Annotated[bool, typer.Option("--all", help="Verify every snapshot.")] = False,
    identity_file: IdentityFileOpt = None,
) -> int:
    """Re-read stored bytes: sha256, full decompress (and decrypt), trailer, row counts,
    content fingerprints."""
    if all_snapshots == (snapshot_id is not None):
        raise UsageError("verify takes one snapshot ID (or `latest`), or --all")
    ctx.overrides.update(age_identity_file=identity_file)
    manager = ctx.manager()
    results = manager.verify_everything() if all_snapshots else manager.verify(str(snapshot_id))
    if ctx.json_output:
        ctx.emit_json([
            {"id": r.manifest.id, "store": r.store.name, "ok": True, "sha256": r.manifest.sha256,
             "decrypted": r.decrypted if r.manifest.encrypted else None,
             "tables": r.tables, "rows": r.rows,
             "location": redact_url(r.store.backend.location(r.manifest.dump_name))}
            for r in results
        ])  # fmt: skip
    else:
        for r in results:
            print(f"ok {r.manifest.id} in {r.store.backend.location(r.manifest.dump_name)}: "
                  + _verified_text(r))  # fmt: skip
        log.info(
            "verify checks the stored copies only; `snapmgr drill` proves that a snapshot "
            "restores, and how long that takes"
        )
    return 0


def _verified_text(result: VerifyResult) -> str:
    if not result.decrypted:
        return "sha256 and size match; encrypted (age), not decrypted: no key was given"
    sealed = "decrypted, " if result.manifest.encrypted else ""
    content = ", content fingerprints match" if result.manifest.fingerprints else ""
    return (
        f"sha256 matches, {sealed}complete, {result.tables} tables, "
        f"{result.rows or 0:,} rows{content}"
    )


@command(app, "config")
def show_config(ctx: Ctx) -> int:
    """The effective configuration and where each value came from; secrets redacted."""
    data = ctx.config.redacted()
    if ctx.json_output:
        ctx.emit_json(data)
        return 0
    print(f"config_file: {data.pop('config_file') or '-'}")
    stores = data.pop("stores")
    for key, item in data.items():
        print(f"{key} = {item['value']!r}  ({item['source']})")
    for name, store in stores.items():
        print(f"[stores.{name}] {store['kind']} {store['url']} {store['options'] or ''}".rstrip())
    return 0


def store_status(store: StoreConfig) -> str:
    """``ok`` when the store's backend accepts its URL and options, else why not
    (unknown option, missing package...). Opening a backend does no storage I/O."""
    try:
        open_backend(store.kind, store.url, store.options)
    except SnapmgrError as exc:
        return str(exc)
    return "ok"


@command(app, "stores")
def stores(ctx: Ctx) -> int:
    """Configured stores, the ones this command would use, and available backends."""
    config = ctx.config
    selected = config.selected_stores(ctx.stores)
    backends = available()
    if ctx.json_output:
        ctx.emit_json({
            "configured": {n: {"kind": s.kind, "url": redact_url(s.url), "status": store_status(s)}
                           for n, s in config.stores.items()},
            "selected": [{"name": s.name, "kind": s.kind, "url": redact_url(s.url)}
                         for s in selected],
            "backends": {k: e.target for k, e in sorted(backends.items())},
        })  # fmt: skip
        return 0
    print("configured stores:" if config.stores else "configured stores: none")
    for name, store in config.stores.items():
        print(f"  {name}: {store.kind} {redact_url(store.url)} ({store_status(store)})")
    print("selected (used by commands without --store):" if not ctx.stores else "selected:")
    for store in selected:
        print(f"  {store.name}: {store.kind} {redact_url(store.url)}")
    print("backends:")
    for kind, entry in sorted(backends.items()):
        print(f"  {kind}: {entry.target}")
    return 0
