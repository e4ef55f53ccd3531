"""The database's own grants and settings: recorded by a snapshot, put back by a restore.

A plain ``pg_dump`` leaves out what belongs to the database object itself
(it writes it only with ``--create``): who may ``CONNECT``, ``CREATE``
schemas or make ``TEMPORARY`` tables, and the ``ALTER DATABASE … SET``
settings (``search_path``, ``statement_timeout``…). A restore into a new
database (``--create``) would then let every role connect and give a
migrator no right to create schemas; a restore after a migration that
changed them would keep the migration's. So a snapshot records them, and a
full restore makes the target's equal to the snapshot's inside its one
transaction, when the restoring role owns the target database (or is a
superuser). When it may not, or a setting needs a superuser, the restore
goes on and says, in one warning line, what it left as it was and the
statements an administrator can run.

The owner's own privileges are not recorded: they follow the database's
owner, which a restore does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from snapmgr.partial_filter import quote_name
from snapmgr.restore_filter import sql_literal

# Grants on the current database other than its owner's, as aclexplode gives
# them (a NULL datacl is the default: PUBLIC may CONNECT and use TEMPORARY).
GRANTS_SQL = """
SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END,
       a.privilege_type, a.is_grantable
FROM pg_catalog.pg_database d,
     LATERAL pg_catalog.aclexplode(
         COALESCE(d.datacl, pg_catalog.acldefault('d', d.datdba))) a
WHERE d.datname = pg_catalog.current_database() AND a.grantee <> d.datdba
ORDER BY 1, 2"""

# ALTER DATABASE … SET settings (not the per-role ones), as "name=value".
SETTINGS_SQL = """
SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s
JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
WHERE d.datname = pg_catalog.current_database() AND s.setrole = 0"""

# May this role change the database's grants and settings, and which
# settings would need a superuser.
TARGET_SQL = """
SELECT pg_catalog.current_database(), pg_catalog.pg_get_userbyid(d.datdba),
       pg_catalog.pg_has_role(d.datdba, 'MEMBER')
         OR pg_catalog.current_setting('is_superuser') = 'on',
       pg_catalog.current_setting('is_superuser') = 'on'
FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()"""

SUPERUSER_SETTINGS_SQL = """
SELECT pg_catalog.lower(name) FROM pg_catalog.pg_settings
WHERE context = 'superuser' AND pg_catalog.lower(name) = ANY(%s)"""

#: Settings whose value is a list of names, which ``SET`` takes as one literal each.
LIST_SETTINGS = frozenset(
    {"search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries"}
)

Grant = tuple[str, str, bool]


@dataclass(frozen=True)
class DatabaseProps:
    """Grants on the database (``(grantee | "PUBLIC", privilege, grantable)``, the
    owner's left out) and its ``name=value`` settings."""

    grants: tuple[Grant, ...] = ()
    settings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"grants": [list(grant) for grant in self.grants], "settings": list(self.settings)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatabaseProps:
        grants = tuple(
            (str(grantee), str(privilege), bool(grantable))
            for grantee, privilege, grantable in data.get("grants", ())
        )
        return cls(
            grants=tuple(sorted(grants)), settings=tuple(str(s) for s in data.get("settings", ()))
        )


def read_props(db: Any) -> DatabaseProps:
    """The current database's grants and settings, with ``db`` (a psycopg connection)."""
    grants = tuple(
        (str(grantee), str(privilege), bool(grantable))
        for grantee, privilege, grantable in db.execute(GRANTS_SQL).fetchall()
    )
    row = db.execute(SETTINGS_SQL).fetchone()
    settings = tuple(sorted(str(item) for item in (row[0] if row and row[0] else ())))
    return DatabaseProps(grants=tuple(sorted(grants)), settings=settings)


@dataclass(frozen=True)
class PropsPlan:
    """What a restore does to the target database's grants and settings."""

    #: Statements run in the restore's transaction (empty: nothing to change).
    sql: str
    #: What it may not change, for one warning line (empty: nothing left).
    left: str


def plan_props(db: Any, wanted: DatabaseProps, *, apply_grants: bool) -> PropsPlan:
    """Compare the target database (read with ``db``) with ``wanted``: the
    statements that make it equal, and what this role cannot change. The
    target's owner is never granted or revoked anything: its rights are implicit."""
    name, owner, may_alter, superuser = db.execute(TARGET_SQL).fetchone()
    current = read_props(db)
    statements: list[str] = []
    database = quote_name(str(name))
    if apply_grants and current.grants != wanted.grants:
        statements += _grant_changes(database, current.grants, wanted.grants, str(owner))
    blocked: list[str] = []
    if current.settings != wanted.settings:
        wanted_names = [_setting_name(item).lower() for item in wanted.settings]
        needs_superuser = set()
        if not superuser and wanted_names:
            rows = db.execute(SUPERUSER_SETTINGS_SQL, (wanted_names,)).fetchall()
            needs_superuser = {str(row[0]) for row in rows}
        settings = [f"ALTER DATABASE {database} RESET ALL;"]
        for item in wanted.settings:
            statement = _set_statement(database, item)
            if _setting_name(item).lower() in needs_superuser:
                blocked.append(statement)
            else:
                settings.append(statement)
        statements += settings
    if not statements:
        return PropsPlan("", "")
    if not may_alter:
        return PropsPlan(
            "",
            f"the grants and settings of database {name} differ from the snapshot's and this "
            f"role does not own it; as its owner run: {' '.join(statements)}",
        )
    left = ""
    if blocked:
        left = (
            f"settings of database {name} that need a superuser were left out; "
            f"as a superuser, run: {' '.join(blocked)}"
        )
    return PropsPlan("".join(f"{statement}\n" for statement in statements), left)


def _grant_changes(
    database: str, current: tuple[Grant, ...], wanted: tuple[Grant, ...], owner: str
) -> list[str]:
    """REVOKE what the target has beyond the snapshot, then GRANT what it lacks."""
    out: list[str] = []
    have = {(grantee, privilege): grantable for grantee, privilege, grantable in current}
    want = {(grantee, privilege): grantable for grantee, privilege, grantable in wanted}
    for (grantee, privilege), grantable in sorted(have.items()):
        if grantee == owner:
            continue
        if (grantee, privilege) not in want:
            out.append(f"REVOKE {privilege} ON DATABASE {database} FROM {_grantee(grantee)};")
        elif grantable and not want[(grantee, privilege)]:
            out.append(
                f"REVOKE GRANT OPTION FOR {privilege} ON DATABASE {database} "
                f"FROM {_grantee(grantee)};"
            )
    for (grantee, privilege), grantable in sorted(want.items()):
        if grantee == owner or have.get((grantee, privilege)) == grantable:
            continue
        option = " WITH GRANT OPTION" if grantable else ""
        out.append(f"GRANT {privilege} ON DATABASE {database} TO {_grantee(grantee)}{option};")
    return out


def _grantee(name: str) -> str:
    return "PUBLIC" if name == "PUBLIC" else quote_name(name)


def _setting_name(item: str) -> str:
    return item.partition("=")[0]


def _set_statement(database: str, item: str) -> str:
    """``ALTER DATABASE … SET`` for one ``name=value`` of ``pg_db_role_setting``."""
    name, _, value = item.partition("=")
    if name.lower() in LIST_SETTINGS:
        values = ", ".join(sql_literal(part) for part in split_list(value)) or "''"
    else:
        values = sql_literal(value)
    setting = ".".join(quote_name(part) for part in name.split("."))
    return f"ALTER DATABASE {database} SET {setting} TO {values};"


def split_list(value: str) -> list[str]:
    """The elements of a list setting as PostgreSQL prints it (``"$user", public``):
    double-quoted elements unquoted, the others as they are."""
    parts: list[str] = []
    i = 0
    while i < len(value):
        while i < len(value) and value[i] in " ,":
            i += 1
        if i >= len(value):
            break
        if value[i] == '"':
            j, chars = i + 1, []
            while j < len(value):
                if value[j] == '"':
                    if value.startswith('""', j):
                        chars.append('"')
                        j += 2
                        continue
                    break
                chars.append(value[j])
                j += 1
            parts.append("".join(chars))
            i = j + 1
        else:
            j = value.find(",", i)
            j = len(value) if j < 0 else j
            parts.append(value[i:j].strip())
            i = j
    return parts
