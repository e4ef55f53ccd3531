"""A guided tour for newcomers, on a throwaway cluster that is removed afterwards.

It starts a private PostgreSQL cluster, loads the Pagila sample (or a small
built-in one), snapshots it, breaks it the way a bad migration would, lists
the snapshots, restores, and shows the data is back — using the same public
API the CLI uses, so the demo exercises the real thing.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from snapmgr.cluster import TempCluster
from snapmgr.config import load_config
from snapmgr.errors import SnapmgrError
from snapmgr.manager import SnapshotManager
from snapmgr.postgres import ConnInfo, row_counts

BUILTIN_SAMPLE = """
CREATE TABLE customers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    email text UNIQUE
);
CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers(id),
    total numeric(10, 2) NOT NULL,
    placed_at timestamptz NOT NULL
);
INSERT INTO customers (name, email)
SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 2000) g;
INSERT INTO orders (customer_id, total, placed_at)
SELECT 1 + g % 2000, (g % 500) + 0.99, timestamptz '2025-01-01' + g * interval '7 minutes'
FROM generate_series(1, 20000) g;
"""


def find_pagila() -> Path | None:
    """Pagila from ../shared/testdata next to the checkout, if it is there."""
    env_dir = os.environ.get("SNAPMGR_DEMO_PAGILA")
    roots = [Path(env_dir)] if env_dir else []
    here = Path(__file__).resolve()
    roots += [p / "shared" / "testdata" / "pagila" for p in (here.parents[2], Path.cwd().parent)]
    for root in roots:
        if (root / "pagila-schema.sql").is_file() and (root / "pagila-data.sql.gz").is_file():
            return root
    return None


def _psql(cluster: TempCluster, dbname: str, sql: bytes) -> None:
    conn = ConnInfo.parse(cluster.url(dbname))
    result = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conn.conninfo()],
        input=sql, env=conn.child_env(), capture_output=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise SnapmgrError(f"loading the sample failed: {result.stderr.decode()[-300:]}")


def load_sample(cluster: TempCluster, dbname: str, builtin: bool = False) -> str:
    """Create ``dbname`` with Pagila (unless ``builtin``) or the built-in sample."""
    with ConnInfo.parse(cluster.url("postgres")).connect() as db:
        db.execute(f'CREATE DATABASE "{dbname}"')
    pagila = None if builtin else find_pagila()
    if pagila is None:
        _psql(cluster, dbname, BUILTIN_SAMPLE.encode())
        return "built-in sample (customers, orders)"
    _psql(cluster, dbname, (pagila / "pagila-schema.sql").read_bytes())
    _psql(cluster, dbname, gzip.decompress((pagila / "pagila-data.sql.gz").read_bytes()))
    return f"Pagila from {pagila}"


def _damage(url: str) -> str:
    """Break the database the way a bad migration does; returns what was done."""
    with ConnInfo.parse(url).connect() as db:
        rows = db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = {str(row[0]) for row in rows.fetchall()}
        if "payment" in tables:
            db.execute("DROP TABLE public.payment CASCADE")
            db.execute("UPDATE public.customer SET email = NULL")
            db.execute("CREATE TABLE public.half_migrated (id int)")
            return "dropped table payment, blanked customer emails, left a half_migrated table"
        db.execute("DROP TABLE public.orders")
        db.execute("UPDATE public.customers SET email = NULL")
        db.execute("CREATE TABLE public.half_migrated (id int)")
        return "dropped table orders, blanked customer emails, left a half_migrated table"


def run_demo(say: Callable[[str], None], builtin_sample: bool = False) -> None:
    """Run every step, printing each through ``say``; always removes the cluster."""
    with tempfile.TemporaryDirectory(prefix="snapmgr-demo-") as work, TempCluster() as cluster:
        say(f"1. started a throwaway PostgreSQL cluster on 127.0.0.1:{cluster.port}")
        dbname = "demo_app"
        say(f"2. loaded {load_sample(cluster, dbname, builtin_sample)} into database {dbname}")
        url = cluster.url(dbname)
        store = Path(work) / "snapshots"
        config = load_config(
            {"database_url": url, "backup_dir": str(store),
             "pointer_file": str(Path(work) / "last_snapshot.txt"), "progress": "off"},
            env={},
        )  # fmt: skip
        manager = SnapshotManager(config)
        with ConnInfo.parse(url).connect() as db:
            before = row_counts(db)
        result = manager.snapshot(label="demo")
        m = result.manifest
        say(
            f"3. snapshot {m.id}: {m.size:,} bytes gzip ({m.raw_size:,} raw), "
            f"{len(m.tables)} tables, {m.total_rows:,} rows, sha256 {m.sha256[:16]}…, "
            f"verified and committed in {store}"
        )
        say(f"4. simulated a failed migration: {_damage(url)}")
        for entry in manager.list_snapshots():
            say(f"5. snapmgr list: {entry.id}  {entry.manifest.created_at:%Y-%m-%d %H:%M:%S}Z")
        verified = manager.verify(m.id)
        say(f"6. snapmgr verify {m.id}: ok ({verified[0].rows:,} rows re-read from the store)")
        _restore_step(manager, m.id, url, before, say)
        say("done: the cluster and the snapshots were removed")


def _restore_step(
    manager: SnapshotManager, snapshot_id: str, url: str, before: dict[str, int],
    say: Callable[[str], None],
) -> None:  # fmt: skip
    result = manager.restore(snapshot_id)
    with ConnInfo.parse(url).connect() as db:
        after = row_counts(db)
        leftover = db.execute("SELECT to_regclass('public.half_migrated')").fetchone()
    if after != before or (leftover and leftover[0] is not None):
        raise SnapmgrError("the demo's restore did not bring the database back exactly")
    say(
        f"7. snapmgr restore {snapshot_id} --yes: {result.tables} tables, {result.rows:,} rows, "
        "counts match; the dropped table is back and half_migrated is gone"
    )
