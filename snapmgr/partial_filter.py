"""Pick a few tables or schemas out of a dump, for ``restore --table/--schema``.

A partial restore replays only the sections of the stored dump that belong
to the chosen objects, into a target that keeps everything else (there is no
wipe). What belongs to a chosen table:

* its ``TABLE`` and ``TABLE DATA`` sections, and the ``COMMENT``, ``ACL`` and
  ``SECURITY LABEL`` sections that name it (``TABLE t``, ``COLUMN t.c``);
* the sequences it owns: a serial's ``SEQUENCE`` with the ``SEQUENCE OWNED
  BY`` section that follows it, an identity column's ``SEQUENCE`` section
  (``ALTER TABLE t ALTER COLUMN … ADD GENERATED``), their ``SEQUENCE SET``,
  comments and grants;
* ``DEFAULT``, ``CONSTRAINT``, ``CHECK CONSTRAINT``, ``INDEX``, ``TRIGGER``,
  ``POLICY`` and ``RULE`` sections on it;
* ``FK CONSTRAINT`` sections on it **only when the referenced table is chosen
  too**: a foreign key to a table left out is left out (the target may not
  have that table, or have other rows in it).

A chosen partitioned table brings every partition under it, at any depth
and in any schema (the manifest records which table each partition is
attached to): the partitions hold its rows. Their ``TABLE ATTACH`` sections
come with them, and an ``INDEX ATTACH`` when both indexes came. A partition
chosen without the table it is attached to is refused before anything is
touched: the replay could not attach it.

A chosen schema brings every section of that schema (and the schema's own
owner, comment and grants), with the same rule for foreign keys that point
out of the selection. Everything else (other tables, functions, types,
views, extensions, large objects) is left out: what the chosen tables need
of it must already exist in the target, or the replay fails and rolls back.

Each chosen table's schema is created first with ``CREATE SCHEMA IF NOT
EXISTS``; a chosen schema's own ``CREATE SCHEMA`` becomes ``… IF NOT
EXISTS``, followed by the snapshot's owner, comment and grants for it.

A section whose decision needs its text (an index names its table only in
its statement) is held back until the next section header arrives; they are
a few lines each. ``TABLE DATA`` is decided at its header, since its COPY
payload follows; the scanner drops the payload of a COPY this filter
dropped. Lines that are kept go on through :class:`RestoreFilter`, which
handles the prologue, owners and privileges exactly as for a full restore.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from snapmgr.dumpscan import TRAILER, Section, parse_qualified_name, split_qualified_name
from snapmgr.errors import NotFoundError, RestoreError, UsageError
from snapmgr.restore_filter import RestoreFilter

# Where a section's statement names a table, a sequence or a referenced table.
_ALTER_TABLE = re.compile(rb"ALTER TABLE (?:ONLY )?")
_ON = re.compile(rb" ON (?:ONLY )?")
_RULE_ON = re.compile(rb" AS\s+ON \w+ TO (?:ONLY )?")
_REFERENCES = re.compile(rb" REFERENCES (?:ONLY )?")
_SEQUENCE_NAME = re.compile(rb"SEQUENCE NAME ")
_OWNED_BY = re.compile(rb" OWNED BY ")
_SETVAL = re.compile(rb"setval\('")
_ATTACH = re.compile(rb" ATTACH PARTITION ")
_ALTER_INDEX = re.compile(rb"ALTER INDEX ")
_ADD_CONSTRAINT = re.compile(rb" ADD CONSTRAINT ")
TABLE_PARTS = (
    "DEFAULT",
    "CONSTRAINT",
    "CHECK CONSTRAINT",
    "TRIGGER",
    "POLICY",
    "ROW SECURITY",
    "RULE",
    "INDEX",
)
NAMED_SECTIONS = ("COMMENT", "ACL", "SECURITY LABEL")
# pg_dump sets these between sections; harmless, and what follows may rely on them.
KEPT_SETS = (b"SET default_tablespace = ", b"SET default_table_access_method = ")

Held = tuple[Section, list[bytes]]


@dataclass(frozen=True)
class Selection:
    """What a partial restore brings back: ``schema.table`` names and whole schemas."""

    tables: frozenset[str]
    schemas: frozenset[str]

    def has_table(self, name: str) -> bool:
        return name in self.tables or name.split(".", 1)[0] in self.schemas

    def target_schemas(self) -> tuple[str, ...]:
        """The chosen tables' schemas, created up front if missing (a chosen schema
        is created by its own section instead, so that it gets the snapshot's owner
        and grants exactly)."""
        names = {name.split(".", 1)[0] for name in self.tables} - set(self.schemas)
        return tuple(sorted(names))

    def restored_tables(self, snapshot_tables: dict[str, int]) -> dict[str, int]:
        """The snapshot's row counts of the tables this selection restores."""
        return {name: rows for name, rows in snapshot_tables.items() if self.has_table(name)}


def quote_name(name: str) -> str:
    """A name as an identifier, always quoted (right for any name)."""
    return '"' + name.replace('"', '""') + '"'


def _name_after(pattern: re.Pattern[bytes], text: bytes) -> str | None:
    match = pattern.search(text)
    if match is None:
        return None
    return parse_qualified_name(text[match.end() :].decode("utf-8", "replace"))


def _statement(text: bytes) -> bytes:
    """A held section's text from its first line that is not a comment."""
    lines = text.split(b"\n")
    for index, line in enumerate(lines):
        if line and not line.startswith(b"--"):
            return b"\n".join(lines[index:])
    return b""


def _if_not_exists(line: bytes, section: Section) -> bytes:
    """A chosen schema may already be in the target: create it only if it is not."""
    if section.type == "SCHEMA" and line.startswith(b"CREATE SCHEMA "):
        return b"CREATE SCHEMA IF NOT EXISTS " + line[len(b"CREATE SCHEMA ") :]
    return line


class PartialFilter:
    """The line filter for a partial restore; see the module doc."""

    def __init__(self, selection: Selection, inner: RestoreFilter) -> None:
        self.selection = selection
        self.inner = inner
        self._current: Section | None = None
        self._pending: list[Held] = []
        #: ``schema.sequence`` of the sequences restored with their tables.
        self._sequences: set[str] = set()
        #: ``schema.index`` of the indexes (and constraint indexes) restored.
        self._indexes: set[str] = set()
        self._sending_data = False

    def __call__(self, line: bytes, section: Section | None) -> bytes:
        if section is None:
            # The prologue, or the trailer and what follows it.
            out = self._flush() if line == TRAILER else b""
            return out + self.inner(line, None)
        if section is not self._current:
            first = self._current is None
            self._current = section
            out = self._header(line, section)
            if first:
                created = "".join(
                    f"CREATE SCHEMA IF NOT EXISTS {quote_name(name)};\n"
                    for name in self.selection.target_schemas()
                )
                out = created.encode() + out
            return out
        if self._sending_data:
            return self.inner(line, section)
        self._pending[-1][1].append(line)
        return b""

    def _header(self, line: bytes, section: Section) -> bytes:
        """A new section begins: decide what is held back, then hold or send this one."""
        if section.type == "SEQUENCE OWNED BY" and self._pending:
            previous = self._pending[-1][0]
            if previous.type == "SEQUENCE" and previous.name == section.name:
                self._pending.append((section, [line]))  # decided with its sequence
                return b""
        out = self._flush()
        self._sending_data = section.type == "TABLE DATA" and self.selection.has_table(
            f"{section.schema}.{section.name}"
        )
        if self._sending_data:
            return out + self.inner(line, section)
        self._pending.append((section, [line]))  # a dropped TABLE DATA is never sent
        return out

    def _flush(self) -> bytes:
        """Decide the held-back sections; what of them is sent."""
        pending, self._pending = self._pending, []
        if not pending:
            return b""
        out: list[bytes] = []
        for (section, lines), kept in zip(pending, self._decide(pending), strict=True):
            for line in lines:
                if kept:
                    out.append(self.inner(_if_not_exists(line, section), section))
                elif line.startswith(KEPT_SETS):
                    out.append(line + b"\n")
        return b"".join(out)

    def _decide(self, pending: list[Held]) -> list[bool]:
        section, lines = pending[0]
        if section.type == "SEQUENCE":
            return self._sequence(pending)
        text = _statement(b"\n".join(lines))
        keep = self._keep(section, text)
        if keep and section.type in ("INDEX", "CONSTRAINT"):
            self._indexes.add(self._index_name(section, text))
        return [keep]

    @staticmethod
    def _index_name(section: Section, text: bytes) -> str:
        """``schema.index`` an INDEX or a (unique, primary key) CONSTRAINT section makes."""
        if section.type == "CONSTRAINT":
            match = _ADD_CONSTRAINT.search(text)
            rest = text[match.end() :].decode("utf-8", "replace") if match else ""
            parts = split_qualified_name(rest) or [""]
            return f"{section.schema}.{parts[0]}"
        return f"{section.schema}.{section.name}"

    def _sequence(self, pending: list[Held]) -> list[bool]:
        """A sequence goes with the table that owns it (serial or identity column)."""
        section, lines = pending[0]
        qualified = f"{section.schema}.{section.name}"
        text = _statement(b"\n".join(lines))
        if text.startswith(b"ALTER TABLE ") and b" ADD GENERATED " in text:
            keep = self.selection.has_table(_name_after(_ALTER_TABLE, text) or "")
            if keep:
                self._sequences.add(_name_after(_SEQUENCE_NAME, text) or qualified)
            return [keep]
        owner = ""
        if len(pending) > 1:
            owned_by = _OWNED_BY.search(b"\n".join(pending[1][1]))
            if owned_by is not None:
                rest = b"\n".join(pending[1][1])[owned_by.end() :].decode("utf-8", "replace")
                parts = split_qualified_name(rest)
                owner = ".".join(parts[:2]) if parts and len(parts) == 3 else ""
        owner_kept = bool(owner) and self.selection.has_table(owner)
        keep = owner_kept or section.schema in self.selection.schemas
        if keep:
            self._sequences.add(qualified)
        return [keep, owner_kept][: len(pending)]

    def _keep(self, section: Section, text: bytes) -> bool:
        """Whether one held section (``text``: its statement) belongs to the selection."""
        selection = self.selection
        if section.type == "TABLE DATA":
            return False  # a chosen table's data was sent, not held
        if section.type == "FK CONSTRAINT":
            # Only between chosen tables: a key to a table left out is left out too.
            table = _name_after(_ALTER_TABLE, text) or ""
            referenced = _name_after(_REFERENCES, text) or ""
            return selection.has_table(table) and selection.has_table(referenced)
        if section.type == "SEQUENCE SET":
            return _name_after(_SETVAL, text) in self._sequences
        if section.type == "TABLE ATTACH":
            return self._attach(text)
        if section.type == "INDEX ATTACH":
            parent = _name_after(_ALTER_INDEX, text)
            return parent in self._indexes and _name_after(_ATTACH, text) in self._indexes
        if section.schema in selection.schemas:
            return True
        if section.type == "SCHEMA":
            return section.name in selection.schemas
        if section.type in NAMED_SECTIONS:
            return self._named(section)
        if section.type == "TABLE":
            return f"{section.schema}.{section.name}" in selection.tables
        if section.type in TABLE_PARTS:
            if text.startswith(b"ALTER TABLE "):
                pattern = _ALTER_TABLE
            else:
                pattern = _RULE_ON if section.type == "RULE" else _ON
            return selection.has_table(_name_after(pattern, text) or "")
        return False

    def _attach(self, text: bytes) -> bool:
        """A partition's ``ALTER TABLE ONLY parent ATTACH PARTITION child``: with both,
        or neither. One without the other can only be a snapshot that predates the
        manifest's partition records; the replay stops (and rolls back) saying so."""
        parent = _name_after(_ALTER_TABLE, text) or ""
        child = _name_after(_ATTACH, text) or ""
        with_parent, with_child = self.selection.has_table(parent), self.selection.has_table(child)
        if with_parent != with_child:
            raise RestoreError(
                f"{child} is a partition of {parent}, and this snapshot was made before "
                "snapmgr recorded partitions, so a partial restore cannot bring them back "
                "together: restore the whole snapshot into a scratch database "
                "(--target-url URL --create) and copy the rows from there"
            )
        return with_parent

    def _named(self, section: Section) -> bool:
        """A comment, grant or label on ``SCHEMA s``/``TABLE t``/``COLUMN t.c``/``SEQUENCE s``."""
        kind, _, name = section.name.partition(" ")
        if kind == "SCHEMA":
            return name in self.selection.schemas
        if kind == "TABLE":
            return f"{section.schema}.{name}" in self.selection.tables
        if kind == "COLUMN":
            return f"{section.schema}.{name.rsplit('.', 1)[0]}" in self.selection.tables
        if kind == "SEQUENCE":
            return f"{section.schema}.{name}" in self._sequences
        return False


def select(
    manifest_tables: dict[str, int],
    schemas_known: set[str],
    *,
    tables: list[str],
    schemas: list[str],
    partitions: Mapping[str, str] | None = None,
) -> Selection:
    """The selection for ``--table``/``--schema``, with every partition of a chosen
    partitioned table (``partitions``: the manifest's ``{partition: parent}``).

    ``NotFoundError`` (exit 7) names every name the snapshot does not hold, and
    ``UsageError`` (exit 2) a partition chosen without its parent, before
    anything is touched.
    """
    partitions = partitions or {}
    # A partitioned table has no data of its own, hence no row count: the
    # partition records name it.
    known_tables = set(manifest_tables) | set(partitions) | set(partitions.values())
    known_schemas = schemas_known | {name.split(".", 1)[0] for name in known_tables}
    missing = [f"table {name}" for name in tables if name not in known_tables]
    missing += [f"schema {name}" for name in schemas if name not in known_schemas]
    if missing:
        raise NotFoundError(
            f"the snapshot holds no {', no '.join(missing)} (tables are named "
            "schema.table, as `snapmgr show ID` lists them); nothing was restored"
        )
    chosen = Selection(tables=frozenset(tables), schemas=frozenset(schemas))
    for name in sorted(t for t in known_tables if chosen.has_table(t)):
        parent = partitions.get(name)
        if parent is not None and not chosen.has_table(parent):
            root = parent
            while root in partitions:
                root = partitions[root]
            raise UsageError(
                f"{name} is a partition of {parent}: restore the partitioned table "
                f"(--table {root}), its partitions come with it; nothing was restored"
            )
    children: dict[str, list[str]] = {}
    for child, parent in partitions.items():
        children.setdefault(parent, []).append(child)
    found = [t for t in known_tables if chosen.has_table(t)]
    expanded = set(tables)
    while found:
        for child in children.get(found.pop(), []):
            if child not in expanded:
                expanded.add(child)
                found.append(child)
    return Selection(tables=frozenset(expanded), schemas=frozenset(schemas))
