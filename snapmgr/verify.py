"""Re-read a stored snapshot and prove it whole: sha256, full decompress, trailer, rows.

``StoredSql`` is the one place that turns stored bytes back into SQL; both
``verify`` and ``restore`` consume it, so they check exactly the same things.
The stored bytes are read and hashed in one thread and decompressed and
scanned in another (an encrypted dump is decrypted in a third between them),
so a network read, the CPU work and the consumer (psql) overlap.

An encrypted snapshot read without a key is checked as far as that goes:
the stored bytes' sha256 and size (:func:`check_stored_object`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

from snapmgr.catalog import Entry, Store
from snapmgr.codec import Digest, decompressor
from snapmgr.dumpscan import DumpScanner, LineFilter
from snapmgr.encryption import Keyring, decrypt_stream, missing_key
from snapmgr.errors import NotFoundError, SnapmgrError, StorageError, VerificationError
from snapmgr.formats import NONE
from snapmgr.manifest import Manifest
from snapmgr.pipeline import Cancelled, Channel, Worker

CHUNK = 1 << 20
READ_AHEAD = 8  # stored (compressed) chunks read ahead of decompression
# Compressed bytes are inflated this many at a time. A whole 1 MiB chunk inflates
# to megabytes, which the allocator maps afresh for every chunk (a page fault per
# 4 KiB of SQL: nearly all the decoder's system time); pieces of a few hundred KiB
# mostly reuse memory that is already there.
DECODE_STEP = 256 << 10
SQL_AHEAD = 8  # decoded SQL pieces (about 0.7 MiB each from gzip) ready for the consumer


@dataclass(frozen=True)
class VerifyResult:
    """A verified copy: which snapshot, in which store, how many rows.

    ``decrypted`` is false for an encrypted copy checked without its key: only
    its sha256 and size were verified, and ``tables``/``rows`` are unknown."""

    manifest: Manifest
    store: Store
    tables: int | None
    rows: int | None
    decrypted: bool = True


class StoredSql:
    """Iterate over the SQL of a stored snapshot; raises ``VerificationError`` at the
    end if the bytes' sha256 or size differ from the manifest, the compressed
    stream is cut, or the dump lacks its trailer. ``scanner`` has the row counts.

    An encrypted dump needs ``keyring`` (else a usage error, exit 2, naming the ways
    to give a key). ``tap`` sees the stored stream as decrypted (still compressed),
    chunk by chunk: what ``rekey`` re-encrypts."""

    def __init__(
        self,
        manifest: Manifest,
        store: Store,
        *,
        rewrite: bool = False,
        line_filter: LineFilter | None = None,
        fingerprint: bool = False,
        keyring: Keyring | None = None,
        tap: Callable[[bytes], None] | None = None,
    ) -> None:
        if manifest.encrypted:
            if not keyring:
                raise missing_key(manifest.id, "reading it")
            keyring.check_can_read(manifest.id, manifest.recipients)
        self._keyring = keyring or Keyring()
        self._tap = tap
        self.manifest = manifest
        self.store = store
        self.scanner = DumpScanner(
            rewrite=rewrite, line_filter=line_filter, fingerprint=fingerprint
        )
        self._rewrite = rewrite
        self.digest = Digest()
        self.name = manifest.dump_name
        self.location = store.backend.location(self.name)
        self._cancel = threading.Event()

    def __iter__(self) -> Generator[bytes, None, None]:
        raw: Channel[bytes] = Channel(READ_AHEAD, self._cancel)
        sql: Channel[bytes] = Channel(SQL_AHEAD, self._cancel)
        reader = Worker("store-reader", self._read_into(raw), self._cancel)
        workers = [reader]
        stored = raw
        if self.manifest.encrypted:
            stored = Channel(READ_AHEAD, self._cancel)
            workers.append(Worker("age-decryptor", self._decrypt_into(raw, stored), self._cancel))
        decoder = Worker("sql-decoder", self._decode_into(stored, sql, reader), self._cancel)
        workers.append(decoder)
        for worker in workers:
            worker.start()
        try:
            yield from sql
        except Cancelled:
            pass  # a worker failed; its error is raised below
        finally:
            self._cancel.set()
            for worker in workers:
                worker.join()
        for worker in workers:
            if isinstance(worker.error, VerificationError):
                raise worker.error
        for worker in workers:
            if worker.error is not None:
                raise worker.error
        self._check_end()

    def _decode_into(
        self, raw: Channel[bytes], sql: Channel[bytes], reader: Worker
    ) -> Callable[[], None]:
        """Decode in a thread of its own, so that the consumer (psql's stdin, at the
        server's pace) is fed from a queue and never waits for decompression."""

        def run() -> None:
            for piece in self._decode(raw, reader):
                sql.put(piece)
            sql.close()

        return run

    def _decrypt_into(self, stored: Channel[bytes], plain: Channel[bytes]) -> Callable[[], None]:
        """Decrypt in a thread of its own: pyrage holds the GIL while it works."""

        def run() -> None:
            decrypt_stream(stored, plain.put, self._keyring, self.location)
            plain.close()

        return run

    def _read_into(self, channel: Channel[bytes]) -> Callable[[], None]:
        def run() -> None:
            try:
                with self.store.backend.open_reader(self.name) as handle:
                    while chunk := handle.read(CHUNK):
                        self.digest.update(chunk)
                        channel.put(chunk)
            except NotFoundError as exc:
                # The manifest exists, so the dump must: a missing one is a broken copy
                # (exit 6, and restore moves on to the next store's copy).
                raise VerificationError(
                    f"{self.location} is missing: this copy of {self.manifest.id} is incomplete"
                ) from exc
            except OSError as exc:
                raise StorageError(f"cannot read {self.location}: {exc}") from exc
            channel.close()

        return run

    def _decode(self, channel: Channel[bytes], reader: Worker) -> Iterator[bytes]:
        inflate = decompressor(self.manifest.compression)
        # Plain SQL is passed on whole, as it was stored: no copies, no pieces.
        step = CHUNK if self.manifest.compression == NONE.name else DECODE_STEP
        try:
            for chunk in channel:
                if self._tap is not None:
                    self._tap(chunk)
                for piece in _pieces(chunk, step):
                    yield from self._scan(inflate.decompress(piece))
            yield from self._scan(inflate.finish())
            tail = self.scanner.finish()
            if tail:
                yield tail
        except VerificationError as exc:
            raise VerificationError(f"{self.location}: {exc}") from None
        except Exception:
            if reader.error is not None:
                raise reader.error from None
            raise

    def _scan(self, sql: bytes) -> Iterator[bytes]:
        if not sql:
            return
        out = self.scanner.feed(sql)
        if self._rewrite:
            if out:
                yield out
        else:
            yield sql

    def _check_end(self) -> None:
        if self.digest.size != self.manifest.size:
            raise VerificationError(
                f"{self.location} has {self.digest.size} bytes, the manifest says "
                f"{self.manifest.size}: the copy is truncated or altered"
            )
        if self.digest.hexdigest() != self.manifest.sha256:
            raise VerificationError(
                f"{self.location}: sha256 differs from the manifest: the copy is corrupt"
            )
        reason = self.scanner.incomplete_reason()
        if reason:
            raise VerificationError(f"{self.location}: the dump is incomplete: {reason}")


def _pieces(chunk: bytes, step: int) -> Iterator[bytes | memoryview]:
    """``chunk`` itself if it fits in ``step`` bytes, else views of ``step`` bytes."""
    if len(chunk) <= step:
        yield chunk
        return
    with memoryview(chunk) as view:
        for start in range(0, len(chunk), step):
            yield view[start : start + step]


def check_counts(stream: StoredSql) -> None:
    """The row counts the stream's scan found must be its manifest's."""
    tables, expected = stream.scanner.tables, stream.manifest.tables
    if tables != expected:
        differing = sorted(
            name for name in set(tables) | set(expected) if tables.get(name) != expected.get(name)
        )
        raise VerificationError(
            f"{stream.location}: row counts differ from the manifest for {', '.join(differing[:5])}"
        )


def check_fingerprints(stream: StoredSql) -> None:
    """The content fingerprints of the stored dump must be its manifest's (when it has them)."""
    recorded = stream.manifest.fingerprints or {}
    if not recorded or stream.scanner.fingerprints is None:
        return
    found = stream.scanner.fingerprints.result()
    differing = [
        f"{kind} {name}"
        for kind, key in (("table", "tables"), ("large object", "large_objects"))
        for name in sorted(set(found[key]) | set(recorded.get(key) or {}))
        if found[key].get(name) != (recorded.get(key) or {}).get(name)
    ]
    if differing:
        raise VerificationError(
            f"{stream.location}: content fingerprints differ from the manifest for "
            f"{', '.join(differing[:5])}: the dump was altered"
        )


def check_stored_object(
    store: Store,
    name: str,
    size: int,
    expected: str,
    *,
    expected_from: str = "the manifest",
    algorithm: str = "sha256",
) -> None:
    """Re-read ``name`` in ``store``: its size and hash (``algorithm``, the
    manifest's sha256 unless the caller hashed what it wrote otherwise) must be these.

    The one "hash a stored copy and compare": ``verify`` of an encrypted copy
    without its key, snapshot's read-back before the commit (``expected_from``
    "what was written") and restore telling a corrupt copy (exit 6) from a
    failed replay (8). Raises ``VerificationError`` for a missing, truncated or
    altered copy and ``StorageError`` when the store cannot be read.
    """
    location = store.backend.location(name)
    digest = Digest(algorithms=(algorithm,))
    try:
        with store.backend.open_reader(name) as handle:
            digest.update_from(handle)
    except NotFoundError as exc:
        raise VerificationError(f"{location} is missing: this copy is incomplete") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {location}: {exc}") from exc
    if digest.size != size:
        raise VerificationError(
            f"{location} has {digest.size} bytes, {expected_from} {size}: "
            "the copy is truncated or altered"
        )
    if digest.hexdigest(algorithm) != expected:
        raise VerificationError(
            f"{location}: {algorithm} differs from {expected_from}: the copy is corrupt"
        )


def verify_copy(manifest: Manifest, store: Store, keyring: Keyring | None = None) -> VerifyResult:
    """Fully re-read one stored copy and compare it with its manifest; an encrypted
    copy without ``keyring``: its sha256 and size only (``decrypted`` false)."""
    if manifest.encrypted and not keyring:
        check_stored_object(store, manifest.dump_name, manifest.size, manifest.sha256)
        return VerifyResult(manifest, store, None, None, decrypted=False)
    stream = StoredSql(manifest, store, keyring=keyring, fingerprint=bool(manifest.fingerprints))
    for _ in stream:
        pass
    check_counts(stream)
    check_fingerprints(stream)
    tables = stream.scanner.tables
    return VerifyResult(manifest, store, len(tables), sum(tables.values()))


def verify_all_copies(entry: Entry, keyring: Keyring | None = None) -> list[VerifyResult]:
    """Verify every copy (each against its own store's manifest); raise the first
    failure after checking them all."""
    results: list[VerifyResult] = []
    failures: list[SnapmgrError] = []
    for store in entry.stores:
        try:
            results.append(verify_copy(entry.manifest_in(store), store, keyring))
        except SnapmgrError as exc:
            failures.append(exc)
    if failures:
        raise failures[0]
    return results
