"""End-to-end: instances of one deploy starting at once take one snapshot and take turns.

Each test starts real ``snapmgr`` processes against the test cluster. The
migration they guard fails if two copies run at the same time (it claims a
row in a ``running`` table with a primary key) and, like ``alembic upgrade
head``, does nothing the second time (``ADD COLUMN IF NOT EXISTS``).
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from snapmgr.deploylock import lock_key
from tests.conftest import Cli
from tests.pgutil import Server

SCHEMA = """
CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO accounts (name) SELECT 'user ' || g FROM generate_series(1, 300) g;
CREATE TABLE running (one int PRIMARY KEY);
CREATE TABLE migration_log (pid int, started timestamptz, ended timestamptz);
"""
# Fails (psql exit 3) if another copy is running; otherwise migrates once, idempotently.
MIGRATION = """psql -X -q -o /dev/null -v ON_ERROR_STOP=1 -d "$DATABASE_URL" <<SQL
INSERT INTO running VALUES (1);
CREATE TEMP TABLE t AS SELECT clock_timestamp() AS started;
SELECT pg_sleep({sleep});
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS plan text;
INSERT INTO migration_log SELECT $$, started, clock_timestamp() FROM t;
DELETE FROM running;
SQL
"""


@pytest.fixture
def app_db(pg_server: Server, empty_db: str) -> str:
    pg_server.psql_file(empty_db, SCHEMA)
    return empty_db


def start(cli: Cli, url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "snapmgr", *args],
        env={**cli.env, "DATABASE_URL": url},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def snapshot_ids(cli: Cli) -> list[str]:
    listed = json.loads(cli.ok("list", "--json").stdout) if cli.store.exists() else []
    return [item["id"] for item in listed]


@contextmanager
def holding_the_lock(pg_server: Server, dbname: str, label: str) -> Iterator[Any]:
    """The deploy lock of ``label``, held by a session of the test (like a stuck instance)."""
    db = pg_server.connect(dbname)
    db.execute("SELECT pg_advisory_lock(%s)", [lock_key(label)])
    try:
        yield db
    finally:
        db.close()


def wait_for_line(proc: subprocess.Popen[str], text: str) -> list[str]:
    """Read the process's stderr up to a line containing ``text``."""
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"never saw {text!r}: {''.join(seen)}")


def test_three_instances_take_one_snapshot_and_migrate_one_at_a_time(
    cli: Cli, pg_server: Server, app_db: str
) -> None:
    url = pg_server.url(app_db)
    # Without the lock, three copies at once collide: the migration itself proves it.
    racing = [start(cli, url, "guard", "--no-lock", "--label", "race", "--",
                    "sh", "-c", MIGRATION.format(sleep=3)) for _ in range(3)]  # fmt: skip
    assert sorted(p.wait(timeout=120) for p in racing) == [0, 3, 3]
    pg_server.execute(app_db, "TRUNCATE running, migration_log")
    before = set(snapshot_ids(cli))

    procs = [start(cli, url, "guard", "--json", "--", "sh", "-c", MIGRATION.format(sleep=2))
             for _ in range(3)]  # fmt: skip
    outputs = [p.communicate(timeout=180) for p in procs]

    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outputs]
    summaries = [json.loads(out) for out, _ in outputs]
    new = set(snapshot_ids(cli)) - before
    assert len(new) == 1, new  # one snapshot for the deploy
    (snapshot_id,) = new
    assert {s["snapshot"] for s in summaries} == {snapshot_id}
    assert sorted(s["reused"] for s in summaries) == [False, True, True]
    waited = [err for _, err in outputs if "another deploy holds the lock" in err]
    assert len(waited) >= 1
    for _, err in outputs:
        if "(reused)" in err:
            assert f"snapshot {snapshot_id}, committed" in err and "covers this deploy" in err
    runs = pg_server.execute(app_db, "SELECT started, ended FROM migration_log ORDER BY started")
    assert len(runs) == 3  # every instance ran its migration ...
    for (_, ended), (started, _) in itertools.pairwise(runs):
        assert ended <= started  # ... one at a time


def test_a_snapshot_committed_while_waiting_is_reused_even_outside_the_window(
    cli: Cli, pg_server: Server, app_db: str
) -> None:
    url = pg_server.url(app_db)
    with holding_the_lock(pg_server, app_db, "pre_migration"):
        proc = start(cli, url, "guard", "--reuse-within", "1s", "--", "true")
        wait_for_line(proc, "another deploy holds the lock")
        other = cli.ok("snapshot", "--no-lock", env={"DATABASE_URL": url}).stdout.strip()
        time.sleep(2.5)  # now older than --reuse-within, but committed while the guard waited
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert snapshot_ids(cli) == [other]
    assert f"snapshot {other}, committed" in err and "(while this run waited)" in err
    assert cli.pointer.read_text().splitlines()[1] == f"id: {other}"

    again = cli("guard", "--reuse-within", "1s", "--", "true", env={"DATABASE_URL": url})
    assert again.returncode == 0, again.stderr
    assert len(snapshot_ids(cli)) == 2  # no wait, and the old one is out of the window


def test_wait_runs_out_with_exit_9_and_nothing_done(
    cli: Cli, pg_server: Server, app_db: str, tmp_path: Any
) -> None:
    url = pg_server.url(app_db)
    marker = tmp_path / "ran"
    holder = start(cli, url, "guard", "--label", "deploy", "--", "sh", "-c",
                   "echo migrating; exec sleep 30")  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline() == "migrating\n"

    timed_out = cli("guard", "--label", "deploy", "--wait", "1s", "--", "touch", str(marker),
                    env={"DATABASE_URL": url})  # fmt: skip
    at_once = cli("snapshot", "--label", "deploy", "--wait", "0", env={"DATABASE_URL": url})

    holder.send_signal(signal.SIGTERM)
    holder.communicate(timeout=60)
    assert timed_out.returncode == 9, timed_out.stderr
    line = timed_out.stderr.strip().splitlines()[-1]
    assert line.startswith("snapmgr: error: another deploy still holds the lock of label deploy")
    assert "(snapmgr deploy lock " in line and "after waiting 1s; nothing was done" in line
    assert not marker.exists()
    assert at_once.returncode == 9 and "--wait is 0" in at_once.stderr
    assert len(snapshot_ids(cli)) == 1  # the holder's only
    assert "snapmgr-demo-pw" not in timed_out.stderr + at_once.stderr


def test_snapshot_waits_for_the_lock_then_takes_its_own(
    cli: Cli, pg_server: Server, app_db: str
) -> None:
    url = pg_server.url(app_db)
    with holding_the_lock(pg_server, app_db, "pre_migration") as db:
        proc = start(cli, url, "snapshot")
        wait_for_line(proc, "another deploy holds the lock")
        time.sleep(1)
        assert proc.poll() is None and snapshot_ids(cli) == []
        (name,) = db.execute(
            "SELECT application_name FROM pg_stat_activity WHERE wait_event = 'advisory'"
        ).fetchone()
        assert name.startswith("snapmgr deploy lock ") and f"pid {proc.pid}" in name
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert snapshot_ids(cli) == [out.strip()]
    assert "got the deploy lock of label pre_migration after waiting" in err


def test_sigterm_while_waiting_exits_130_without_running_anything(
    cli: Cli, pg_server: Server, app_db: str, tmp_path: Any
) -> None:
    marker = tmp_path / "ran"
    with holding_the_lock(pg_server, app_db, "pre_migration"):
        proc = start(cli, pg_server.url(app_db), "guard", "--", "touch", str(marker))
        wait_for_line(proc, "another deploy holds the lock")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not marker.exists() and snapshot_ids(cli) == []


def test_a_restore_ending_sessions_spares_the_instances_waiting_their_turn(
    cli: Cli, pg_server: Server, app_db: str
) -> None:
    url = pg_server.url(app_db)
    before = pg_server.dump(app_db)
    fail_slowly = 'sleep 2; psql -X -q -d "$DATABASE_URL" -c "CREATE TABLE half (id int)"; exit 4'
    app = pg_server.connect(app_db)  # the old version of the app, idle in a transaction
    app.autocommit = False
    app.execute("SELECT count(*) FROM accounts")
    first = start(cli, url, "guard", "--restore-on-failure", "--terminate-connections",
                  "--", "sh", "-c", fail_slowly)  # fmt: skip
    wait_for_line(first, "running: sh -c")
    second = start(cli, url, "guard", "--restore-on-failure", "--json", "--", "sh", "-c",
                   fail_slowly)  # fmt: skip

    _, first_err = first.communicate(timeout=120)
    out, second_err = second.communicate(timeout=120)
    app.close()

    assert first.returncode == 4, first_err
    # The app's session only: not the second instance's, waiting for the deploy lock.
    assert "terminated 1 other session(s)" in first_err
    assert second.returncode == 4, second_err  # it waited, reused, ran, restored
    summary = json.loads(out)
    assert summary["reused"] is True and summary["restored"]["id"] == summary["snapshot"]
    assert "lost" not in first_err + second_err
    assert pg_server.dump(app_db) == before
