"""End-to-end: `snapmgr guard -- CMD` on a real cluster, as a PaaS start-up script runs it."""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.pgutil import Server

SCHEMA = """
CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO accounts (name) SELECT 'user ' || g FROM generate_series(1, 500) g;
CREATE TABLE audit (at timestamptz DEFAULT now());
"""
# A migration that gets halfway and fails, as they do.
BAD_MIGRATION = (
    'psql -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" '
    '-c "ALTER TABLE accounts ADD COLUMN plan text" '
    '-c "UPDATE accounts SET name = upper(name)" '
    '-c "CREATE TABLE invoices (id int)" && echo "migrated halfway" && exit 4'
)


@pytest.fixture
def app_db(pg_server: Server, empty_db: str) -> str:
    pg_server.psql_file(empty_db, SCHEMA)
    return empty_db


def guard(cli: Cli, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("guard", *args, env={"DATABASE_URL": url})


def snapshot_ids(cli: Cli) -> list[str]:
    listed = json.loads(cli.ok("list", "--json").stdout) if cli.store.exists() else []
    return [item["id"] for item in listed]


def test_output_and_exit_code_pass_through_untouched(
    cli: Cli, pg_server: Server, app_db: str
) -> None:
    url = pg_server.url(app_db)
    ok = guard(cli, url, "--", "sh", "-c", "printf 'out\\n'; printf 'err\\n' >&2")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "out\n"
    assert "err\n" in ok.stderr

    # The next deploy takes its own snapshot: by default only one committed while
    # this run waited for the deploy lock is reused, never an earlier deploy's.
    failed = guard(cli, url, "--", "sh", "-c", "echo before; exit 3")
    assert failed.returncode == 3, failed.stderr
    assert failed.stdout == "before\n"
    ids = snapshot_ids(cli)
    assert len(ids) == 2 and all(i.startswith("pre_migration_") for i in ids)
    assert f"snapmgr restore {ids[0]} --yes" in failed.stderr
    assert "snapmgr-demo-pw" not in failed.stderr


def test_the_printed_restore_command_rolls_the_migration_back(
    cli: Cli, pg_server: Server, app_db: str
) -> None:
    url = pg_server.url(app_db)
    before = pg_server.dump(app_db)

    result = guard(cli, url, "--store", str(cli.store), "--", "sh", "-c", BAD_MIGRATION)

    assert result.returncode == 4, result.stderr
    assert result.stdout == "migrated halfway\n"
    assert pg_server.dump(app_db) != before
    printed = next(line for line in result.stderr.splitlines() if "snapmgr restore" in line)
    command = shlex.split(printed[printed.index("snapmgr restore") :])
    assert command[:2] == ["snapmgr", "restore"] and "--yes" in command
    assert command[-2:] == ["--store", str(cli.store)]
    cli.ok(*command[1:], env={"DATABASE_URL": url})
    assert pg_server.dump(app_db) == before


def test_restore_on_failure_brings_the_database_back(
    cli: Cli, pg_server: Server, app_db: str
) -> None:
    url = pg_server.url(app_db)
    before = pg_server.dump(app_db)

    result = guard(cli, url, "--restore-on-failure", "--", "sh", "-c", BAD_MIGRATION)

    assert result.returncode == 4, result.stderr
    assert result.stdout == "migrated halfway\n"
    assert "restored pre_migration_" in result.stderr and "counts match" in result.stderr
    assert pg_server.dump(app_db) == before


@contextlib.contextmanager
def idle_in_transaction(pg_server: Server, dbname: str) -> Iterator[None]:
    """A session of the old app version holding a lock, as a live app does."""
    app = pg_server.connect(dbname)
    app.autocommit = False
    app.execute("SELECT count(*) FROM audit")
    try:
        yield
    finally:
        app.close()


def test_restore_on_failure_can_end_the_apps_sessions_first(
    cli: Cli, pg_server: Server, app_db: str
) -> None:
    url = pg_server.url(app_db)
    before = pg_server.dump(app_db)
    with idle_in_transaction(pg_server, app_db):
        result = guard(
            cli, url, "--restore-on-failure", "--terminate-connections",
            "--", "sh", "-c", BAD_MIGRATION,
        )  # fmt: skip
    assert result.returncode == 4, result.stderr
    assert "terminated 1 other session(s)" in result.stderr
    assert pg_server.dump(app_db) == before

    with idle_in_transaction(pg_server, app_db):
        blocked = guard(
            cli, url, "--restore-on-failure", "--lock-timeout", "1", "--", "sh", "-c", BAD_MIGRATION
        )
        assert blocked.returncode == 8, blocked.stderr
        assert "--terminate-connections" in blocked.stderr
        assert pg_server.dump(app_db) != before
        retry = next(line for line in blocked.stderr.splitlines() if "to retry:" in line)
        command = shlex.split(retry[retry.index("snapmgr restore") :])
        cli.ok(*command[1:], "--terminate-connections", env={"DATABASE_URL": url})
    assert pg_server.dump(app_db) == before


def test_a_successful_migration_is_kept(cli: Cli, pg_server: Server, app_db: str) -> None:
    url = pg_server.url(app_db)
    migration = BAD_MIGRATION.replace("exit 4", "exit 0")

    result = guard(cli, url, "--restore-on-failure", "--json", "--", "sh", "-c", migration)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("migrated halfway\n")
    summary = json.loads(result.stdout.split("\n", 1)[1])
    assert summary["exit_code"] == 0 and summary["restored"] is None
    assert summary["snapshot"] in snapshot_ids(cli)
    assert "invoices" in pg_server.dump(app_db)


def test_a_failed_snapshot_blocks_the_command(
    cli: Cli, pg_server: Server, app_db: str, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    url = pg_server.url(app_db).replace(":snapmgr-demo-pw@", ":Wr0ngPass@")

    result = guard(cli, url, "--", "touch", str(marker))

    assert result.returncode == 3, result.stderr
    assert not marker.exists()
    assert "Wr0ngPass" not in result.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    unwritable = guard(
        cli, pg_server.url(app_db), "--store", str(blocker / "x"), "--", "touch", str(marker)
    )
    assert unwritable.returncode == 5, unwritable.stderr
    assert not marker.exists()


def test_command_not_found_or_not_executable_like_a_shell(
    cli: Cli, pg_server: Server, app_db: str, tmp_path: Path
) -> None:
    url = pg_server.url(app_db)
    missing = guard(cli, url, "--", "no-such-command-xyz", "arg")
    assert missing.returncode == 127, missing.stderr
    assert "no-such-command-xyz: command not found" in missing.stderr
    script = tmp_path / "migrate.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    not_executable = guard(cli, url, "--", str(script))
    assert not_executable.returncode == 126, not_executable.stderr
    assert snapshot_ids(cli) == []  # checked before any snapshot is taken


def test_exit_code_of_a_command_killed_by_a_signal(
    cli: Cli, pg_server: Server, app_db: str
) -> None:
    result = guard(cli, pg_server.url(app_db), "--", "sh", "-c", "kill -KILL $$")
    assert result.returncode == 128 + signal.SIGKILL


def test_sigterm_is_forwarded_and_no_restore_starts(
    cli: Cli, pg_server: Server, app_db: str
) -> None:
    migrate_then_hang = BAD_MIGRATION.replace(
        "exit 4", 'trap "echo got TERM; exit 42" TERM; echo ready; while :; do sleep 0.05; done'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapmgr", "guard", "--restore-on-failure", "--",
         "sh", "-c", migrate_then_hang],
        env={**cli.env, "DATABASE_URL": pg_server.url(app_db)},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("ready"):
            break
    else:
        raise AssertionError(f"the command never got ready: {proc.communicate()}")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 42, err
    assert "got TERM" in out
    assert "after SIGTERM" in err and "snapmgr restore pre_migration_" in err
    assert "was not restored" in err and "counts match" not in err
    assert "invoices" in pg_server.dump(app_db)


def test_label_option_names_the_snapshot(cli: Cli, pg_server: Server, app_db: str) -> None:
    result = guard(cli, pg_server.url(app_db), "--label", "deploy_42", "--", "true")
    assert result.returncode == 0, result.stderr
    assert [i.split("_2")[0] for i in snapshot_ids(cli)] == ["deploy_42"]
