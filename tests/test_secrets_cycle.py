"""A planted password is found nowhere: not in any process's argv, any output, any file.

A role with a distinctive password (with characters a URL must percent-encode)
runs a whole snapshot, list, show, verify, check, prune, config, stores and
restore cycle through the real CLI, the password coming from DATABASE_URL,
from PGPASSWORD or from a 0600 passfile, at -v, -vv and with --json. While
each command runs, a thread reads ``/proc/*/cmdline`` of every process on the
machine (pg_dump and psql included); afterwards every byte the commands
printed and every file they wrote (decompressed dumps included) is searched.
The same for AWS secret keys and passwords in store URLs and store options.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from psycopg.conninfo import conninfo_to_dict

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
    """The scan is not blind: a child given the password in argv is caught."""
    with ArgvWatch() as watch:
        subprocess.run([sys.executable, "-c", "import time; time.sleep(0.3)", PASSWORD],
                       check=True)  # fmt: skip
    assert watch.children_with(PASSWORD)
