"""``restore --verify-content``: fingerprints compared inside the restore's transaction.

The altered snapshot has one value changed in its stored dump, with the
manifest's sha256 and size fixed to match, so that row counts and checksums
pass and only the content fingerprints can tell.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Cli
from tests.pgutil import Server
from tests.test_drill_cli import ODD_DATA, _alter_one_value


@pytest.fixture
def odd_db(pg_server: Server, empty_db: str) -> str:
    pg_server.psql_file(empty_db, ODD_DATA)
    return empty_db


@pytest.fixture
def target_name(pg_server: Server, fresh_db_name: str) -> Iterator[str]:
    name = f"{fresh_db_name}_content"
    yield name
    pg_server.drop_db(name)


def databases(server: Server) -> set[str]:
    return {str(row[0]) for row in server.execute("postgres", "SELECT datname FROM pg_database")}


def test_verify_content_passes_for_a_good_snapshot(
    cli: Cli, pg_server: Server, odd_db: str, target_name: str
) -> None:
    env = {"DATABASE_URL": pg_server.url(odd_db)}
    snapshot_id = cli.ok("snapshot", env=env).stdout.strip()
    result = cli.ok("restore", snapshot_id, "--verify-content", "--yes",
                    "--target-url", pg_server.url(target_name), "--create", env=env)  # fmt: skip
    assert ": 2 tables, 4 rows, counts and content match (" in result.stdout
    assert "content of 2 table(s) compared" in result.stderr
    assert pg_server.dump(target_name) == pg_server.dump(odd_db)


def test_verify_content_rolls_back_an_altered_snapshot_with_6(
    cli: Cli, pg_server: Server, odd_db: str, target_name: str
) -> None:
    env = {"DATABASE_URL": pg_server.url(odd_db)}
    snapshot_id = cli.ok("snapshot", env=env).stdout.strip()
    _alter_one_value(cli, snapshot_id)
    result = cli("restore", snapshot_id, "--verify-content", "--yes",
                 "--target-url", pg_server.url(target_name), "--create", env=env)  # fmt: skip
    assert result.returncode == 6, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "differs from the snapshot's fingerprints: table public.odd" in errors[0]
    assert "is unchanged" in errors[0]
    assert target_name not in databases(pg_server)  # the --create'd database is dropped again

    # The same partial restore: rolled back too. Without the flag, counts alone pass.
    partial = cli("restore", snapshot_id, "--table", "public.odd", "--verify-content",
                  "--target-url", pg_server.url(target_name), "--create", env=env)  # fmt: skip
    assert partial.returncode == 6, partial.stderr
    assert target_name not in databases(pg_server)
    cli.ok("restore", snapshot_id, "--yes", "--target-url", pg_server.url(target_name),
           "--create", env=env)  # fmt: skip
    assert pg_server.execute(target_name, "SELECT f FROM odd WHERE id = 2") == [(0.2,)]


def test_verify_content_needs_fingerprints(
    cli: Cli, pg_server: Server, odd_db: str, target_name: str
) -> None:
    import json

    env = {"DATABASE_URL": pg_server.url(odd_db)}
    snapshot_id = cli.ok("snapshot", env=env).stdout.strip()
    path = cli.store / f"{snapshot_id}.json"
    manifest = json.loads(path.read_text())
    manifest.pop("fingerprints")  # as made by a snapmgr that did not record them
    path.write_text(json.dumps(manifest))
    result = cli("restore", snapshot_id, "--verify-content", "--yes",
                 "--target-url", pg_server.url(target_name), "--create", env=env)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "has no content fingerprints" in result.stderr
    assert target_name not in databases(pg_server)
