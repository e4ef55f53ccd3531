"""The database's own grants, settings and comment: recorded by a snapshot, put back by a restore.

A plain ``pg_dump`` leaves out what belongs to the database object itself
(it writes it only with ``--create``): who may ``CONNECT``, ``CREATE``
schemas or make ``TEMPORARY`` tables, the ``ALTER DATABASE … SET``
settings (``search_path``, ``statement_timeout``…) and ``COMMENT ON
DATABASE``. A restore into a new
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

from snapmgr.dumpscan import read_quoted
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

# ALTER DATABASE … SET settings (role "" ) and ALTER ROLE … IN DATABASE … SET
# ones (by role), as "name=value".
SETTINGS_SQL = """
SELECT CASE WHEN s.setrole = 0 THEN '' ELSE pg_catalog.pg_get_userbyid(s.setrole) END,
       s.setconfig
FROM pg_catalog.pg_db_role_setting s
JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
WHERE d.datname = pg_catalog.current_database()"""

# Whose per-database settings this role may change: a superuser anyone's, a
# CREATEROLE role a non-superuser's, any role its own.
SETTABLE_ROLES_SQL = """
SELECT r.rolname FROM pg_catalog.pg_roles r, pg_catalog.pg_roles me
WHERE me.rolname = current_user AND r.rolname = ANY(%s)
  AND (me.rolsuper OR r.rolname = current_user OR (me.rolcreaterole AND NOT r.rolsuper))"""

# May this role change the database's grants and settings, and which
# settings would need a superuser.
TARGET_SQL = """
SELECT pg_catalog.current_database(), pg_catalog.pg_get_userbyid(d.datdba),
       pg_catalog.pg_has_role(d.datdba, 'MEMBER')
         OR pg_catalog.current_setting('is_superuser') = 'on',
       pg_catalog.current_setting('is_superuser') = 'on'
FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()"""

COMMENT_SQL = """
SELECT pg_catalog.shobj_description(d.oid, 'pg_database')
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
    owner's left out), its ``name=value`` settings, each role's in it, and its
    comment. ``comment_known`` is false for a snapshot made before comments were
    recorded: a restore of it leaves the target's comment as it is."""

    grants: tuple[Grant, ...] = ()
    settings: tuple[str, ...] = ()
    role_settings: tuple[tuple[str, tuple[str, ...]], ...] = ()
    comment: str | None = None
    comment_known: bool = False

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "grants": [list(grant) for grant in self.grants],
            "settings": list(self.settings),
            "role_settings": {role: list(items) for role, items in self.role_settings},
        }
        if self.comment_known:
            data["comment"] = self.comment
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatabaseProps:
        grants = tuple(
            (str(grantee), str(privilege), bool(grantable))
            for grantee, privilege, grantable in data.get("grants", ())
        )
        roles = data.get("role_settings") or {}
        return cls(
            grants=tuple(sorted(grants)),
            settings=tuple(str(s) for s in data.get("settings", ())),
            role_settings=tuple(
                sorted((str(role), tuple(str(s) for s in items)) for role, items in roles.items())
            ),
            comment=None if data.get("comment") is None else str(data["comment"]),
            comment_known="comment" in data,
        )


def read_props(db: Any) -> DatabaseProps:
    """The current database's grants and settings, with ``db`` (a session: libpq's or psycopg's)."""
    grants = tuple(
        (str(grantee), str(privilege), bool(grantable))
        for grantee, privilege, grantable in db.execute(GRANTS_SQL).fetchall()
    )
    by_role = {
        str(role): tuple(sorted(str(item) for item in config or ()))
        for role, config in db.execute(SETTINGS_SQL).fetchall()
    }
    row = db.execute(COMMENT_SQL).fetchone()
    return DatabaseProps(
        grants=tuple(sorted(grants)),
        settings=by_role.pop("", ()),
        role_settings=tuple(sorted((role, items) for role, items in by_role.items() if items)),
        comment=None if not row or row[0] is None else str(row[0]),
        comment_known=True,
    )


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
    needs_superuser = set()
    if not superuser:
        names = [
            _setting_name(item).lower()
            for items in (wanted.settings, *(items for _, items in wanted.role_settings))
            for item in items
        ]
        rows = db.execute(SUPERUSER_SETTINGS_SQL, (names,)).fetchall() if names else []
        needs_superuser = {str(row[0]) for row in rows}
    blocked: list[str] = []
    if current.settings != wanted.settings:
        target = f"DATABASE {database}"
        statements += _settings_changes(target, wanted.settings, needs_superuser, blocked)
    role_statements = _role_settings_changes(db, database, current, wanted, needs_superuser)
    statements += role_statements.allowed
    if wanted.comment_known and current.comment != wanted.comment:
        text = "NULL" if wanted.comment is None else sql_literal(wanted.comment)
        statements.append(f"COMMENT ON DATABASE {database} IS {text};")
    blocked += role_statements.blocked
    if not statements and not blocked:
        return PropsPlan("", "")
    if statements and not may_alter:
        return PropsPlan(
            "",
            f"the grants, settings or comment of database {name} differ from the snapshot's "
            f"and this role does not own it; as its owner run: {' '.join(statements)}",
        )
    left = ""
    if blocked:
        left = (
            f"settings of database {name} that need a superuser (or CREATEROLE) were left "
            f"out; as a superuser, run: {' '.join(blocked)}"
        )
    return PropsPlan("".join(f"{statement}\n" for statement in statements), left)


def _settings_changes(
    target: str, items: tuple[str, ...], needs_superuser: set[str], blocked: list[str]
) -> list[str]:
    """``ALTER target RESET ALL`` then one ``SET`` per item; a setting only a
    superuser may make goes to ``blocked`` instead."""
    out = [f"ALTER {target} RESET ALL;"]
    for item in items:
        statement = _set_statement(target, item)
        (blocked if _setting_name(item).lower() in needs_superuser else out).append(statement)
    return out


@dataclass(frozen=True)
class _Changes:
    allowed: list[str]
    blocked: list[str]


def _role_settings_changes(
    db: Any, database: str, current: DatabaseProps, wanted: DatabaseProps, needs_superuser: set[str]
) -> _Changes:
    """``ALTER ROLE … IN DATABASE`` for every role whose settings here differ from
    the snapshot's; those this role may not change (or that no longer exist) go to
    ``blocked``, to be named."""
    have, want = dict(current.role_settings), dict(wanted.role_settings)
    differing = sorted(role for role in set(have) | set(want) if have.get(role) != want.get(role))
    if not differing:
        return _Changes([], [])
    settable = {str(row[0]) for row in db.execute(SETTABLE_ROLES_SQL, (differing,)).fetchall()}
    allowed: list[str] = []
    blocked: list[str] = []
    for role in differing:
        target = f"ROLE {quote_name(role)} IN DATABASE {database}"
        items = want.get(role, ())
        if role in settable:
            allowed += _settings_changes(target, items, needs_superuser, blocked)
        else:
            blocked += [f"ALTER {target} RESET ALL;"] + [_set_statement(target, i) for i in items]
    return _Changes(allowed, blocked)


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


def _set_statement(target: str, item: str) -> str:
    """``ALTER target SET`` (``DATABASE d``, ``ROLE r IN DATABASE d``) for one
    ``name=value`` of ``pg_db_role_setting``."""
    name, _, value = item.partition("=")
    if name.lower() in LIST_SETTINGS:
        values = ", ".join(sql_literal(part) for part in split_list(value)) or "''"
    else:
        values = sql_literal(value)
    setting = ".".join(quote_name(part) for part in name.split("."))
    return f"ALTER {target} SET {setting} TO {values};"


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
        quoted = read_quoted(value, i) if value[i] == '"' else None
        if quoted is not None:
            name, i = quoted
            parts.append(name)
        else:
            j = value.find(",", i)
            j = len(value) if j < 0 else j
            parts.append(value[i:j].strip())
            i = j
    return parts
