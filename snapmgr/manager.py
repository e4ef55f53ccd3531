"""The public Python API: ``SnapshotManager(config).snapshot()`` and friends.

The CLI is a thin layer over this class; anything the CLI can do, a Python
program can do with the same checks, errors and results::

    from snapmgr.config import load_config
    from snapmgr.manager import SnapshotManager

    manager = SnapshotManager(load_config())
    result = manager.snapshot(label="pre_migration")
    print(result.manifest.id, result.manifest.sha256)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from snapmgr.catalog import LATEST, Entry, Store, list_entries, open_stores, resolve
from snapmgr.config import Config
from snapmgr.durations import Duration
from snapmgr.errors import SafetyRefusal, StorageError, UsageError
from snapmgr.guard import GuardResult, run_guard
from snapmgr.health import HealthReport, assess
from snapmgr.manifest import Manifest, validate_label
from snapmgr.pointer import write_pointer
from snapmgr.postgres import ConnInfo, find_tool, preflight
from snapmgr.progress import NullProgress, Progress, make_progress
from snapmgr.prune import (
    Deletion,
    PolicyChoice,
    PrunePlan,
    PruneResult,
    choose_policy,
    delete_everywhere,
    execute_plan,
    plan_prune,
)
from snapmgr.restore import DEFAULT_LOCK_TIMEOUT_S, RestoreOptions, RestoreResult, restore_entry
from snapmgr.retention import EmptyPolicyError
from snapmgr.snapshot import SnapshotRequest, SnapshotResult, take_snapshot
from snapmgr.verify import VerifyResult, verify_all_copies

log = logging.getLogger("snapmgr")


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

    @property
    def stores(self) -> list[Store]:
        """The selected stores, opened on first use (so `config` needs no backend)."""
        if self._stores is None:
            self._stores = open_stores(self.config, self._store_specs)
        return self._stores

    def progress(self, task: str) -> Progress:
        if not self._show_progress:
            return NullProgress()
        return make_progress(
            task, self.config["progress"], self.config["progress_interval"], self._quiet
        )

    def connection(self) -> ConnInfo:
        return ConnInfo.parse(self.config.database_url)

    def snapshot(
        self, label: str | None = None, tags: Mapping[str, str] | None = None
    ) -> SnapshotResult:
        """Dump, compress, store, verify and commit; then update the pointer file.

        Raises a ``SnapmgrError`` when nothing was committed. When some stores
        committed and others failed, the result lists both; the CLI exits 5.
        """
        conn = self.connection()
        stores = self.stores  # a bad store URL is a usage error before any connection
        server = preflight(conn)
        pg_dump = find_tool("pg_dump", server.major, self.config["pg_bin_dir"])
        request = SnapshotRequest(
            conn=conn,
            server=server,
            pg_dump=pg_dump,
            label=validate_label(label or self.config["label"]),
            compression=self.config["compression"],
            level=self.config["compression_level"],
            tags=dict(tags or {}),
        )
        log.info(
            "snapshot of %s (PostgreSQL %s) with %s into %s",
            conn.display(), server.version, pg_dump.path,
            ", ".join(store.describe() for store in stores),
        )  # fmt: skip

        def update_pointer(manifest: Manifest, committed: list[Store]) -> None:
            location = committed[0].backend.location(manifest.dump_name)
            write_pointer(self.config["pointer_file"], location, manifest.id)

        result = take_snapshot(request, stores, self.progress("dumping"), update_pointer)
        return result

    def list_snapshots(self) -> list[Entry]:
        """Committed snapshots in the selected stores, newest first."""
        return list_entries(self.stores)

    def find(self, ref: str) -> Entry:
        """A snapshot by ID or ``latest``."""
        return resolve(self.stores, ref)

    def verify(self, ref: str) -> list[VerifyResult]:
        """Re-read every copy of ``ref`` and check it against its manifest."""
        entry = self.find(ref)
        return verify_all_copies(entry.manifest, entry.stores)

    def verify_everything(self) -> list[VerifyResult]:
        """Verify every copy of every committed snapshot."""
        results: list[VerifyResult] = []
        for entry in self.list_snapshots():
            results.extend(verify_all_copies(entry.manifest, entry.stores))
        return results

    def set_pinned(self, ref: str, pinned: bool) -> Entry:
        """Pin or unpin a snapshot in every store that holds it."""
        entry = self.find(ref)
        updated = entry.manifest.with_pinned(pinned)
        for store in entry.stores:
            try:
                store.backend.put_bytes(updated.manifest_name, updated.to_json(), overwrite=True)
            except StorageError as exc:
                raise StorageError(f"store {store.describe()}: {exc}") from exc
        return Entry(updated, entry.stores)

    def retention_policy(self, flags: Mapping[str, object] | None = None) -> PolicyChoice:
        """The policy from ``--keep-*`` values if any is set, else the ``[retention]`` config."""
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
        choice = choice or self.retention_policy()
        try:
            return plan_prune(
                self.stores,
                choice,
                grace=self.config["orphan_grace"],
                tz=ZoneInfo(self.config["timezone"]),
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
        return execute_plan(plan, dry_run=dry_run)

    def delete(self, snapshot_id: str) -> tuple[Entry, Deletion]:
        """Delete one snapshot (by ID, not ``latest``) from every store holding it,
        manifest first. A pinned snapshot is refused (``SafetyRefusal``)."""
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
    ) -> HealthReport:
        """Is the newest committed snapshot younger than ``max_age`` (measured against
        now), and are there at least ``min_count``?"""
        return assess(
            self.list_snapshots(),
            max_age=max_age,
            min_count=min_count,
            now=now or datetime.now(UTC),
            where=", ".join(store.describe() for store in self.stores),
            label=validate_label(label) if label is not None else None,
        )

    def restore(
        self,
        ref: str,
        *,
        target_url: str | None = None,
        create: bool = False,
        terminate_connections: bool = False,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        confirmed: bool = True,
    ) -> RestoreResult:
        """Replace everything in the target (``target_url``, else DATABASE_URL) with
        snapshot ``ref``: verified before commit, in one transaction, exact.

        ``confirmed=False`` raises ``SafetyRefusal`` (naming the target) after the
        snapshot is found and before any connection to the target.
        """
        if target_url is not None:
            conn = ConnInfo.parse(target_url, "--target-url")
        else:
            conn = ConnInfo.parse(self.config.database_url)
        entry = self.find(ref)
        if not confirmed:
            raise SafetyRefusal(
                f"restore would replace everything in {conn.display()} with snapshot "
                f"{entry.id}; pass --yes or set CONFIRM_RESTORE=yes to confirm"
            )
        options = RestoreOptions(
            conn=conn,
            create=create,
            terminate_connections=terminate_connections,
            lock_timeout_s=lock_timeout_s,
            pg_bin_dir=self.config["pg_bin_dir"],
        )
        return restore_entry(entry, options, lambda: self.progress("restoring"))

    def guard(
        self,
        command: Sequence[str],
        *,
        restore_on_failure: bool = False,
        label: str | None = None,
        tags: Mapping[str, str] | None = None,
        terminate_connections: bool = False,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    ) -> GuardResult:
        """Snapshot, then run ``command``; on failure restore the snapshot if asked.

        A failed snapshot raises and the command never runs. The restore needs no
        confirmation: ``restore_on_failure`` is the confirmation.
        """

        def restore(snapshot_id: str) -> RestoreResult:
            return self.restore(
                snapshot_id,
                terminate_connections=terminate_connections,
                lock_timeout_s=lock_timeout_s,
            )

        return run_guard(
            command,
            lambda: self.snapshot(label=label, tags=tags),
            restore,
            restore_on_failure=restore_on_failure,
        )
