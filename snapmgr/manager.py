"""The public Python API: ``SnapshotManager(config).snapshot()`` and friends.

The CLI is a thin layer over this class; anything the CLI can do, a Python
program can do with the same checks, errors and results::

    from snapmgr.config import load_config
    from snapmgr.manager import SnapshotManager

    with SnapshotManager(load_config()) as manager:  # closes the stores' clients
        result = manager.snapshot(label="pre_migration")
        print(result.manifest.id, result.manifest.sha256)
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from snapmgr.catalog import LATEST, Entry, Store, list_entries, open_stores, resolve
from snapmgr.config import Config
from snapmgr.deploylock import DEFAULT_WAIT_S, Reuse
from snapmgr.durations import Duration
from snapmgr.errors import SafetyRefusal, SnapmgrError, StorageError, UsageError
from snapmgr.manifest import DumpContent, Manifest, validate_label
from snapmgr.pointer import read_pointer, write_pointer
from snapmgr.progress import NullProgress, Progress, make_progress
from snapmgr.restore_sql import DEFAULT_LOCK_TIMEOUT_S

if TYPE_CHECKING:
    from snapmgr import libpq
    from snapmgr.deploylock import DeployLock
    from snapmgr.drill_record import DrillRecord
    from snapmgr.encryption import (
        Keyring,
        WrongKeyError,
    )
    from snapmgr.guard import GuardResult
    from snapmgr.health import HealthReport
    from snapmgr.postgres import ConnInfo
    from snapmgr.prune import (
        Deletion,
        PolicyChoice,
        PrunePlan,
        PruneResult,
    )
    from snapmgr.rekey import RekeyResult
    from snapmgr.restore import RestoreResult
    from snapmgr.snapshot import SnapshotResult
    from snapmgr.verify import VerifyResult

log = logging.getLogger("snapmgr")

#: guard's default: reuse only a snapshot another instance of this deploy
#: committed while this one waited, never an older deploy's.
WAITED_ONLY = Reuse()


@dataclass(frozen=True)
class RekeyReport:
    """What ``rekey`` did per snapshot, and the snapshots it could not rekey."""

    results: tuple[RekeyResult, ...]
    failures: tuple[tuple[Entry, SnapmgrError], ...]


#: guard reuses a snapshot of its label this recent (or committed while it waited).


class SnapshotManager:
    """Snapshots of one database in one ordered list of stores."""

    def __init__(
        self,
        config: Config,
        stores: list[str] | tuple[str, ...] = (),
        *,
        quiet: bool = False,
        show_progress: bool = True,
    ) -> None:
        self.config = config
        self._store_specs = tuple(stores)
        self._stores: list[Store] | None = None
        self._quiet = quiet
        self._show_progress = show_progress

    def close(self) -> None:
        """Release the stores' clients (boto3 connection pools...); opened again on next use."""
        stores, self._stores = self._stores, None
        for store in stores or ():
            store.backend.close()

    def __enter__(self) -> SnapshotManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stores(self) -> list[Store]:
        """The selected stores, opened on first use (so `config` needs no backend)."""
        if self._stores is None:
            self._stores = open_stores(self.config, self._store_specs)
        return self._stores

    def progress(self, task: str) -> Progress:
        if not self._show_progress:
            return NullProgress()
        return make_progress(task, self.config.progress, self.config.progress_interval, self._quiet)

    def connection(self) -> ConnInfo:
        from snapmgr.postgres import ConnInfo

        return ConnInfo.parse(self.config.database_url)

    def snapshot(
        self,
        label: str | None = None,
        tags: Mapping[str, str] | None = None,
        *,
        wait_s: float | None = DEFAULT_WAIT_S,
        reuse: Reuse | None = None,
    ) -> SnapshotResult:
        """Dump, compress, store, verify and commit; then update the pointer file.

        Holds the label's deploy lock meanwhile, waiting for another holder at
        most ``wait_s`` seconds (``None``: no lock). With ``reuse``, a
        snapshot of the label committed while this call waited (or as recent
        as ``reuse.within``) is returned (``reused``) instead of taking another.

        Raises a ``SnapmgrError`` when nothing was committed. When some stores
        committed and others failed, the result lists both; the CLI exits 5.
        """
        label = validate_label(label or self.config.label)
        _ = self.stores  # a bad store URL is a usage error before any connection (the lock's)
        with self.deploy_lock(label, wait_s) as lock:
            return self._snapshot_or_reuse(label, tags, lock, reuse)

    @contextlib.contextmanager
    def deploy_lock(self, label: str, wait_s: float | None) -> Iterator[DeployLock | None]:
        """The label's deploy lock on the source database (``None``: do without)."""
        from snapmgr.deploylock import deploy_lock

        if wait_s is None:
            yield None
            return
        with deploy_lock(self.connection(), label, wait_s) as lock:
            yield lock

    def _snapshot_or_reuse(
        self,
        label: str,
        tags: Mapping[str, str] | None,
        lock: DeployLock | None,
        reuse: Reuse | None,
    ) -> SnapshotResult:
        from snapmgr.snapshot import SnapshotResult

        if reuse is not None:
            since = lock.started_waiting if lock else datetime.now(UTC)
            entry = self.covering_snapshot(label, since, reuse.within)
            if entry is not None:
                location = entry.stores[0].backend.location(entry.manifest.dump_name)
                write_pointer(self.config.pointer_file, location, entry.id)
                return SnapshotResult(entry.manifest, entry.stores, (), reused=True)
        return self._take_snapshot(label, tags, lock.session if lock else None)

    def covering_snapshot(
        self, label: str, since: datetime, within: Duration | None, now: datetime | None = None
    ) -> Entry | None:
        """The newest snapshot of ``label`` of this database, in every selected store,
        committed at or after ``since`` or (``within``) created that recently."""
        now = now or datetime.now(UTC)
        dbname = self.connection().dbname
        for entry in self.list_snapshots():
            m = entry.manifest
            if m.label != label or m.database.name != dbname:
                continue
            if len(entry.stores) < len(self.stores):
                continue
            committed = m.created_at + timedelta(seconds=m.duration_s)
            recent = within is not None and m.created_at >= within.before(now)
            if committed >= since or recent:
                why = "while this run waited" if committed >= since else f"within {within}"
                log.info(
                    "snapshot %s, committed %.0fs ago (%s), covers this deploy; "
                    "not taking another", entry.id, (now - committed).total_seconds(), why,
                )  # fmt: skip
                return entry
        return None

    def _take_snapshot(
        self,
        label: str,
        tags: Mapping[str, str] | None,
        session: libpq.Connection | None = None,
    ) -> SnapshotResult:
        """Dump and commit; the pre-flight check and survey run on ``session`` (the
        deploy lock's) when given, else on a session of their own."""
        from snapmgr.inventory import survey
        from snapmgr.postgres import check_dump_version, database_size, find_tool, server_info
        from snapmgr.snapshot import SnapshotRequest, take_snapshot

        conn = self.connection()
        stores = self.stores  # a bad store URL is a usage error before any connection
        content = self.dump_content()
        # One light session for the pre-flight check, the survey and the size estimate.
        with contextlib.ExitStack() as stack:
            db = session if session is not None else stack.enter_context(conn.session())
            server = server_info(db)
            pg_dump = find_tool("pg_dump", server.major, self.config.pg_bin_dir)
            check_dump_version(pg_dump, server)
            inventory = survey(db, content)
            size_hint = database_size(db)
        request = SnapshotRequest(
            conn=conn,
            server=server,
            pg_dump=pg_dump,
            content=content,
            inventory=inventory,
            size_hint=size_hint,
            label=label,
            compression=self.config.compression,
            level=self.config.compression_level,
            tags=dict(tags or {}),
            recipients=self.recipients(),
        )
        log.info(
            "snapshot of %s (PostgreSQL %s) with %s into %s%s",
            conn.display(), server.version, pg_dump.path,
            ", ".join(store.describe() for store in stores),
            f", encrypted (age) to {len(request.recipients)} recipient(s)"
            if request.recipients else "",
        )  # fmt: skip

        def update_pointer(manifest: Manifest, committed: list[Store]) -> None:
            location = committed[0].backend.location(manifest.dump_name)
            write_pointer(self.config.pointer_file, location, manifest.id)

        result = take_snapshot(request, stores, self.progress("dumping"), update_pointer)
        return result

    def recipients(self) -> tuple[str, ...]:
        """The age recipients snapshots are encrypted to: ``encryption_recipients`` and
        those in ``encryption_recipients_file`` (empty: snapshots are not encrypted)."""
        from snapmgr.encryption import read_recipients_file

        found = tuple(self.config.encryption_recipients)
        path = self.config.encryption_recipients_file
        if path:
            found += read_recipients_file(path, "encryption_recipients_file")
        return tuple(dict.fromkeys(found))

    def keyring(self) -> Keyring:
        """The private keys given for reading encrypted snapshots (maybe none)."""
        from snapmgr.encryption import load_keyring

        return load_keyring(
            self.config.age_identity_file,
            self.config.age_identity,
            f"age_identity_file (from {self.config.sources['age_identity_file']})",
        )

    def _check_guard_key(self) -> None:
        """guard --restore-on-failure with encryption: the key that will restore the
        snapshot must be there (and fit) before the command runs, not after it failed."""
        from snapmgr.encryption import IDENTITY_HINT

        recipients = self.recipients()
        if not recipients:
            return
        keyring = self.keyring()
        if not keyring:
            raise UsageError(
                "guard --restore-on-failure: snapshots are encrypted (encryption_recipients) "
                f"and restoring one needs the private key: give it with {IDENTITY_HINT}"
            )
        keyring.check_can_read("the snapshot guard takes", recipients)

    def dump_content(self) -> DumpContent:
        """What the configuration puts in a snapshot besides the data."""
        from snapmgr.postgres import split_qualified

        return DumpContent(
            owners=self.config.dump_owners,
            privileges=self.config.dump_privileges,
            exclude_schemas=self.config.exclude_schemas,
            exclude_tables=tuple(
                ".".join(split_qualified(name)) for name in self.config.exclude_tables
            ),
        )

    def list_snapshots(self) -> list[Entry]:
        """Committed snapshots in the selected stores, newest first."""
        return list_entries(self.stores)

    def find(self, ref: str) -> Entry:
        """A snapshot by ID or ``latest``."""
        return resolve(self.stores, ref)

    def verify(self, ref: str) -> list[VerifyResult]:
        """Re-read every copy of ``ref`` and check it against its manifest."""
        from snapmgr.verify import verify_all_copies

        entry = self.find(ref)
        return verify_all_copies(entry, self._keyring_for([entry]))

    def verify_everything(self) -> list[VerifyResult]:
        """Verify every copy of every committed snapshot."""
        from snapmgr.verify import verify_all_copies

        entries = self.list_snapshots()
        keyring = self._keyring_for(entries)
        results: list[VerifyResult] = []
        for entry in entries:
            results.extend(verify_all_copies(entry, keyring))
        return results

    def _keyring_for(self, entries: Sequence[Entry]) -> Keyring:
        """The keyring, read only when one of ``entries`` is encrypted; without a key,
        encrypted copies are checked by sha256 and size only, as the log says."""
        from snapmgr.encryption import IDENTITY_HINT, Keyring

        encrypted = [e.id for e in entries if any(m.encrypted for m in e.copies or (e.manifest,))]
        if not encrypted:
            return Keyring()
        keyring = self.keyring()
        if not keyring:
            log.warning(
                "%s encrypted (age) and no key was given: checking sha256 and size only, "
                "not decrypting; give the key with %s for a full check",
                f"{encrypted[0]} is" if len(encrypted) == 1 else f"{len(encrypted)} snapshots are",
                IDENTITY_HINT,
            )
        return keyring

    def set_pinned(self, ref: str, pinned: bool) -> Entry:
        """Pin or unpin a snapshot in every store that holds it."""
        entry = self.find(ref)
        copies = []
        for store in entry.stores:
            updated = entry.manifest_in(store).with_pinned(pinned)  # each names its own object
            try:
                store.backend.put_bytes(updated.manifest_name, updated.to_json(), overwrite=True)
            except StorageError as exc:
                raise StorageError(f"store {store.describe()}: {exc}") from exc
            copies.append(updated)
        return Entry(copies[0], entry.stores, tuple(copies))

    def retention_policy(self, flags: Mapping[str, object] | None = None) -> PolicyChoice:
        """The policy from ``--keep-*`` values if any is set, else the ``[retention]`` config."""
        from snapmgr.prune import choose_policy

        return choose_policy(self.config, flags or {})

    def plan_prune(
        self,
        choice: PolicyChoice | None = None,
        *,
        label: str | None = None,
        now: datetime | None = None,
    ) -> PrunePlan:
        """What ``prune`` would keep and remove, and why; touches nothing.

        Raises ``SafetyRefusal`` for an empty policy.
        """
        from snapmgr.prune import plan_prune
        from snapmgr.retention import EmptyPolicyError

        choice = choice or self.retention_policy()
        try:
            return plan_prune(
                self.stores,
                choice,
                grace=self.config.orphan_grace,
                tz=ZoneInfo(self.config.timezone),
                now=now or datetime.now(UTC),
                label=validate_label(label) if label is not None else None,
            )
        except EmptyPolicyError:
            raise SafetyRefusal(
                f"refusing to prune: the retention policy is empty ({choice.source}) and "
                "would remove every snapshot but the newest; pass e.g. --keep-daily 7 "
                "--keep-weekly 4 --keep-monthly 6, or set keep_* in the config's [retention] "
                "table (or SNAPMGR_KEEP_DAILY=7)"
            ) from None

    def prune(self, plan: PrunePlan, *, dry_run: bool = False) -> PruneResult:
        """Delete what ``plan`` removes: manifests first, then dumps and old orphans.

        Stores that failed are listed in the result (the CLI exits 5).
        """
        from snapmgr.prune import execute_plan

        return execute_plan(plan, dry_run=dry_run)

    def delete(self, snapshot_id: str) -> tuple[Entry, Deletion]:
        """Delete one snapshot (by ID, not ``latest``) from every store holding it,
        manifest first. A pinned snapshot is refused (``SafetyRefusal``)."""
        from snapmgr.prune import delete_everywhere

        if snapshot_id == LATEST:
            raise UsageError("delete needs the snapshot's ID, not `latest`; see `snapmgr list`")
        entry = self.find(snapshot_id)
        if entry.manifest.pinned:
            raise SafetyRefusal(
                f"snapshot {entry.id} is pinned; run `snapmgr unpin {entry.id}` first"
            )
        return entry, delete_everywhere(self.stores, entry)

    def check(
        self,
        max_age: Duration,
        min_count: int = 1,
        *,
        label: str | None = None,
        now: datetime | None = None,
        max_drill_age: Duration | None = None,
        with_drills: bool = False,
    ) -> HealthReport:
        """Is the newest committed snapshot younger than ``max_age`` (measured against
        now), are there at least ``min_count``, and (``max_drill_age``) did one pass a
        drill that recently? ``with_drills`` reads drill results for the gauges."""
        from snapmgr.health import assess

        entries = self.list_snapshots()
        drills = self.drill_records(entries) if with_drills or max_drill_age else {}
        return assess(
            entries,
            drills=drills,
            max_drill_age=max_drill_age,
            max_age=max_age,
            min_count=min_count,
            now=now or datetime.now(UTC),
            where=", ".join(store.describe() for store in self.stores),
            label=validate_label(label) if label is not None else None,
        )

    def drill_records(self, entries: Sequence[Entry]) -> dict[str, DrillRecord]:
        """The last drill of each snapshot that has one."""
        from snapmgr.drill_record import read_record

        records = {}
        for entry in entries:
            record = read_record(entry)
            if record is not None:
                records[entry.id] = record
        return records

    def restore(
        self,
        ref: str,
        *,
        target_url: str | None = None,
        create: bool = False,
        terminate_connections: bool = False,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        confirmed: bool = True,
        no_owner: bool = False,
        no_privileges: bool = False,
        tables: list[str] | None = None,
        schemas: list[str] | None = None,
        verify_content: bool = False,
    ) -> RestoreResult:
        """Replace everything in the target (``target_url``, else DATABASE_URL) with
        snapshot ``ref``: verified before commit, in one transaction, exact.

        ``confirmed=False`` raises ``SafetyRefusal`` (naming the target) after the
        snapshot is found and before any connection to the target. With ``tables``
        or ``schemas`` only those are restored, next to what the target holds (no
        wipe, so no confirmation); see :mod:`snapmgr.partial_filter`.
        """
        from snapmgr.partial_filter import select
        from snapmgr.postgres import ConnInfo
        from snapmgr.restore import RestoreOptions, restore_entry

        if target_url is not None:
            conn = ConnInfo.parse(target_url, "--target-url")
        else:
            conn = ConnInfo.parse(self.config.database_url)
        entry = self.find(ref)
        keyring = self._restore_keyring(entry)
        selection = None
        if tables or schemas:
            manifest = entry.manifest
            selection = select(
                manifest.tables,
                set(manifest.schemas),
                tables=tables or [],
                schemas=schemas or [],
                partitions=manifest.partitions,
            )
        if verify_content and not (entry.manifest.fingerprints or {}).get("tables"):
            raise UsageError(
                f"snapshot {entry.id} has no content fingerprints (made before snapmgr "
                "recorded them): restore it without --verify-content"
            )
        if not confirmed and selection is None:
            raise SafetyRefusal(
                f"restore would replace everything in {conn.display()} with snapshot "
                f"{entry.id}; pass --yes or set CONFIRM_RESTORE=yes to confirm"
            )
        options = RestoreOptions(
            conn=conn,
            create=create,
            terminate_connections=terminate_connections,
            lock_timeout_s=lock_timeout_s,
            pg_bin_dir=self.config.pg_bin_dir,
            no_owner=no_owner,
            no_privileges=no_privileges,
            keyring=keyring,
            selection=selection,
            verify_content=verify_content,
        )
        return restore_entry(entry, options, lambda: self.progress("restoring"))

    def drill(
        self, ref: str, *, target_url: str | None = None, confirmed: bool = False
    ) -> DrillRecord:
        """Restore ``ref`` into a scratch database (or ``target_url``, which needs
        ``confirmed``), compare its content with the manifest, store the result.

        Raises the documented error when the drill fails (6: content differs;
        8: the restore failed or a role is gone); the result is stored either way.
        """
        from snapmgr.drill import failed_record, raise_for, run_drill
        from snapmgr.drill_record import save_record
        from snapmgr.postgres import ConnInfo

        entry = self.find(ref)
        keyring = self._restore_keyring(entry)
        target = ConnInfo.parse(target_url) if target_url else None
        if target is not None and not confirmed:
            raise SafetyRefusal(
                f"a drill into {target.display()} replaces everything in it; pass --yes, "
                "or leave out --target-url to drill into a scratch database"
            )
        server = target or self.connection()
        started = time.monotonic()
        try:
            record = run_drill(
                entry,
                server,
                lambda: self.progress("drilling"),
                target=target,
                pg_bin_dir=self.config.pg_bin_dir,
                keyring=keyring,
            )
        except SnapmgrError as exc:
            save_record(failed_record(entry.manifest, exc, started, server.display()), entry.stores)
            raise
        save_record(record, entry.stores)
        raise_for(record)
        return record

    def _restore_keyring(self, entry: Entry) -> Keyring:
        """The key for restoring ``entry``: refused (exit 2) without one, and a key that
        is not among the recipients of any copy is exit 6, before anything is read or
        changed."""
        from snapmgr.encryption import Keyring, WrongKeyError, missing_key

        if not any(m.encrypted for m in entry.copies or (entry.manifest,)):
            return Keyring()
        keyring = self.keyring()
        if not keyring:
            raise missing_key(entry.id, "restore")
        problems: list[WrongKeyError] = []
        for manifest in entry.copies or (entry.manifest,):
            try:
                keyring.check_can_read(entry.id, manifest.recipients if manifest.encrypted else [])
            except WrongKeyError as exc:
                problems.append(exc)
                continue
            return keyring  # this copy can be read (the others are tried after it if need be)
        raise problems[0]

    def rekey(
        self, ref: str | None, recipients: Sequence[str], *, dry_run: bool = False
    ) -> RekeyReport:
        """Re-encrypt snapshot ``ref`` (``None``: every snapshot) to ``recipients``,
        commit-safe (see :mod:`snapmgr.rekey`); a snapshot that fails is reported and
        the others go on."""
        from snapmgr.rekey import rekey_entry

        if not recipients:
            raise UsageError(
                "rekey needs the new recipients: --to-recipients age1… (repeatable) "
                "or --to-recipients-file FILE"
            )
        entries = self.list_snapshots() if ref is None else [self.find(ref)]
        keyring = self.keyring()
        results: list[RekeyResult] = []
        failures: list[tuple[Entry, SnapmgrError]] = []
        for entry in entries:
            try:
                results.append(
                    rekey_entry(
                        entry, recipients, keyring, dry_run=dry_run, on_commit=self._repoint
                    )
                )
            except SnapmgrError as exc:
                failures.append((entry, exc))
        return RekeyReport(tuple(results), tuple(failures))

    def _repoint(self, entry: Entry) -> None:
        """After a rekey, the pointer file (if it names this snapshot) names its new object."""
        path = self.config.pointer_file
        try:
            pointer = read_pointer(path)
            if pointer is not None and pointer[1] == entry.id:
                location = entry.stores[0].backend.location(entry.manifest.dump_name)
                write_pointer(path, location, entry.id)
        except StorageError as exc:
            log.warning("%s is rekeyed, but the pointer file was not updated: %s", entry.id, exc)

    def guard(
        self,
        command: Sequence[str],
        *,
        restore_on_failure: bool = False,
        label: str | None = None,
        tags: Mapping[str, str] | None = None,
        terminate_connections: bool = False,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        wait_s: float | None = DEFAULT_WAIT_S,
        reuse: Reuse | None = WAITED_ONLY,
    ) -> GuardResult:
        """Snapshot, then run ``command``; on failure restore the snapshot if asked.

        A failed snapshot raises and the command never runs. The restore needs no
        confirmation: ``restore_on_failure`` is the confirmation.

        The label's deploy lock is held throughout (snapshot, command, restore),
        so instances of one deploy run their commands one at a time; a snapshot
        another instance committed while this one waited (or as recent as
        ``reuse.within``) covers this run too. ``wait_s=None``: no lock.
        """
        from snapmgr.guard import check_command, run_guard

        label = validate_label(label or self.config.label)
        check_command(command)  # a command that cannot run never waits for the lock
        _ = self.stores  # a bad store URL is a usage error before any connection
        if restore_on_failure:
            self._check_guard_key()

        def restore(snapshot_id: str) -> RestoreResult:
            return self.restore(
                snapshot_id,
                terminate_connections=terminate_connections,
                lock_timeout_s=lock_timeout_s,
            )

        with self.deploy_lock(label, wait_s) as lock:
            return run_guard(
                command,
                lambda: self._snapshot_or_reuse(label, tags, lock, reuse),
                restore,
                restore_on_failure=restore_on_failure,
            )
