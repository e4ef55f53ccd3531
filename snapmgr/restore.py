"""Restore a stored snapshot: verified before commit, all-or-nothing, exact.

The stored bytes flow store → sha256 + decompress + scan (``StoredSql``) →
psql's stdin, inside one transaction that only snapmgr commits::

    BEGIN; restore lock; commit fence; [terminate other sessions]; wipe
    <the dump, with pg_dump's own large-object BEGIN;/COMMIT; taken out>
    -- stream ended: sha256, size and trailer verified here
    row counts == manifest?  →  arm the fence; COMMIT

* Verified before commit: ``COMMIT`` is only sent after the stream's sha256,
  size and "dump complete" trailer matched the manifest and the restored row
  counts matched it too. The fence (see :mod:`snapmgr.restore_sql`) makes
  that hold whatever the stream contains.
* All-or-nothing: psql runs without ``--single-transaction`` (which commits
  at end of input) and with ``AUTOCOMMIT off``, in its own session. If
  snapmgr fails, is interrupted or dies, psql reaches EOF or is stopped, its
  connection closes and the server rolls the transaction back.
* Exact: the wipe drops everything a dump can contain before the dump
  recreates it, in the same transaction.

When a snapshot has copies in several stores and one is corrupt or
unreadable, the next copy is tried in a fresh transaction.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace

from snapmgr import libpq
from snapmgr.catalog import Entry, Store
from snapmgr.dumpscan import LineFilter
from snapmgr.encryption import Keyring, WrongKeyError
from snapmgr.errors import (
    DatabaseError,
    DumpError,
    RestoreError,
    SafetyRefusal,
    SnapmgrError,
    StorageError,
    VerificationError,
)
from snapmgr.fingerprint import DUMP_SESSION
from snapmgr.manifest import Manifest
from snapmgr.partial_filter import PartialFilter, Selection, quote_name
from snapmgr.postgres import ConnInfo, ServerInfo, Tool, find_tool, preflight
from snapmgr.progress import Progress
from snapmgr.psql import PsqlGone, PsqlSession
from snapmgr.restore_filter import sql_literal
from snapmgr.restore_plan import RestorePlan, plan_restore
from snapmgr.restore_sql import (
    ARM_AND_COMMIT,
    BEGIN,
    COUNTS_SETUP,
    DEFAULT_LOCK_TIMEOUT_S,
    FENCE,
    LOCK,
    counts_json,
    terminate_sql,
    text_array,
)
from snapmgr.signals import commit_passed, pause_point, signals_held
from snapmgr.verify import StoredSql, check_stored_object

log = logging.getLogger("snapmgr")

IN_DOUBT_WAIT_S = 30.0
MAINTENANCE_DATABASES = ("postgres", "template1")
INSUFFICIENT_PRIVILEGE = "42501"  # SQLSTATE
_OTHER = " (restore another snapshot or copy: see `snapmgr list`)"
# A table's COPY column list (generated columns left out, as pg_dump does), hex-encoded
# so that any column name travels on one line.
COLUMNS_HEX = """SELECT pg_catalog.encode(pg_catalog.convert_to(COALESCE(
  pg_catalog.json_object_agg(t.name, (
    SELECT COALESCE(pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', '
                                          ORDER BY a.attnum), '')
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = t.name::regclass AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attgenerated = ''))::text, '{{}}'), 'UTF8'), 'hex')
FROM pg_catalog.unnest({tables}) AS t(name)"""


class RestoreInterrupted(RestoreError):
    """SIGINT/SIGTERM arrived mid-restore; it was rolled back (exit 130, like any interrupt)."""

    exit_code = 130


@dataclass(frozen=True)
class RestoreOptions:
    """How to restore: where to, and how to deal with other sessions."""

    conn: ConnInfo
    create: bool = False
    terminate_connections: bool = False
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S
    pg_bin_dir: str | None = None
    #: Leave the snapshot's owners / privileges out of what is applied.
    no_owner: bool = False
    no_privileges: bool = False
    #: Private keys for an encrypted snapshot.
    keyring: Keyring = field(default_factory=Keyring)
    #: Restore only these tables/schemas, without the wipe (``--table``/``--schema``).
    selection: Selection | None = None
    #: Before COMMIT, also compare each restored table's content fingerprint.
    verify_content: bool = False


@dataclass(frozen=True)
class RestoreResult:
    """A committed restore: which snapshot, from which store, into which database."""

    manifest: Manifest
    store: Store
    target: str
    tables: int
    rows: int
    duration_s: float
    terminated: int = 0
    created: bool = False
    #: The restored tables' content was compared with the manifest's fingerprints.
    content_checked: bool = False


def restore_entry(
    entry: Entry, options: RestoreOptions, progress: Callable[[], Progress]
) -> RestoreResult:
    """Restore ``entry`` into ``options.conn`` (created first if asked); see the module doc."""
    conn = options.conn
    created = options.create and _create_database(conn)
    try:
        server = _check_target(conn, options.create)
        if options.selection is not None:
            _refuse_source(entry.manifest, options)
        try:
            psql = find_tool("psql", server.major, options.pg_bin_dir)
        except DumpError as exc:
            raise RestoreError(f"{exc}; nothing was restored") from None
        plan = _plan(entry.manifest, options)
        result = _restore_from_stores(entry, options, server, psql, progress, plan=plan)
    except BaseException:
        if created:
            drop_created_database(conn)
        raise
    return replace(result, created=created)


def _plan(manifest: Manifest, options: RestoreOptions) -> RestorePlan:
    """Read the target and decide how to restore, before its transaction starts."""
    with options.conn.session() as db:
        plan = plan_restore(
            db,
            manifest,
            no_owner=options.no_owner,
            no_privileges=options.no_privileges,
            whole=options.selection is None,
            restored=None
            if options.selection is None
            else frozenset(options.selection.restored_tables(manifest.tables)),
        )
    if plan.database_left:
        log.warning("%s", plan.database_left)
    if plan.globals.left:
        log.warning("%s", plan.globals.left)
    if plan.kept_extensions or plan.kept_schemas:
        log.info(
            "left as they are (owned by roles %s may not act for): %s",
            plan.role, ", ".join([*plan.kept_extensions, *plan.kept_schemas]),
        )  # fmt: skip
    return plan


def _restore_from_stores(
    entry: Entry,
    options: RestoreOptions,
    server: ServerInfo,
    psql: Tool,
    progress: Callable[[], Progress],
    *,
    plan: RestorePlan,
) -> RestoreResult:
    for index, store in enumerate(entry.stores):
        try:
            manifest = entry.manifest_in(store)
            return _Attempt(manifest, store, options, server, psql, plan=plan).run(progress())
        except (VerificationError, StorageError) as exc:
            if index + 1 == len(entry.stores):
                raise
            log.warning(
                "the copy in %s cannot be restored (%s); trying the copy in %s",
                store.describe(), exc, entry.stores[index + 1].describe(),
            )  # fmt: skip
    raise AssertionError("an entry always has at least one store")


class _Attempt:
    """One restore of one stored copy, in one transaction."""

    def __init__(
        self,
        manifest: Manifest,
        store: Store,
        options: RestoreOptions,
        server: ServerInfo,
        psql: Tool,
        *,
        plan: RestorePlan,
    ) -> None:
        self.plan = plan
        self.manifest = manifest
        self.store = store
        self.options = options
        self.server = server
        self.psql = psql
        self.where = options.conn.display()
        self.token = secrets.token_hex(16)
        self.terminated = 0
        # Only while unverified dump bytes are flowing can a failure be their fault.
        self.streaming_unverified = False

    def run(self, progress: Progress) -> RestoreResult:
        started = time.monotonic()
        selection = self.options.selection
        line_filter: LineFilter = self.plan.line_filter()
        if selection is not None:
            inner = self.plan.line_filter(existing_schemas=selection.target_schemas())
            line_filter = PartialFilter(selection, inner)
        stream = StoredSql(
            self.manifest,
            self.store,
            rewrite=True,
            line_filter=line_filter,
            keyring=self.options.keyring,
        )
        chunks = stream.__iter__()
        try:
            first = self._first_chunk(chunks)
            return self._run(stream, itertools.chain((first,), chunks), progress, started)
        finally:
            chunks.close()  # stops the reading threads if the restore ended early

    def _first_chunk(self, chunks: Generator[bytes, None, None]) -> bytes:
        """Read (and decrypt) the start of the dump before psql starts: a wrong key, a
        damaged header or a missing object fails here, with nothing sent to the target."""
        try:
            return next(chunks, b"")
        except (VerificationError, StorageError) as exc:
            other = "" if isinstance(exc, WrongKeyError) else _OTHER
            raise type(exc)(
                f"{exc}; nothing was restored, {self.where} is unchanged{other}"
            ) from None

    def _run(
        self, stream: StoredSql, chunks: Iterator[bytes], progress: Progress, started: float
    ) -> RestoreResult:
        log.info(
            "restoring %s from %s into %s with %s",
            self.manifest.id, self.store.describe(), self.where, self.psql.path,
        )  # fmt: skip
        try:
            session = PsqlSession(self.psql, self.options.conn, self.token)
        except OSError as exc:
            raise RestoreError(
                f"cannot run {self.psql.path}: {exc}; nothing was restored"
            ) from None
        committing = False
        try:
            self._open(session)
            self._stream(session, progress, stream, chunks)
            if self.plan.database_sql:
                session.send(self.plan.database_sql)
            self._check_counts(session)
            if self.options.verify_content:
                self._check_content(session)
            with signals_held():
                committing = True
                pause_point("committing-restore")
                self._commit(session)
                commit_passed(f"the restore of {self.manifest.id} into {self.where} was committed")
            pause_point("after-restore-commit")
        except BaseException as exc:
            if committing:
                raise
            with signals_held():
                session.abort()
            explained = self._explain(exc, session)
            if explained is exc:
                raise
            raise explained from exc
        expected = self.expected_tables()
        return RestoreResult(
            manifest=self.manifest,
            store=self.store,
            target=self.where,
            tables=len(expected),
            rows=sum(expected.values()),
            duration_s=round(time.monotonic() - started, 3),
            terminated=self.terminated,
            content_checked=self.options.verify_content,
        )

    def expected_tables(self) -> dict[str, int]:
        """The manifest's row counts of what this attempt restores."""
        if self.options.selection is None:
            return self.manifest.tables
        return self.options.selection.restored_tables(self.manifest.tables)

    def _open(self, session: PsqlSession) -> None:
        """Begin; take the restore lock; put up the fence; make room."""
        session.send(BEGIN)
        session.send(
            session.marker(
                "xact", "pg_catalog.txid_current() || ' ' || pg_catalog.pg_backend_pid()"
            )
        )
        session.send(LOCK)
        session.send(FENCE.format(token=self.token))
        if self.options.terminate_connections:
            session.send(terminate_sql(self.server.major))
            question = session.marker("terminated", "pg_temp.snapmgr_terminate()")
            answer = session.ask("terminated", question)
            ended, refused = (int(part) for part in answer.split())
            self.terminated = ended
            log.info("terminated %d other session(s) on %s", ended, self.where)
            if refused:
                log.warning(
                    "%d session(s) on %s belong to roles this user may not signal; "
                    "the restore waits up to %gs for their locks",
                    refused, self.where, self.options.lock_timeout_s,
                )  # fmt: skip
        if self.options.selection is not None:  # a partial restore adds, it does not wipe
            timeout_ms = max(1, round(self.options.lock_timeout_s * 1000))
            session.send(f"SET LOCAL lock_timeout = '{timeout_ms}ms';\n")
            return
        session.send(self.plan.wipe(self.server.major, self.options.lock_timeout_s))

    def _stream(
        self, session: PsqlSession, progress: Progress, stream: StoredSql, chunks: Iterator[bytes]
    ) -> None:
        """Every byte of the stored dump into psql; raises at the end if it does not verify."""
        total = self.manifest.raw_size
        self.streaming_unverified = True
        with progress:
            for chunk in chunks:
                if chunk:
                    session.send(chunk)
                progress.update(stream.scanner.raw_size, total)
        self.streaming_unverified = False

    def _check_counts(self, session: PsqlSession) -> None:
        """The restored tables' exact row counts must be the manifest's."""
        content = self.manifest.content
        question = counts_json(content.exclude_schemas, content.exclude_tables)
        answer = session.ask("counts", COUNTS_SETUP + session.marker("counts", question))
        data = json.loads(answer)
        restored: dict[str, int] = data["counts"] or {}
        skipped = set(data["extension_tables"] or [])
        skipped |= {name for name in restored if self.manifest.content.excludes(name)}
        expected = self.expected_tables()
        names = set(expected) if self.options.selection else set(restored) | set(expected)
        differing = [
            name
            for name in sorted(names)
            if name not in skipped and restored.get(name) != expected.get(name)
        ]
        if differing:
            shown = ", ".join(
                f"{name} has {restored.get(name, 'no table')} rows, the snapshot "
                f"{expected.get(name, 'no table')}"
                for name in differing[:3]
            )
            raise RestoreError(f"row counts after the restore differ from the manifest: {shown}")

    def _check_content(self, session: PsqlSession) -> None:
        """The restored tables' data, read back inside the transaction, must hash to
        the manifest's fingerprints (see :mod:`snapmgr.fingerprint`)."""
        started = time.monotonic()
        expected = (self.manifest.fingerprints or {}).get("tables") or {}
        session.send(_dump_session_sql(self.manifest.timezone))
        names = [name for name in sorted(self.expected_tables()) if name in expected]
        idents = [".".join(quote_name(part) for part in name.split(".", 1)) for name in names]
        # One question for every column list, then every COPY at once: no round trips.
        question = COLUMNS_HEX.format(tables=text_array(tuple(idents)))
        answer = session.ask("columns", session.marker("columns", question))
        columns: dict[str, str] = json.loads(bytes.fromhex(answer).decode())
        statements = []
        for index, ident in enumerate(idents):
            target = f"{ident} ({columns[ident]})" if columns.get(ident) else ident
            statements.append(
                session.output_fingerprint_sql(f"content{index}", f"COPY {target} TO STDOUT;\n")
            )
        session.send("".join(statements))
        differing = [
            name
            for index, name in enumerate(names)
            if session.wait_for(f"content{index}") != expected[name]
        ]
        log.info(
            "content of %d table(s) compared with the manifest's fingerprints in %.1fs",
            len(names), time.monotonic() - started,
        )  # fmt: skip
        if differing:
            raise VerificationError(
                "content after the restore differs from the snapshot's fingerprints: "
                + ", ".join(f"table {name}" for name in differing[:3])
            )

    def _commit(self, session: PsqlSession) -> None:
        """Arm the fence and commit; if psql does not confirm, ask the server."""
        session.send(ARM_AND_COMMIT.format(token=self.token))
        session.send(session.marker("committed", "'yes'"))
        code = session.finish()
        if code == 0 and session.answer("committed") == "yes":
            return
        outcome = self._commit_outcome(session)
        if outcome == "committed":
            log.warning("psql exited with code %d after COMMIT; the server confirms it", code)
            return
        reason = session.first_error() or f"psql exited with code {code}"
        if outcome == "aborted":
            raise RestoreError(f"COMMIT failed: {reason}; rolled back, {self.where} is unchanged")
        raise SnapmgrError(
            f"the restore's COMMIT was sent but its outcome is unknown ({reason}); "
            f"check {self.where} (e.g. `snapmgr verify` then compare row counts)"
        )

    def _commit_outcome(self, session: PsqlSession) -> str | None:
        """``committed``/``aborted`` as the server knows it, or ``None`` if it cannot tell."""
        xact = session.answer("xact")
        if not xact:
            return None
        xid = int(xact.split()[0])
        deadline = time.monotonic() + IN_DOUBT_WAIT_S
        try:
            with self.options.conn.session() as db:
                while True:
                    row = db.execute("SELECT txid_status(%s)", (xid,)).fetchone()
                    status = row[0] if row else None
                    if status != "in progress" or time.monotonic() > deadline:
                        return str(status) if status in ("committed", "aborted") else None
                    time.sleep(0.2)
        except DatabaseError:
            return None

    def _explain(self, exc: BaseException, session: PsqlSession) -> BaseException:
        """The one error to report for a rolled-back attempt."""
        unchanged = f"rolled back, {self.where} is unchanged"
        if isinstance(exc, VerificationError | StorageError):
            return type(exc)(f"{exc}; nothing was restored, {self.where} is unchanged{_OTHER}")
        if isinstance(exc, KeyboardInterrupt):
            name = f" by {exc.args[0]}" if exc.args else ""
            return RestoreInterrupted(f"restore interrupted{name}; {unchanged}")
        if isinstance(exc, RestoreError):
            return RestoreError(f"{exc}; {unchanged}")
        if isinstance(exc, PsqlGone | DumpError):
            damage = self._stored_copy_damage() if self.streaming_unverified else None
            if damage:
                stopped = session.first_error()
                seen = f" (psql had stopped at: {stopped})" if stopped else ""
                return VerificationError(
                    f"{damage}{seen}; nothing was restored, {self.where} is unchanged{_OTHER}"
                )
            reason = session.first_error() or f"psql exited with code {session.proc.returncode}"
            if isinstance(exc, DumpError):
                reason = str(exc)
            return RestoreError(f"restore failed: {reason}{_hint(reason)}; {unchanged}")
        return exc

    def _stored_copy_damage(self) -> str | None:
        """Why the stored bytes do not match the manifest, or ``None`` if they do.

        psql can stop on garbage before the stream's end reveals a bad
        checksum; re-reading the copy tells "corrupt" (exit 6) from "failed" (8).
        """
        manifest = self.manifest
        try:
            check_stored_object(self.store, manifest.dump_name, manifest.size, manifest.sha256)
        except VerificationError as exc:
            return str(exc)
        except (OSError, SnapmgrError) as exc:
            log.warning("cannot re-read %s to check it: %s", self.store.describe(), exc)
        return None


def _dump_session_sql(timezone: str | None) -> str:
    """pg_dump's output settings for the rest of the transaction: COPY prints the
    very bytes the dump holds (see :mod:`snapmgr.fingerprint`)."""
    statements = [statement.replace("SET ", "SET LOCAL ", 1) for statement in DUMP_SESSION]
    if timezone:
        zone = sql_literal(timezone)
        statements.append(f"SELECT pg_catalog.set_config('TimeZone', {zone}, true)")
    return "".join(f"{statement};\n" for statement in statements)


def _refuse_source(manifest: Manifest, options: RestoreOptions) -> None:
    """Refuse (exit 9) a partial restore into the database the snapshot came from
    while that database still has one of the tables: it would be a second copy
    of live data at best; restore into another database and copy rows from there."""
    conn, source = options.conn, manifest.database
    if (conn.dbname, conn.host, conn.port) != (source.name, source.host, source.port):
        return
    assert options.selection is not None
    names = sorted(options.selection.restored_tables(manifest.tables))
    with conn.session() as db:
        present = [
            name
            for name in names
            if db.execute(
                "SELECT pg_catalog.to_regclass(%s) IS NOT NULL",
                (".".join(quote_name(part) for part in name.split(".", 1)),),
            ).fetchone()
            == (True,)
        ]
    if present:
        raise SafetyRefusal(
            f"refusing to restore {', '.join(present[:3])} into {conn.display()}, the "
            f"database snapshot {manifest.id} was taken from, which still has "
            f"{'it' if len(present) == 1 else 'them'}: restore into another database with "
            "--target-url URL --create and copy the rows you need from there"
        )


def _hint(reason: str) -> str:
    lowered = reason.lower()
    if "lock timeout" in lowered:
        return (
            " (another session holds a lock in the target: stop the application or pass "
            "--terminate-connections)"
        )
    if "max_locks_per_transaction" in lowered or "out of shared memory" in lowered:
        return (
            " (the restore holds all its locks in one transaction: raise max_locks_per_transaction)"
        )
    if "invalid command \\restrict" in lowered:
        return (
            " (this psql predates the \\restrict line newer pg_dump writes: install the "
            "latest minor release of the PostgreSQL client, or set pg_bin_dir)"
        )
    if "must be owner" in lowered or "must be able to set role" in lowered:
        return (
            " (the restoring role may not change an object the snapshot holds: restore "
            "with --no-owner, or as a role that owns it or a superuser)"
        )
    if "permission denied" in lowered:
        return (
            " (the restoring role lacks a privilege the snapshot's statements need: restore "
            "as the database's owner, with --no-owner/--no-privileges, or as a superuser)"
        )
    return ""


def _check_target(conn: ConnInfo, create: bool) -> ServerInfo:
    """Connect once (exit 3 if we cannot), with a hint when the database is missing."""
    try:
        return preflight(conn)
    except DatabaseError as exc:
        if "does not exist" in str(exc) and not create:
            raise DatabaseError(f"{exc}, or pass --create to create it") from None
        raise


def maintenance(conn: ConnInfo) -> libpq.Connection:
    """A session on the same server's maintenance database, for CREATE/DROP DATABASE."""
    last: DatabaseError | None = None
    for name in MAINTENANCE_DATABASES:
        try:
            return conn.session(dbname=name)
        except DatabaseError as exc:
            last = exc
    assert last is not None
    raise last


def _create_database(conn: ConnInfo) -> bool:
    """Create the target database if it is missing; True if this call created it."""
    with maintenance(conn) as admin:
        exists = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (conn.dbname,)
        ).fetchone()
        if exists:
            return False
        try:
            admin.execute(f"CREATE DATABASE {quote_name(conn.dbname)}")
        except libpq.Error as exc:
            reason = str(exc).strip().splitlines()[0]
            hint = ""
            if exc.sqlstate == INSUFFICIENT_PRIVILEGE:
                hint = f" ({conn.user} needs CREATEDB; or name a database that exists)"
            raise DatabaseError(
                f"cannot create database {conn.dbname} on {conn.host}: {reason}{hint}"
            ) from None
    log.info("created database %s", conn.display())
    return True


def drop_created_database(conn: ConnInfo) -> None:
    """Undo ``--create`` after a failed restore, so the server is as it was (saying
    so only when there was a database to drop)."""
    statement = f"DROP DATABASE IF EXISTS {quote_name(conn.dbname)} WITH (FORCE)"
    try:
        with maintenance(conn) as admin:
            exists = admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (conn.dbname,)
            ).fetchone()
            if not exists:
                return
            admin.execute(statement)
        log.info("dropped database %s, which this restore had created", conn.display())
    except (DatabaseError, libpq.Error) as exc:
        log.warning("could not drop database %s created for the restore: %s", conn.dbname, exc)
