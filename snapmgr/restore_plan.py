"""Before a restore changes anything: can it be done here, as this role, and how.

A restore replays a snapshot into a target as the restoring role, which on a
managed platform is usually the database's owner but not a superuser. Read
from the target's catalogs and the manifest, the plan decides:

* what the wipe leaves alone: extensions and schemas owned by a role the
  restoring role cannot act for (a platform's), when the target has them in
  the snapshot's form, and excluded schemas and tables;
* what the replay leaves out or adapts (:class:`~snapmgr.restore_filter.RestoreFilter`);
* what cannot work, each as one problem with the way out: a role the
  snapshot needs is missing or the restoring role may not act for it, a
  platform object differs from the snapshot's, an extension only a superuser
  may create is missing, the lock table is too small for one transaction.

Problems are collected, not raised one at a time, so one refusal lists them
all; it comes before the restore's transaction starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from snapmgr.database_props import DatabaseProps, PropsPlan, plan_props
from snapmgr.errors import RestoreError
from snapmgr.manifest import Manifest
from snapmgr.restore_filter import RestoreFilter
from snapmgr.restore_globals import GlobalsPlan, global_owners, plan_globals
from snapmgr.restore_sql import wipe_sql

log = logging.getLogger("snapmgr")

#: Locks per counted object in the restore's one transaction, measured (300
#: tables with a serial key and a text column: 6,060 locks for 3,000
#: relations, TOAST included, and 1,200 types, dropped and created again):
#: dropping and re-creating a relation locks it, its indexes and TOAST parts
#: several times over; other objects take about one lock each.
LOCKS_PER_RELATION = 1.7
LOCKS_PER_OBJECT = 1.0

TARGET_SQL = """
SELECT current_user, pg_catalog.current_setting('is_superuser') = 'on',
       pg_catalog.current_setting('max_locks_per_transaction')::int,
       pg_catalog.current_setting('max_connections')::int,
       pg_catalog.current_setting('max_prepared_transactions')::int,
       (SELECT pg_catalog.array_agg(name::text) FROM pg_catalog.pg_settings)"""

TARGET_EXTENSIONS_SQL = """
SELECT e.extname, e.extversion, n.nspname, pg_catalog.pg_get_userbyid(e.extowner),
       pg_catalog.pg_has_role(e.extowner, 'USAGE')
FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace"""

TARGET_SCHEMAS_SQL = """
SELECT n.nspname, pg_catalog.pg_get_userbyid(n.nspowner), n.nspacl::text,
       pg_catalog.pg_has_role(n.nspowner, 'USAGE')
FROM pg_catalog.pg_namespace n
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'"""

ROLES_SQL = """
SELECT r.rolname, pg_catalog.pg_has_role(r.oid, 'MEMBER')
FROM pg_catalog.pg_roles r WHERE r.rolname = ANY(%s)"""

TARGET_OBJECTS_SQL = """
SELECT (SELECT count(*) + 2 * count(*) FILTER (WHERE c.reltoastrelid <> 0)
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'),
       (SELECT count(*) FROM pg_catalog.pg_type t
        JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_')
     + (SELECT count(*) FROM pg_catalog.pg_proc p
        JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_')"""

# What excluded objects (and their parts: defaults, constraints, indexes,
# triggers, owned sequences) use, found through normal dependencies: a restore
# drops and re-creates it, and a CASCADE would take the excluded object's
# column, default or constraint with it.
EXCLUDED_NEEDS_SQL = """
WITH RECURSIVE protected(classid, objid) AS (
  SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, c.oid
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE (n.nspname || '.' || c.relname) = ANY(%(tables)s) OR n.nspname = ANY(%(schemas)s)
  UNION
  SELECT d.classid, d.objid FROM pg_catalog.pg_depend d
  JOIN protected p ON d.refclassid = p.classid AND d.refobjid = p.objid
  WHERE d.deptype IN ('a', 'i')
), needs(classid, objid) AS (
  SELECT classid, objid FROM protected
  UNION
  SELECT d.refclassid, d.refobjid FROM pg_catalog.pg_depend d
  JOIN needs x ON d.classid = x.classid AND d.objid = x.objid
  WHERE d.deptype = 'n'
)
SELECT DISTINCT o.type || ' ' || o.identity
FROM needs x, LATERAL pg_catalog.pg_identify_object(x.classid, x.objid, 0) o
WHERE NOT EXISTS (SELECT 1 FROM protected p WHERE p.classid = x.classid AND p.objid = x.objid)
  AND o.schema IS NOT NULL
  AND o.schema NOT IN ('pg_catalog', 'information_schema') AND o.schema !~ '^pg_'
  AND NOT o.schema = ANY(%(schemas)s)
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
                  WHERE e.classid = x.classid AND e.objid = x.objid AND e.deptype = 'e')
ORDER BY 1"""

CREATABLE_SQL = """
SELECT v.name, bool_or(v.trusted) FROM pg_catalog.pg_available_extension_versions v
WHERE v.name = ANY(%s) GROUP BY v.name"""

CONFIG_TABLES_SQL = """
SELECT e.extname, n.nspname || '.' || c.relname,
       pg_catalog.has_table_privilege(c.oid, 'DELETE')
FROM pg_catalog.pg_extension e
CROSS JOIN LATERAL pg_catalog.unnest(e.extconfig) AS cfg(oid)
JOIN pg_catalog.pg_class c ON c.oid = cfg.oid AND c.relkind = 'r'
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE e.extname = ANY(%s)"""


@dataclass(frozen=True)
class RestorePlan:
    """How one restore treats the target; built by :func:`plan_restore`."""

    role: str
    superuser: bool
    apply_owners: bool
    apply_privileges: bool
    kept_extensions: tuple[str, ...]
    kept_schemas: tuple[str, ...]
    excluded_schemas: tuple[str, ...]
    excluded_tables: tuple[str, ...]
    known_settings: frozenset[str]
    owner_roles: tuple[str, ...]
    public_grantable: bool
    locks_needed: int
    lock_capacity: int
    #: Statements that give the target database the snapshot's grants and settings.
    database_sql: str = ""
    #: What of those this role may not change (one warning line), else "".
    database_left: str = ""
    #: Other roles' event triggers and publications (:mod:`snapmgr.restore_globals`).
    globals: GlobalsPlan = field(default_factory=GlobalsPlan)

    def wipe(self, server_major: int, lock_timeout_s: float) -> str:
        return wipe_sql(
            server_major,
            lock_timeout_s,
            kept_extensions=self.kept_extensions,
            kept_event_triggers=self.globals.kept_event_triggers,
            kept_publications=self.globals.kept_publications,
            kept_schemas=self.kept_schemas,
            excluded_schemas=self.excluded_schemas,
            excluded_tables=self.excluded_tables,
            reset_public=self.apply_privileges,
        )

    def line_filter(self, existing_schemas: tuple[str, ...] | None = None) -> RestoreFilter:
        """The filter for a full restore; ``existing_schemas``: schemas already in
        the target when the dump's statements start (default: "public" if needed)."""
        kept = {("EXTENSION", name) for name in self.kept_extensions}
        kept |= {("COMMENT", f"EXTENSION {name}") for name in self.kept_extensions}
        kept |= self.globals.sections
        for schema in self.kept_schemas:
            kept |= {(kind, f"SCHEMA {schema}") for kind in ("COMMENT", "ACL")}
            kept.add(("SCHEMA", schema))
        return RestoreFilter(
            known_settings=self.known_settings,
            apply_owners=self.apply_owners,
            apply_privileges=self.apply_privileges,
            kept=frozenset(kept),
            owner_roles=self.owner_roles,
            existing_schemas=(
                existing_schemas
                if existing_schemas is not None
                else ("public",)
                if self.public_grantable
                else ()
            ),
        )


def plan_restore(
    db: Any,
    manifest: Manifest,
    *,
    no_owner: bool = False,
    no_privileges: bool = False,
    whole: bool = True,
    restored: frozenset[str] | None = None,
) -> RestorePlan:
    """Read the target with ``db`` (a session as the restoring role) and
    decide; raise ``RestoreError`` listing every problem if it cannot work.
    ``whole``: a full restore, which also puts back the database's own grants
    and settings (a partial one adds tables and leaves the database as it is);
    ``restored``: a partial restore's tables (``None``: every table)."""
    role, superuser, max_locks, max_conn, max_prepared, settings = db.execute(TARGET_SQL).fetchone()
    content = manifest.content
    apply_owners = content.owners and not no_owner
    apply_privileges = content.privileges and not no_privileges
    problems: list[str] = []

    kept_extensions = _kept_extensions(db, manifest, superuser, problems)
    kept_schemas, public_grantable = _kept_schemas(db, manifest, apply_privileges, problems)
    owners = global_owners(manifest)
    members = dict(db.execute(ROLES_SQL, (owners,)).fetchall()) if owners else {}
    globals_plan = plan_globals(
        db, manifest, role=str(role), kept_schemas=kept_schemas, restored=restored,
        actable=set(owners) if superuser else {name for name in owners if members.get(name)},
    )  # fmt: skip
    problems += globals_plan.problems
    owner_roles = _check_roles(
        db, manifest, str(role), kept_schemas,
        apply_owners=apply_owners, apply_privileges=apply_privileges, problems=problems,
        more_owners=globals_plan.replayed_owners,
    )  # fmt: skip
    _check_excluded(db, manifest, problems)
    capacity = int(max_locks) * (int(max_conn) + int(max_prepared))
    relations, others = (int(n) for n in db.execute(TARGET_OBJECTS_SQL).fetchone())
    relations += manifest.objects.get("relations", 0)
    others += manifest.objects.get("other", 0)
    needed = round(relations * LOCKS_PER_RELATION + others * LOCKS_PER_OBJECT)
    if needed > capacity:
        per_slot = int(max_conn) + int(max_prepared)
        problems.append(
            f"the restore holds about {needed:,} locks in its one transaction (it drops and "
            f"creates {relations:,} relations and {others:,} other objects), more than "
            "the server's lock table: "
            f"max_locks_per_transaction {max_locks} x (max_connections {max_conn} + "
            f"max_prepared_transactions {max_prepared}) = {capacity:,}; set "
            f"max_locks_per_transaction to at least {-(-needed // per_slot)} (a server "
            "restart; on a managed service, in its parameter settings)"
        )
    props = PropsPlan("", "")
    if whole and manifest.database_props:
        wanted = DatabaseProps.from_dict(manifest.database_props)
        props = plan_props(db, wanted, apply_grants=apply_privileges)
        missing = _missing_grantees(db, wanted) if apply_privileges else []
        if missing:
            problems.append(
                f"the database's grants name role(s) {', '.join(missing)}, missing here: "
                "create them (CREATE ROLE …), or restore with --no-privileges"
            )
    if problems:
        for problem in problems:
            log.error("cannot restore: %s", problem)
        raise RestoreError(
            f"refusing to restore {manifest.id} as {role}, nothing was changed: "
            + "; ".join(problems)
        )
    return RestorePlan(
        role=str(role),
        superuser=bool(superuser),
        apply_owners=apply_owners,
        apply_privileges=apply_privileges,
        kept_extensions=kept_extensions,
        kept_schemas=kept_schemas,
        excluded_schemas=content.exclude_schemas,
        excluded_tables=content.exclude_tables,
        known_settings=frozenset(str(name).lower() for name in settings or ()),
        owner_roles=owner_roles,
        public_grantable=public_grantable,
        locks_needed=needed,
        lock_capacity=capacity,
        database_sql=props.sql,
        database_left=props.left,
        globals=globals_plan,
    )


def _missing_grantees(db: Any, wanted: DatabaseProps) -> list[str]:
    """Roles the snapshot's database grants name that the target's server lacks."""
    names = sorted({grantee for grantee, _, _ in wanted.grants if grantee != "PUBLIC"})
    if not names:
        return []
    found = {str(row[0]) for row in db.execute(ROLES_SQL, (names,)).fetchall()}
    return [name for name in names if name not in found]


def _check_excluded(db: Any, manifest: Manifest, problems: list[str]) -> None:
    """Excluded objects must not use anything the restore drops and re-creates."""
    content = manifest.content
    if not (content.exclude_schemas or content.exclude_tables):
        return
    params = {"tables": list(content.exclude_tables), "schemas": list(content.exclude_schemas)}
    used = [str(row[0]) for row in db.execute(EXCLUDED_NEEDS_SQL, params).fetchall()]
    if used:
        shown = ", ".join(used[:4]) + (f" and {len(used) - 4} more" if len(used) > 4 else "")
        problems.append(
            f"excluded objects use {shown}, which the restore would drop and re-create, "
            "taking their columns, defaults or constraints with it: exclude those too, or "
            "restore without the exclusion"
        )


def _kept_extensions(
    db: Any, manifest: Manifest, superuser: bool, problems: list[str]
) -> tuple[str, ...]:
    """Extensions the role may not drop stay; they must match the snapshot's."""
    kept: list[str] = []
    present: set[str] = set()
    excluded = set(manifest.content.exclude_schemas)
    for name, version, schema, owner, droppable in db.execute(TARGET_EXTENSIONS_SQL).fetchall():
        present.add(str(name))
        if name == "plpgsql" or (droppable and schema not in excluded):
            continue
        kept.append(str(name))
        recorded = manifest.extensions.get(str(name))
        if recorded is None:
            if manifest.extensions and schema not in excluded:
                log.warning(
                    "extension %s (owned by %s) is not in snapshot %s; this role may not "
                    "drop it, so it stays", name, owner, manifest.id,
                )  # fmt: skip
            continue
        if (recorded["version"], recorded["schema"]) != (str(version), str(schema)):
            problems.append(
                f"extension {name} is version {version} in schema {schema} here but "
                f"{recorded['version']} in schema {recorded['schema']} in the snapshot, and "
                f"only its owner {owner} may change it (ask for ALTER EXTENSION {name} "
                f"UPDATE TO '{recorded['version']}', or restore as a superuser)"
            )
    missing = [name for name in manifest.extensions if name not in present]
    if missing and not superuser:
        creatable = dict(db.execute(CREATABLE_SQL, (missing,)).fetchall())
        for name in missing:
            if name not in creatable:
                problems.append(f"extension {name} is in the snapshot but not installable here")
            elif not creatable[name]:
                problems.append(
                    f"extension {name} is in the snapshot but missing here, and only a "
                    f"superuser may create it: ask the platform to CREATE EXTENSION {name}"
                )
    _check_config_tables(db, manifest, tuple(kept), problems)
    return tuple(kept)


def _check_config_tables(
    db: Any, manifest: Manifest, kept: tuple[str, ...], problems: list[str]
) -> None:
    """A kept extension's configuration table gets the snapshot's user rows back,
    which takes deleting the current ones first."""
    for extension, table, deletable in db.execute(CONFIG_TABLES_SQL, (list(kept),)).fetchall():
        if manifest.tables.get(str(table)) and not deletable:
            problems.append(
                f"the snapshot has rows in {table}, the configuration table of extension "
                f"{extension}, and this role may not DELETE from it to put them back"
            )


def _kept_schemas(
    db: Any, manifest: Manifest, apply_privileges: bool, problems: list[str]
) -> tuple[tuple[str, ...], bool]:
    """Schemas the role cannot act for stay; they must match the snapshot's.

    Also tells whether the role may grant on ``public`` (for owners' CREATE).
    """
    kept: list[str] = []
    public_grantable = False
    excluded = set(manifest.content.exclude_schemas)
    for name, owner, acl, ours in db.execute(TARGET_SCHEMAS_SQL).fetchall():
        if name == "public":
            public_grantable = bool(ours)
        if ours or name in excluded:
            continue
        kept.append(str(name))
        recorded = manifest.schemas.get(str(name))
        if recorded is None:
            continue
        if manifest.content.owners and recorded["owner"] != owner:
            problems.append(
                f"schema {name} belongs to {owner} here but to {recorded['owner']} in the "
                "snapshot, and this role may not change that"
            )
        elif apply_privileges and recorded["acl"] != acl:
            problems.append(
                f"the privileges on schema {name} (owned by {owner}) differ from the "
                "snapshot's and this role may not change them; restore with --no-privileges "
                "or ask its owner to put them back"
            )
    return tuple(kept), public_grantable


def _check_roles(
    db: Any,
    manifest: Manifest,
    role: str,
    kept_schemas: tuple[str, ...],
    *,
    apply_owners: bool,
    apply_privileges: bool,
    problems: list[str],
    more_owners: tuple[str, ...] = (),
) -> tuple[str, ...]:
    """Roles the replay names must exist; owners must be roles this one may act for
    (``more_owners``: of the event triggers and publications it replays)."""
    skipped = {f"schema {schema}" for schema in kept_schemas}
    owners = sorted(
        {name for name, owns in manifest.owners.items() if set(owns) - skipped}
        | set(more_owners)
    ) if apply_owners else []  # fmt: skip
    others = set(manifest.roles.get("policy", []))
    if apply_privileges:
        others |= set(manifest.roles.get("acl", []))
    wanted = sorted(set(owners) | others)
    found = dict(db.execute(ROLES_SQL, (wanted,)).fetchall()) if wanted else {}
    missing = [name for name in wanted if name not in found]
    if missing:
        flags = []
        if apply_owners and set(missing) & set(owners):
            flags.append("--no-owner")
        if apply_privileges and set(missing) & set(manifest.roles.get("acl", [])):
            flags.append("--no-privileges")
        way = f", or restore with {' '.join(flags)}" if flags else ""
        problems.append(
            f"the snapshot needs role(s) {', '.join(missing)}, missing here: create them "
            f"(CREATE ROLE …){way}"
        )
    foreign = [name for name in owners if name in found and not found[name]]
    if foreign:
        places = sorted(
            {place for name in foreign for place in manifest.owners.get(name, ["global"])}
        )
        problems.append(
            f"objects in the snapshot belong to {', '.join(foreign)} "
            f"({', '.join(places[:4])}), and {role} may not act for "
            f"{'that role' if len(foreign) == 1 else 'those roles'}: GRANT "
            f"{', '.join(foreign)} TO {role}, restore with --no-owner, or leave those "
            "schemas out of snapshots (exclude_schemas)"
        )
    return tuple(owners)
