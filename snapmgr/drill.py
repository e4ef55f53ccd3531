"""Prove that a snapshot restores: restore it into a scratch database and compare.

A drill restores through exactly the path ``restore`` takes (verified,
all-or-nothing, the same plan and filter) into a database created for it
under a unique name, ``snapmgr_drill_<unix time>_<pid>``, then reads every
table and large object back from the server and compares its fingerprint
(:mod:`snapmgr.fingerprint`) and row count with the manifest, and checks that
every role the snapshot names still exists. The measured restore time is
the recovery time a real emergency would take.

The scratch database is always dropped: on success, on failure, on
SIGINT/SIGTERM. After a SIGKILL it is left behind; the next drill on that
server drops it (nobody connected, and made on this host by a process that
is gone, or older than ``STALE_AFTER_S``). A drill reads the stores and
writes only its result record (``<id>.drill.json``) beside the snapshot; it
never touches the source database.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from snapmgr.catalog import Entry
from snapmgr.drill_record import DrillRecord
from snapmgr.encryption import Keyring
from snapmgr.errors import RestoreError, SnapmgrError, VerificationError
from snapmgr.fingerprint import large_object_fingerprint, prepare_session, table_fingerprint
from snapmgr.manifest import Manifest
from snapmgr.partial_filter import quote_name
from snapmgr.postgres import ConnInfo
from snapmgr.progress import Progress
from snapmgr.restore import RestoreOptions, drop_created_database, maintenance, restore_entry

log = logging.getLogger("snapmgr")

SCRATCH_PREFIX = "snapmgr_drill_"
STALE_AFTER_S = 3600

STALE_SQL = """
SELECT d.datname FROM pg_catalog.pg_database d
WHERE d.datname LIKE 'snapmgr\\_drill\\_%%'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.datid = d.oid)"""


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def scratch_name(now: float | None = None) -> str:
    """``snapmgr_drill_<unix time>_<host tag>_<pid>``: unique, and tells who made it."""
    return f"{SCRATCH_PREFIX}{int(now or time.time())}_{_host_tag()}_{os.getpid()}"


def _is_stale(name: str, limit: float) -> bool:
    """Left behind: older than ``limit``, or made on this host by a process that is gone."""
    parts = name[len(SCRATCH_PREFIX) :].split("_")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
        return False
    if int(parts[0]) <= limit:
        return True
    if parts[1] != _host_tag():
        return False
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def drop_stale_scratch(conn: ConnInfo, now: float | None = None) -> list[str]:
    """Drop scratch databases a killed drill left behind (nobody connected, and old or
    made here by a process that no longer runs)."""
    dropped = []
    limit = (now or time.time()) - STALE_AFTER_S
    with maintenance(conn) as admin:
        for (name,) in admin.execute(STALE_SQL).fetchall():
            if not _is_stale(str(name), limit):
                continue
            admin.execute(f"DROP DATABASE IF EXISTS {quote_name(str(name))} WITH (FORCE)")
            dropped.append(str(name))
    for name in dropped:
        log.warning("dropped %s, left behind by a drill that was killed", name)
    return dropped


def compare_content(db: Any, manifest: Manifest) -> tuple[list[str], int]:
    """What differs between the restored data in ``db`` and the manifest's fingerprints."""
    prepare_session(db, manifest.timezone)
    expected = manifest.fingerprints or {}
    differences = []
    for name, fingerprint in (expected.get("tables") or {}).items():
        if manifest.content.excludes(name):
            continue
        if table_fingerprint(db, name) != fingerprint:
            differences.append(f"table {name}: content differs from the snapshot's")
    objects = expected.get("large_objects") or {}
    for oid, fingerprint in objects.items():
        if large_object_fingerprint(db, oid) != fingerprint:
            differences.append(f"large object {oid}: content differs from the snapshot's")
    return differences, len(objects)


def missing_roles(db: Any, manifest: Manifest) -> list[str]:
    """Roles the snapshot names (owners, grantees, policies) that the server lacks."""
    named = set(manifest.owners) | {r for roles in manifest.roles.values() for r in roles}
    named |= {owner for _, _, owner, _ in manifest.global_objects}
    if not named:
        return []
    found = {
        str(row[0])
        for row in db.execute(
            "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY(%s)", (sorted(named),)
        ).fetchall()
    }
    return sorted(named - found)


def run_drill(
    entry: Entry,
    server: ConnInfo,
    progress: Callable[[], Progress],
    *,
    target: ConnInfo | None = None,
    pg_bin_dir: str | None = None,
    keyring: Keyring | None = None,
) -> DrillRecord:
    """Drill ``entry`` into a scratch database on ``server`` (or into ``target``)."""
    started = time.monotonic()
    scratch = target is None
    if target is None:
        drop_stale_scratch(server)
        target = ConnInfo(dict(server.params, dbname=scratch_name()), server.password)
    manifest = entry.manifest
    try:
        log.info("drill of %s into %s", manifest.id, target.display())
        restored = restore_entry(
            entry,
            RestoreOptions(
                conn=target, create=scratch, pg_bin_dir=pg_bin_dir, keyring=keyring or Keyring()
            ),
            progress,
        )
        with target.connect() as db:
            differences, objects = compare_content(db, manifest)
            gone = missing_roles(db, manifest)
        if gone:
            differences.append(f"role(s) named by the snapshot no longer exist: {', '.join(gone)}")
        return DrillRecord(
            id=manifest.id,
            at=datetime.now(UTC),
            ok=not differences,
            restore_s=restored.duration_s,
            duration_s=round(time.monotonic() - started, 3),
            tables=len(manifest.tables),
            rows=manifest.total_rows,
            large_objects=objects,
            content_checked=bool(manifest.fingerprints),
            target=target.display(),
            differences=differences,
        )
    finally:
        if scratch:
            drop_created_database(target)


def failed_record(
    manifest: Manifest, error: SnapmgrError, started: float, target: str
) -> DrillRecord:
    return DrillRecord(
        id=manifest.id,
        at=datetime.now(UTC),
        ok=False,
        restore_s=0.0,
        duration_s=round(time.monotonic() - started, 3),
        tables=len(manifest.tables),
        rows=manifest.total_rows,
        large_objects=0,
        content_checked=False,
        target=target,
        error=str(error),
    )


def raise_for(record: DrillRecord) -> None:
    """A failed drill as its documented error: 6 for content, 8 for roles/restore."""
    if record.ok:
        return
    what = "; ".join(record.differences) or record.error or "unknown"
    if any(d.startswith(("table ", "large object ")) for d in record.differences):
        raise VerificationError(f"drill of {record.id} failed: {what}")
    raise RestoreError(f"drill of {record.id} failed: {what}")
