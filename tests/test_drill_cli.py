"""Fingerprints and drills, end to end with the real CLI on a real cluster.

Fingerprints are checked against values computed independently here (psql's
``COPY … TO STDOUT`` hashed with xxhash, large objects read with ``lo_get``),
never against snapmgr's own server-side code. Drills are run on a good
snapshot, on one altered on purpose so that only the fingerprints can tell,
on one whose role was dropped, and interrupted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import xxhash
from psycopg.conninfo import conninfo_to_dict

from tests.conftest import Cli
from tests.metrics_text import parse_metrics
from tests.pgutil import Server

ODD_DATA = r"""
CREATE TABLE odd (id int PRIMARY KEY, t text, b bytea, f float8, ts timestamptz, n numeric,
                  j jsonb, g int GENERATED ALWAYS AS (id * 2) STORED);
INSERT INTO odd VALUES
  (1, NULL, NULL, NULL, NULL, NULL, NULL),
  (2, E'tab\there\nnewline \\ backslash', '\x00ff10', 0.1, '2025-01-02 03:04:05+02', 1e-20,
   '{"a": [1, 2, "x\"y"]}'),
  (3, repeat('large row ', 300000), decode(repeat('ab', 100000), 'hex'), -1.5e300,
   'infinity', 'NaN', 'null'),
  (4, '\.', '', 'Infinity', '1999-12-31 23:59:59.999999+00', 123456789012345678901234567890,
   '[]');
CREATE TABLE empty_one (a int);
SELECT lo_from_bytea(0, 'a large object');
SELECT lo_from_bytea(0, decode(repeat('00ff', 300000), 'hex'));
SELECT lo_create(0);
"""


def independent_fingerprints(server: Server, dbname: str) -> dict[str, dict[str, str]]:
    """Each table's COPY text hashed with xxh3-128, read by psql; each large object's bytes."""
    tables: dict[str, str] = {}
    rows = server.execute(
        dbname,
        "SELECT n.nspname, c.relname, string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "AND a.attgenerated = '' WHERE c.relkind = 'r' "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_' "
        "GROUP BY 1, 2",
    )
    env = {
        **server.child_env(),
        "PGOPTIONS": "-c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3",
    }
    for schema, table, columns in rows:
        out = subprocess.run(
            ["psql", "-X", "-q", "-d", server.conninfo(dbname), "-c",
             f'COPY "{schema}"."{table}" ({columns}) TO STDOUT'],
            env=env, check=True, capture_output=True,
        ).stdout  # fmt: skip
        tables[f"{schema}.{table}"] = xxhash.xxh3_128(out).hexdigest()
    objects = {
        str(oid): xxhash.xxh3_128(bytes(data)).hexdigest()
        for oid, data in server.execute(
            dbname, "SELECT oid, lo_get(oid) FROM pg_largeobject_metadata"
        )
    }
    return {"tables": tables, "large_objects": objects}


def scratch_databases(server: Server) -> list[str]:
    return [
        str(row[0])
        for row in server.execute(
            "postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'snapmgr_drill_%'"
        )
    ]


def manifest_of(cli: Cli, snapshot_id: str) -> dict[str, object]:
    return json.loads((cli.store / f"{snapshot_id}.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture
def odd_db(pg_server: Server, empty_db: str) -> str:
    pg_server.psql_file(empty_db, ODD_DATA)
    return empty_db


@pytest.mark.parametrize("which", ["odd", "pagila"])
def test_fingerprints_equal_independent_ones(
    cli: Cli, pg_server: Server, which: str, request: pytest.FixtureRequest
) -> None:
    dbname = request.getfixturevalue("odd_db" if which == "odd" else "pagila_db")
    snapshot_id = cli.ok("snapshot", env={"DATABASE_URL": pg_server.url(dbname)}).stdout.strip()
    recorded = manifest_of(cli, snapshot_id)["fingerprints"]
    assert isinstance(recorded, dict) and recorded["algorithm"] == "xxh3_128"
    expected = independent_fingerprints(pg_server, dbname)
    assert recorded["tables"] == expected["tables"]
    assert recorded["large_objects"] == expected["large_objects"]
    if which == "odd":
        assert len(expected["large_objects"]) == 3


def test_drill_proves_a_good_snapshot_and_leaves_no_scratch_database(
    cli: Cli, pg_server: Server, odd_db: str, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": pg_server.url(odd_db)}
    snapshot_id = cli.ok("snapshot", env=env).stdout.strip()
    before = pg_server.dump(odd_db)
    result = cli.ok("drill", "latest", env=env)
    line = result.stdout.strip()
    assert line.startswith(f"proven: {snapshot_id}: 2 tables, 4 rows, content matches, restored")
    assert scratch_databases(pg_server) == []
    assert pg_server.dump(odd_db) == before  # the source is not touched
    record = json.loads((cli.store / f"{snapshot_id}.drill.json").read_text())
    assert record["ok"] is True and record["large_objects"] == 3 and record["restore_s"] > 0

    listed = json.loads(cli.ok("list", "--json", env=env).stdout)
    assert listed[0]["last_drill"]["ok"] is True
    assert "ok " in cli.ok("show", snapshot_id, env=env).stdout.split("last drill")[1]
    metrics = tmp_path / "check.prom"
    cli.ok("check", "--max-age", "1h", "--max-drill-age", "2d", "--metrics-file", str(metrics),
           env=env)  # fmt: skip
    gauges = {key.split("{")[0]: value for key, value in parse_metrics(metrics.read_text()).items()}
    assert gauges["snapmgr_last_drill_success"] == 1
    assert gauges["snapmgr_last_drill_duration_seconds"] == pytest.approx(record["restore_s"])
    assert abs(gauges["snapmgr_last_drill_timestamp_seconds"] - time.time()) < 120

    # A second drill as JSON; prune/delete removes the record with its snapshot.
    data = json.loads(cli.ok("drill", snapshot_id, "--json", env=env).stdout)
    assert data["ok"] is True and data["id"] == snapshot_id
    cli.ok("delete", snapshot_id, "--yes", env=env)
    assert not list(cli.store.glob(f"{snapshot_id}*"))


def test_check_alerts_when_drills_stop(cli: Cli, pg_server: Server, odd_db: str) -> None:
    env = {"DATABASE_URL": pg_server.url(odd_db)}
    cli.ok("snapshot", env=env)
    never = cli("check", "--max-age", "1h", "--max-drill-age", "2d", env=env)
    assert never.returncode == 1
    assert "no snapshot has a successful drill" in never.stdout
    cli.ok("drill", env=env)
    record_path = next(cli.store.glob("*.drill.json"))
    record = json.loads(record_path.read_text())
    record["at"] = "2020-01-01T00:00:00Z"  # as if drills had stopped long ago
    record_path.write_text(json.dumps(record))
    stale = cli("check", "--max-age", "1h", "--max-drill-age", "2d", "--json", env=env)
    assert stale.returncode == 1
    assert "older than --max-drill-age 2d" in json.loads(stale.stdout)["problems"][0]


def _alter_one_value(cli: Cli, snapshot_id: str) -> None:
    """Change one value in the stored dump and fix sha256 and size in the manifest,
    so that only the content fingerprints can tell."""
    dump = cli.store / f"{snapshot_id}.sql.gz"
    text = gzip.decompress(dump.read_bytes())
    assert text.count(b"\t0.1\t") == 1
    altered = gzip.compress(text.replace(b"\t0.1\t", b"\t0.2\t"))
    dump.write_bytes(altered)
    manifest_path = cli.store / f"{snapshot_id}.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"] = hashlib.sha256(altered).hexdigest()
    manifest["size"] = len(altered)
    manifest_path.write_text(json.dumps(manifest))


def test_drill_of_an_altered_snapshot_fails_with_6_naming_the_table(
    cli: Cli, pg_server: Server, odd_db: str
) -> None:
    env = {"DATABASE_URL": pg_server.url(odd_db)}
    snapshot_id = cli.ok("snapshot", env=env).stdout.strip()
    _alter_one_value(cli, snapshot_id)
    result = cli("drill", env=env)
    assert result.returncode == 6, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "table public.odd: content differs" in errors[0]
    assert scratch_databases(pg_server) == []
    record = json.loads((cli.store / f"{snapshot_id}.drill.json").read_text())
    assert record["ok"] is False and record["differences"]
    verify = cli("verify", snapshot_id, env=env)
    assert verify.returncode == 6 and "content fingerprints differ" in verify.stderr


def test_drill_fails_when_a_role_the_snapshot_needs_is_gone(
    cli: Cli, pg_server: Server, odd_db: str
) -> None:
    env = {"DATABASE_URL": pg_server.url(odd_db)}
    pg_server.execute("postgres", "DROP ROLE IF EXISTS drill_reader; CREATE ROLE drill_reader")
    pg_server.execute(odd_db, "GRANT SELECT ON odd TO drill_reader")
    cli.ok("snapshot", env=env)
    pg_server.execute(odd_db, "REVOKE SELECT ON odd FROM drill_reader")
    pg_server.execute("postgres", "DROP ROLE drill_reader")
    result = cli("drill", env=env)
    assert result.returncode == 8, result.stderr
    assert "drill_reader" in result.stderr
    assert scratch_databases(pg_server) == []


def _drill_process(cli: Cli, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "snapmgr", "drill"],
        env={**cli.env, "DATABASE_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_scratch(server: Server, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if scratch_databases(server):
            return
        time.sleep(0.02)
    raise AssertionError("the drill never created its scratch database")


@pytest.fixture(scope="module")
def big_snapshot(
    pg_server: Server, big_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Cli]]:
    """One snapshot of the big database for the interrupted drills (a drill long enough
    to interrupt), taken once: (the source database's URL, the Cli that took it)."""
    dbname = f"drill_big_{os.getpid()}"
    pg_server.create_db(dbname, template=big_template)
    maker = Cli(tmp_path_factory.mktemp("drill-big"))
    maker.ok("snapshot", env={"DATABASE_URL": pg_server.url(dbname)})
    yield pg_server.url(dbname), maker
    pg_server.drop_db(dbname)


def _with_big_snapshot(cli: Cli, big_snapshot: tuple[str, Cli]) -> str:
    """A private copy of the big snapshot's store and pointer file for this test, as if
    this test had taken it; the source's URL."""
    url, maker = big_snapshot
    shutil.copytree(maker.store, cli.store)
    cli.pointer.write_text(maker.pointer.read_text().replace(str(maker.store), str(cli.store)))
    return url


@pytest.mark.xdist_group("drill_big")  # one worker, one big_snapshot
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_drill_drops_its_scratch_database(
    cli: Cli, pg_server: Server, big_snapshot: tuple[str, Cli], sig: signal.Signals
) -> None:
    url = _with_big_snapshot(cli, big_snapshot)
    proc = _drill_process(cli, url)
    _wait_for_scratch(pg_server, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert scratch_databases(pg_server) == []


@pytest.mark.xdist_group("drill_big")
def test_killed_drill_leftover_is_dropped_by_the_next_drill(
    cli: Cli, pg_server: Server, big_snapshot: tuple[str, Cli]
) -> None:
    url = _with_big_snapshot(cli, big_snapshot)
    proc = _drill_process(cli, url)
    _wait_for_scratch(pg_server, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    leftover = scratch_databases(pg_server)
    assert len(leftover) == 1
    # psql (its own session) ends when its stdin closes; then nobody is connected.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and pg_server.execute(
        "postgres",
        f"SELECT 1 FROM pg_stat_activity WHERE datname = '{leftover[0]}'",
    ):
        time.sleep(0.1)
    result = cli.ok("drill", env={"DATABASE_URL": url})
    assert f"dropped {leftover[0]}" in result.stderr
    assert scratch_databases(pg_server) == []


def test_drill_into_a_target_url_needs_yes(cli: Cli, pg_server: Server, odd_db: str) -> None:
    env = {"DATABASE_URL": pg_server.url(odd_db)}
    cli.ok("snapshot", env=env)
    params = conninfo_to_dict(pg_server.admin_url)
    assert params  # the target below is on the same server
    pg_server.create_db(f"{odd_db}_target")
    try:
        target = pg_server.url(f"{odd_db}_target")
        refused = cli("drill", "--target-url", target, env=env)
        assert refused.returncode == 9
        cli.ok("drill", "--target-url", target, "--yes", env=env)
        assert pg_server.execute(f"{odd_db}_target", "SELECT count(*) FROM odd") == [(4,)]
    finally:
        pg_server.drop_db(f"{odd_db}_target")


def test_drill_of_an_encrypted_snapshot_uses_the_key(
    cli: Cli, pg_server: Server, odd_db: str, tmp_path: Path
) -> None:
    from tests.agekeys import Key

    key = Key(tmp_path / "key.txt")
    env = {"DATABASE_URL": pg_server.url(odd_db), "SNAPMGR_ENCRYPTION_RECIPIENTS": key.public}
    cli.ok("snapshot", env=env)
    without = cli("drill", env=env)
    assert without.returncode == 2 and "SNAPMGR_AGE_IDENTITY" in without.stderr
    proven = cli.ok("drill", env={**env, "SNAPMGR_AGE_IDENTITY": key.secret})
    assert "content matches" in proven.stdout
    assert scratch_databases(pg_server) == []
