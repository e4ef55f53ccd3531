"""Commands that take and inspect snapshots: snapshot, list, show, verify, config, stores."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer

from snapmgr.catalog import Entry
from snapmgr.cli.common import Ctx, command, parse_tags
from snapmgr.config import StoreConfig
from snapmgr.errors import SnapmgrError, StorageError, UsageError
from snapmgr.progress import human_bytes
from snapmgr.redact import redact_url
from snapmgr.registry import available, open_backend

log = logging.getLogger("snapmgr")
app = typer.Typer()


def entry_dict(entry: Entry) -> dict[str, Any]:
    """A snapshot for ``--json``: the manifest's fields plus where its copies are."""
    data = entry.manifest.to_dict()
    data["stores"] = [
        {
            "store": store.name,
            "location": redact_url(store.backend.location(entry.manifest.dump_name)),
        }
        for store in entry.stores
    ]
    return data


@command(app, "snapshot")
def snapshot(
    ctx: Ctx,
    label: Annotated[str | None, typer.Option(help="Label: the ID's prefix.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE; repeatable.")] = None,
    compression: Annotated[
        str | None, typer.Option(help="gzip (default), zstd or none.", show_default=False)
    ] = None,
    level: Annotated[int | None, typer.Option(help="Compression level.")] = None,
) -> int:
    """Dump the database, store it in every selected store, verify, commit; print the ID."""
    ctx.overrides.update(label=label, compression=compression, compression_level=level)
    tags = parse_tags(tag)
    manager = ctx.manager()
    result = manager.snapshot(tags=tags)
    manifest = result.manifest
    for store in result.committed:
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
    entries = ctx.manager().list_snapshots()
    if ctx.json_output:
        ctx.emit_json([entry_dict(entry) for entry in entries])
        return 0
    if not entries:
        log.info("no committed snapshots")
        return 0
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("ID", "CREATED (UTC)", "SIZE", "ROWS", "PIN", "STORES"):
        table.add_column(column)
    for entry in entries:
        m = entry.manifest
        table.add_row(
            m.id, m.created_at.strftime("%Y-%m-%d %H:%M:%S"), human_bytes(m.size),
            f"{m.total_rows:,}", "yes" if m.pinned else "",
            ", ".join(store.name for store in entry.stores),
        )  # fmt: skip
    ctx.out.print(table)
    return 0


@command(app, "show")
def show(ctx: Ctx, snapshot_id: Annotated[str, typer.Argument(metavar="ID|latest")]) -> int:
    """A snapshot's manifest, readable or --json."""
    entry = ctx.manager().find(snapshot_id)
    if ctx.json_output:
        ctx.emit_json(entry_dict(entry))
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
        ("tags", ", ".join(f"{k}={v}" for k, v in m.tags.items()) or "-"),
        ("stores", ", ".join(s.backend.location(m.dump_name) for s in entry.stores)),
        ("tables", f"{len(m.tables)} ({m.total_rows:,} rows)"),
    ]  # fmt: skip
    for key, value in lines:
        print(f"{key:<11} {value}")
    for name, rows in m.tables.items():
        print(f"  {name}: {rows:,}")
    return 0


@command(app, "verify")
def verify(
    ctx: Ctx,
    snapshot_id: Annotated[str | None, typer.Argument(metavar="[ID|latest]")] = None,
    all_snapshots: Annotated[bool, typer.Option("--all", help="Verify every snapshot.")] = False,
) -> int:
    """Re-read stored bytes: sha256, full decompress, dump trailer, row counts."""
    if all_snapshots == (snapshot_id is not None):
        raise UsageError("verify takes one snapshot ID (or `latest`), or --all")
    manager = ctx.manager()
    results = manager.verify_everything() if all_snapshots else manager.verify(str(snapshot_id))
    if ctx.json_output:
        ctx.emit_json([
            {"id": r.manifest.id, "store": r.store.name, "ok": True, "sha256": r.manifest.sha256,
             "tables": r.tables, "rows": r.rows,
             "location": redact_url(r.store.backend.location(r.manifest.dump_name))}
            for r in results
        ])  # fmt: skip
    else:
        for r in results:
            print(
                f"ok {r.manifest.id} in {r.store.backend.location(r.manifest.dump_name)}: "
                f"sha256 matches, complete, {r.tables} tables, {r.rows:,} rows"
            )
    return 0


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
