"""Damaged stores: a missing dump, an unreadable manifest, a manifest from a newer version."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Cli
from tests.pgutil import Server


def snapshot(cli: Cli, url: str, *args: str) -> str:
    return cli.ok("snapshot", *args, env={"DATABASE_URL": url}).stdout.strip()


def test_missing_dump_is_a_verification_failure_and_restore_uses_the_other_copy(
    cli: Cli, pg_server: Server, pagila_db: str, tmp_path: Path
) -> None:
    url = pg_server.url(pagila_db)
    second = tmp_path / "second"
    stores = ("--store", str(cli.store), "--store", str(second))
    snapshot_id = snapshot(cli, url, *stores)
    expected = pg_server.dump(pagila_db)
    (cli.store / f"{snapshot_id}.sql.gz").unlink()

    result = cli("verify", snapshot_id, *stores)
    assert result.returncode == 6, result.stderr
    assert "missing" in result.stderr

    pg_server.execute(pagila_db, "CREATE TABLE public.after_snapshot (x int)")
    restored = cli("restore", snapshot_id, "--yes", *stores, env={"DATABASE_URL": url})
    assert restored.returncode == 0, restored.stderr
    assert pg_server.dump(pagila_db) == expected


def test_an_unreadable_manifest_is_skipped_not_fatal(
    cli: Cli, pg_server: Server, pagila_db: str
) -> None:
    url = pg_server.url(pagila_db)
    good = snapshot(cli, url, "--label", "good")
    bad = snapshot(cli, url, "--label", "bad")
    manifest = cli.store / f"{bad}.json"
    manifest.write_bytes(manifest.read_bytes()[:40])

    listed = cli.ok("list", "--json")
    assert [item["id"] for item in json.loads(listed.stdout)] == [good]
    assert bad in listed.stderr and "skipping" in listed.stderr
    cli.ok("check", "--max-age", "1h")
    # Its dump is not an orphan: prune leaves it for a person to look at.
    cli.ok("prune", "--keep-last", "1")
    assert (cli.store / f"{bad}.sql.gz").exists()
    assert cli("show", bad).returncode == 6


def test_a_manifest_with_fields_from_a_newer_version_still_reads(
    cli: Cli, pg_server: Server, pagila_db: str
) -> None:
    snapshot_id = snapshot(cli, pg_server.url(pagila_db))
    path = cli.store / f"{snapshot_id}.json"
    data = json.loads(path.read_text())
    data["future_field"] = {"x": 1}
    data["database"]["future_detail"] = "y"
    path.write_text(json.dumps(data))
    cli.ok("verify", snapshot_id)
    assert json.loads(cli.ok("show", snapshot_id, "--json").stdout)["id"] == snapshot_id
