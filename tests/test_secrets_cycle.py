"""A planted password is found nowhere: not in any process's argv, any output, any file.

A role with a distinctive password (with characters a URL must percent-encode)
runs a whole snapshot, list, show, verify, check, prune, config, stores and
restore cycle through the real CLI, the password coming from DATABASE_URL,
from PGPASSWORD or from a 0600 passfile, at -v, -vv and with --json. While
each command runs, a thread reads ``/proc/*/cmdline`` of every process on the
machine (pg_dump and psql included); afterwards every byte the commands
printed and every file they wrote (decompressed dumps included) is searched.
The same for AWS secret keys and passwords in store URLs and store options,
and for an ``sslpassword`` in DATABASE_URL, which reaches pg_dump and psql
through a private service file; their environment (``/proc/PID/environ``) is
sampled too: no DATABASE_URL, no AWS keys.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from psycopg.conninfo import conninfo_to_dict

from snapmgr.postgres import ConnInfo
from tests.conftest import Cli
from tests.pgutil import Server
from tests.s3_server import (
    DenyingEndpoint,
    aws_env,
    bucket_keys,
    moto_server,
    new_bucket,
    s3_client,
)

__all__ = ["moto_server"]  # a pytest fixture, used by name

ROLE = "planted_role"
PASSWORD = "PLANTED-7c1d9e:/@#%?-q8Zr2Wx"  # ':/@#%?' must be percent-encoded in a URL
WRONG = "WRONG-4b2e1a:/@-Kp3Vn"
ORIGIN = {"url": "DATABASE_URL", "pgpassword": "PGPASSWORD", "passfile": "the passfile"}


def forms(secret: str) -> list[bytes]:
    """The secret as written, percent-encoded, and its longer fragments, so a
    password cut at a special character is still caught."""
    fragments = [part for part in re.split(r"[^A-Za-z0-9-]", secret) if len(part) >= 6]
    return [form.encode() for form in {secret, quote(secret, safe=""), *fragments}]


class ArgvWatch:
    """Reads every process's argv from /proc, over and over, until stopped."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        self.seen.add((entry / "cmdline").read_bytes())
                    except OSError:
                        continue

    def __enter__(self) -> ArgvWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def ran(self, program: bytes) -> bool:
        return any(argv.split(b"\0")[0].endswith(program) for argv in self.seen)

    def children_with(self, secret: str) -> list[bytes]:
        """argv of any process but snapmgr itself (given --database-url on purpose)
        that holds a form of ``secret``."""
        return [
            argv for argv in self.seen
            if argv.split(b"\0")[1:3] != [b"-m", b"snapmgr"]
            and any(form in argv for form in forms(secret))
        ]  # fmt: skip


class Recorder:
    """Runs CLI commands and keeps everything they printed."""

    def __init__(self, cli: Cli, env: dict[str, str]) -> None:
        self.cli = cli
        self.env = env
        self.printed: list[str] = []

    def __call__(self, *args: str, code: int = 0, env: dict[str, str] | None = None) -> str:
        result = self.cli(*args, env={**self.env, **(env or {})})
        self.printed += [result.stdout, result.stderr]
        assert result.returncode == code, f"{args}: {result.stderr}"
        return result.stdout

    def leaks(self, secret: str) -> list[str]:
        return [text for text in self.printed if any(f.decode() in text for f in forms(secret))]


def written_bytes(root: Path, skip: Path | None = None) -> dict[Path, bytes]:
    """Every file under ``root`` (dumps also decompressed), but ``skip``."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and path != skip:
            data = path.read_bytes()
            found[path] = gzip.decompress(data) if path.suffix == ".gz" else data
    return found


@pytest.fixture(scope="module")
def planted_role(pg_server: Server) -> Iterator[dict[str, Any]]:
    """A superuser role whose password is :data:`PASSWORD`; its connection parameters."""
    escaped = PASSWORD.replace("'", "''")
    pg_server.execute("postgres", f"DROP ROLE IF EXISTS {ROLE}")
    pg_server.execute("postgres", f"CREATE ROLE {ROLE} LOGIN SUPERUSER PASSWORD '{escaped}'")
    params = conninfo_to_dict(pg_server.admin_url)
    yield {"host": params.get("host", "127.0.0.1"), "port": params.get("port", "5432")}
    pg_server.execute("postgres", f"DROP ROLE IF EXISTS {ROLE}")


def role_url(where: dict[str, Any], dbname: str, password: str | None) -> str:
    secret = f":{quote(password, safe='')}" if password else ""
    return f"postgresql://{ROLE}{secret}@{where['host']}:{where['port']}/{dbname}"


def passfile(tmp_path: Path, password: str) -> Path:
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "pgpass"
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    path.write_text(f"*:*:*:{ROLE}:{escaped}\n")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(
    ("source", "flags"),
    [("url", ("-vv", "--json")), ("pgpassword", ("-v",)), ("passfile", ("-vv",))],
)
def test_planted_password_is_found_nowhere_in_a_full_cycle(
    cli: Cli, pg_server: Server, pagila_db: str, planted_role: dict[str, Any], tmp_path: Path,
    source: str, flags: tuple[str, ...],
) -> None:  # fmt: skip
    pgpass = passfile(tmp_path / "home", PASSWORD) if source == "passfile" else None
    env = {
        "url": {"DATABASE_URL": role_url(planted_role, pagila_db, PASSWORD)},
        "pgpassword": {"DATABASE_URL": role_url(planted_role, pagila_db, None),
                       "PGPASSWORD": PASSWORD},
        "passfile": {"DATABASE_URL": role_url(planted_role, pagila_db, None),
                     "PGPASSFILE": str(pgpass)},
    }[source]  # fmt: skip
    run = Recorder(cli, env)
    metrics = tmp_path / "metrics"
    metrics.mkdir()

    with ArgvWatch() as watch:
        out = run("snapshot", *flags)
        snapshot_id = json.loads(out)["id"] if "--json" in flags else out.strip()
        if source == "url":  # on snapmgr's own command line, but never on its children's
            run("snapshot", "--label", "flag", "--database-url", env["DATABASE_URL"], *flags,
                env={"DATABASE_URL": ""})  # fmt: skip
        for args in (
            ("list",), ("show", snapshot_id), ("show", "latest", "--json"),
            ("verify", snapshot_id), ("verify", "--all"), ("config",), ("config", "--json"),
            ("stores",), ("check", "--max-age", "1h", "--metrics-file", str(metrics / "c.prom")),
            ("prune", "--keep-last", "5", "--metrics-file", str(metrics / "p.prom")),
        ):  # fmt: skip
            run(*args, *(flag for flag in flags if flag not in args))
        pg_server.execute(pagila_db, "CREATE TABLE public.after_snapshot (a int)")
        run("restore", snapshot_id, "--yes", *flags)
        # A wrong password is refused without being echoed.
        if source == "url":
            wrong = {"DATABASE_URL": role_url(planted_role, pagila_db, WRONG)}
        elif source == "pgpassword":
            wrong = {"PGPASSWORD": WRONG}
        else:
            wrong = {"PGPASSFILE": str(passfile(tmp_path / "wrong", WRONG))}
        run("snapshot", *flags, code=3, env=wrong)
        run("restore", snapshot_id, "--yes", *flags, code=3, env=wrong)

    assert watch.ran(b"pg_dump") and watch.ran(b"psql"), "the children were never seen"
    assert watch.children_with(PASSWORD) == []
    assert watch.children_with(WRONG) == []
    assert run.leaks(PASSWORD) == [] and run.leaks(WRONG) == []
    for refused in (run.printed[-3], run.printed[-1]):  # snapshot's and restore's stderr
        assert "password authentication failed" in refused
        assert f"password in {ORIGIN[source]}" in refused  # where to fix it
    assert pg_server.execute(pagila_db, "SELECT to_regclass('public.after_snapshot')") == [(None,)]
    written = written_bytes(tmp_path, skip=pgpass)
    assert {p.name for p in written} >= {f"{snapshot_id}.json", f"{snapshot_id}.sql.gz",
                                          "last_snapshot.txt", "c.prom", "p.prom"}  # fmt: skip
    for secret in (PASSWORD, WRONG):
        leaked = [p for p, data in written.items() if any(f in data for f in forms(secret))]
        assert leaked == [] or leaked == [tmp_path / "wrong" / "pgpass"], leaked
    if source == "url":
        config = "".join(run.printed)
        assert f"{ROLE}:***@" in config  # URLs are shown, redacted


AWS_SECRET = "AwsSecretKEY-hardening-5d8c7b"
AWS_TOKEN = "AwsSessionTOKEN-hardening-2f9a"
STORE_SECRETS = ("FsspecSECRET-hardening-81e4", "FtpPASSWORD-hardening-c3d0")


def test_s3_and_store_secrets_are_never_shown(
    cli: Cli, pg_server: Server, pagila_db: str, moto_server: str, tmp_path: Path
) -> None:
    s3 = s3_client(moto_server)
    bucket = new_bucket(s3)
    config = tmp_path / "snapmgr.toml"
    config.write_text(f"""
default_stores = ["cloud"]

[stores.cloud]
url = "s3://{bucket}/app"

[stores.mirror]
url = "fsspec+s3://{bucket}/mirror"

[stores.mirror.storage_options]
key = "testing"
secret = "{STORE_SECRETS[0]}"
client_kwargs = {{ endpoint_url = "{moto_server}" }}

[stores.ftp]
url = "ftp://backup:{STORE_SECRETS[1]}@127.0.0.1:1/snapshots"
""")
    secret_env = {"AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_SESSION_TOKEN": AWS_TOKEN,
                  "AWS_MAX_ATTEMPTS": "1"}  # fmt: skip
    cli.env.update(aws_env(moto_server), **secret_env)
    run = Recorder(cli, {"DATABASE_URL": pg_server.url(pagila_db), "SNAPMGR_CONFIG": str(config)})

    for args in (("config",), ("config", "--json"), ("stores",), ("stores", "--json")):
        run(*args, "-vv")
    out = run("snapshot", "-vv", "--json", "--store", "cloud", "--store", "mirror")
    snapshot_id = json.loads(out)["id"]
    run("list", "-vv", "--store", "cloud", "--store", "mirror")
    run("verify", snapshot_id, "-vv", "--store", "mirror")
    run("list", "-vv", "--store", "ftp", code=5)  # the FTP server is not there
    with DenyingEndpoint() as denied:
        run("snapshot", "-vv", code=5, env={"AWS_ENDPOINT_URL_S3": denied.url})
    run("list", "-vv", "--store", f"s3://AKIAEXAMPLE:{AWS_SECRET}@{bucket}/app", code=2)

    assert "access denied" in run.printed[-3] and "credentials" in run.printed[-3]
    for secret in (AWS_SECRET, AWS_TOKEN, *STORE_SECRETS):
        assert run.leaks(secret) == [], secret
    assert f"{snapshot_id}.json" in "".join(bucket_keys(s3, bucket))
    stored = [s3.get_object(Bucket=bucket, Key=key)["Body"].read()
              for key in bucket_keys(s3, bucket) if key.endswith(".json")]  # fmt: skip
    stored += [cli.pointer.read_bytes()]
    for secret in (AWS_SECRET, AWS_TOKEN, *STORE_SECRETS):
        assert not [blob for blob in stored if secret.encode() in blob]


def test_the_argv_watch_would_see_a_password_on_a_command_line(tmp_path: Path) -> None:
    """The scan is not blind: a child given a password in argv is caught. Its own
    password, shaped like PASSWORD: another test scanning /proc at the same time (the
    other pytest worker, another run on this machine) must not see PASSWORD planted."""
    canary = f"CANARY-{uuid.uuid4().hex[:12]}:/@#%?-{uuid.uuid4().hex[:8]}"
    with ArgvWatch() as watch:
        subprocess.run([sys.executable, "-c", "import time; time.sleep(0.3)", canary],
                       check=True)  # fmt: skip
    assert watch.children_with(canary)


SSL_SECRET = f"SSLKEY-PASSPHRASE-{uuid.uuid4().hex[:12]}"  # unique: other runs share /proc


class ChildWatch(ArgvWatch):
    """Also reads the environment (``/proc/PID/environ``) of every pg_dump and psql
    whose parent's environment holds ``marker`` (other test runs on this machine
    start their own), and, while the child runs, the service file it names."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker.encode()
        self.environs: list[dict[bytes, bytes]] = []
        self.argvs: list[bytes] = []
        self.connecting: list[dict[bytes, bytes]] = []  # environments of pg_dump/psql --dbname
        self.service_files: dict[str, tuple[int, int, bytes]] = {}

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    argv = (entry / "cmdline").read_bytes()
                    self.seen.add(argv)
                    if argv.split(b"\0")[0].endswith((b"/pg_dump", b"/psql")):
                        parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                        if self.marker in Path(f"/proc/{parent}/environ").read_bytes():
                            self.argvs.append(argv)
                            environ = (entry / "environ").read_bytes()
                            # A child that exited between the two reads shows an empty
                            # environment (a zombie has no memory left to read): only a
                            # child still running, with the same command line, counts.
                            if (entry / "cmdline").read_bytes() == argv:
                                self._note_child(argv, environ)
                except OSError:
                    continue

    def _note_child(self, argv: bytes, raw: bytes) -> None:
        variables = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        self.environs.append(variables)
        if b"--dbname=" in argv:
            self.connecting.append(variables)
        path = variables.get(b"PGSERVICEFILE", b"").decode()
        if path and path not in self.service_files:
            try:
                mode = Path(path).stat().st_mode & 0o777
                dir_mode = Path(path).parent.stat().st_mode & 0o777
                self.service_files[path] = (mode, dir_mode, Path(path).read_bytes())
            except OSError:
                return


def ssl_url(where: dict[str, Any], dbname: str) -> str:
    """The role's URL with its password and an ``sslpassword`` (ignored by libpq
    without SSL, but a secret that must be handled like the password)."""
    query = f"?sslmode=disable&sslpassword={quote(SSL_SECRET, safe='')}"
    return role_url(where, dbname, PASSWORD) + query


def test_sslpassword_and_the_environment_never_reach_pg_dump_or_psql(
    cli: Cli, pg_server: Server, pagila_db: str, planted_role: dict[str, Any]
) -> None:
    marker = f"SECRETS_CYCLE_RUN={uuid.uuid4().hex}"
    env = {"DATABASE_URL": ssl_url(planted_role, pagila_db), "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
           "SNAPMGR_LABEL": "ssl", **dict([marker.split("=")])}  # fmt: skip
    run = Recorder(cli, env)
    with ChildWatch(marker) as watch:
        snapshot_id = run("snapshot", "-vv").strip()
        pg_server.execute(pagila_db, "CREATE TABLE public.after_snapshot (a int)")
        run("restore", snapshot_id, "--yes", "-vv")

    assert watch.ran(b"pg_dump") and watch.ran(b"psql"), "the children were never seen"
    assert watch.children_with(SSL_SECRET) == []
    assert watch.argvs and not [a for a in watch.argvs if any(f in a for f in forms(PASSWORD))]
    assert watch.environs
    for variables in watch.environs:
        names = set(variables)
        assert not names & {b"DATABASE_URL", b"AWS_SECRET_ACCESS_KEY", b"SNAPMGR_LABEL",
                            marker.split("=", maxsplit=1)[0].encode()}, names  # fmt: skip
        assert not [v for v in variables.values() if SSL_SECRET.encode() in v]
        assert b"PATH" in names
    assert watch.connecting, "no connecting child seen"
    for variables in watch.connecting:
        assert variables.get(b"PGPASSWORD") == PASSWORD.encode()  # the password: PGPASSWORD
        assert variables.get(b"PGSERVICE") == b"snapmgr"  # the other secrets: the service file
    assert len(watch.service_files) >= 2, "each child's service file, seen while it ran"
    for path, (mode, dir_mode, text) in watch.service_files.items():
        assert (mode, dir_mode) == (0o600, 0o700), path
        assert text == f"[snapmgr]\nsslpassword={SSL_SECRET}\n".encode()
        assert not Path(path).exists() and not Path(path).parent.exists(), "left behind"
    assert run.leaks(SSL_SECRET) == [] and run.leaks(PASSWORD) == []
    assert pg_server.execute(pagila_db, "SELECT to_regclass('public.after_snapshot')") == [(None,)]


def test_the_service_file_hands_libpq_the_secret_parameters(
    pg_server: Server, pagila_db: str, planted_role: dict[str, Any]
) -> None:
    """libpq itself reads the sslpassword from the child's service file: a child
    connecting with the child's argv conninfo and environment has it."""
    conn = ConnInfo.parse(ssl_url(planted_role, pagila_db))
    assert conn.hidden == {"sslpassword": SSL_SECRET}
    probe = (
        "import sys, psycopg\n"
        "with psycopg.connect(sys.argv[1]) as db:\n"
        "    options = {o.keyword: o.val for o in db.pgconn.info}\n"
        "    print((options[b'sslpassword'] or b'').decode(), db.info.dbname)\n"
    )
    with conn.for_child() as child:
        assert SSL_SECRET not in child.dsn and PASSWORD not in child.dsn
        service_file = Path(child.env["PGSERVICEFILE"])
        done = subprocess.run([sys.executable, "-c", probe, child.dsn], env=child.env,
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [SSL_SECRET, pagila_db]
    assert not service_file.exists()
