"""The database's own grants and settings come back with a full restore.

``pg_dump`` without ``--create`` leaves out who may CONNECT to, CREATE in and
make TEMPORARY tables in the database, and its ``ALTER DATABASE … SET``
settings. On the platform-style database (tests/platform_db.py: the restoring
role owns the database, it is not a superuser), the owner locks the database
down the way platforms advise (no CONNECT for PUBLIC, CONNECT for the app's
roles, CREATE for the migrator) and sets a ``search_path`` and a timeout.
"Exact" is judged by each role's ``has_database_privilege`` and the
database's settings, besides the usual schema, data and capabilities.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from snapmgr.database_props import DatabaseProps, plan_props, read_props, split_list
from snapmgr.postgres import ConnInfo
from tests import platform_db
from tests.conftest import Cli
from tests.pgutil import Server

COMMENT = "Shop (prod): the owner's notes; \\ and ''quotes''"
COMMENT_SQL = "'" + COMMENT.replace("'", "''") + "'"

LOCK_DOWN = f"""
SET ROLE {platform_db.OWNER};
REVOKE CONNECT, TEMPORARY ON DATABASE {{db}} FROM PUBLIC;
GRANT CONNECT ON DATABASE {{db}} TO plat_app, plat_reader;
GRANT CONNECT, CREATE ON DATABASE {{db}} TO plat_migrator;
GRANT TEMPORARY ON DATABASE {{db}} TO plat_app WITH GRANT OPTION;
ALTER DATABASE {{db}} SET search_path = app, "$user", public;
ALTER DATABASE {{db}} SET statement_timeout = '5s';
ALTER ROLE {platform_db.OWNER} IN DATABASE {{db}} SET lock_timeout = '3s';
COMMENT ON DATABASE {{db}} IS {COMMENT_SQL};
RESET ROLE;
"""

#: A migration that also changed the database object itself.
LOOSEN = f"""
SET ROLE {platform_db.OWNER};
GRANT CONNECT ON DATABASE {{db}} TO PUBLIC;
REVOKE CREATE ON DATABASE {{db}} FROM plat_migrator;
REVOKE GRANT OPTION FOR TEMPORARY ON DATABASE {{db}} FROM plat_app;
GRANT CREATE ON DATABASE {{db}} TO plat_reader;
ALTER DATABASE {{db}} RESET search_path;
ALTER DATABASE {{db}} SET statement_timeout = '1min';
ALTER DATABASE {{db}} SET work_mem = '64MB';
ALTER ROLE {platform_db.OWNER} IN DATABASE {{db}} RESET lock_timeout;
COMMENT ON DATABASE {{db}} IS 'migrated';
RESET ROLE;
"""

DATABASE_CAPABILITIES_SQL = """
SELECT r.rolname, p.priv, has_database_privilege(r.rolname, current_database(), p.priv)
FROM pg_roles r, unnest(ARRAY['CONNECT', 'CREATE', 'TEMPORARY',
                              'CONNECT WITH GRANT OPTION', 'TEMPORARY WITH GRANT OPTION']) p(priv)
WHERE r.rolname IN ('plat_owner', 'plat_migrator', 'plat_app', 'plat_reader', 'pg_monitor')
ORDER BY 1, 2"""

SETTINGS_SQL = """
SELECT coalesce(r.rolname, ''), s.setconfig FROM pg_database d
JOIN pg_db_role_setting s ON s.setdatabase = d.oid
LEFT JOIN pg_roles r ON r.oid = s.setrole
WHERE d.datname = current_database() ORDER BY 1"""


def database_state(server: Server, dbname: str) -> tuple[list[tuple[Any, ...]], list[str]]:
    """Each role's database privileges, and every setting as ``role:name=value``
    (role "" for the database's own)."""
    capabilities = server.execute(dbname, DATABASE_CAPABILITIES_SQL)
    rows = server.execute(dbname, SETTINGS_SQL)
    return capabilities, sorted(f"{role}:{item}" for role, config in rows for item in config)


def comment_of(server: Server, dbname: str) -> str | None:
    rows = server.execute(
        "postgres",
        f"SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{dbname}'",
    )
    return None if rows[0][0] is None else str(rows[0][0])


def owner_env(url: str) -> dict[str, str]:
    """The owner snapshots and restores; the platform's own schema is left out."""
    return {"DATABASE_URL": url, "SNAPMGR_EXCLUDE_SCHEMAS": "platform_managed"}


@pytest.fixture
def locked_down(pg_server: Server, fresh_db_name: str) -> Iterator[tuple[str, str]]:
    platform_db.create_roles(pg_server)
    url = platform_db.build(pg_server, fresh_db_name)
    pg_server.psql_file(fresh_db_name, LOCK_DOWN.format(db=fresh_db_name))
    yield fresh_db_name, url
    pg_server.drop_db(fresh_db_name)


def test_a_restore_puts_back_the_databases_grants_and_settings(
    cli: Cli, pg_server: Server, locked_down: tuple[str, str]
) -> None:
    dbname, url = locked_down
    env = owner_env(url)
    snapshot_id = cli.ok("snapshot", env=env).stdout.strip()
    manifest = json.loads(cli.ok("show", snapshot_id, "--json", env=env).stdout)
    assert manifest["database_props"] == {
        "grants": [
            ["plat_app", "CONNECT", False],
            ["plat_app", "TEMPORARY", True],
            ["plat_migrator", "CONNECT", False],
            ["plat_migrator", "CREATE", False],
            ["plat_reader", "CONNECT", False],
        ],
        "settings": ['search_path=app, "$user", public', "statement_timeout=5s"],
        "role_settings": {"plat_owner": ["lock_timeout=3s"]},
        "comment": COMMENT,
    }
    shown = cli.ok("show", snapshot_id, env=env).stdout.splitlines()
    assert "db object   5 grant(s), 2 setting(s), settings for 1 role(s), a comment" in shown
    before, before_db = platform_db.state(pg_server, dbname), database_state(pg_server, dbname)
    assert ("plat_reader", "CREATE", False) in before_db[0]

    pg_server.psql_file(dbname, platform_db.BAD_MIGRATION + LOOSEN.format(db=dbname))
    assert database_state(pg_server, dbname) != before_db

    assert comment_of(pg_server, dbname) == "migrated"
    cli.ok("restore", "latest", "--yes", env=env)
    assert database_state(pg_server, dbname) == before_db
    assert comment_of(pg_server, dbname) == COMMENT
    after = platform_db.state(pg_server, dbname)
    assert (after.schema, after.capabilities, after.visible_rows) == (
        before.schema,
        before.capabilities,
        before.visible_rows,
    )
    # The setting is live for the app's new sessions: its tables without a prefix.
    with pg_server.connect(dbname) as db:
        db.execute("SET ROLE plat_app")
        row = db.execute("SELECT current_setting('search_path')").fetchone()
    assert row is not None and row[0] == 'app, "$user", public'


def test_into_a_new_database_the_grants_come_back_and_superuser_settings_are_named(
    cli: Cli, pg_server: Server, locked_down: tuple[str, str]
) -> None:
    """The platform makes a fresh database for the owner; the owner restores into it.
    A setting only a superuser may make is left out, with the statement to run."""
    dbname, url = locked_down
    pg_server.execute("postgres", f"ALTER DATABASE {dbname} SET log_min_duration_statement = 250")
    pg_server.execute("postgres", f"ALTER ROLE plat_app IN DATABASE {dbname} SET work_mem = '8MB'")
    env = owner_env(url)
    snapshot_id = cli.ok("snapshot", env=env).stdout.strip()
    before_db = database_state(pg_server, dbname)
    target = f"{dbname}_new"
    pg_server.create_db(target)
    pg_server.execute("postgres", f"ALTER DATABASE {target} OWNER TO {platform_db.OWNER}")
    pg_server.psql_file(target, platform_db.PLATFORM_SQL.format(cube_version="1.5"))
    try:
        target_url = platform_db.owner_url(pg_server, target)
        result = cli.ok("restore", snapshot_id, "--yes", "--target-url", target_url, env=env)
        warnings = [line for line in result.stderr.splitlines() if "superuser" in line]
        assert len(warnings) == 1, result.stderr
        for statement in (
            f'ALTER DATABASE "{target}" SET "log_min_duration_statement" TO \'250\';',
            f'ALTER ROLE "plat_app" IN DATABASE "{target}" RESET ALL;',
            f'ALTER ROLE "plat_app" IN DATABASE "{target}" SET "work_mem" TO \'8MB\';',
        ):
            assert statement in warnings[0]
        capabilities, settings = database_state(pg_server, target)
        assert capabilities == before_db[0]
        assert comment_of(pg_server, target) == COMMENT  # pg_dump leaves it out
        # The owner's own settings came back; what needs a superuser did not.
        assert settings == [
            ':search_path=app, "$user", public',
            ":statement_timeout=5s",
            "plat_owner:lock_timeout=3s",
        ]
        assert before_db[1] == sorted(
            [*settings, ":log_min_duration_statement=250", "plat_app:work_mem=8MB"]
        )
    finally:
        pg_server.drop_db(target)


def test_no_privileges_leaves_the_databases_grants_alone(
    cli: Cli, pg_server: Server, locked_down: tuple[str, str]
) -> None:
    dbname, url = locked_down
    env = owner_env(url)
    cli.ok("snapshot", env=env)
    pg_server.psql_file(dbname, LOOSEN.format(db=dbname))
    loosened = database_state(pg_server, dbname)
    cli.ok("restore", "latest", "--yes", "--no-privileges", env=env)
    capabilities, settings = database_state(pg_server, dbname)
    assert capabilities == loosened[0]  # grants as the target had them
    assert comment_of(pg_server, dbname) == COMMENT  # a comment is no privilege
    assert settings == [
        ':search_path=app, "$user", public',
        ":statement_timeout=5s",
        "plat_owner:lock_timeout=3s",
    ]


def test_the_apps_own_timeouts_do_not_cut_snapmgrs_sessions_short(
    cli: Cli, pg_server: Server, locked_down: tuple[str, str]
) -> None:
    """A platform's ``statement_timeout`` for the app's role (here 20 ms, a table that
    takes far longer to read) applies to the app, not to snapshot, drill and restore:
    each of snapmgr's sessions turns the timeouts off, as pg_dump does on its own."""
    dbname, url = locked_down
    pg_server.execute(
        dbname,
        "CREATE TABLE public.wide AS SELECT i, md5(i::text) AS h FROM generate_series(1, 300000) i",
    )
    pg_server.execute(dbname, f"ALTER TABLE public.wide OWNER TO {platform_db.OWNER}")
    pg_server.execute("postgres", f"ALTER ROLE {platform_db.OWNER} SET statement_timeout = '20ms'")
    try:
        with pg_server.connect(dbname) as db:  # the setting bites the app's own queries
            db.execute(f"SET ROLE {platform_db.OWNER}")
            db.execute("SET statement_timeout = '20ms'")
            with pytest.raises(Exception, match="statement timeout"):
                db.execute("SELECT count(DISTINCT h) FROM public.wide")
        env = owner_env(url)
        snapshot_id = cli.ok("snapshot", env=env).stdout.strip()
        # The owner may not create databases: the platform gives it one to drill into.
        scratch = f"{dbname}_drill"
        pg_server.create_db(scratch)
        pg_server.execute("postgres", f"ALTER DATABASE {scratch} OWNER TO {platform_db.OWNER}")
        pg_server.psql_file(scratch, platform_db.PLATFORM_SQL.format(cube_version="1.5"))
        scratch_url = platform_db.owner_url(pg_server, scratch)
        drilled = json.loads(
            cli.ok(
                "drill", snapshot_id, "--json", "--target-url", scratch_url, "--yes", env=env
            ).stdout
        )
        assert drilled["ok"] is True and drilled["differences"] == []
        cli.ok("restore", snapshot_id, "--yes", "--verify-content", env=env)
        assert pg_server.execute(dbname, "SELECT count(*) FROM public.wide") == [(300000,)]
    finally:
        pg_server.execute("postgres", f"ALTER ROLE {platform_db.OWNER} RESET statement_timeout")
        pg_server.drop_db(f"{dbname}_drill")


def test_a_drill_as_a_role_without_createdb_says_what_it_needs(
    cli: Cli, pg_server: Server, locked_down: tuple[str, str]
) -> None:
    _, url = locked_down
    env = owner_env(url)
    cli.ok("snapshot", env=env)
    result = cli("drill", env=env)
    assert result.returncode == 3, result.stderr
    [line] = [line for line in result.stderr.splitlines() if "error:" in line]
    assert "permission denied to create database" in line
    assert "plat_owner needs CREATEDB; or name a database that exists" in line
    assert "dropped database" not in result.stderr  # nothing was created, nothing dropped


@pytest.mark.parametrize(
    ("printed", "names"),
    [
        ('app, "$user", public', ["app", "$user", "public"]),
        ('"a,b", c', ["a,b", "c"]),
        ('"x""y"', ['x"y']),
        ('"My Schema"', ["My Schema"]),
        ("", []),
    ],
)
def test_a_list_setting_is_read_back_into_its_names(printed: str, names: list[str]) -> None:
    assert split_list(printed) == names


def test_a_snapshot_from_before_comments_were_recorded_leaves_the_comment_alone(
    pg_server: Server, locked_down: tuple[str, str]
) -> None:
    """Its manifest has no "comment": a restore must not take the comment away."""
    dbname, url = locked_down
    with ConnInfo.parse(url).session() as db:
        recorded = read_props(db)
        assert (recorded.comment, recorded.comment_known) == (COMMENT, True)
        old = recorded.to_dict()
        del old["comment"]
        pg_server.psql_file(dbname, LOOSEN.format(db=dbname))
        kept = plan_props(db, DatabaseProps.from_dict(old), apply_grants=True)
        assert "COMMENT" not in kept.sql and "ALTER DATABASE" in kept.sql
        put_back = plan_props(db, recorded, apply_grants=True)
    expected = f'COMMENT ON DATABASE "{dbname}" IS {COMMENT_SQL};'
    assert expected in put_back.sql.splitlines()
