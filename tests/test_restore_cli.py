"""End-to-end restores with the real CLI on a real cluster: exact, verified, all-or-nothing.

The assertion everywhere: ``pg_dump`` of the target afterwards equals the
snapshot's (a successful restore) or the target's before the attempt (every
failure, refusal, kill and lost connection), plus row counts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from snapmgr.postgres import ConnInfo, find_tool
from snapmgr.psql import PsqlSession
from snapmgr.restore_sql import ARM_AND_COMMIT, BEGIN, FENCE
from tests.conftest import Cli
from tests.pgutil import Server
from tests.restore_cases import HARD_CASES, HARD_MUTATIONS, PAGILA_MUTATIONS, SLOW_CASE
from tests.s3_server import aws_env, moto_server, new_bucket, s3_client

__all__ = ["moto_server"]  # a pytest fixture, used by name

HARD_TEMPLATE = "restore_hard_template"
SLOW_TEMPLATE = "restore_slow_template"
SUMMARY = re.compile(
    r"^restored (?P<id>\S+) into \S+: (?P<tables>\d+) tables, (?P<rows>[\d,]+) rows, "
    r"counts match \(\d+\.\ds\)$"
)


def snapshot(cli: Cli, url: str, *args: str) -> str:
    return cli.ok("snapshot", *args, env={"DATABASE_URL": url}).stdout.strip()


def restore(cli: Cli, url: str, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return cli("restore", *args, env={"DATABASE_URL": url, **kwargs.pop("env", {})}, **kwargs)  # type: ignore[dict-item, arg-type]


def manifest(cli: Cli, snapshot_id: str, store: Path | None = None) -> dict[str, object]:
    return json.loads(((store or cli.store) / f"{snapshot_id}.json").read_text())  # type: ignore[no-any-return]


def one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr
    return errors[0]


def wait_for(predicate: Callable[[], object], timeout: float = 60, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def restore_backends(server: Server, dbname: str) -> list[tuple[int, str, str]]:
    """(pid, state, query) of snapmgr's restore sessions on ``dbname``."""
    return [
        (int(pid), str(state), str(query))
        for pid, state, query in server.execute(
            "postgres",
            "SELECT pid, state, query FROM pg_stat_activity "
            f"WHERE application_name = 'snapmgr restore' AND datname = '{dbname}'",
        )
    ]


@pytest.fixture(scope="module")
def hard_template(pg_server: Server) -> str:
    pg_server.create_db(HARD_TEMPLATE)
    pg_server.psql_file(HARD_TEMPLATE, HARD_CASES)
    return HARD_TEMPLATE


@pytest.fixture
def hard_db(pg_server: Server, hard_template: str, fresh_db_name: str) -> Iterator[str]:
    pg_server.create_db(fresh_db_name, template=hard_template)
    yield fresh_db_name
    pg_server.drop_db(fresh_db_name)


# --- exact -------------------------------------------------------------------------------


def test_restore_latest_after_a_bad_migration_gives_back_pagila_exactly(
    cli: Cli, pg_server: Server, pagila_db: str
) -> None:
    url = pg_server.url(pagila_db)
    snapshot_id = snapshot(cli, url)
    expected = pg_server.dump(pagila_db)
    pg_server.psql_file(pagila_db, PAGILA_MUTATIONS)
    assert pg_server.dump(pagila_db) != expected

    result = restore(cli, url, "latest", "--yes")

    assert result.returncode == 0, result.stderr
    assert pg_server.dump(pagila_db) == expected
    counts = manifest(cli, snapshot_id)["tables"]
    assert pg_server.row_counts(pagila_db) == counts
    line = SUMMARY.match(result.stdout.strip())
    assert line, result.stdout
    assert line["id"] == snapshot_id and int(line["tables"]) == len(counts)  # type: ignore[arg-type]
    assert int(line["rows"].replace(",", "")) == sum(counts.values())  # type: ignore[attr-defined]
    assert pg_server.execute(pagila_db, "SELECT count(*) FROM pg_largeobject_metadata") == [(0,)]


def test_restore_by_id_brings_back_every_hard_case_exactly(
    cli: Cli, pg_server: Server, hard_db: str
) -> None:
    url = pg_server.url(hard_db)
    snapshot_id = snapshot(cli, url)
    snapshot(cli, url, "--label", "newer")  # so the ID, not `latest`, picks the snapshot
    expected = pg_server.dump(hard_db)
    large_objects = pg_server.execute(
        hard_db, "SELECT oid, lo_get(oid) FROM pg_largeobject_metadata ORDER BY oid"
    )
    pg_server.psql_file(hard_db, HARD_MUTATIONS)
    assert pg_server.dump(hard_db) != expected

    result = restore(cli, url, snapshot_id, "--yes")

    assert result.returncode == 0, result.stderr
    assert pg_server.dump(hard_db) == expected
    assert pg_server.row_counts(hard_db) == manifest(cli, snapshot_id)["tables"]
    assert (
        pg_server.execute(
            hard_db, "SELECT oid, lo_get(oid) FROM pg_largeobject_metadata ORDER BY oid"
        )
        == large_objects
    )
    assert pg_server.execute(hard_db, "SELECT nextval('counter')") == [(4249,)]
    assert pg_server.execute(
        hard_db, 'SELECT note FROM "Sché ""ma"""."Wéird ""name""" WHERE id = 1'
    ) == [("multi\nline",)]
    for leftover in ("pg_event_trigger", "pg_publication", "pg_foreign_server"):
        assert pg_server.execute(hard_db, f"SELECT count(*) FROM {leftover}") == [(0,)]
    public = pg_server.execute(
        hard_db,
        "SELECT nspowner::regrole::text, nspacl::text, obj_description(oid, 'pg_namespace') "
        "FROM pg_namespace WHERE nspname = 'public'",
    )
    assert public == [
        (
            "pg_database_owner",
            "{pg_database_owner=UC/pg_database_owner,=U/pg_database_owner}",
            "standard public schema",
        )
    ]


def test_restore_twice_and_with_zstd_is_still_exact(
    cli: Cli, pg_server: Server, hard_db: str
) -> None:
    url = pg_server.url(hard_db)
    snapshot_id = snapshot(cli, url, "--compression", "zstd")
    expected = pg_server.dump(hard_db)
    for _ in range(2):
        pg_server.psql_file(hard_db, "CREATE TABLE public.again (a int);")
        cli.ok("restore", snapshot_id, "--yes", env={"DATABASE_URL": url})
        assert pg_server.dump(hard_db) == expected


# --- confirmation ----------------------------------------------------------------------------


def test_refusal_without_confirmation_changes_nothing(
    cli: Cli, pg_server: Server, hard_db: str
) -> None:
    url = pg_server.url(hard_db)
    snapshot_id = snapshot(cli, url)
    pg_server.psql_file(hard_db, "CREATE TABLE public.made_after (a int);")
    before = pg_server.dump(hard_db)

    for env in ({}, {"CONFIRM_RESTORE": "no"}):
        result = restore(cli, url, "latest", env=env)
        assert result.returncode == 9, result.stderr
        line = one_error_line(result.stderr)
        assert hard_db in line and snapshot_id in line
        assert "--yes" in line and "CONFIRM_RESTORE=yes" in line
        assert "snapmgr-demo-pw" not in result.stderr
        assert pg_server.dump(hard_db) == before
        assert restore_backends(pg_server, hard_db) == []

    confirmed = restore(cli, url, "latest", env={"CONFIRM_RESTORE": "yes"})
    assert confirmed.returncode == 0, confirmed.stderr
    assert "made_after" not in pg_server.dump(hard_db)


def test_unknown_snapshot_exits_7_before_asking(cli: Cli, pg_server: Server, hard_db: str) -> None:
    result = restore(cli, pg_server.url(hard_db), "nope_20200101_000000", "--yes")
    assert result.returncode == 7, result.stderr
    assert restore(cli, pg_server.url(hard_db), "latest").returncode == 7


# --- verified before commit ------------------------------------------------------------------


def flip_byte_in(data: bytearray, needle: bytes | None) -> None:
    at = len(data) // 2 if needle is None else data.index(needle) + len(needle) // 2
    data[at] ^= 0x20


@pytest.mark.parametrize(
    ("compression", "damage"),
    [
        ("gzip", "flip"),
        ("gzip", "truncate"),
        ("none", "flip"),
        ("none", "truncate"),
        # pg_dump's own BEGIN;/COMMIT; around large objects is only recognised by
        # its section header: damage the header and that COMMIT; reaches psql.
        ("none", "flip-blobs-header"),
    ],
)
def test_damaged_copy_exits_6_and_leaves_the_target_unchanged(
    cli: Cli, pg_server: Server, hard_db: str, compression: str, damage: str
) -> None:
    url = pg_server.url(hard_db)
    snapshot_id = snapshot(cli, url, "--compression", compression)
    path = cli.store / f"{snapshot_id}{'.sql.gz' if compression == 'gzip' else '.sql'}"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        del data[len(data) * 2 // 3 :]
    else:
        flip_byte_in(data, b"Data for Name: BLOBS" if damage == "flip-blobs-header" else None)
    path.write_bytes(bytes(data))
    pg_server.psql_file(hard_db, HARD_MUTATIONS)
    before = pg_server.dump(hard_db)

    result = restore(cli, url, snapshot_id, "--yes")

    assert result.returncode == 6, result.stderr
    line = one_error_line(result.stderr)
    assert "unchanged" in line and hard_db in line
    assert pg_server.dump(hard_db) == before
    assert "restored" not in result.stdout
    if "psql had stopped at" in line:  # psql reached pg_dump's COMMIT; before the stream ended
        assert "a COMMIT arrived before the restore was verified" in line


def test_row_counts_that_differ_from_the_manifest_roll_back(
    cli: Cli, pg_server: Server, hard_db: str
) -> None:
    url = pg_server.url(hard_db)
    snapshot_id = snapshot(cli, url)
    path = cli.store / f"{snapshot_id}.json"
    data = json.loads(path.read_text())
    data["tables"]["public.people"] += 1
    path.write_text(json.dumps(data))
    pg_server.psql_file(hard_db, HARD_MUTATIONS)
    before = pg_server.dump(hard_db)

    result = restore(cli, url, snapshot_id, "--yes")

    assert result.returncode == 8, result.stderr
    line = one_error_line(result.stderr)
    assert "row counts" in line and "public.people" in line and "unchanged" in line
    assert pg_server.dump(hard_db) == before


def test_a_corrupt_copy_falls_back_to_the_next_store(
    cli: Cli, pg_server: Server, hard_db: str, tmp_path: Path
) -> None:
    url = pg_server.url(hard_db)
    first, second = tmp_path / "first", tmp_path / "second"
    stores = ("--store", str(first), "--store", str(second))
    snapshot_id = snapshot(cli, url, *stores)
    expected = pg_server.dump(hard_db)
    dump = first / f"{snapshot_id}.sql.gz"
    dump.write_bytes(dump.read_bytes()[:-100])
    pg_server.psql_file(hard_db, HARD_MUTATIONS)

    result = restore(cli, url, snapshot_id, "--yes", *stores)

    assert result.returncode == 0, result.stderr
    assert "trying the copy in" in result.stderr
    assert pg_server.dump(hard_db) == expected


# --- all-or-nothing under faults ---------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_snapshot(pg_server: Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[Cli, str]:
    """A snapshot whose restore spends seconds inside one table's COPY (``b_slow``)."""
    pg_server.create_db(SLOW_TEMPLATE)
    pg_server.psql_file(SLOW_TEMPLATE, SLOW_CASE)
    cli = Cli(tmp_path_factory.mktemp("slow"))
    return cli, snapshot(cli, pg_server.url(SLOW_TEMPLATE), "--label", "slow")


@pytest.fixture
def slow_target(
    pg_server: Server, slow_snapshot: tuple[Cli, str], fresh_db_name: str
) -> Iterator[str]:
    """A copy of the slow database after a "migration"; its dump is the expected state."""
    pg_server.create_db(fresh_db_name, template=SLOW_TEMPLATE)
    pg_server.execute(
        fresh_db_name,
        "DROP TABLE z_filler; CREATE TABLE migrated (a int); INSERT INTO migrated VALUES (1)",
    )
    yield fresh_db_name
    pg_server.drop_db(fresh_db_name)


def start_restore(cli: Cli, url: str, snapshot_id: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "snapmgr", "restore", snapshot_id, "--yes", *args],
        env={**cli.env, "DATABASE_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_inside_slow_copy(pg_server: Server, dbname: str) -> int:
    """The restoring backend's pid, once it is busy loading ``b_slow`` (wipe long done)."""
    found: list[int] = []

    def in_copy() -> bool:
        found[:] = [
            pid
            for pid, state, query in restore_backends(pg_server, dbname)
            if state == "active" and query.startswith("COPY public.b_slow")
        ]
        return bool(found)

    wait_for(in_copy, what="the restore to reach COPY public.b_slow")
    return found[0]


def wait_until_rolled_back(pg_server: Server, dbname: str) -> None:
    wait_for(lambda: not restore_backends(pg_server, dbname), what="the restore session to end")


def child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


@pytest.mark.parametrize("victims", ["snapmgr", "snapmgr-and-psql"])
def test_sigkill_mid_stream_leaves_the_target_unchanged(
    pg_server: Server, slow_snapshot: tuple[Cli, str], slow_target: str, victims: str
) -> None:
    cli, snapshot_id = slow_snapshot
    before = pg_server.dump(slow_target)
    proc = start_restore(cli, pg_server.url(slow_target), snapshot_id, "--store", str(cli.store))
    wait_until_inside_slow_copy(pg_server, slow_target)
    psql = child_pids(proc.pid)
    assert psql, "psql should be running as snapmgr's child"

    os.kill(proc.pid, signal.SIGKILL)
    if victims == "snapmgr-and-psql":
        for pid in psql:
            os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=30)

    wait_until_rolled_back(pg_server, slow_target)
    assert pg_server.dump(slow_target) == before
    assert pg_server.execute(slow_target, "SELECT to_regclass('public.z_filler')") == [(None,)]
    assert pg_server.execute(slow_target, "SELECT a FROM migrated") == [(1,)]


def test_sigterm_mid_stream_rolls_back_and_exits_130(
    pg_server: Server, slow_snapshot: tuple[Cli, str], slow_target: str
) -> None:
    cli, snapshot_id = slow_snapshot
    before = pg_server.dump(slow_target)
    proc = start_restore(cli, pg_server.url(slow_target), snapshot_id, "--store", str(cli.store))
    wait_until_inside_slow_copy(pg_server, slow_target)
    started = time.monotonic()

    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)

    assert proc.returncode == 130, err
    assert time.monotonic() - started < 10, "the running COPY should have been cancelled"
    line = one_error_line(err)
    assert "interrupted by SIGTERM" in line and "unchanged" in line
    assert restore_backends(pg_server, slow_target) == []
    assert pg_server.dump(slow_target) == before


def test_lost_connection_mid_stream_exits_8_unchanged(
    pg_server: Server, slow_snapshot: tuple[Cli, str], slow_target: str
) -> None:
    cli, snapshot_id = slow_snapshot
    before = pg_server.dump(slow_target)
    proc = start_restore(cli, pg_server.url(slow_target), snapshot_id, "--store", str(cli.store))
    backend = wait_until_inside_slow_copy(pg_server, slow_target)

    pg_server.execute("postgres", f"SELECT pg_terminate_backend({backend})")
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 8, err
    line = one_error_line(err)
    assert "terminating connection" in line and "unchanged" in line
    wait_until_rolled_back(pg_server, slow_target)
    assert pg_server.dump(slow_target) == before


def test_a_second_concurrent_restore_is_refused(
    pg_server: Server, slow_snapshot: tuple[Cli, str], slow_target: str
) -> None:
    cli, snapshot_id = slow_snapshot
    url = pg_server.url(slow_target)
    first = start_restore(cli, url, snapshot_id, "--store", str(cli.store))
    wait_until_inside_slow_copy(pg_server, slow_target)
    first.send_signal(signal.SIGSTOP)  # its transaction stays open, holding the restore lock

    second = cli(
        "restore", snapshot_id, "--yes", "--store", str(cli.store), env={"DATABASE_URL": url}
    )

    assert second.returncode == 8, second.stderr
    assert "another snapmgr restore" in one_error_line(second.stderr)
    first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert pg_server.dump(slow_target) == pg_server.dump(SLOW_TEMPLATE)


# --- other targets and other sessions -------------------------------------------------------------


def test_restore_into_another_database_with_create(
    cli: Cli, pg_server: Server, hard_db: str, fresh_db_name: str
) -> None:
    url = pg_server.url(hard_db)
    snapshot_id = snapshot(cli, url)
    expected = pg_server.dump(hard_db)
    other = f"{fresh_db_name}_copy"
    other_url = pg_server.url(other)
    try:
        missing = restore(cli, url, snapshot_id, "--yes", "--target-url", other_url)
        assert missing.returncode == 3, missing.stderr
        assert "--create" in one_error_line(missing.stderr)
        assert "snapmgr-demo-pw" not in missing.stderr

        result = restore(
            cli, url, snapshot_id, "--yes", "--target-url", other_url, "--create", "--json"
        )

        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert data["id"] == snapshot_id and data["created"] is True
        assert data["target"].endswith(f"/{other}") and "snapmgr-demo-pw" not in result.stdout
        assert data["tables"] == len(manifest(cli, snapshot_id)["tables"])  # type: ignore[arg-type]
        assert {"rows", "duration_s", "store"} <= set(data)
        assert pg_server.dump(other) == expected
        assert pg_server.dump(hard_db) == expected
    finally:
        pg_server.drop_db(other)


def test_failed_restore_into_a_created_database_drops_it(
    cli: Cli, pg_server: Server, hard_db: str, fresh_db_name: str
) -> None:
    url = pg_server.url(hard_db)
    snapshot_id = snapshot(cli, url)
    dump = cli.store / f"{snapshot_id}.sql.gz"
    dump.write_bytes(dump.read_bytes()[:-50])
    other = f"{fresh_db_name}_new"

    result = restore(
        cli, url, snapshot_id, "--yes", "--target-url", pg_server.url(other), "--create"
    )

    assert result.returncode == 6, result.stderr
    assert (
        pg_server.execute("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{other}'") == []
    )


def test_terminate_connections_ends_sessions_that_would_block(
    cli: Cli, pg_server: Server, hard_db: str
) -> None:
    url = pg_server.url(hard_db)
    snapshot_id = snapshot(cli, url)
    expected = pg_server.dump(hard_db)
    pg_server.psql_file(hard_db, "CREATE TABLE public.made_after (a int);")
    before = pg_server.dump(hard_db)
    idle = pg_server.connect(hard_db)
    busy = pg_server.connect(hard_db)
    busy.autocommit = False
    busy.execute("SELECT count(*) FROM public.people")  # holds its lock, idle in transaction
    try:
        blocked = restore(cli, url, snapshot_id, "--yes", "--lock-timeout", "1")
        assert blocked.returncode == 8, blocked.stderr
        line = one_error_line(blocked.stderr)
        assert "lock timeout" in line and "--terminate-connections" in line and "unchanged" in line
        assert pg_server.dump(hard_db) == before

        result = restore(cli, url, snapshot_id, "--yes", "--terminate-connections")

        assert result.returncode == 0, result.stderr
        assert "terminated 2 other session(s)" in result.stderr
        assert pg_server.dump(hard_db) == expected
        for conn in (idle, busy):
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
    finally:
        idle.close()
        busy.close()


def test_restore_as_a_database_owner_without_superuser(
    cli: Cli, pg_server: Server, fresh_db_name: str
) -> None:
    """The PaaS case: the app's role owns the database and everything in it."""
    role = f"app_{fresh_db_name}"
    pg_server.execute("postgres", f"CREATE ROLE {role} LOGIN PASSWORD 'app-pw-123'")
    pg_server.execute("postgres", f"CREATE DATABASE {fresh_db_name} OWNER {role}")
    pg_server.execute(fresh_db_name, f"GRANT CREATE ON SCHEMA public TO {role}")
    params = conninfo_to_dict(pg_server.admin_url)
    app_url = (
        f"postgresql://{role}:app-pw-123@{params.get('host', '127.0.0.1')}:"
        f"{params.get('port', 5432)}/{fresh_db_name}"
    )
    try:
        psql_as(app_url, HARD_CASES)
        snapshot_id = snapshot(cli, app_url)
        expected = pg_server.dump(fresh_db_name)
        psql_as(
            app_url,
            "CREATE TABLE public.after (a int); DROP TABLE public.people CASCADE;"
            "SELECT lo_from_bytea(0, 'x'); CREATE EXTENSION pgcrypto;",
        )

        result = restore(cli, app_url, snapshot_id, "--yes", "--terminate-connections")

        assert result.returncode == 0, result.stderr
        assert "app-pw-123" not in result.stderr + result.stdout
        assert pg_server.dump(fresh_db_name) == expected
        acl = pg_server.execute(
            fresh_db_name, "SELECT nspacl::text FROM pg_namespace WHERE nspname = 'public'"
        )
        assert f"{role}=C/pg_database_owner" in acl[0][0]
    finally:
        pg_server.drop_db(fresh_db_name)
        pg_server.execute("postgres", f"DROP ROLE IF EXISTS {role}")


def psql_as(url: str, text: str) -> None:
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url],
        input=text.encode(),
        check=True,
        capture_output=True,
    )


# --- from S3 ----------------------------------------------------------------------------------


def test_restore_latest_from_s3_on_a_machine_with_nothing_local(
    cli: Cli, pg_server: Server, hard_db: str, moto_server: str, tmp_path: Path
) -> None:
    bucket = new_bucket(s3_client(moto_server))
    remote = f"s3://{bucket}/app/db"
    cli.env.update(aws_env(moto_server))
    url = pg_server.url(hard_db)
    snapshot_id = snapshot(cli, url, "--store", remote)
    expected = pg_server.dump(hard_db)
    pg_server.psql_file(hard_db, HARD_MUTATIONS)
    other = Cli(tmp_path / "elsewhere")
    other.env.update(aws_env(moto_server))

    result = other("restore", "latest", "--yes", "--store", remote, env={"DATABASE_URL": url})

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"restored {snapshot_id} into ")
    assert pg_server.dump(hard_db) == expected


# --- the commit fence, directly ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stray", "error"),
    [
        ("COMMIT;\n", "a COMMIT arrived before the restore was verified"),
        ("END;\n", "a COMMIT arrived before the restore was verified"),
        # After a stray ROLLBACK the rest runs in a new (implicit) transaction
        # without the fence, and arming it fails: that transaction is not ours.
        ("ROLLBACK;\nCREATE TABLE public.after_rollback (a int);\n", "snapmgr_fence"),
    ],
)
def test_only_the_armed_fence_lets_a_restore_commit(
    pg_server: Server, empty_db: str, stray: str, error: str
) -> None:
    conn = ConnInfo.parse(pg_server.url(empty_db))
    psql = find_tool("psql", 15)
    session = PsqlSession(psql, conn, "test")
    session.send(BEGIN + FENCE.format(token="s3cret") + "CREATE TABLE public.stray (a int);\n")
    session.send(stray + ARM_AND_COMMIT.format(token="s3cret"))

    assert session.finish() == 3
    assert error in (session.first_error() or "")
    tables = pg_server.execute(
        empty_db,
        "SELECT relname FROM pg_class WHERE relkind = 'r' "
        "AND relnamespace = 'public'::regnamespace",
    )
    assert tables == []

    armed = PsqlSession(psql, conn, "test")
    armed.send(BEGIN + FENCE.format(token="s3cret") + "CREATE TABLE public.kept (a int);\n")
    armed.send(ARM_AND_COMMIT.format(token="s3cret"))
    assert armed.finish() == 0
    assert pg_server.execute(empty_db, "SELECT to_regclass('public.kept')::text") == [("kept",)]


def test_unreachable_target_exits_3_without_showing_its_password(
    cli: Cli, pg_server: Server, hard_db: str
) -> None:
    snapshot_id = snapshot(cli, pg_server.url(hard_db))
    for target, code in (
        ("postgresql://app:S3cretXYZ@127.0.0.1:1/db", 3),
        ("postgresql://app:S3cretXYZ@127.0.0.1:notaport/db", 2),
    ):
        result = restore(cli, pg_server.url(hard_db), snapshot_id, "--yes", "--target-url", target)
        assert result.returncode == code, result.stderr
        assert "S3cretXYZ" not in result.stderr + result.stdout
        one_error_line(result.stderr)
