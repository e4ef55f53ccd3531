"""What is in the stores: committed snapshots, their copies, and orphans.

A snapshot exists in a store when its manifest exists there (the commit
point); a dump without a manifest is in progress or an orphan and is never
listed, resolved as ``latest`` or restored. When several stores hold the
same ID, the copies are merged and the stores are kept in the order given;
each copy keeps its own store's manifest, since a copy's stored object (and
its sha256) can differ from another's while ``rekey`` is under way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from snapmgr.backends.base import Backend, ObjectInfo, Writer, is_in_progress_name
from snapmgr.config import Config, StoreConfig
from snapmgr.errors import NotFoundError, SnapmgrError, StorageError, VerificationError
from snapmgr.manifest import Manifest, manifest_name, split_object_name, validate_id
from snapmgr.registry import open_backend

LATEST = "latest"
log = logging.getLogger("snapmgr")


@dataclass(frozen=True)
class Store:
    """A store opened for use: its configuration and its backend instance."""

    config: StoreConfig
    backend: Backend

    @property
    def name(self) -> str:
        return self.config.name

    def describe(self) -> str:
        """For messages: the redacted URL, after the store's name when it has one."""
        from snapmgr.redact import redact_url

        url = redact_url(self.config.url)
        name = self.config.name
        if name == self.config.url or "/" in name or ":" in name:  # inline: named by its URL
            return url
        return f"{name} ({url})"


def open_stores(config: Config, specs: list[str] | tuple[str, ...] = ()) -> list[Store]:
    """Open every selected store (``--store`` values, else the configured default)."""
    return [
        Store(sc, open_backend(sc.kind, sc.url, sc.options)) for sc in config.selected_stores(specs)
    ]


@dataclass(frozen=True)
class Entry:
    """A committed snapshot and the stores holding a copy of it, in store order.

    ``manifest`` is the first store's; ``copies`` (when known) holds each store's
    own manifest, in the order of ``stores``."""

    manifest: Manifest
    stores: tuple[Store, ...]
    copies: tuple[Manifest, ...] = ()

    @property
    def id(self) -> str:
        return self.manifest.id

    def manifest_in(self, store: Store) -> Manifest:
        """The manifest ``store`` holds for this snapshot: it names that copy's object."""
        for held, manifest in zip(self.stores, self.copies, strict=False):
            if held is store:
                return manifest
        return self.manifest


def read_manifest(store: Store, snapshot_id: str) -> Manifest:
    """The manifest of ``snapshot_id`` in ``store``; ``NotFoundError`` if not committed there."""
    name = manifest_name(snapshot_id)
    with store.backend.open_reader(name) as handle:
        try:
            raw = handle.read()
        except OSError as exc:
            raise StorageError(f"cannot read {store.backend.location(name)}: {exc}") from exc
    manifest = Manifest.from_json(raw, origin=store.backend.location(name))
    if manifest.id != snapshot_id:
        raise StorageError(
            f"{store.backend.location(name)} holds the manifest of {manifest.id}, not "
            f"{snapshot_id}; the store was tampered with"
        )
    return manifest


def store_manifests(store: Store) -> list[Manifest]:
    """Every committed snapshot in one store."""
    ids = []
    for info in store.backend.list_objects():
        parsed = split_object_name(info.name)
        if parsed and parsed[1] == "manifest":
            ids.append(parsed[0])
    manifests = []
    for snapshot_id in ids:
        try:
            manifests.append(read_manifest(store, snapshot_id))
        except NotFoundError:
            continue  # deleted between list and read: a concurrent prune
        except VerificationError as exc:
            # One damaged manifest must not stop list, check and every cron prune;
            # its snapshot is left out (never pruned, never `latest`) and named.
            log.warning("skipping %s: %s", snapshot_id, exc)
    return manifests


def list_entries(stores: list[Store]) -> list[Entry]:
    """Committed snapshots across ``stores``, merged by ID, newest first."""
    return merge_by_id((store, manifest) for store in stores for manifest in store_manifests(store))


def merge_by_id(copies: Iterable[tuple[Store, Manifest]]) -> list[Entry]:
    """One entry per snapshot ID, its copies in the order given, newest first: the
    one merge of several stores' manifests (``list``, ``latest``, ``prune``)."""
    by_id: dict[str, list[tuple[Store, Manifest]]] = {}
    for store, manifest in copies:
        by_id.setdefault(manifest.id, []).append((store, manifest))
    entries = [_entry(found) for found in by_id.values()]
    entries.sort(key=lambda e: (e.manifest.created_at, e.id), reverse=True)
    return entries


def _entry(copies: Sequence[tuple[Store, Manifest]]) -> Entry:
    return Entry(copies[0][1], tuple(s for s, _ in copies), tuple(m for _, m in copies))


def resolve(stores: list[Store], ref: str) -> Entry:
    """Find ``ref`` (an ID or ``latest``); raises ``NotFoundError`` with the stores searched."""
    where = ", ".join(store.describe() for store in stores)
    if ref == LATEST:
        entries = list_entries(stores)
        if not entries:
            raise NotFoundError(
                f"no committed snapshot in {where}; take one with `snapmgr snapshot`"
            )
        return entries[0]
    validate_id(ref)
    copies: list[tuple[Store, Manifest]] = []
    errors: list[SnapmgrError] = []
    for store in stores:
        try:
            copies.append((store, read_manifest(store, ref)))
        except NotFoundError:
            continue
        except SnapmgrError as exc:
            errors.append(exc)
            continue
    if not copies:
        if errors:
            raise errors[0]
        raise NotFoundError(f"snapshot {ref} not found in {where}; see `snapmgr list`")
    return _entry(copies)


def is_temp_name(name: str) -> bool:
    """A temp object named by the backends' scheme (``in_progress_name``): also the
    core's own, such as doctor's write probe, which no listing flags."""
    return is_in_progress_name(name)


@dataclass(frozen=True)
class Orphan:
    """A dump (or leftover temp file) with no manifest, and how old it is."""

    store: Store
    info: ObjectInfo

    def age_at(self, now: datetime) -> float:
        return (now - self.info.modified).total_seconds()


def orphans(store: Store) -> list[Orphan]:
    """Objects in ``store`` that belong to no committed snapshot: dumps without a
    manifest, temp files, and dumps beside the one their manifest names (what an
    interrupted ``rekey`` leaves: the old object, or a new one not yet committed)."""
    committed = set()
    beside: dict[str, list[ObjectInfo]] = {}  # each ID's other objects (dumps...)
    result = []
    for info in store.backend.list_objects():
        parsed = split_object_name(info.name)
        if info.in_progress or is_temp_name(info.name):
            result.append(Orphan(store, info))
        elif parsed is None:
            continue
        elif parsed[1] == "manifest":
            committed.add(parsed[0])
        else:
            beside.setdefault(parsed[0], []).append(info)
    for snapshot_id, found in beside.items():
        if snapshot_id not in committed:
            result += [Orphan(store, info) for info in found]
            continue
        dumps = [info for info in found if _kind(info.name) == "dump"]
        if len(dumps) > 1:
            result += [Orphan(store, info) for info in _unnamed_dumps(store, snapshot_id, dumps)]
    return result


def _kind(name: str) -> str | None:
    parsed = split_object_name(name)
    return parsed[1] if parsed else None


def _unnamed_dumps(store: Store, snapshot_id: str, found: list[ObjectInfo]) -> list[ObjectInfo]:
    """The dumps of a committed snapshot that its manifest does not name (none if
    the manifest cannot be read: then nothing is known to be spare)."""
    try:
        named = read_manifest(store, snapshot_id).dump_name
    except SnapmgrError:
        return []
    return [info for info in found if info.name != named]


def open_exclusive(
    stores: list[Store] | tuple[Store, ...], name: str, size_hint: int | None = None
) -> list[Writer]:
    """An exclusive writer for ``name`` in every store, or none: if one store cannot
    open it (``IdTakenError`` when the name is taken), those already open are aborted."""
    writers: list[Writer] = []
    try:
        for store in stores:
            writers.append(store.backend.open_writer(name, size_hint=size_hint))
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    return writers
