"""A database set up the way managed platforms set them up, and how to judge a restore of it.

A superuser "platform" role installs extensions a non-superuser may not
create (cube, earthdistance) and a schema of its own; the role in
DATABASE_URL owns the database but is not a superuser; a migrator role owns
the app's schema and tables, an app role and a read-only reporting role get
table, column, sequence, function and schema grants, default privileges and
row-level-security policies.

``State`` is what "the database as it was" means in the tests: ``pg_dump
--schema-only`` with owners and privileges, every table's data, and what
each role can do (privileges on every object, and the rows RLS lets it see).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tests.pgutil import Server, normalize_dump

PLATFORM = "plat_platform"
OWNER = "plat_owner"
OWNER_PASSWORD = "plat-owner-pw"
ROLES = (PLATFORM, OWNER, "plat_migrator", "plat_app", "plat_reader")
PROBED_ROLES = ("plat_owner", "plat_migrator", "plat_app", "plat_reader")

ROLES_SQL = f"""
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{PLATFORM}') THEN
    CREATE ROLE {PLATFORM} SUPERUSER;
    CREATE ROLE {OWNER} LOGIN PASSWORD '{OWNER_PASSWORD}';
    CREATE ROLE plat_migrator;
    CREATE ROLE plat_app LOGIN;
    CREATE ROLE plat_reader LOGIN;
    GRANT plat_migrator TO {OWNER};
  END IF;
END $$;
"""

PLATFORM_SQL = f"""
SET ROLE {PLATFORM};
CREATE EXTENSION cube VERSION '{{cube_version}}';
CREATE EXTENSION earthdistance;
CREATE SCHEMA platform_managed;
CREATE TABLE platform_managed.settings (k text PRIMARY KEY, v text);
INSERT INTO platform_managed.settings VALUES ('plan', 'basic');
GRANT USAGE ON SCHEMA platform_managed TO {OWNER};
GRANT SELECT ON platform_managed.settings TO {OWNER};
RESET ROLE;
"""

APP_SQL = f"""
SET ROLE {OWNER};
GRANT CREATE ON SCHEMA public TO plat_migrator;
CREATE SCHEMA app AUTHORIZATION plat_migrator;
CREATE TABLE public.owner_notes (id int PRIMARY KEY, note text);
INSERT INTO public.owner_notes VALUES (1, 'kept by the owner');
GRANT SELECT ON public.owner_notes TO plat_reader;
SET ROLE plat_migrator;
CREATE TABLE app.users (id serial PRIMARY KEY, email text NOT NULL, secret text, home cube);
CREATE TABLE public.orders (
    id bigserial PRIMARY KEY, user_id int REFERENCES app.users, total numeric);
CREATE VIEW app.order_totals AS
    SELECT user_id, sum(total) AS total FROM public.orders GROUP BY user_id;
CREATE FUNCTION app.distance(a cube, b cube) RETURNS float8 LANGUAGE sql
    AS 'SELECT public.cube_distance(a, b)';
REVOKE EXECUTE ON FUNCTION app.distance(cube, cube) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.distance(cube, cube) TO plat_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO plat_reader;
GRANT USAGE ON SCHEMA app TO plat_app, plat_reader;
GRANT SELECT, INSERT, UPDATE ON app.users TO plat_app;
GRANT SELECT (id, email) ON app.users TO plat_reader;
GRANT SELECT, INSERT ON public.orders TO plat_app;
GRANT SELECT ON app.order_totals TO plat_reader;
GRANT USAGE ON SEQUENCE app.users_id_seq, public.orders_id_seq TO plat_app;
ALTER TABLE app.users ENABLE ROW LEVEL SECURITY;
CREATE POLICY app_sees_all ON app.users TO plat_app USING (true);
CREATE POLICY reader_sees_example ON app.users FOR SELECT TO plat_reader
    USING (email LIKE '%@example.com');
INSERT INTO app.users (email, secret, home) VALUES
    ('a@example.com', 's1', '(1, 2)'), ('b@other.org', 's2', NULL),
    ('c@example.com', 's3', '(0, 0)');
INSERT INTO public.orders (user_id, total) VALUES (1, 10.5), (2, 20), (3, 7);
RESET ROLE;
"""

#: A migration gone wrong, run by the app's roles: data, tables, grants,
#: default privileges, policies and schema privileges all change.
BAD_MIGRATION = f"""
SET ROLE plat_migrator;
CREATE TABLE app.extra (a int);
ALTER TABLE app.users ADD COLUMN nickname text;
UPDATE app.users SET email = 'x@example.com' WHERE id = 2;
DELETE FROM public.orders WHERE id = 2;
REVOKE SELECT (email) ON app.users FROM plat_reader;
GRANT DELETE ON app.users TO plat_app;
DROP POLICY reader_sees_example ON app.users;
ALTER DEFAULT PRIVILEGES IN SCHEMA app REVOKE SELECT ON TABLES FROM plat_reader;
GRANT EXECUTE ON FUNCTION app.distance(cube, cube) TO PUBLIC;
DROP VIEW app.order_totals;
SET ROLE {OWNER};
REVOKE CREATE ON SCHEMA public FROM plat_migrator;
GRANT USAGE, CREATE ON SCHEMA public TO plat_reader;
DROP TABLE public.owner_notes;
CREATE SCHEMA scratch;
RESET ROLE;
"""

CAPABILITIES_SQL = """
SELECT r.rolname, 'table ' || n.nspname || '.' || c.relname, p.priv,
       has_table_privilege(r.oid, c.oid, p.priv)
FROM pg_roles r, pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
     unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES']) p(priv)
WHERE r.rolname = ANY(%(roles)s) AND c.relkind IN ('r', 'v', 'm', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
UNION ALL
SELECT r.rolname, 'column ' || n.nspname || '.' || c.relname || '.' || a.attname, p.priv,
       has_column_privilege(r.oid, c.oid, a.attnum, p.priv)
FROM pg_roles r, pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace,
     unnest(ARRAY['SELECT', 'INSERT', 'UPDATE']) p(priv)
WHERE r.rolname = ANY(%(roles)s) AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
UNION ALL
SELECT r.rolname, 'sequence ' || n.nspname || '.' || c.relname, p.priv,
       has_sequence_privilege(r.oid, c.oid, p.priv)
FROM pg_roles r, pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
     unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) p(priv)
WHERE r.rolname = ANY(%(roles)s) AND c.relkind = 'S'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
UNION ALL
SELECT r.rolname, 'schema ' || n.nspname, p.priv, has_schema_privilege(r.oid, n.oid, p.priv)
FROM pg_roles r, pg_namespace n, unnest(ARRAY['USAGE', 'CREATE']) p(priv)
WHERE r.rolname = ANY(%(roles)s)
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
UNION ALL
SELECT r.rolname, 'function ' || f.oid::regprocedure::text, 'EXECUTE',
       has_function_privilege(r.oid, f.oid, 'EXECUTE')
FROM pg_roles r, pg_proc f JOIN pg_namespace n ON n.oid = f.pronamespace
WHERE r.rolname = ANY(%(roles)s) AND n.nspname IN ('app', 'public')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = f.oid AND d.deptype = 'e')
ORDER BY 1, 2, 3
"""


@dataclass(frozen=True)
class State:
    """Schema (with owners and privileges), data per table, and each role's capabilities."""

    schema: str
    data: dict[str, str]
    capabilities: list[tuple[Any, ...]]
    visible_rows: dict[str, int | str]


def create_roles(server: Server) -> None:
    server.execute("postgres", ROLES_SQL)


def owner_url(server: Server, dbname: str) -> str:
    params = conninfo_to_dict(server.admin_url)
    host = params.get("host", "127.0.0.1")
    port = params.get("port", "5432")
    return f"postgresql://{OWNER}:{OWNER_PASSWORD}@{host}:{port}/{dbname}"


def build(server: Server, dbname: str, *, cube_version: str = "1.5", extra: str = "") -> str:
    """Create the platform-style database ``dbname``; the owner's URL."""
    server.create_db(dbname)
    server.execute(
        "postgres",
        f"ALTER DATABASE {dbname} OWNER TO {OWNER}",
    )
    server.psql_file(dbname, PLATFORM_SQL.format(cube_version=cube_version) + APP_SQL + extra)
    return owner_url(server, dbname)


def tables(server: Server, dbname: str) -> list[str]:
    rows = server.execute(
        dbname,
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_' "
        "ORDER BY 1",
    )
    return [str(row[0]) for row in rows]


def table_data(server: Server, dbname: str) -> dict[str, str]:
    """Every table's rows as COPY text, in primary-key (first column) order."""
    out: dict[str, str] = {}
    with server.connect(dbname) as db:
        for name in tables(server, dbname):
            query = sql.SQL("COPY (SELECT * FROM {} ORDER BY 1) TO STDOUT").format(sql.SQL(name))
            with db.cursor().copy(query) as copy:
                out[name] = b"".join(bytes(block) for block in copy).decode()
    return out


def visible_rows(server: Server, dbname: str) -> dict[str, int | str]:
    """How many rows of app.users each role sees (row-level security), or why none."""
    seen: dict[str, int | str] = {}
    with server.connect(dbname) as db:
        for role in PROBED_ROLES:
            try:
                with db.transaction():
                    db.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
                    row = db.execute("SELECT count(id) FROM app.users").fetchone()
                    seen[role] = int(row[0]) if row else 0
            except Exception as exc:
                seen[role] = type(exc).__name__
    return seen


def schema_dump(server: Server, dbname: str) -> str:
    out = subprocess.run(
        ["pg_dump", "--schema-only", "-d", server.conninfo(dbname)],
        env=server.child_env(),
        check=True,
        capture_output=True,
    ).stdout.decode()
    return normalize_dump(out)


def state(server: Server, dbname: str) -> State:
    with server.connect(dbname) as db:
        capabilities = [
            tuple(row) for row in db.execute(CAPABILITIES_SQL, {"roles": list(PROBED_ROLES)})
        ]
    return State(
        schema=schema_dump(server, dbname),
        data=table_data(server, dbname),
        capabilities=capabilities,
        visible_rows=visible_rows(server, dbname),
    )
