"""One deploy at a time: a PostgreSQL advisory lock per label on the source database.

A start-up script runs on every instance of an app, so three instances
starting at once would take three snapshots and run the migration three
times, concurrently. ``guard`` and ``snapshot`` therefore hold a
session-level advisory lock, keyed by ``"snapmgr deploy"`` and the label,
on a connection of their own for as long as they work: a second instance
waits for the first (at most ``--wait``), and ``guard`` then reuses the
snapshot the first one committed instead of taking another.

Advisory locks belong to one database, need no privilege, and go away with
the session that holds them, so a killed instance never leaves the lock
behind. The lock's session shows in ``pg_stat_activity`` as
``snapmgr deploy lock HOST pid N``, so whoever waits can say who holds it,
and a restore's ``--terminate-connections`` leaves these sessions alone.
They must reach the server directly: behind a transaction-mode pooler
(PgBouncer, Supavisor on port 6543) a session lock is not a session's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from snapmgr.durations import Duration, parse_duration
from snapmgr.errors import DatabaseError, SafetyRefusal, UsageError
from snapmgr.notify import this_host

if TYPE_CHECKING:
    from snapmgr.postgres import ConnInfo

log = logging.getLogger("snapmgr")

APP_NAME_PREFIX = "snapmgr deploy lock"
DEFAULT_WAIT_S = 30 * 60.0
MAX_WAIT_MS = 2**31 - 1  # lock_timeout's upper bound (about 24 days)
LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of a lock_timeout that ran out


class DeployLockTimeout(SafetyRefusal):
    """Another instance still held the deploy lock when ``--wait`` ran out (exit 9)."""


@dataclass(frozen=True)
class DeployLock:
    """A held lock: since when this run counts as part of the deploy it waited for,
    and how long it waited.

    ``started_waiting`` is when this process started waiting, or, if it found
    the lock held, when the holder's lock session began: the holder's snapshot,
    committed before this process arrived, is of the same deploy.
    """

    label: str
    started_waiting: datetime
    waited_s: float
    #: The session holding the lock (a :class:`snapmgr.libpq.Connection`), open
    #: until the ``with`` block ends: the snapshot's pre-flight check and survey
    #: run on it instead of opening another (a connection is a round of
    #: authentication, a visible part of a small snapshot's time). Only plain
    #: queries: the lock is the session's, whatever they do.
    session: Any = field(default=None, compare=False, repr=False)


def wait_seconds(text: str, flag: str = "--wait") -> float:
    """``--wait DUR``: how long to wait for the lock (``30min``, ``2h``; ``0``: not at all)."""
    if text.strip() == "0":
        return 0.0
    try:
        duration = parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None
    now = datetime.now(UTC)
    return (now - duration.before(now)).total_seconds()


@dataclass(frozen=True)
class Reuse:
    """Which earlier snapshot of the label covers this run instead of a new one: one
    another instance committed while this one waited for the lock, or (``within``)
    one that recent. Only the first is sure to be of this very deploy."""

    within: Duration | None = None


WAITED = "waited"


def reuse_window(text: str, flag: str = "--reuse-within") -> Reuse | None:
    """``--reuse-within``: ``waited``, a duration, or ``0``/``off`` (``None``: never reuse)."""
    word = text.strip().lower()
    if word in ("0", "off", "no", "never"):
        return None
    if word == WAITED:
        return Reuse()
    try:
        return Reuse(parse_duration(text))
    except ValueError as exc:
        raise UsageError(
            f"{flag}: {exc} (or '{WAITED}' for what was committed while waiting, "
            "or 0 to always take a new snapshot)"
        ) from None


def lock_key(label: str) -> int:
    """The advisory lock's bigint key: the same for every instance, per label."""
    digest = hashlib.sha256(f"snapmgr deploy\0{label}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def application_name() -> str:
    """How the lock's session names itself (at most 63 bytes, libpq's limit)."""
    return f"{APP_NAME_PREFIX} {this_host()} pid {os.getpid()}"[:63]


@contextlib.contextmanager
def deploy_lock(conn: ConnInfo, label: str, wait_s: float) -> Iterator[DeployLock]:
    """Hold the deploy lock of ``label`` on ``conn``'s database for the ``with`` block.

    Waits at most ``wait_s`` seconds (0: not at all) for another holder, then
    raises ``DeployLockTimeout``; a database that cannot be reached is
    ``DatabaseError`` (exit 3), as for the snapshot itself.
    """
    started = datetime.now(UTC)
    clock = time.monotonic()
    # TCP keepalives: the session sits idle for the whole migration, and proxies
    # on the way drop connections that look dead.
    db = conn.session(application_name=application_name(), keepalives="1", keepalives_idle="30")
    held = False
    try:
        holder_since = _acquire(db, conn, label, wait_s)
        held = True
        waited = time.monotonic() - clock
        if waited >= 1:
            log.info("got the deploy lock of label %s after waiting %.0fs", label, waited)
        yield DeployLock(label, min(started, holder_since or started), waited, db)
    finally:
        _release(db, label, held)


def _acquire(db: Any, conn: ConnInfo, label: str, wait_s: float) -> datetime | None:
    """Take the lock; when another session held it, when that session began."""
    from snapmgr import libpq

    key = lock_key(label)
    try:
        if db.info.server_version >= 140000:  # a role's idle timeout must not end the lock
            db.execute("SELECT set_config('idle_session_timeout', '0', false)")
        row = db.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()
        if row and row[0]:
            return None
        holder, holder_since = _holder(db, key)
        if wait_s <= 0:
            raise DeployLockTimeout(_timeout_message(conn, label, holder, wait_s))
        log.info(
            "another deploy holds the lock of label %s on %s (%s); waiting up to %s",
            label, conn.display(), holder, _span(wait_s),
        )  # fmt: skip
        timeout_ms = max(1, min(MAX_WAIT_MS, round(wait_s * 1000)))
        db.execute("SELECT set_config('lock_timeout', %s, false)", [f"{timeout_ms}ms"])
        try:
            db.execute("SELECT pg_advisory_lock(%s)", [key])
        except libpq.Error as exc:
            if exc.sqlstate != LOCK_NOT_AVAILABLE:
                raise
            raise DeployLockTimeout(
                _timeout_message(conn, label, _holder(db, key)[0], wait_s)
            ) from None
        db.execute("SELECT set_config('lock_timeout', '0', false)")
        return holder_since
    except libpq.Error as exc:
        raise DatabaseError(
            f"cannot take the deploy lock on {conn.display()}: {_first_line(exc)}"
        ) from None


def _release(db: Any, label: str, held: bool) -> None:
    from snapmgr import libpq

    try:
        if held:
            row = db.execute("SELECT pg_advisory_unlock(%s)", [lock_key(label)]).fetchone()
            if not (row and row[0]):
                raise libpq.Error("the lock was no longer held")
    except libpq.Error as exc:
        log.warning(
            "the deploy lock of label %s was lost before the end (%s): its connection was "
            "ended, so another instance may have started meanwhile",
            label,
            _first_line(exc),
        )
    finally:
        with contextlib.suppress(Exception):
            db.close()


def _holder(db: Any, key: int) -> tuple[str, datetime | None]:
    """Who holds the lock, as far as this role may see (its session's name and pid),
    and when its session began."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    row = db.execute(
        """SELECT a.pid, a.application_name, host(a.client_addr), a.backend_start
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
             AND l.classid = %s::oid AND l.objid = %s::oid
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           LIMIT 1""",
        [unsigned >> 32, unsigned & 0xFFFFFFFF],
    ).fetchone()
    if row is None:
        return "holder unknown", None
    pid, name, client, since = row
    who = name or "a session that is not snapmgr's"
    text = f"{who}, server pid {pid}" + (f", client {client}" if client else "")
    return text, since


def _timeout_message(conn: ConnInfo, label: str, holder: str, wait_s: float) -> str:
    waited = f"after waiting {_span(wait_s)}" if wait_s > 0 else "and --wait is 0"
    return (
        f"another deploy still holds the lock of label {label} on {conn.display()} ({holder}) "
        f"{waited}; nothing was done. Check that instance, or raise --wait"
    )


def _span(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:.0f}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:.0f}min"
    return f"{seconds:g}s"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
