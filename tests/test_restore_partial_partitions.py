"""``restore --table`` of a partitioned table brings its partitions and their rows.

A partitioned table holds no rows itself: pg_dump writes each partition as a
table of its own, attached to the parent (``TABLE ATTACH``), with its own
``TABLE DATA``. Restoring the parent alone would give back an empty table
whose count "matches" (the parent's count is 0). So choosing a partitioned
table chooses every partition under it, at any depth and in any schema, and
choosing a partition alone is refused with the parent's name: it cannot be
attached to a parent the target may not have.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import Cli
from tests.pgutil import Server
from tests.test_restore_partial_cli import databases, dump_of, one_error_line

EVENTS = r"""
CREATE SCHEMA archive;
CREATE TABLE public.events (
    id bigint GENERATED ALWAYS AS IDENTITY, at date NOT NULL, kind text NOT NULL,
    PRIMARY KEY (id, at, kind)) PARTITION BY RANGE (at);
CREATE TABLE public.events_2024 PARTITION OF public.events
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY LIST (kind);
CREATE TABLE public.events_2024_a PARTITION OF public.events_2024 FOR VALUES IN ('a');
CREATE TABLE archive.events_2024_other PARTITION OF public.events_2024 DEFAULT;
CREATE TABLE public.events_2025 PARTITION OF public.events
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE INDEX events_kind_idx ON public.events (kind);
COMMENT ON TABLE public.events_2025 IS 'this year';
CREATE TABLE public.other (id int PRIMARY KEY);
INSERT INTO public.events (at, kind)
    SELECT date '2024-01-01' + i, CASE WHEN i % 3 = 0 THEN 'a' ELSE 'b' END
    FROM generate_series(0, 700) i;
INSERT INTO public.other SELECT generate_series(1, 5);
"""
PARTS = ("public.events_2024", "public.events_2024_a", "archive.events_2024_other")
ALL = ("public.events", *PARTS, "public.events_2025")


@pytest.fixture
def events_db(pg_server: Server, empty_db: str) -> str:
    pg_server.psql_file(empty_db, EVENTS)
    return empty_db


def test_a_partitioned_table_comes_back_with_every_partition_and_row(
    cli: Cli, pg_server: Server, events_db: str, empty_db: str, fresh_db_name: str
) -> None:
    env = {"DATABASE_URL": pg_server.url(events_db)}
    snapshot_id = cli.ok("snapshot", env=env).stdout.strip()
    shown = cli.ok("show", snapshot_id, env=env).stdout.splitlines()
    # 701 days from 2024-01-01: 366 in 2024 (122 of kind a), 335 in 2025.
    assert "  archive.events_2024_other: 244 (partition of public.events_2024)" in shown
    assert "  public.events_2024_a: 122 (partition of public.events_2024)" in shown
    assert "  public.events_2025: 335 (partition of public.events)" in shown
    assert "  public.other: 5" in shown
    target = f"{fresh_db_name}_target"
    try:
        result = cli.ok(
            "restore", snapshot_id, "--table", "public.events",
            "--target-url", pg_server.url(target), "--create", env=env,
        )  # fmt: skip
        # 701 rows, all in the three leaf partitions (the partitioned ones hold none).
        assert ": 3 tables, 701 rows, counts match" in result.stdout
        flags = [arg for name in ALL for arg in ("-t", name)]
        assert dump_of(pg_server, target, *flags) == dump_of(pg_server, events_db, *flags)
        assert pg_server.execute(target, "SELECT count(*), count(DISTINCT kind) FROM events") == [
            (701, 2)
        ]
        assert pg_server.execute(target, "SELECT to_regclass('public.other')") == [(None,)]
        # Rows still route to the right partition, and the identity continues.
        pg_server.execute(target, "INSERT INTO events (at, kind) VALUES ('2024-06-01', 'z')")
        assert pg_server.execute(
            target, "SELECT count(*) FROM archive.events_2024_other WHERE kind = 'z'"
        ) == [(1,)]
        assert pg_server.execute(target, "SELECT max(id) FROM events") == [(702,)]
        # Every partition's primary key index is attached: the parent's is valid.
        assert pg_server.execute(
            target,
            "SELECT bool_and(i.indisvalid), count(*) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE 'events%pkey'",
        ) == [(True, 5)]
    finally:
        pg_server.drop_db(target)


def test_a_partition_alone_is_refused_with_its_parent_named(
    cli: Cli, pg_server: Server, events_db: str, fresh_db_name: str
) -> None:
    env = {"DATABASE_URL": pg_server.url(events_db)}
    snapshot_id = cli.ok("snapshot", env=env).stdout.strip()
    target = f"{fresh_db_name}_target"
    result = cli(
        "restore", snapshot_id, "--table", "public.events_2024_a",
        "--target-url", pg_server.url(target), "--create", env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    assert "public.events_2024_a is a partition of public.events_2024" in line
    assert "--table public.events" in line
    assert target not in databases(pg_server)  # refused before the target was created


def test_a_snapshot_without_partition_records_fails_cleanly_and_changes_nothing(
    cli: Cli, pg_server: Server, events_db: str, fresh_db_name: str
) -> None:
    """A snapshot made before the manifest recorded partitions: a partition named
    alone reaches its ``TABLE ATTACH`` in the stream, and the replay stops there."""
    env = {"DATABASE_URL": pg_server.url(events_db)}
    snapshot_id = cli.ok("snapshot", env=env).stdout.strip()
    manifest_file = cli.store / f"{snapshot_id}.json"
    manifest = json.loads(manifest_file.read_text())
    assert manifest.pop("partitions") == {
        "archive.events_2024_other": "public.events_2024",
        "public.events_2024": "public.events",
        "public.events_2024_a": "public.events_2024",
        "public.events_2025": "public.events",
    }
    manifest_file.write_text(json.dumps(manifest))
    target = f"{fresh_db_name}_target"
    pg_server.create_db(target)
    try:
        before = pg_server.dump(target)
        result = cli(
            "restore", snapshot_id, "--table", "public.events_2025",
            "--target-url", pg_server.url(target), env=env,
        )  # fmt: skip
        assert result.returncode == 8, result.stderr
        line = one_error_line(result.stderr)
        assert "public.events_2025 is a partition of public.events" in line
        assert "made before snapmgr recorded partitions" in line
        assert pg_server.dump(target) == before
    finally:
        pg_server.drop_db(target)
