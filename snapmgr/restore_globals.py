"""A restore's treatment of event triggers and publications (a platform's, mostly).

Managed platforms keep event triggers and publications of their own in the
database they give the app (Supabase: its DDL watchers and the realtime
publication), owned by their superuser. A non-superuser may create no event
trigger and may not change another role's publication, so when the
restoring role may not act for the snapshot's owner of one of them:

* it is **kept**: the wipe leaves the target's object of that name, and the
  snapshot's sections for it (the object, its comment and security label,
  what the publication publishes) are left out of the replay;
* a kept publication's **members** among the restored tables are new tables
  after the restore, outside the publication: one warning line gives the
  ``ALTER PUBLICATION … ADD …;`` statements for its owner to run, as pg_dump
  wrote them;
* an object the target **lacks** is left out, and named.

The others (the restoring role's own, or every one for a superuser) are
dropped by the wipe and replayed like any object: their owners must exist,
and a same-named object in the target that the wipe cannot drop is refused
before anything changes. Snapshots made before snapmgr recorded these
(``global_objects`` empty) name their owners in ``owners`` and are planned as
before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from snapmgr.dumpscan import GLOBAL_TYPES, MEMBER_TYPES, parse_qualified_name, split_qualified_name
from snapmgr.manifest import Manifest

#: Event triggers and publications of the target, and whether the restoring
#: role may drop them (what the wipe asks, see :mod:`snapmgr.restore_sql`).
TARGET_GLOBALS_SQL = """
SELECT 'EVENT TRIGGER', evtname::text, pg_catalog.pg_has_role(evtowner, 'USAGE')
FROM pg_catalog.pg_event_trigger
UNION ALL
SELECT 'PUBLICATION', pubname::text, pg_catalog.pg_has_role(pubowner, 'USAGE')
FROM pg_catalog.pg_publication"""

Key = tuple[str, str]  # (type, name)


@dataclass(frozen=True)
class GlobalsPlan:
    """What :func:`plan_globals` decided."""

    #: ``(type, name)`` of the sections left out of the replay.
    sections: frozenset[Key] = frozenset()
    #: Names of the kept event triggers and publications, which the wipe leaves.
    kept_event_triggers: tuple[str, ...] = ()
    kept_publications: tuple[str, ...] = ()
    #: Owners of the replayed ones, which must exist.
    replayed_owners: tuple[str, ...] = ()
    #: One warning line, else "".
    left: str = ""
    problems: list[str] = field(default_factory=list)


def global_owners(manifest: Manifest) -> list[str]:
    """The roles that own the snapshot's event triggers and publications."""
    return sorted({owner for kind, _, owner, _ in manifest.global_objects if kind in GLOBAL_TYPES})


def plan_globals(
    db: Any,
    manifest: Manifest,
    *,
    actable: set[str],
    role: str,
    kept_schemas: tuple[str, ...],
    restored: frozenset[str] | None,
) -> GlobalsPlan:
    """Decide for each of the snapshot's event triggers and publications (see the
    module doc); ``actable``: those of :func:`global_owners` the restoring role
    may act for (all of them for a superuser); ``restored``: a partial
    restore's tables (``None``: all)."""
    objects = manifest.global_objects
    if not objects:
        return GlobalsPlan()
    owners = {(kind, name): owner for kind, name, owner, _ in objects if kind in GLOBAL_TYPES}
    foreign = {key: owner for key, owner in owners.items() if owner not in actable}
    target = {(str(kind), str(name)): bool(droppable) for kind, name, droppable in
              db.execute(TARGET_GLOBALS_SQL).fetchall()}  # fmt: skip
    problems = [
        f"the target's {kind.lower()} {name} belongs to a role {role} may not act for, and "
        "the snapshot's would replace it: drop it as its owner, or restore as a superuser"
        for (kind, name) in sorted(set(owners) - set(foreign))
        if (kind, name) in target and not target[(kind, name)]
    ]
    replayed = tuple(sorted({owners[key] for key in owners if key not in foreign}))
    if not foreign:
        return GlobalsPlan(replayed_owners=replayed, problems=problems)
    sections: set[Key] = set()
    statements: list[str] = []
    for kind, name, _, statement in objects:
        parent = _parent(kind, name, statement)
        if parent not in foreign:
            continue
        sections.add((kind, name))
        if kind in MEMBER_TYPES and parent in target and statement:
            member = name[len(parent[1]) + 1 :]
            if not _untouched(
                kind, member, statement, manifest, kept_schemas=kept_schemas, restored=restored
            ):
                statements.append(statement)
    kept = sorted(key for key in foreign if key in target)
    absent = sorted(key for key in foreign if key not in target)
    parts = []
    if kept:
        parts.append(f"kept as the target has them: {_names(kept)}")
    if absent:
        parts.append(f"the target lacks {_names(absent)}: left out")
    if statements:
        parts.append(
            "the restored tables are new tables, outside those publications; as their "
            f"owner run: {' '.join(statements)}"
        )
    who = ", ".join(sorted(set(foreign.values())))
    return GlobalsPlan(
        sections=frozenset(sections),
        kept_event_triggers=tuple(name for kind, name in kept if kind == "EVENT TRIGGER"),
        kept_publications=tuple(name for kind, name in kept if kind == "PUBLICATION"),
        replayed_owners=replayed,
        left=f"event triggers and publications of {who}, which {role} may not act for: "
        + "; ".join(parts),
        problems=problems,
    )


def _names(keys: list[Key]) -> str:
    return ", ".join(f"{kind.lower()} {name}" for kind, name in keys)


def _parent(kind: str, name: str, statement: str) -> Key | None:
    """The event trigger or publication a section belongs to."""
    if kind in GLOBAL_TYPES:
        return kind, name
    if kind in MEMBER_TYPES:  # "ALTER PUBLICATION <name> ADD …;": the tag is ambiguous
        rest = statement.removeprefix("ALTER PUBLICATION ")
        publication = _identifier(rest) if rest != statement else None
        return ("PUBLICATION", publication) if publication is not None else None
    for object_kind in GLOBAL_TYPES:  # COMMENT / SECURITY LABEL: "KIND <quoted name>"
        if name.startswith(f"{object_kind} "):
            target = _identifier(name[len(object_kind) + 1 :])
            return (object_kind, target) if target is not None else None
    return None


def _identifier(text: str) -> str | None:
    """The identifier at the start of ``text``, as pg_dump writes one (quoted when needed)."""
    parts = split_qualified_name(text)
    return parts[0] if parts is not None and len(parts) == 1 else None


def _untouched(
    kind: str,
    member: str,
    statement: str,
    manifest: Manifest,
    *,
    kept_schemas: tuple[str, ...],
    restored: frozenset[str] | None,
) -> bool:
    """Whether a publication member is left as it is: a schema the restore keeps
    or leaves out; a table left out of the snapshot or of a partial restore. (A
    table in a kept schema is emptied out and re-created: a new table.)"""
    if kind == "PUBLICATION TABLES IN SCHEMA":
        schema = _identifier(statement.partition(" ADD TABLES IN SCHEMA ")[2]) or member
        return restored is not None or schema in (*manifest.content.exclude_schemas, *kept_schemas)
    _, added, rest = statement.partition(" ADD TABLE ONLY ")
    table = parse_qualified_name(rest) if added else None
    if table is None:
        return False
    if restored is not None and table not in restored:
        return True
    return manifest.content.excludes(table)
