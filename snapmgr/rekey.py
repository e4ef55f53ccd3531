"""Re-encrypt stored snapshots to new age recipients (key rotation), commit-safe.

One snapshot at a time, with the same protocol as a snapshot::

    a copy ─► sha256 ─► age decrypt (old key) ─► decompress + scan (trailer, rows)
                                │ (the compressed stream, as it was before encryption)
                                └─► age encrypt (new recipients) ─► sha256
                                        ─► the new object in every store holding a copy
    commit the new objects; re-read each and compare sha256 and size
    [signals held] replace each store's manifest by one naming the new object  ← commit point
    delete the old objects

The new object is ``<id>.k<N>.sql.gz.age`` (the next key generation), beside
the old one, created exclusively. Until a store's manifest is replaced it
names the old object, untouched; from then on it names the new one, already
verified. A kill at any moment therefore leaves every copy whole and
readable with the old key or the new one; the object its manifest does not
name is an orphan that ``prune`` removes after ``orphan_grace``. Running
``rekey`` again finishes the job. A plaintext snapshot is encrypted the same
way. The row counts and every other plaintext fact in the manifest stay as
they are; its sha256, size, recipients and object name are the new object's.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from snapmgr.backends.base import Writer
from snapmgr.catalog import Entry, Store, open_exclusive
from snapmgr.codec import Digest
from snapmgr.encryption import SCHEME, Keyring, encrypt_stream, missing_key, short_key
from snapmgr.errors import IdTakenError, SnapmgrError, StorageError, VerificationError
from snapmgr.manifest import Manifest, dump_generation, dump_name
from snapmgr.pipeline import Cancelled, Channel, Worker, join_all
from snapmgr.signals import signals_held
from snapmgr.verify import StoredSql, check_counts, check_stored_object

log = logging.getLogger("snapmgr")

SEAL_QUEUE = 4  # compressed chunks waiting for the encryptor
MAX_GENERATION_ATTEMPTS = 20


@dataclass(frozen=True)
class RekeyResult:
    """What ``rekey`` did (or, in a dry run, would do) to one snapshot.

    ``action``: ``rekeyed`` (re-encrypted), ``encrypted`` (was plaintext), or
    ``unchanged`` (already encrypted to exactly these recipients)."""

    entry: Entry
    action: str
    old_objects: tuple[str, ...]
    new_object: str | None
    dry_run: bool = False


def rekey_action(entry: Entry, recipients: Sequence[str]) -> str:
    """What rekeying ``entry`` to ``recipients`` means for it."""
    copies = [entry.manifest_in(store) for store in entry.stores]
    if all(m.encrypted and set(m.recipients) == set(recipients) for m in copies):
        return "unchanged"
    return "rekeyed" if any(m.encrypted for m in copies) else "encrypted"


def check_key(entry: Entry, keyring: Keyring) -> None:
    """Reading an encrypted copy needs a key among its recipients (exit 2 or 6)."""
    encrypted = [m for m in (entry.manifest_in(s) for s in entry.stores) if m.encrypted]
    if not encrypted:
        return
    if not keyring:
        raise missing_key(entry.id, "rekey")
    errors = []
    for manifest in encrypted:
        try:
            keyring.check_can_read(entry.id, manifest.recipients)
            return
        except VerificationError as exc:
            errors.append(exc)
    raise errors[0]


def rekey_entry(
    entry: Entry,
    recipients: Sequence[str],
    keyring: Keyring,
    *,
    dry_run: bool = False,
    on_commit: Callable[[Entry], None] | None = None,
) -> RekeyResult:
    """Re-encrypt every copy of ``entry`` to ``recipients`` (see the module doc).

    The copies are read in store order until one verifies; every store holding
    a copy gets the same new object. ``on_commit`` (the pointer update) runs
    with the new manifests, while signals are held."""
    action = rekey_action(entry, recipients)
    old = tuple(entry.manifest_in(store).dump_name for store in entry.stores)
    if action == "unchanged":
        return RekeyResult(entry, action, old, None, dry_run)
    check_key(entry, keyring)
    if dry_run:
        return RekeyResult(entry, action, old, None, dry_run=True)
    failure: SnapmgrError | None = None
    for source in entry.stores:
        try:
            new = _Rekey(entry, source, recipients, keyring).run()
        except (VerificationError, StorageError) as exc:
            log.warning("cannot rekey %s from %s: %s", entry.id, source.describe(), exc)
            failure = failure or exc
            continue
        updated = _commit(entry, new, on_commit)
        return RekeyResult(updated, action, old, new.name)
    assert failure is not None
    raise failure


@dataclass(frozen=True)
class _NewObject:
    """The verified new object: its name, size and sha256, in every store."""

    name: str
    size: int
    sha256: str
    recipients: tuple[str, ...]


class _Rekey:
    """One pass: read the copy in ``source``, write the new object in every store."""

    def __init__(
        self, entry: Entry, source: Store, recipients: Sequence[str], keyring: Keyring
    ) -> None:
        self.entry = entry
        self.source = source
        self.recipients = tuple(recipients)
        self.keyring = keyring
        self.cancel = threading.Event()
        self.sealing: Channel[bytes] = Channel(SEAL_QUEUE, self.cancel)
        self.digest = Digest()

    def run(self) -> _NewObject:
        name, writers = _open_writers(self.entry)
        try:
            self._stream(writers)
            for writer in writers:
                writer.commit()
        except BaseException:
            for writer in writers:
                with contextlib.suppress(Exception):
                    writer.abort()
            raise
        new = _NewObject(name, self.digest.size, self.digest.hexdigest(), self.recipients)
        _check_new(self.entry, new)
        return new

    def _stream(self, writers: list[Writer]) -> None:
        manifest = self.entry.manifest_in(self.source)
        stream = StoredSql(manifest, self.source, keyring=self.keyring, tap=self._seal)
        encryptor = Worker("age-encryptor", self._encrypt_into(writers), self.cancel)
        encryptor.start()
        try:
            try:
                for _ in stream:
                    pass
            except SnapmgrError:
                if encryptor.error is not None:  # the root cause, not the reader's stop
                    raise encryptor.error from None
                raise
            check_counts(stream)
            self.sealing.close()
            join_all([encryptor])
        except BaseException:
            self.cancel.set()
            join_all([encryptor], timeout=10)
            raise
        if encryptor.error is not None:
            raise encryptor.error

    def _seal(self, chunk: bytes) -> None:
        """The decoder's tap: hand the compressed stream to the encryptor."""
        try:
            self.sealing.put(chunk)
        except Cancelled:
            raise SnapmgrError("the encryptor stopped") from None

    def _encrypt_into(self, writers: list[Writer]) -> Callable[[], None]:
        def emit(data: bytes) -> None:
            self.digest.update(data)
            for writer in writers:
                writer.write(data)

        def run() -> None:
            try:
                encrypt_stream(self.sealing, emit, self.recipients)
            except SnapmgrError:
                raise
            except Exception as exc:
                raise StorageError(f"cannot write the re-encrypted copy: {exc}") from exc

        return run


def _open_writers(entry: Entry) -> tuple[str, list[Writer]]:
    """Create the next generation's object exclusively in every store holding a copy
    (a generation an interrupted run left behind is skipped)."""
    base = entry.manifest
    generation = max(dump_generation(entry.manifest_in(s).dump_name) for s in entry.stores) + 1
    for attempt in range(MAX_GENERATION_ATTEMPTS):
        name = dump_name(entry.id, base.compression, True, generation + attempt)
        try:
            return name, open_exclusive(entry.stores, name, base.size)
        except IdTakenError:
            continue
    raise StorageError(f"cannot find a free object name for {entry.id}'s re-encrypted copy")


def _check_new(entry: Entry, new: _NewObject) -> None:
    """Re-read the new object in every store; on any mismatch remove them all."""
    try:
        for store in entry.stores:
            check_stored_object(store, new.name, new.size, new.sha256)
    except BaseException:
        for store in entry.stores:
            with contextlib.suppress(SnapmgrError):
                store.backend.delete([new.name])
        raise


def _commit(entry: Entry, new: _NewObject, on_commit: Callable[[Entry], None] | None) -> Entry:
    """Point each store's manifest at the new object, then delete the old objects."""
    copies = []
    with signals_held():
        for store in entry.stores:
            copies.append(_flip(store, _renamed(entry.manifest_in(store), new)))
        updated = Entry(copies[0], entry.stores, tuple(copies))
        if on_commit is not None:
            on_commit(updated)
    for store in entry.stores:
        old = entry.manifest_in(store).dump_name
        try:
            _drop(store, old)
        except SnapmgrError as exc:
            log.warning(
                "%s is rekeyed, but its old object %s could not be deleted (%s); "
                "prune removes it after orphan_grace",
                entry.id, store.backend.location(old), exc,
            )  # fmt: skip
    log.info(
        "rekeyed %s: %s, encrypted to %s",
        entry.id, new.name, ", ".join(short_key(key) for key in new.recipients),
    )  # fmt: skip
    return updated


def _renamed(manifest: Manifest, new: _NewObject) -> Manifest:
    return replace(
        manifest,
        encryption=SCHEME,
        recipients=list(new.recipients),
        size=new.size,
        sha256=new.sha256,
        dump_object=new.name,
    )


def _flip(store: Store, manifest: Manifest) -> Manifest:
    """The commit point in one store: its manifest now names the new object."""
    try:
        store.backend.put_bytes(manifest.manifest_name, manifest.to_json(), overwrite=True)
    except SnapmgrError as exc:
        raise StorageError(
            f"store {store.describe()}: cannot replace the manifest of {manifest.id} ({exc}); "
            "it still names the old object, which is intact; run rekey again"
        ) from exc
    return manifest


def _drop(store: Store, name: str) -> None:
    store.backend.delete([name])
