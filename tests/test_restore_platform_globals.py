"""A platform's event triggers and publications in the app's database.

Managed platforms (Supabase, for one) keep event triggers and publications of
their own in the database they give the app, owned by their superuser. The
app's role may not create event triggers nor change another role's
publication, so a restore as that role leaves them as the target has them,
leaves their sections out of the replay, and says what the target lacks or
lost: the wipe's DROP TABLE takes the app's tables out of the platform's
publication, and only the publication's owner can put them back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from tests import platform_db
from tests.conftest import Cli
from tests.pgutil import Server

PLATFORM_GLOBALS = f"""
SET ROLE {platform_db.PLATFORM};
CREATE FUNCTION platform_managed.on_ddl() RETURNS event_trigger LANGUAGE plpgsql
  AS $$ BEGIN END $$;
CREATE EVENT TRIGGER platform_ddl_watch ON ddl_command_end
  EXECUTE FUNCTION platform_managed.on_ddl();
COMMENT ON EVENT TRIGGER platform_ddl_watch IS 'the platform watches DDL';
CREATE PUBLICATION platform_realtime FOR TABLE app.users;
COMMENT ON PUBLICATION platform_realtime IS 'realtime';
RESET ROLE;
"""

GLOBALS_SQL = """
SELECT 'trigger ' || evtname || ' ' || evtowner::regrole || ' ' || oid FROM pg_event_trigger
UNION ALL SELECT 'publication ' || pubname || ' ' || pubowner::regrole || ' ' || oid
  FROM pg_publication
UNION ALL SELECT 'member ' || pubname || ' ' || schemaname || '.' || tablename
  FROM pg_publication_tables
ORDER BY 1"""


def globals_of(server: Server, dbname: str) -> list[str]:
    return [str(row[0]) for row in server.execute(dbname, GLOBALS_SQL)]


@pytest.fixture
def platform(pg_server: Server, fresh_db_name: str) -> Iterator[Callable[..., str]]:
    """Builds the platform-style database ``fresh_db_name`` with ``extra`` SQL; the
    owner's URL. Dropped afterwards."""
    platform_db.create_roles(pg_server)
    yield lambda extra="": platform_db.build(pg_server, fresh_db_name, extra=extra)
    pg_server.drop_db(fresh_db_name)


def owner_env(url: str) -> dict[str, str]:
    return {"DATABASE_URL": url, "SNAPMGR_EXCLUDE_SCHEMAS": "platform_managed"}


def test_the_platforms_event_trigger_and_publication_stay_and_the_lost_member_is_named(
    cli: Cli, pg_server: Server, fresh_db_name: str, platform: Callable[..., str]
) -> None:
    url = platform(PLATFORM_GLOBALS)
    dbname, env = fresh_db_name, owner_env(url)
    snapshot_id = cli.ok("snapshot", env=env).stdout.strip()
    manifest = json.loads(cli.ok("show", snapshot_id, "--json", env=env).stdout)
    assert "plat_platform" not in manifest["owners"]
    assert sorted(manifest["global_objects"]) == [
        ["COMMENT", "EVENT TRIGGER platform_ddl_watch", "plat_platform", ""],
        ["COMMENT", "PUBLICATION platform_realtime", "plat_platform", ""],
        ["EVENT TRIGGER", "platform_ddl_watch", "plat_platform", ""],
        ["PUBLICATION", "platform_realtime", "plat_platform", ""],
        [
            "PUBLICATION TABLE",
            "platform_realtime users",
            "plat_platform",
            "ALTER PUBLICATION platform_realtime ADD TABLE ONLY app.users;",
        ],
    ]
    before = platform_db.state(pg_server, dbname)
    platform_globals = globals_of(pg_server, dbname)
    assert "member platform_realtime app.users" in platform_globals

    pg_server.psql_file(dbname, platform_db.BAD_MIGRATION)
    result = cli.ok("restore", "latest", "--yes", env=env)

    # The platform's objects are the very same ones (same OIDs); the app's table
    # left the publication with the wipe, and the warning says how to add it back.
    assert globals_of(pg_server, dbname) == [
        g for g in platform_globals if not g.startswith("member ")
    ]
    [warning] = [line for line in result.stderr.splitlines() if "publications" in line]
    assert "event triggers and publications of plat_platform" in warning
    assert "kept as the target has them: event trigger platform_ddl_watch, " in warning
    assert warning.endswith(
        "as their owner run: ALTER PUBLICATION platform_realtime ADD TABLE ONLY app.users;"
    )
    pg_server.execute(dbname, "ALTER PUBLICATION platform_realtime ADD TABLE ONLY app.users")
    assert globals_of(pg_server, dbname) == platform_globals
    after = platform_db.state(pg_server, dbname)
    assert after == before


def test_into_a_database_without_them_they_are_left_out_and_named(
    cli: Cli, pg_server: Server, fresh_db_name: str, platform: Callable[..., str]
) -> None:
    url = platform(PLATFORM_GLOBALS)
    env = owner_env(url)
    target = f"{fresh_db_name}_new"
    try:
        snapshot_id = cli.ok("snapshot", env=env).stdout.strip()
        pg_server.create_db(target)
        pg_server.execute("postgres", f"ALTER DATABASE {target} OWNER TO {platform_db.OWNER}")
        pg_server.psql_file(target, platform_db.PLATFORM_SQL.format(cube_version="1.5"))
        target_url = platform_db.owner_url(pg_server, target)
        result = cli.ok("restore", snapshot_id, "--yes", "--target-url", target_url, env=env)
        [warning] = [line for line in result.stderr.splitlines() if "publications" in line]
        assert (
            "the target lacks event trigger platform_ddl_watch, publication platform_realtime: "
            "left out" in warning
        )
        assert globals_of(pg_server, target) == []
        source, restored = (
            platform_db.state(pg_server, fresh_db_name),
            platform_db.state(pg_server, target),
        )
        assert restored.data == source.data
        assert restored.capabilities == source.capabilities
    finally:
        pg_server.drop_db(target)


def test_a_superuser_restore_puts_them_back_members_included(
    cli: Cli, pg_server: Server, fresh_db_name: str, platform: Callable[..., str]
) -> None:
    platform(PLATFORM_GLOBALS)
    env = {"DATABASE_URL": pg_server.url(fresh_db_name)}
    cli.ok("snapshot", env=env)
    before = platform_db.state(pg_server, fresh_db_name)
    named = [g.rsplit(" ", 1)[0] for g in globals_of(pg_server, fresh_db_name)]
    pg_server.execute(fresh_db_name, "ALTER PUBLICATION platform_realtime DROP TABLE app.users")
    pg_server.psql_file(fresh_db_name, platform_db.BAD_MIGRATION)
    result = cli.ok("restore", "latest", "--yes", env=env)
    assert "publications" not in result.stderr  # nothing kept, nothing to say
    assert [g.rsplit(" ", 1)[0] for g in globals_of(pg_server, fresh_db_name)] == named
    assert platform_db.state(pg_server, fresh_db_name) == before


def test_a_partial_restore_names_only_its_own_tables(
    cli: Cli, pg_server: Server, fresh_db_name: str, platform: Callable[..., str]
) -> None:
    extra = PLATFORM_GLOBALS + (
        f"SET ROLE {platform_db.PLATFORM};\n"
        "ALTER PUBLICATION platform_realtime ADD TABLE public.owner_notes;\nRESET ROLE;\n"
    )
    url = platform(extra)
    env = owner_env(url)
    snapshot_id = cli.ok("snapshot", env=env).stdout.strip()
    platform_globals = globals_of(pg_server, fresh_db_name)
    rows = pg_server.execute(fresh_db_name, "SELECT * FROM app.users ORDER BY id")
    pg_server.execute(fresh_db_name, "DROP TABLE app.users CASCADE")
    result = cli.ok("restore", snapshot_id, "--table", "app.users", env=env)
    [warning] = [line for line in result.stderr.splitlines() if "publications" in line]
    assert warning.endswith(
        "as their owner run: ALTER PUBLICATION platform_realtime ADD TABLE ONLY app.users;"
    )
    assert pg_server.execute(fresh_db_name, "SELECT * FROM app.users ORDER BY id") == rows
    assert globals_of(pg_server, fresh_db_name) == [
        g for g in platform_globals if g != "member platform_realtime app.users"
    ]


QUOTED_GLOBALS = f"""
SET ROLE {platform_db.PLATFORM};
CREATE PUBLICATION "Platform RealTime" FOR TABLE app.users;
COMMENT ON PUBLICATION "Platform RealTime" IS 'quoted';
CREATE PUBLICATION "Platform" FOR TABLE public.owner_notes;
RESET ROLE;
"""


def test_names_that_need_quotes_are_matched_as_pg_dump_quotes_them(
    cli: Cli, pg_server: Server, fresh_db_name: str, platform: Callable[..., str]
) -> None:
    """pg_dump quotes the name in a comment's tag, and a member's tag ("pub table")
    is ambiguous when the publication's name has a space."""
    url = platform(QUOTED_GLOBALS)
    env = owner_env(url)
    cli.ok("snapshot", env=env)
    platform_globals = globals_of(pg_server, fresh_db_name)
    result = cli.ok("restore", "latest", "--yes", env=env)
    [warning] = [line for line in result.stderr.splitlines() if "publications" in line]
    assert "publication Platform, publication Platform RealTime" in warning
    assert warning.endswith(
        "as their owner run: "
        'ALTER PUBLICATION "Platform RealTime" ADD TABLE ONLY app.users; '
        'ALTER PUBLICATION "Platform" ADD TABLE ONLY public.owner_notes;'
    ) or warning.endswith(
        "as their owner run: "
        'ALTER PUBLICATION "Platform" ADD TABLE ONLY public.owner_notes; '
        'ALTER PUBLICATION "Platform RealTime" ADD TABLE ONLY app.users;'
    )
    assert globals_of(pg_server, fresh_db_name) == [
        g for g in platform_globals if not g.startswith("member ")
    ]


def test_a_superuser_restore_needing_a_dropped_owner_is_refused_before_any_change(
    cli: Cli, pg_server: Server, fresh_db_name: str, platform: Callable[..., str]
) -> None:
    platform()
    gone = f"gone_{fresh_db_name}"
    pg_server.execute("postgres", f"CREATE ROLE {gone} SUPERUSER")
    try:
        pg_server.execute(fresh_db_name, f"SET ROLE {gone}; CREATE PUBLICATION gone_pub")
        env = {"DATABASE_URL": pg_server.url(fresh_db_name)}
        cli.ok("snapshot", env=env)
        pg_server.execute(fresh_db_name, "ALTER PUBLICATION gone_pub OWNER TO postgres")
    finally:
        pg_server.execute("postgres", f"DROP ROLE {gone}")
    pg_server.psql_file(fresh_db_name, platform_db.BAD_MIGRATION)
    before = platform_db.state(pg_server, fresh_db_name)
    result = cli("restore", "latest", "--yes", env=env)
    assert result.returncode == 8, result.stderr
    assert f"the snapshot needs role(s) {gone}, missing here" in result.stderr
    assert platform_db.state(pg_server, fresh_db_name) == before
