"""What a database holds that a restore must know before it starts, read at snapshot time.

A plain dump says what to create; it does not say which roles must exist,
which extensions and schemas belong to someone else (a platform), or how many
locks replaying it takes. Those facts are cheap to read from the catalogs
while the snapshot is taken and are recorded in the manifest, so that a
restore can refuse before it changes anything (see :mod:`snapmgr.restore_plan`).

The same catalogs tell, before pg_dump starts, which tables and schemas the
dumping role cannot read: pg_dump would stop on the first of them with a bare
``permission denied``; we name them all, with the way out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from snapmgr.database_props import DatabaseProps, read_props
from snapmgr.errors import DumpError
from snapmgr.manifest import DumpContent

SYSTEM_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'"

EXTENSIONS_SQL = """
SELECT e.extname, e.extversion, n.nspname, pg_catalog.pg_get_userbyid(e.extowner)
FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
ORDER BY 1"""

SCHEMAS_SQL = f"""
SELECT n.nspname, pg_catalog.pg_get_userbyid(n.nspowner), n.nspacl::text
FROM pg_catalog.pg_namespace n
WHERE {SYSTEM_SCHEMAS} AND NOT (n.nspname = ANY(%(excluded)s))
ORDER BY 1"""

# Roles named by privileges ('a') and policies ('r') in this database, except
# through objects in excluded schemas. Owners come from the dump itself.
ROLES_SQL = """
SELECT DISTINCT CASE d.deptype WHEN 'a' THEN 'acl' ELSE 'policy' END, r.rolname
FROM pg_catalog.pg_shdepend d
JOIN pg_catalog.pg_roles r ON r.oid = d.refobjid
LEFT JOIN pg_catalog.pg_class c
  ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND c.oid = d.objid
LEFT JOIN pg_catalog.pg_policy p
  ON d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND p.oid = d.objid
LEFT JOIN pg_catalog.pg_class pc ON pc.oid = p.polrelid
LEFT JOIN pg_catalog.pg_namespace n
  ON n.oid = COALESCE(c.relnamespace, pc.relnamespace,
                      CASE WHEN d.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
                           THEN d.objid END)
WHERE d.dbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
  AND d.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
  AND d.deptype IN ('a', 'r')
  AND (n.nspname IS NULL OR NOT (n.nspname = ANY(%(excluded)s)))
ORDER BY 1, 2"""

# Every relation (with its TOAST table and index) and every other object a
# replay creates takes one lock that the restore's transaction holds to the end.
OBJECTS_SQL = f"""
SELECT
  (SELECT count(*) + 2 * count(*) FILTER (WHERE c.reltoastrelid <> 0)
   FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE {SYSTEM_SCHEMAS} AND NOT (n.nspname = ANY(%(excluded)s))),
  (SELECT count(*) FROM pg_catalog.pg_type t
   JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
   WHERE {SYSTEM_SCHEMAS} AND NOT (n.nspname = ANY(%(excluded)s)))
  + (SELECT count(*) FROM pg_catalog.pg_proc p
     JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE {SYSTEM_SCHEMAS} AND NOT (n.nspname = ANY(%(excluded)s)))"""

# Every partition and the table it is attached to: a partial restore of a
# partitioned table must bring its partitions, which hold its rows.
PARTITIONS_SQL = f"""
SELECT n.nspname || '.' || c.relname, pn.nspname || '.' || p.relname
FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
WHERE c.relispartition AND c.relkind IN ('r', 'p') AND {SYSTEM_SCHEMAS}
  AND NOT (n.nspname = ANY(%(excluded)s))
ORDER BY 1"""

# pg_dump locks every table and reads every sequence it dumps (SELECT), and
# needs USAGE on their schemas. Extension members are the extension's business.
UNREADABLE_SQL = f"""
SELECT n.nspname, c.relname,
       CASE WHEN NOT pg_catalog.has_schema_privilege(n.oid, 'USAGE')
            THEN 'permission denied for schema ' || pg_catalog.quote_ident(n.nspname)
            WHEN c.relkind = 'S'
            THEN 'permission denied for sequence ' || pg_catalog.quote_ident(c.relname)
            ELSE 'permission denied for table ' || pg_catalog.quote_ident(c.relname) END
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'S') AND {SYSTEM_SCHEMAS}
  AND NOT (n.nspname = ANY(%(excluded)s))
  AND NOT ((n.nspname || '.' || c.relname) = ANY(%(excluded_tables)s))
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    AND d.objid = c.oid AND d.deptype = 'e')
  AND NOT (pg_catalog.has_schema_privilege(n.oid, 'USAGE')
           AND pg_catalog.has_table_privilege(c.oid, 'SELECT'))
ORDER BY 1, 2"""


@dataclass(frozen=True)
class Inventory:
    """The catalog facts a manifest records (see the module doc)."""

    roles: dict[str, list[str]]
    extensions: dict[str, dict[str, str]]
    schemas: dict[str, dict[str, str | None]]
    objects: dict[str, int]
    timezone: str | None = None
    #: ``{partition: the table it is attached to}``, both ``schema.table``.
    partitions: dict[str, str] = field(default_factory=dict)
    #: The database object's own grants and settings.
    database: DatabaseProps | None = None


def read_inventory(db: Any, content: DumpContent) -> Inventory:
    """Read the inventory with ``db`` (a session: libpq's or psycopg's)."""
    params = {"excluded": list(content.exclude_schemas)}
    roles: dict[str, list[str]] = {}
    for use, name in db.execute(ROLES_SQL, params).fetchall():
        roles.setdefault(str(use), []).append(str(name))
    extensions = {
        str(name): {"version": str(version), "schema": str(schema), "owner": str(owner)}
        for name, version, schema, owner in db.execute(EXTENSIONS_SQL).fetchall()
    }
    schemas: dict[str, dict[str, str | None]] = {
        str(name): {"owner": str(owner), "acl": None if acl is None else str(acl)}
        for name, owner, acl in db.execute(SCHEMAS_SQL, params).fetchall()
    }
    row = db.execute(OBJECTS_SQL, params).fetchone()
    objects = {"relations": int(row[0]), "other": int(row[1])}
    zone = db.execute("SELECT pg_catalog.current_setting('TimeZone')").fetchone()
    partitions = {
        str(child): str(parent) for child, parent in db.execute(PARTITIONS_SQL, params).fetchall()
    }
    return Inventory(
        roles, extensions, schemas, objects, str(zone[0]) if zone else None, partitions,
        database=read_props(db),
    )  # fmt: skip


def check_readable(db: Any, content: DumpContent) -> None:
    """Refuse (exit 4) before pg_dump starts when the role cannot read what it would dump."""
    params = {
        "excluded": list(content.exclude_schemas),
        "excluded_tables": list(content.exclude_tables),
    }
    rows = db.execute(UNREADABLE_SQL, params).fetchall()
    if not rows:
        return
    schemas = sorted({str(schema) for schema, _, reason in rows if "schema" in str(reason)})
    tables = [f"{schema}.{name}" for schema, name, reason in rows if "schema" not in str(reason)]
    parts = [f"{reason}" for _, _, reason in rows[:3]]
    ways = []
    if tables:
        ways.append(" ".join(f"--exclude-table {name}" for name in tables[:5]))
    if schemas:
        ways.append(" ".join(f"--exclude-schema {name}" for name in schemas[:5]))
    more = f" and {len(rows) - 3} more" if len(rows) > 3 else ""
    raise DumpError(
        f"the role cannot read everything pg_dump would dump: {'; '.join(parts)}{more}; "
        f"leave them out ({' '.join(ways)}, or exclude_schemas/exclude_tables in the config) "
        "or grant the role SELECT on them; nothing was dumped"
    )


def survey(db: Any, content: DumpContent) -> Inventory:
    """Check that pg_dump can read what it will dump, then read the inventory, on
    ``db``, the session the snapshot's pre-flight check opened."""
    check_readable(db, content)
    return read_inventory(db, content)
