"""Adapt a dump's statements, line by line, to the target a restore replays it into.

The stored dump is a standard pg_dump file and stays untouched; what a
restore sends to psql is that file with a few statements left out or
replaced, decided here from the restore plan (:mod:`snapmgr.restore_plan`):

* pg_dump's ``--clean`` prologue (``DROP … IF EXISTS`` for every object) is
  left out: the restore's own wipe has already removed everything the
  restoring role may remove, and those ``DROP``\\ s would fail on what it may
  not (an extension a platform installed);
* header ``SET``\\ s the target does not know are left out, so a dump made by
  a newer pg_dump (17+ writes ``SET transaction_timeout``) replays into an
  older server;
* the statements of objects the restore keeps as they are (an extension or a
  schema owned by a role the restoring role cannot act for, present in the
  target in the same form) are left out;
* ``--no-owner`` drops ``ALTER … OWNER TO``; ``--no-privileges`` drops the
  ``ACL`` and ``DEFAULT ACL`` sections;
* ``SET SESSION AUTHORIZATION`` (pg_dump's way to replay a grant made by
  someone other than the owner, superuser-only) becomes ``SET ROLE``, which a
  member of that role may do;
* a role that must become an object's owner needs ``CREATE`` on the object's
  schema; grants that lack it get it for the replay and lose it again before
  the dump's own privileges are applied (see ``GRANT_CREATE``/``REVOKE_CREATE``).

Only schema lines pass through here (never COPY data), so the cost is per
statement, not per row.
"""

from __future__ import annotations

from collections.abc import Iterable

from snapmgr.dumpscan import TRAILER, Section

PROLOGUE_KEEP = (b"SET ", b"SELECT pg_catalog.set_config(", b"\\restrict ", b"--")
PRIVILEGE_SECTIONS = ("ACL", "DEFAULT ACL")
SET_SESSION_AUTH = b"SET SESSION AUTHORIZATION "

# Owners of replayed objects need CREATE on their schema; grant it where they
# lack it, remember it in a temporary table, and take it back before the
# dump's own grants run, so the schema ends with exactly the snapshot's ACL.
GRANT_CREATE = """DO $snapmgr$
DECLARE
  grantee text;
BEGIN
  FOREACH grantee IN ARRAY {roles} LOOP
    IF NOT pg_catalog.has_schema_privilege(grantee, {schema}, 'CREATE') THEN
      EXECUTE pg_catalog.format('GRANT CREATE ON SCHEMA %I TO %I', {schema}, grantee);
      INSERT INTO pg_temp.snapmgr_grants VALUES ({schema}, grantee);
    END IF;
  END LOOP;
END
$snapmgr$;
"""
REVOKE_CREATE = """DO $snapmgr$
DECLARE
  item record;
BEGIN
  FOR item IN DELETE FROM pg_temp.snapmgr_grants RETURNING schema_name, grantee LOOP
    EXECUTE pg_catalog.format(
      'REVOKE CREATE ON SCHEMA %I FROM %I', item.schema_name, item.grantee);
  END LOOP;
END
$snapmgr$;
"""


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    """How pg_dump writes a role name: bare when it can, else double-quoted."""
    simple = name.isidentifier() and name == name.lower() and name.isascii()
    return name if simple else '"' + name.replace('"', '""') + '"'


def _unquote_literal(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    return text


def _text_array(names: Iterable[str]) -> str:
    return "ARRAY[" + ", ".join(sql_literal(name) for name in names) + "]::text[]"


class RestoreFilter:
    """The line filter for one restore; see the module doc."""

    def __init__(
        self,
        *,
        known_settings: frozenset[str] | None,
        apply_owners: bool,
        apply_privileges: bool,
        kept: frozenset[tuple[str, str]] = frozenset(),
        owner_roles: tuple[str, ...] = (),
        existing_schemas: tuple[str, ...] = (),
    ) -> None:
        self.known_settings = known_settings
        self.apply_owners = apply_owners
        self.apply_privileges = apply_privileges
        #: ``(type, name)`` of sections left out: the kept objects' own statements.
        self.kept = kept
        self.owner_roles = owner_roles if apply_owners else ()
        self._existing_schemas = existing_schemas
        self._in_prologue = True
        self._grants_open = False

    def __call__(self, line: bytes, section: Section | None) -> bytes:
        if self._in_prologue:
            if section is None:
                return self._prologue_line(line)
            self._in_prologue = False
            prefix = "".join(self._grant(schema) for schema in self._existing_schemas)
            return prefix.encode() + self._section_line(line, section)
        if section is None:
            if line == TRAILER:
                return self._close_grants() + line + b"\n"
            return line + b"\n"
        return self._section_line(line, section)

    def _prologue_line(self, line: bytes) -> bytes:
        """Header settings stay (if the target knows them); the --clean DROPs go."""
        if not line.strip() or not line.startswith(PROLOGUE_KEEP):
            return b"" if line.strip() else b"\n"
        if line.startswith(b"SET ") and self.known_settings is not None:
            name = line[4:].split(b"=", 1)[0].split(b" TO ", 1)[0].strip().decode().lower()
            if name not in self.known_settings:
                return b""
        return line + b"\n"

    def _section_line(self, line: bytes, section: Section) -> bytes:
        if (section.type, section.name) in self.kept:
            return b""
        if section.type in PRIVILEGE_SECTIONS:
            if not self.apply_privileges:
                return b""
            if line.startswith(b"-- Name: "):
                return self._close_grants() + line + b"\n"
            if line.startswith(SET_SESSION_AUTH):
                role = _unquote_literal(line[len(SET_SESSION_AUTH) :].rstrip(b";").decode())
                return f"SET ROLE {quote_ident(role)};\n".encode()
            if line == b"RESET SESSION AUTHORIZATION;":
                return b"RESET ROLE;\n"
        if line.startswith(b"ALTER ") and section.owner not in ("", "-"):
            suffix = f" OWNER TO {quote_ident(section.owner)};".encode()
            if line.endswith(suffix):
                if not self.apply_owners:
                    return b""
                if section.type == "SCHEMA":
                    return line + b"\n" + self._grant(section.name).encode()
        return line + b"\n"

    def _grant(self, schema: str) -> str:
        roles = [role for role in self.owner_roles if role]
        if not roles:
            return ""
        self._grants_open = True
        return GRANT_CREATE.format(roles=_text_array(roles), schema=sql_literal(schema))

    def _close_grants(self) -> bytes:
        if not self._grants_open:
            return b""
        self._grants_open = False
        return REVOKE_CREATE.encode()
