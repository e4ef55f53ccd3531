"""Plan a prune (what the retention policy keeps, which orphans are old) and carry it out.

A plan is :func:`snapmgr.retention.apply_policy` over the committed snapshots
of the selected stores, merged by ID, plus every orphan (a dump without a
manifest, or a backend's leftover temp object) split by its modification
time against ``orphan_grace``: a younger one may be a snapshot in progress.

Deletion undoes the commit protocol in reverse, so an interrupted prune
leaves a consistent store: first every removed snapshot's manifest goes (one
batched ``delete`` per store), then the dumps and old orphans (one more call
per store). Killed in between, the store holds dumps without manifests;
``list`` never shows them and the next prune removes them as orphans, since
their modification time is old. A store that cannot be listed or deleted
from is reported and left alone while the others are pruned: planning on
fewer snapshots only ever keeps more, never less.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from functools import partial
from typing import Any

from snapmgr import validate
from snapmgr.catalog import Entry, Orphan, Store, merge_by_id, orphans, store_manifests
from snapmgr.config import Config
from snapmgr.durations import Duration
from snapmgr.errors import NotFoundError, StorageError
from snapmgr.manifest import Manifest
from snapmgr.retention import POLICY_KEYS, Policy, apply_policy, flag_name, parse_rule


@dataclass(frozen=True)
class PolicyChoice:
    """The policy a prune applies and where it came from, for messages."""

    policy: Policy
    source: str


def choose_policy(config: Config, flags: Mapping[str, Any]) -> PolicyChoice:
    """The policy from ``--keep-*`` flags if any is given, else from the configuration.

    Flags replace the configured policy as a whole rather than key by key, so
    a command line means the same thing on every host whatever its config file
    or ``SNAPMGR_KEEP_*`` variables say. ``flags`` maps policy keys to raw
    values (``None`` = not given); a bad one is a ``ConfigError`` naming the flag.
    """
    given = {key: value for key, value in flags.items() if value is not None}
    unknown = set(given) - set(POLICY_KEYS)
    if unknown:
        raise ValueError(f"not policy keys: {sorted(unknown)}")
    if given:
        values = {
            key: validate.flag(flag_name(key), partial(parse_rule, key), value)
            for key, value in given.items()
        }
        return PolicyChoice(Policy.from_rules(values), "--keep-* flags")
    sources = sorted({config.sources[key] for key in POLICY_KEYS} - {"default"})
    source = ", ".join(sources) if sources else "no --keep-* flag and no keep_* setting"
    return PolicyChoice(config.retention, source)


@dataclass(frozen=True)
class SnapshotDecision:
    """Keep or remove one committed snapshot; a kept one lists every reason."""

    entry: Entry
    keep: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class OrphanDecision:
    """An orphan and whether it is old enough (beyond ``orphan_grace``) to remove."""

    orphan: Orphan
    remove: bool
    age_s: float

    @property
    def location(self) -> str:
        return self.orphan.store.backend.location(self.orphan.info.name)


@dataclass(frozen=True)
class StoreFailure:
    """A store that could not be listed or deleted from, and why."""

    store: Store
    error: str


@dataclass(frozen=True)
class PrunePlan:
    """What a prune would do. Snapshots come in ``apply_policy`` order: by label,
    newest first; stores that could not be listed are in ``failures`` and untouched."""

    choice: PolicyChoice
    label: str | None
    grace: Duration
    now: datetime
    snapshots: tuple[SnapshotDecision, ...]
    orphans: tuple[OrphanDecision, ...]
    failures: tuple[StoreFailure, ...]

    @property
    def kept(self) -> list[SnapshotDecision]:
        return [d for d in self.snapshots if d.keep]

    @property
    def removed(self) -> list[SnapshotDecision]:
        return [d for d in self.snapshots if not d.keep]

    @property
    def old_orphans(self) -> list[OrphanDecision]:
        return [o for o in self.orphans if o.remove]


@dataclass(frozen=True)
class Deletion:
    """What a deletion achieved: snapshots whose manifest is gone from every store
    that held them, orphans deleted, and the stores that failed."""

    removed_ids: frozenset[str]
    removed_orphans: tuple[Orphan, ...]
    failures: tuple[StoreFailure, ...]


@dataclass(frozen=True)
class PruneResult:
    """A plan and, unless it was a dry run, what deleting it achieved."""

    plan: PrunePlan
    dry_run: bool
    deletion: Deletion

    @property
    def failures(self) -> tuple[StoreFailure, ...]:
        return self.plan.failures + self.deletion.failures

    def was_removed(self, decision: SnapshotDecision) -> bool:
        return decision.entry.id in self.deletion.removed_ids

    def orphan_removed(self, decision: OrphanDecision) -> bool:
        return decision.orphan in self.deletion.removed_orphans


def plan_prune(
    stores: Sequence[Store],
    choice: PolicyChoice,
    *,
    grace: Duration,
    tz: tzinfo,
    now: datetime,
    label: str | None = None,
) -> PrunePlan:
    """Decide what to keep and remove; touches nothing. Raises ``EmptyPolicyError``."""
    copies: list[tuple[Store, Manifest]] = []
    found: list[Orphan] = []
    failures: list[StoreFailure] = []
    for store in stores:
        try:
            manifests = store_manifests(store)
            store_orphans = orphans(store)
        except StorageError as exc:
            failures.append(StoreFailure(store, str(exc)))
            continue
        copies.extend((store, manifest) for manifest in manifests)
        found.extend(sorted(store_orphans, key=lambda orphan: orphan.info.name))
    by_id = {entry.id: entry for entry in merge_by_id(copies)}
    manifests = [e.manifest for e in by_id.values() if label is None or e.manifest.label == label]
    decisions = apply_policy(manifests, choice.policy, tz=tz, now=now)
    cutoff = grace.before(now)
    return PrunePlan(
        choice=choice,
        label=label,
        grace=grace,
        now=now,
        snapshots=tuple(
            SnapshotDecision(by_id[d.snapshot.id], d.keep, d.reasons) for d in decisions
        ),
        orphans=tuple(
            OrphanDecision(o, remove=o.info.modified < cutoff, age_s=o.age_at(now)) for o in found
        ),
        failures=tuple(failures),
    )


def execute_plan(plan: PrunePlan, *, dry_run: bool = False) -> PruneResult:
    """Delete what ``plan`` removes (nothing when ``dry_run``)."""
    if dry_run:
        return PruneResult(plan, True, Deletion(frozenset(), (), ()))
    doomed = [decision.entry for decision in plan.removed]
    leftovers = [decision.orphan for decision in plan.old_orphans]
    return PruneResult(plan, False, delete_snapshots(doomed, leftovers))


def delete_snapshots(entries: Sequence[Entry], leftovers: Sequence[Orphan] = ()) -> Deletion:
    """Delete snapshots from every store holding them, manifests first, plus orphans.

    Per store, one batched call for the manifests, then one for the dumps and
    orphans. A store whose manifest call fails gets no second call (its
    manifests may be partly gone; the next prune finds their dumps as
    orphans); the other stores go on.
    """
    stores = _stores_of(entries, leftovers)
    failures: list[StoreFailure] = []
    manifests_failed: list[Store] = []
    for store in stores:
        names = [e.manifest.manifest_name for e in entries if _holds(e, store)]
        failure = _try_delete(store, names)
        if failure:
            failures.append(failure)
            manifests_failed.append(store)
    data_failed: list[Store] = []
    for store in stores:
        if _among(store, manifests_failed):
            continue
        names = [
            name
            for e in entries
            if _holds(e, store)
            for name in (e.manifest_in(store).dump_name, e.manifest.drill_name)
        ]
        failure = _try_delete(store, names + [o.info.name for o in leftovers if o.store is store])
        if failure:
            failures.append(failure)
            data_failed.append(store)
    return Deletion(
        removed_ids=frozenset(
            e.id for e in entries if not any(_holds(e, store) for store in manifests_failed)
        ),
        removed_orphans=tuple(
            o for o in leftovers if not _among(o.store, manifests_failed + data_failed)
        ),
        failures=tuple(failures),
    )


def delete_everywhere(stores: Sequence[Store], entry: Entry) -> Deletion:
    """Delete one snapshot from every store holding it (:func:`delete_snapshots`).

    Finding a snapshot stops at no error, so a store whose copy could not be
    read is checked again here: if it may hold one, it is reported as failed
    and the snapshot does not count as removed.
    """
    doubtful = []
    for store in stores:
        if _among(store, entry.stores):
            continue
        try:
            store.backend.stat(entry.manifest.manifest_name)
        except NotFoundError:
            continue
        except StorageError as exc:
            doubtful.append(StoreFailure(store, f"cannot check for a copy: {exc}"))
            continue
        doubtful.append(
            StoreFailure(
                store, f"holds a manifest of {entry.id} that could not be read; left alone"
            )
        )
    deletion = delete_snapshots([entry])
    return Deletion(
        removed_ids=frozenset() if doubtful else deletion.removed_ids,
        removed_orphans=deletion.removed_orphans,
        failures=deletion.failures + tuple(doubtful),
    )


def _stores_of(entries: Sequence[Entry], leftovers: Sequence[Orphan]) -> list[Store]:
    """Every store involved, each once (by identity: a ``Store`` is not hashable)."""
    seen: list[Store] = []
    for store in [s for e in entries for s in e.stores] + [o.store for o in leftovers]:
        if not _among(store, seen):
            seen.append(store)
    return seen


def _holds(entry: Entry, store: Store) -> bool:
    return _among(store, entry.stores)


def _among(store: Store, stores: Sequence[Store]) -> bool:
    return any(store is other for other in stores)


def _try_delete(store: Store, names: list[str]) -> StoreFailure | None:
    if not names:
        return None
    try:
        store.backend.delete(names)
    except StorageError as exc:
        return StoreFailure(store, str(exc))
    return None
