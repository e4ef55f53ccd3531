"""Snapshot IDs and the manifest: the JSON record whose presence commits a snapshot.

An ID is ``<label>_YYYYMMDD_HHMMSS`` in UTC, with ``-2``, ``-3``... appended
when the same label is snapshotted twice in one second. IDs are checked
against a strict pattern before any storage call, so no ID can carry a path
separator or ``..`` into a store. Ordering always uses ``created_at`` from
the manifest, never the name.

The dump's name is ``<id>.sql.gz`` (``.sql.zst``, ``.sql``), plus ``.age``
when encrypted. ``rekey`` writes the re-encrypted dump beside the old one as
``<id>.k<N>.sql.gz.age`` (generation N) and the manifest then names it
(``dump_object``): the manifest always says which object is the snapshot.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from snapmgr.errors import UsageError, VerificationError
from snapmgr.formats import COMPRESSIONS, ENCRYPTED_SUFFIX, ENCRYPTION

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")
MANIFEST_SUFFIX = ".json"
#: The last drill's result, beside the snapshot: not part of the commit point,
#: deleted with the snapshot.
DRILL_SUFFIX = ".drill.json"
ENCRYPTIONS = (ENCRYPTION,)
MANIFEST_VERSION = 1
#: Every dump suffix, longest first so ``.sql.gz`` is not read as ``.sql``.
_SUFFIXES = "|".join(
    re.escape(c.suffix) for c in sorted(COMPRESSIONS.values(), key=lambda c: -len(c.suffix))
)
_DUMP_NAME = re.compile(
    r"^(?P<id>.+?)(?:\.k(?P<generation>[1-9][0-9]{0,5}))?"
    rf"(?P<suffix>(?:{_SUFFIXES})(?:{re.escape(ENCRYPTED_SUFFIX)})?)$"
)


def validate_id(snapshot_id: str) -> str:
    """Return the ID unchanged, or raise a usage error naming the rule it breaks."""
    if not ID_PATTERN.match(snapshot_id) or ".." in snapshot_id:
        raise UsageError(
            f"invalid snapshot ID {snapshot_id!r}: IDs are letters, digits, '_', '.', '-' "
            "(up to 128, starting with a letter or digit); see `snapmgr list`"
        )
    return snapshot_id


def validate_label(label: str) -> str:
    """Labels become the start of IDs, so they obey the same alphabet."""
    if not LABEL_PATTERN.match(label) or ".." in label:
        raise UsageError(
            f"invalid label {label!r}: use letters, digits, '_', '.', '-' (up to 101 characters)"
        )
    return label


def make_id(label: str, when: datetime, attempt: int = 1) -> str:
    """The ID for a snapshot of ``label`` taken at ``when``; attempt 2+ adds a suffix."""
    stamp = when.astimezone(UTC).strftime("%Y%m%d_%H%M%S")
    base = f"{validate_label(label)}_{stamp}"
    return base if attempt == 1 else f"{base}-{attempt}"


def dump_name(
    snapshot_id: str, compression: str, encrypted: bool = False, generation: int = 1
) -> str:
    """The dump's object name for an ID, compression, encryption and key generation."""
    marker = f".k{generation}" if generation > 1 else ""
    suffix = COMPRESSIONS[compression].suffix + (ENCRYPTED_SUFFIX if encrypted else "")
    return validate_id(snapshot_id) + marker + suffix


def dump_generation(name: str) -> int:
    """The key generation in a dump's name: 1 unless ``rekey`` wrote it."""
    match = _DUMP_NAME.match(name)
    return int(match["generation"]) if match and match["generation"] else 1


def manifest_name(snapshot_id: str) -> str:
    """The manifest's object name for an ID."""
    return validate_id(snapshot_id) + MANIFEST_SUFFIX


def drill_name(snapshot_id: str) -> str:
    """The object name of a snapshot's last drill result."""
    return validate_id(snapshot_id) + DRILL_SUFFIX


def split_object_name(name: str) -> tuple[str, str] | None:
    """``("id", "manifest"|"dump"|"drill")`` for a snapshot object name, else ``None``."""
    if name.endswith(DRILL_SUFFIX):
        stem, kind = name[: -len(DRILL_SUFFIX)], "drill"
    elif name.endswith(MANIFEST_SUFFIX):
        stem, kind = name[: -len(MANIFEST_SUFFIX)], "manifest"
    else:
        match = _DUMP_NAME.match(name)
        if match is None:
            return None
        stem, kind = match["id"], "dump"
    if not ID_PATTERN.match(stem) or ".." in stem:
        return None
    return stem, kind


@dataclass(frozen=True)
class DatabaseInfo:
    """Which database was dumped. Never holds a password."""

    name: str
    host: str
    port: int | None
    user: str
    server_version: str


@dataclass(frozen=True)
class DumpContent:
    """What a snapshot holds besides the data: owners, privileges, what is left out.

    Snapshots taken before these were recorded had neither owners nor
    privileges (``--no-owner --no-acl``), hence the defaults when reading one.
    """

    owners: bool = False
    privileges: bool = False
    exclude_schemas: tuple[str, ...] = ()
    exclude_tables: tuple[str, ...] = ()

    def excludes(self, table: str) -> bool:
        """Whether ``schema.table`` was left out of the snapshot."""
        return table in self.exclude_tables or table.partition(".")[0] in self.exclude_schemas

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DumpContent:
        known = _known(cls, data)
        for name in ("exclude_schemas", "exclude_tables"):
            known[name] = tuple(str(item) for item in known.get(name, ()))
        return cls(**known)


@dataclass(frozen=True)
class Manifest:
    """Everything snapmgr knows about one committed snapshot."""

    id: str
    label: str
    created_at: datetime
    duration_s: float
    database: DatabaseInfo
    pg_dump_version: str
    format: str
    compression: str
    compression_level: int | None
    size: int
    raw_size: int
    sha256: str
    tables: dict[str, int]
    tags: dict[str, str] = field(default_factory=dict)
    pinned: bool = False
    snapmgr_version: str = ""
    manifest_version: int = MANIFEST_VERSION
    #: Owners and privileges captured, schemas and tables left out.
    content: DumpContent = field(default_factory=DumpContent)
    #: ``{role: ["schema S" | "in S" | "global", ...]}``: what each owner owns in the dump.
    owners: dict[str, list[str]] = field(default_factory=dict)
    #: Other roles the database's objects name, by use: ``acl``, ``policy``.
    roles: dict[str, list[str]] = field(default_factory=dict)
    #: ``{name: {"version", "schema", "owner"}}`` of the installed extensions.
    extensions: dict[str, dict[str, str]] = field(default_factory=dict)
    #: ``{name: {"owner", "acl"}}`` of the dumped schemas, to compare with a target's.
    schemas: dict[str, dict[str, str | None]] = field(default_factory=dict)
    #: Relations and other objects the dump creates: what a restore must lock.
    objects: dict[str, int] = field(default_factory=dict)
    server_version_num: int | None = None
    #: ``{"algorithm", "tables": {name: hex}, "large_objects": {oid: hex}}`` of the data.
    fingerprints: dict[str, Any] = field(default_factory=dict)
    #: The dumping session's TimeZone, which shaped timestamptz values in the dump.
    timezone: str | None = None
    #: ``"age"`` when the stored dump is encrypted (age v1 format), else ``None``.
    encryption: str | None = None
    #: The age recipients (public keys) the dump is encrypted to.
    recipients: list[str] = field(default_factory=list)
    #: The dump's object name, when not the one the ID gives (after ``rekey``).
    dump_object: str | None = None
    #: ``{partition: the table it is attached to}`` (``schema.table``); empty in
    #: snapshots made before snapmgr recorded it.
    partitions: dict[str, str] = field(default_factory=dict)
    #: The database object's own ``{"grants": [[grantee, privilege, grantable]…],
    #: "settings": ["name=value"…]}`` (see :mod:`snapmgr.database_props`); empty
    #: in snapshots made before snapmgr recorded them.
    database_props: dict[str, Any] = field(default_factory=dict)
    #: ``[[type, name, owner, statement]…]``: event triggers, publications and what
    #: they publish (see :data:`snapmgr.dumpscan.GLOBAL_TYPES`), kept out of
    #: ``owners``; in snapshots made before snapmgr recorded them, those owners
    #: are in ``owners`` ("global") and this is empty.
    global_objects: list[list[str]] = field(default_factory=list)

    @property
    def dump_name(self) -> str:
        if self.dump_object is not None:
            return self.dump_object
        return dump_name(self.id, self.compression, self.encryption is not None)

    @property
    def encrypted(self) -> bool:
        return self.encryption is not None

    @property
    def manifest_name(self) -> str:
        return manifest_name(self.id)

    @property
    def drill_name(self) -> str:
        return drill_name(self.id)

    @property
    def total_rows(self) -> int:
        return sum(self.tables.values())

    def with_pinned(self, pinned: bool) -> Manifest:
        return replace(self, pinned=pinned)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = _format_time(self.created_at)
        return data

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes, *, origin: str) -> Manifest:
        """Parse and check a manifest; ``origin`` names where it came from in errors."""
        try:
            data = json.loads(raw)
            database = DatabaseInfo(**_known(DatabaseInfo, data.pop("database")))
            created = _parse_time(data.pop("created_at"))
            content = DumpContent.from_dict(data.pop("content", None) or {})
            manifest = cls(
                database=database, created_at=created, content=content, **_known(cls, data)
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise VerificationError(
                f"manifest {origin} is unreadable ({exc}); it may be corrupt or from a newer "
                "snapmgr"
            ) from exc
        validate_id(manifest.id)
        if manifest.compression not in COMPRESSIONS:
            raise VerificationError(
                f"manifest {origin} names unknown compression {manifest.compression!r}"
            )
        if manifest.encryption is not None and manifest.encryption not in ENCRYPTIONS:
            raise VerificationError(
                f"manifest {origin} names unknown encryption {manifest.encryption!r}; "
                "it may be from a newer snapmgr"
            )
        if manifest.dump_object is not None and split_object_name(manifest.dump_object) != (
            manifest.id,
            "dump",
        ):
            raise VerificationError(
                f"manifest {origin} names dump {manifest.dump_object!r}, not one of "
                f"{manifest.id}'s; the store was tampered with"
            )
        return manifest


def _known(kind: type, data: dict[str, Any]) -> dict[str, Any]:
    """Fields this version knows: a newer snapmgr may add more, older ones ignore them."""
    names = {f.name for f in fields(kind)}
    return {key: value for key, value in data.items() if key in names}


def _format_time(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"created_at {text!r} has no time zone")
    return parsed.astimezone(UTC)
