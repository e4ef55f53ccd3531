"""Re-read a stored snapshot and prove it whole: sha256, full decompress, trailer, rows.

``read_sql`` is the one place that turns stored bytes back into SQL; both
``verify`` and ``restore`` consume it, so they check exactly the same things.
The stored bytes are read in one thread and decompressed, hashed and scanned
in another, so a network read, the CPU work and the consumer (psql) overlap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from snapmgr.catalog import Store
from snapmgr.codec import Digest, decompressor
from snapmgr.dumpscan import DumpScanner
from snapmgr.errors import NotFoundError, SnapmgrError, StorageError, VerificationError
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
    """A verified copy: which snapshot, in which store, how many rows."""

    manifest: Manifest
    store: Store
    tables: int
    rows: int


class StoredSql:
    """Iterate over the SQL of a stored snapshot; raises ``VerificationError`` at the
    end if the bytes' sha256 or size differ from the manifest, the compressed
    stream is cut, or the dump lacks its trailer. ``scanner`` has the row counts."""

    def __init__(self, manifest: Manifest, store: Store, *, rewrite: bool = False) -> None:
        self.manifest = manifest
        self.store = store
        self.scanner = DumpScanner(rewrite=rewrite)
        self._rewrite = rewrite
        self.digest = Digest()
        self.name = manifest.dump_name
        self.location = store.backend.location(self.name)
        self._cancel = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        raw: Channel[bytes] = Channel(READ_AHEAD, self._cancel)
        sql: Channel[bytes] = Channel(SQL_AHEAD, self._cancel)
        reader = Worker("store-reader", self._read_into(raw), self._cancel)
        decoder = Worker("sql-decoder", self._decode_into(raw, sql, reader), self._cancel)
        reader.start()
        decoder.start()
        try:
            yield from sql
        except Cancelled:
            pass  # a worker failed; its error is raised below
        finally:
            self._cancel.set()
            reader.join()
            decoder.join()
        if isinstance(decoder.error, VerificationError):
            raise decoder.error
        for worker in (reader, decoder):
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

    def _read_into(self, channel: Channel[bytes]) -> Callable[[], None]:
        def run() -> None:
            try:
                with self.store.backend.open_reader(self.name) as handle:
                    while chunk := handle.read(CHUNK):
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
        step = CHUNK if self.manifest.compression == "none" else DECODE_STEP
        try:
            for chunk in channel:
                self.digest.update(chunk)
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


def verify_copy(manifest: Manifest, store: Store) -> VerifyResult:
    """Fully re-read one stored copy and compare it with its manifest."""
    stream = StoredSql(manifest, store)
    for _ in stream:
        pass
    tables = stream.scanner.tables
    if tables != manifest.tables:
        differing = sorted(
            name
            for name in set(tables) | set(manifest.tables)
            if tables.get(name) != manifest.tables.get(name)
        )
        raise VerificationError(
            f"{stream.location}: row counts differ from the manifest for {', '.join(differing[:5])}"
        )
    return VerifyResult(manifest, store, len(tables), sum(tables.values()))


def verify_all_copies(manifest: Manifest, stores: tuple[Store, ...]) -> list[VerifyResult]:
    """Verify every copy; raise the first failure after checking them all."""
    results: list[VerifyResult] = []
    failures: list[SnapmgrError] = []
    for store in stores:
        try:
            results.append(verify_copy(manifest, store))
        except SnapmgrError as exc:
            failures.append(exc)
    if failures:
        raise failures[0]
    return results
