"""Take a snapshot: pg_dump → scan → compress + hash → every store, then commit.

The data flows one way through bounded channels::

    pg_dump stdout ─► reader (row counts, trailer) ─► compressor ─► [age encryptor]
                      ─► sha256 ─┬─► store A writer
                                 └─► store B writer

With ``encryption_recipients`` set, the compressed stream is encrypted (age)
in a stage of its own before it is hashed and stored, so only ciphertext
reaches a store. Each arrow is a thread boundary, so pg_dump, compression and uploads overlap
and the slowest sets the pace. A store that fails is dropped from the fan-out
(its partial object aborted) while the others go on; the snapshot then
commits in the stores that succeeded and the command reports the failed one.

The commit protocol, per store: the dump object is created exclusively, the
stored bytes are re-read and their sha256 compared, and only then is the
manifest written (exclusively): its presence is the commit point.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from snapmgr import __version__
from snapmgr.backends.base import Writer
from snapmgr.catalog import Store, open_exclusive
from snapmgr.codec import READBACK, Digest, compressor
from snapmgr.dumpscan import DumpScanner
from snapmgr.encryption import SCHEME, encrypt_stream
from snapmgr.errors import (
    DumpError,
    IdTakenError,
    Interrupted,
    NotFoundError,
    SnapmgrError,
    StorageError,
)
from snapmgr.inventory import Inventory
from snapmgr.manifest import (
    DatabaseInfo,
    DumpContent,
    Manifest,
    dump_name,
    make_id,
    manifest_name,
)
from snapmgr.pipeline import (
    PIPE_SIZE,
    BufferPool,
    Channel,
    Worker,
    enlarge_pipe,
    join_all,
    read_pipe,
    stdio_blocks,
)
from snapmgr.postgres import ConnInfo, ServerInfo, Tool, pg_dump_command
from snapmgr.progress import Progress
from snapmgr.redact import scrub
from snapmgr.signals import commit_passed, pause_point, signals_held
from snapmgr.verify import check_stored_object

log = logging.getLogger("snapmgr")

STOP_GRACE_S = 10.0  # how long an interrupted snapshot waits for its stages to stop
CHUNK = 1 << 20  # 1 MiB: large enough that per-chunk Python overhead is noise
RAW_QUEUE = 4
# Compressed 256 KiB at a time, gzip's output pieces (about 95 KiB) stay under the
# allocator's mmap threshold (128 KiB), so their memory is reused instead of being
# mapped afresh for every chunk, a page fault per 4 KiB. A chunk's pieces then go
# on as one: a quarter of the hashing calls, queue hand-offs, writer wake-ups and
# writes (0.08-0.16 s less CPU per 155 MB stored, medians of 12 alternating pairs;
# minor page faults unchanged).
COMPRESS_STEP = 256 << 10
STORE_QUEUE = 16
MAX_ID_ATTEMPTS = 100
STDERR_TAIL = 64 * 1024
PIPE_LOW_WATER = 256 << 10  # read once this much waits in the pipe ...
PIPE_NAP_S = 0.001  # ... else nap this long first (1 MiB pipe: ample at 1 GB/s)


@dataclass(frozen=True)
class SnapshotRequest:
    """What to dump and how."""

    conn: ConnInfo
    server: ServerInfo
    pg_dump: Tool
    label: str
    compression: str
    level: int | None
    tags: Mapping[str, str] = field(default_factory=dict)
    content: DumpContent = field(default_factory=lambda: DumpContent(True, True))
    inventory: Inventory | None = None
    #: age recipients (public keys) to encrypt to; empty: not encrypted.
    recipients: tuple[str, ...] = ()
    #: The database's size on disk (:func:`snapmgr.postgres.database_size`), which
    #: backends use to plan upload part sizes; ``None``: unknown.
    size_hint: int | None = None


@dataclass(frozen=True)
class SnapshotResult:
    """The committed manifest, where it was committed, and stores that failed.

    ``reused``: the snapshot was taken by another instance of the same deploy
    (see :mod:`snapmgr.deploylock`), not by this call."""

    manifest: Manifest
    committed: tuple[Store, ...]
    failed: tuple[tuple[Store, SnapmgrError], ...]
    reused: bool = False


@dataclass
class _Target:
    """One store's side of the fan-out."""

    store: Store
    writer: Writer
    channel: Channel[bytes]
    error: SnapmgrError | None = None
    committed: bool = False  # its dump object is complete and visible in the store


def _reserve(
    stores: list[Store],
    request: SnapshotRequest,
    now: datetime,
    size_hint: int | None = None,
) -> tuple[str, list[Writer]]:
    """Pick the first free ID for ``now`` and open an exclusive writer in every store."""
    label = request.label
    for attempt in range(1, MAX_ID_ATTEMPTS + 1):
        snapshot_id = make_id(label, now, attempt)
        name = dump_name(snapshot_id, request.compression, bool(request.recipients))
        try:
            for store in stores:
                _check_manifest_free(store, snapshot_id)
            return snapshot_id, open_exclusive(stores, name, size_hint)
        except IdTakenError:
            continue
    raise StorageError(f"could not find a free snapshot ID for {label} at {now:%H:%M:%S}")


def _check_manifest_free(store: Store, snapshot_id: str) -> None:
    try:
        store.backend.stat(manifest_name(snapshot_id))
    except NotFoundError:
        return
    raise IdTakenError(f"snapshot {snapshot_id} already exists in {store.describe()}")


class DumpRun:
    """One pg_dump child, its stderr tail, and the streaming stages around it."""

    def __init__(
        self, request: SnapshotRequest, targets: list[_Target], cancel: threading.Event
    ) -> None:
        self.request = request
        self.targets = targets
        self.cancel = cancel
        self.scanner = DumpScanner(fingerprint=True)
        #: sha256 for the manifest; the read-back compares the quicker xxh3.
        self.digest = Digest(algorithms=("sha256", READBACK))
        self.raw: Channel[bytearray] = Channel(RAW_QUEUE, self.cancel)
        # Queued chunks, plus the one being compressed and the one being read.
        self.buffers = BufferPool(RAW_QUEUE + 2, CHUNK, self.cancel)
        #: Compressed chunks on their way to the encryptor (``None``: not encrypted).
        self.sealing: Channel[bytes] | None = (
            Channel(RAW_QUEUE, self.cancel) if request.recipients else None
        )
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self._child = request.conn.for_child()
        try:
            self.proc = subprocess.Popen(
                stdio_blocks(
                    pg_dump_command(request.pg_dump, request.conn, request.content),
                    "output",
                    PIPE_SIZE,
                ),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=self._child.env,
                start_new_session=True,  # our signal handling decides when it stops
            )
        except BaseException:
            self.close()
            raise
        assert self.proc.stdout is not None
        enlarge_pipe(self.proc.stdout.fileno(), PIPE_SIZE)

    def read_stage(self) -> None:
        """pg_dump stdout → scanner → raw channel."""
        stdout = self.proc.stdout
        assert stdout is not None
        for chunk in read_pipe(stdout.fileno(), self.buffers.take, PIPE_LOW_WATER, PIPE_NAP_S):
            self.scanner.feed(chunk)
            self.raw.put(chunk)
        self.scanner.finish()
        self.raw.close()

    def compress_stage(self) -> None:
        """raw channel → compressor → sha256 → every live store channel, one
        compressed piece per raw chunk."""
        comp = compressor(self.request.compression, self.request.level)
        emit = self._fan_out if self.sealing is None else self._to_encryptor
        for chunk in self.raw:
            with memoryview(chunk) as view:
                pieces = [
                    comp.compress(view[start : start + COMPRESS_STEP])
                    for start in range(0, len(chunk), COMPRESS_STEP)
                ]
            self.buffers.give(chunk)  # compressors copy what they keep
            emit(b"".join(pieces))
        emit(comp.flush())
        if self.sealing is None:
            self._close_targets()
        else:
            self.sealing.close()

    def _to_encryptor(self, data: bytes) -> None:
        if data:
            assert self.sealing is not None
            self.sealing.put(data)

    def encrypt_stage(self) -> None:
        """compressed chunks → age encryption → sha256 → every live store channel."""
        assert self.sealing is not None
        encrypt_stream(self.sealing, self._fan_out, self.request.recipients)
        self._close_targets()

    def _close_targets(self) -> None:
        for target in self.targets:
            target.channel.close()  # failed stores drain until this marker too

    def _fan_out(self, data: bytes) -> None:
        if not data:
            return
        self.digest.update(data)
        live = [t for t in self.targets if t.error is None]
        if not live:
            raise self.targets[0].error or StorageError("every store failed")
        for target in live:
            target.channel.put(data)

    def store_stage(self, target: _Target) -> Callable[[], None]:
        """store channel → writer; a failure drops only this store."""

        def run() -> None:
            try:
                for data in target.channel:
                    target.writer.write(data)
            except Exception as exc:
                target.error = _as_storage_error(exc)
                with contextlib.suppress(Exception):
                    target.writer.abort()
                if all(t.error is not None for t in self.targets):
                    self.cancel.set()
                    return
                for _ in target.channel:  # keep draining so the fan-out never blocks on us
                    pass

        return run

    def stop(self) -> None:
        """Stop pg_dump (whole process group) if it is still running."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()

    def stderr_tail(self) -> str:
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - STDERR_TAIL))
        text = self._stderr.read().decode("utf-8", "replace")
        return scrub(text, self.request.conn.secrets())

    def close(self) -> None:
        self._stderr.close()
        self._child.close()


def take_snapshot(
    request: SnapshotRequest,
    stores: list[Store],
    progress: Progress,
    on_commit: Callable[[Manifest, list[Store]], None] | None = None,
) -> SnapshotResult:
    """Dump, store, verify and commit one snapshot in every store that succeeds.

    ``on_commit`` (the pointer update) runs right after the manifests, in the
    same window where SIGINT/SIGTERM are held, so an interrupt can never land
    between "committed" and "pointer updated". Until the manifests are
    written, any failure or interrupt removes what this attempt stored, the
    dump objects it already committed included (an interrupt raises
    ``Interrupted`` saying so, or naming what could not be removed); after
    them, the snapshot stands whatever signal arrives.
    """
    started = datetime.now(UTC)
    clock = time.monotonic()
    snapshot_id, writers = _reserve(stores, request, started, request.size_hint)
    log.debug("reserved %s in %d store(s)", snapshot_id, len(stores))
    cancel = threading.Event()
    targets = [
        _Target(store, writer, Channel(STORE_QUEUE, cancel))
        for store, writer in zip(stores, writers, strict=True)
    ]
    run: DumpRun | None = None
    try:
        run = DumpRun(request, targets, cancel)
        _stream(run, progress)
        _check_dump(run)
        with signals_held(deliver_after=True):
            pause_point("committing-dumps")
            _commit_writers(run)
        pause_point("after-dump-commit")
        live = [t for t in targets if t.error is None]
        _verify_stored(run, live, snapshot_id)
        manifest = _manifest(run, snapshot_id, started, time.monotonic() - clock)
    except BaseException as exc:
        with signals_held():
            removed, left = _discard(targets, dump_name(snapshot_id, request.compression))
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(_interrupted(snapshot_id, exc, removed, left)) from None
        for where, error in left:
            log.warning("could not remove %s after the failure: %s", where, error)
        raise
    finally:
        if run is not None:
            run.stop()
            run.close()
    with signals_held():
        pause_point("writing-manifests")
        committed = _write_manifests(manifest, live)
        commit_passed(f"snapshot {snapshot_id} was committed")
        if on_commit is not None:
            on_commit(manifest, [t.store for t in committed])
    pause_point("after-commit")
    failed = tuple((t.store, t.error) for t in targets if t.error is not None)
    return SnapshotResult(manifest, tuple(t.store for t in committed), failed)


def _discard(targets: list[_Target], name: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Abort every unfinished write and delete the dump objects this attempt
    committed: the stores it was removed from, and ``(location, error)`` of
    those where it could not be."""
    removed: list[str] = []
    left: list[tuple[str, str]] = []
    for target in targets:
        with contextlib.suppress(Exception):
            target.writer.abort()
        if not target.committed:
            continue
        try:
            target.store.backend.delete([name])
        except SnapmgrError as exc:
            left.append((target.store.backend.location(name), str(exc)))
        else:
            removed.append(target.store.describe())
    return removed, left


def _interrupted(
    snapshot_id: str, exc: KeyboardInterrupt, removed: list[str], left: list[tuple[str, str]]
) -> str:
    by = f" by {exc.args[0]}" if exc.args else ""
    message = f"snapshot {snapshot_id} interrupted{by}; nothing was committed"
    if left:
        shown = "; ".join(f"{where} ({error})" for where, error in left)
        return (
            f"{message}, but its dump could not be removed from {shown}: it is not a snapshot "
            "(no manifest, never listed or restored); delete it by hand, or prune removes it "
            "once older than orphan_grace"
        )
    if removed:
        return f"{message}: its dump, already stored in {', '.join(removed)}, was removed again"
    return message


def _stream(run: DumpRun, progress: Progress) -> None:
    workers = [
        Worker("dump-reader", run.read_stage, run.cancel),
        Worker("compressor", run.compress_stage, run.cancel),
        *([Worker("encryptor", run.encrypt_stage, run.cancel)] if run.sealing else []),
        *(Worker(f"store-{t.store.name}", run.store_stage(t), run.cancel) for t in run.targets),
    ]
    for worker in workers:
        worker.start()
    try:
        with progress:
            join_all(workers, lambda: progress.update(run.scanner.raw_size))
    except BaseException:
        run.cancel.set()
        run.stop()
        # A writer stuck in a store call cannot be woken; it is a daemon thread
        # and its writer is aborted by the caller, so do not wait for it forever.
        join_all(workers, timeout=STOP_GRACE_S)
        raise
    errors = [w.error for w in workers if w.error is not None]
    if errors:
        exited = run.proc.poll()  # before stop(): our own SIGTERM must not blame pg_dump
        run.stop()
        if exited not in (0, None):
            raise DumpError(_dump_failure(run) + "; nothing was committed") from errors[0]
        raise errors[0]
    if all(t.error is not None for t in run.targets):
        raise _first_store_error(run.targets)


def _as_storage_error(exc: Exception) -> SnapmgrError:
    """A store's failure as a snapmgr error, whatever the backend let through."""
    if isinstance(exc, SnapmgrError):
        return exc
    return StorageError(f"{type(exc).__name__}: {exc}")


def _first_store_error(targets: list[_Target]) -> SnapmgrError:
    target = next(t for t in targets if t.error is not None)
    assert target.error is not None
    return type(target.error)(f"store {target.store.describe()}: {target.error}")


def _dump_failure(run: DumpRun) -> str:
    """pg_dump's own error line (and its detail), not just its last words."""
    lines = [line.removeprefix("pg_dump: ") for line in run.stderr_tail().splitlines()]
    lines = [line for line in lines if line.strip()]
    first = next((i for i, line in enumerate(lines) if line.startswith("error:")), None)
    if first is None:
        return f"pg_dump failed: {lines[-1] if lines else f'exit code {run.proc.returncode}'}"
    error = " ".join(lines[first].removeprefix("error:").split())
    details = [
        " ".join(line.removeprefix("detail:").split())
        for line in lines[first + 1 : first + 3]
        if line.startswith("detail:")
    ]
    return f"pg_dump failed: {error}" + "".join(f" ({detail})" for detail in details)


def _check_dump(run: DumpRun) -> None:
    """pg_dump must exit 0 and its output must end with the 'dump complete' trailer."""
    code = run.proc.wait()
    if code != 0:
        raise DumpError(_dump_failure(run) + "; nothing was committed")
    reason = run.scanner.incomplete_reason()
    if reason:
        raise DumpError(f"pg_dump exited 0 but the dump is incomplete: {reason}")


def _commit_writers(run: DumpRun) -> None:
    for target in run.targets:
        if target.error is not None:
            continue
        try:
            target.writer.commit()
        except SnapmgrError as exc:
            target.error = exc
            target.writer.abort()
            continue
        target.committed = True
    if all(t.error is not None for t in run.targets):
        raise _first_store_error(run.targets)


def _verify_stored(run: DumpRun, live: list[_Target], snapshot_id: str) -> None:
    """Re-read every stored copy in parallel and compare its size and hash
    (:data:`snapmgr.codec.READBACK`) with what was written."""
    expected, size = run.digest.hexdigest(READBACK), run.digest.size
    name = dump_name(snapshot_id, run.request.compression, bool(run.request.recipients))

    def check(target: _Target) -> Callable[[], None]:
        def run_check() -> None:
            try:
                check_stored_object(
                    target.store,
                    name,
                    size,
                    expected,
                    expected_from="what was written",
                    algorithm=READBACK,
                )
            except Exception as exc:
                target.error = _as_storage_error(exc)
                with contextlib.suppress(Exception):
                    target.store.backend.delete([name])

        return run_check

    cancel = threading.Event()
    workers = [Worker(f"verify-{t.store.name}", check(t), cancel) for t in live]
    for worker in workers:
        worker.start()
    join_all(workers)
    if all(t.error is not None for t in live):
        raise _first_store_error(live)


def _manifest(run: DumpRun, snapshot_id: str, started: datetime, duration: float) -> Manifest:
    request = run.request
    inventory = request.inventory
    return Manifest(
        id=snapshot_id,
        label=request.label,
        created_at=started,
        duration_s=round(duration, 3),
        database=DatabaseInfo(
            name=request.server.database,
            host=request.conn.host,
            port=request.conn.port,
            user=request.conn.user,
            server_version=request.server.version,
        ),
        pg_dump_version=request.pg_dump.version,
        format="plain",
        compression=request.compression,
        compression_level=request.level,
        size=run.digest.size,
        raw_size=run.scanner.raw_size,
        sha256=run.digest.hexdigest(),
        tables=dict(sorted(run.scanner.tables.items())),
        tags=dict(request.tags),
        snapmgr_version=__version__,
        content=request.content,
        owners={role: sorted(owns) for role, owns in sorted(run.scanner.owners.items())},
        global_objects=run.scanner.global_objects,
        roles=inventory.roles if inventory else {},
        extensions=inventory.extensions if inventory else {},
        schemas=inventory.schemas if inventory else {},
        objects=inventory.objects if inventory else {},
        server_version_num=request.server.version_num,
        fingerprints=run.scanner.fingerprints.result() if run.scanner.fingerprints else {},
        timezone=inventory.timezone if inventory else None,
        partitions=inventory.partitions if inventory else {},
        database_props=inventory.database.to_dict() if inventory and inventory.database else {},
        encryption=SCHEME if request.recipients else None,
        recipients=list(request.recipients),
    )


def _stored_manifest(store: Store, name: str) -> bytes | None:
    """The manifest bytes in ``store``: ``None`` if certainly absent, ``b""`` if unknown."""
    try:
        with store.backend.open_reader(name) as handle:
            return handle.read()
    except NotFoundError:
        return None
    except Exception:
        return b""


def _write_manifests(manifest: Manifest, live: list[_Target]) -> list[_Target]:
    """The commit point: write the manifest into every store whose dump verified."""
    committed = []
    payload = manifest.to_json()
    for target in live:
        if target.error is not None:
            continue
        try:
            target.store.backend.put_bytes(manifest.manifest_name, payload)
        except SnapmgrError as exc:
            stored = _stored_manifest(target.store, manifest.manifest_name)
            if stored == payload:  # the write landed; only its reply was lost
                committed.append(target)
                continue
            target.error = exc
            if stored is None:  # certainly absent: the dump is ours to remove
                with contextlib.suppress(SnapmgrError):
                    target.store.backend.delete([manifest.dump_name])
            continue
        committed.append(target)
    if not committed:
        raise _first_store_error(live)
    return committed
