"""Histories of snapshots at chosen times, made from one real snapshot.

A real snapshot is taken once with the real CLI against the real cluster;
:func:`plant` then stores copies of its dump under other IDs with a
rewritten manifest (``id``, ``label``, ``created_at``, ``pinned``). The dump
bytes are unchanged, so ``sha256`` and ``size`` stay true and every copy
verifies: these are real stored snapshots, only their dates are chosen.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from snapmgr.manifest import make_id
from tests.conftest import Cli
from tests.pgutil import Server


@dataclass(frozen=True)
class Template:
    """A real snapshot's dump bytes and manifest, and the store it was taken into."""

    dump: bytes
    manifest: dict[str, Any]
    suffix: str
    store: Path

    def manifest_for(self, snapshot_id: str, label: str, created: datetime, pinned: bool) -> bytes:
        data = dict(self.manifest)
        data.update(
            id=snapshot_id,
            label=label,
            created_at=created.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            pinned=pinned,
        )
        return (json.dumps(data, indent=2) + "\n").encode()


def take_template(cli: Cli, server: Server, dbname: str) -> Template:
    """One real snapshot of a tiny table, through the real CLI."""
    server.execute(dbname, "CREATE TABLE IF NOT EXISTS notes (id int primary key, body text)")
    server.execute(dbname, "INSERT INTO notes VALUES (1, 'a'), (2, 'b') ON CONFLICT DO NOTHING")
    snapshot_id = cli.ok("snapshot", env={"DATABASE_URL": server.url(dbname)}).stdout.strip()
    manifest = json.loads((cli.store / f"{snapshot_id}.json").read_text())
    suffix = {"gzip": ".sql.gz", "zstd": ".sql.zst", "none": ".sql"}[manifest["compression"]]
    dump = (cli.store / f"{snapshot_id}{suffix}").read_bytes()
    return Template(dump, manifest, suffix, cli.store)


def at(text: str) -> datetime:
    """``"2025-09-30 02:00"`` as an aware UTC time."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def snapshot_id(label: str, created: datetime) -> str:
    return make_id(label, created)


def plant(
    store: Path,
    template: Template,
    created: datetime,
    *,
    label: str = "nightly",
    pinned: bool = False,
    manifest: bool = True,
) -> str:
    """Store a copy of the template as a snapshot taken at ``created``; its ID.

    Files get ``created`` as their modification time, as a real snapshot
    would have. ``manifest=False`` leaves only the dump: an orphan.
    """
    store.mkdir(mode=0o700, parents=True, exist_ok=True)
    new_id = snapshot_id(label, created)
    files = {f"{new_id}{template.suffix}": template.dump}
    if manifest:
        files[f"{new_id}.json"] = template.manifest_for(new_id, label, created, pinned)
    for name, data in files.items():
        path = store / name
        path.write_bytes(data)
        path.chmod(0o600)
        set_mtime(path, created)
    return new_id


def set_mtime(path: Path, when: datetime) -> None:
    os.utime(path, (when.timestamp(), when.timestamp()))


def names(store: Path) -> set[str]:
    return {path.name for path in store.iterdir()} if store.exists() else set()


def state(store: Path) -> dict[str, tuple[int, float, bytes]]:
    """Every file's size, mtime and bytes: to show that nothing changed."""
    return {
        path.name: (path.stat().st_size, path.stat().st_mtime, path.read_bytes())
        for path in sorted(store.iterdir())
    }


def plant_s3(
    client: Any,
    bucket: str,
    prefix: str,
    template: Template,
    created: datetime,
    *,
    label: str = "nightly",
    pinned: bool = False,
    manifest: bool = True,
) -> str:
    """:func:`plant` into an S3 bucket (the objects' mtime is the upload time)."""
    new_id = snapshot_id(label, created)
    client.put_object(Bucket=bucket, Key=f"{prefix}/{new_id}{template.suffix}", Body=template.dump)
    if manifest:
        body = template.manifest_for(new_id, label, created, pinned)
        client.put_object(Bucket=bucket, Key=f"{prefix}/{new_id}.json", Body=body)
    return new_id
