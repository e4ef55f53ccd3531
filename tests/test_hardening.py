"""Hardening: every way snapmgr can fail, it fails safe.

Each test forces one failure for real (a denied or vanished S3 endpoint, a
full or read-only filesystem, a kill or a signal, a prune racing a snapshot)
through the real CLI against the real cluster and a moto server, then checks
the safety property: the documented exit code and one line without a
traceback, nothing half-committed, the pointer unchanged, no multipart upload
left behind, and the next snapshot and prune still work. The rows of the
"What happens when..." table that older test files already prove are not
repeated here.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import Cli
from tests.pgutil import Server
from tests.s3_server import (
    DenyingEndpoint,
    FaultProxy,
    aws_env,
    bucket_keys,
    moto_server,
    new_bucket,
    pending_uploads,
    s3_client,
)
from tests.snapshot_history import plant, state, take_template
from tests.test_multistore_cli import SlowParts, add_incompressible_table

__all__ = ["moto_server"]  # a pytest fixture, used by name

UNREACHABLE_DB = "postgresql://app:pw@127.0.0.1:1/app"


def one_error_line(stderr: str) -> str:
    """The failure is one line, the last on stderr (progress logs may come
    before it), and there is no traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and stderr.endswith(errors[0] + "\n"), stderr
    assert errors[0].startswith("snapmgr: error: ")
    return errors[0]


def run_parallel(
    cli: Cli, cases: list[tuple[tuple[str, ...], dict[str, str]]]
) -> list[subprocess.CompletedProcess[str]]:
    """Run several CLI invocations at once: each costs an interpreter start-up."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda case: cli(*case[0], env=case[1]), cases))


def wait_for(predicate: Callable[[], object], timeout: float = 60, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def start(cli: Cli, *args: str, env: dict[str, str], group: bool = False) -> subprocess.Popen[str]:
    """The CLI in the background; ``group`` puts it in a process group of its own,
    as a shell does, so a test can send a terminal's Ctrl-C to the whole group."""
    return subprocess.Popen(
        [sys.executable, "-m", "snapmgr", *args],
        env={**cli.env, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=group,
    )


def files(store: Path) -> set[str]:
    return {p.name for p in store.iterdir()} if store.exists() else set()


def committed(store: Path) -> set[str]:
    return {name.removesuffix(".json") for name in files(store) if name.endswith(".json")}


# --- bad input ---------------------------------------------------------------------------------

BAD_IDS = [
    "../../etc/passwd", "a/b", "..", "x..y", ".hidden", "a b",
    "a;id", "ünïcode_20250101_000000", "%2e%2e%2f", "x" * 129, "latest/..", "nul\\0",
]  # fmt: skip
ID_COMMANDS = [("show",), ("verify",), ("restore", "--yes"), ("delete", "--yes"), ("pin",),
               ("unpin",)]  # fmt: skip


def test_bad_ids_are_refused_by_every_command_before_any_storage_call(
    cli: Cli, moto_server: str
) -> None:
    bucket = new_bucket(s3_client(moto_server))
    store = ("--store", f"s3://{bucket}/app")
    with FaultProxy(moto_server, fail_from_part=1 << 30) as counter:
        cli.env.update(aws_env(counter.url), DATABASE_URL=UNREACHABLE_DB)
        cases = [
            ((*command[:1], bad, *command[1:], *store), {})
            for command, bad in zip(itertools.cycle(ID_COMMANDS), BAD_IDS, strict=False)
        ]
        results = run_parallel(cli, cases)
        for (args, _), result in zip(cases, results, strict=True):
            assert result.returncode == 2, (args, result.stderr)
            assert "invalid snapshot ID" in one_error_line(result.stderr), args
        assert counter.forwarded == 0, "a bad ID reached the store"

        # The counter does count: a well-formed unknown ID is looked up, and not found.
        unknown = cli("show", "nope_20200101_000000", *store)
        assert unknown.returncode == 7, unknown.stderr
        assert counter.forwarded > 0


LONG_HOST = "h" * 300  # one 300-character label: IDNA refuses it
DEEP_ARRAY = "x = " + "[" * 3000 + "]" * 3000 + "\n"
DEEP_TABLE = "x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n"


@pytest.mark.parametrize(
    ("args", "env", "config", "named"),
    [
        (("prune", "--keep-within", "3x"), {}, None, "--keep-within"),
        (("prune", "--keep-daily", "-5"), {}, None, "--keep-daily"),
        (("prune", "--keep-last", "1.5"), {}, None, "--keep-last"),
        (("prune", "--keep-last", "99999999999999999999"), {}, None, "--keep-last"),
        (("prune", "--keep-within", "99999999999y"), {}, None, "--keep-within"),
        (("check", "--max-age", "soon"), {}, None, "--max-age"),
        (("check", "--max-age", "99999999999999999999h"), {}, None, "--max-age"),
        (("check", "--max-age", "1h", "--min-count", "many"), {}, None, "--min-count"),
        (("check", "--max-age", "1h", "--min-count", "99999999999999999999"), {}, None,
         "--min-count"),
        (("check", "--max-age", "1h", "--metrics-file", ""), {}, None, "--metrics-file"),
        (("prune", "--keep-last", "1", "--metrics-file", ""), {}, None, "--metrics-file"),
        (("snapshot", "--level", "99"), {}, None, "compression_level"),
        (("snapshot", "--level", "abc"), {}, None, "--level"),
        (("restore", "latest", "--lock-timeout", "0"), {}, None, "--lock-timeout"),
        (("restore", "latest", "--yes", "--lock-timeout", "inf"), {}, None, "--lock-timeout"),
        (("restore", "latest", "--yes", "--lock-timeout", "1e309"), {}, None, "--lock-timeout"),
        (("restore", "latest", "--yes", "--lock-timeout", "nan"), {}, None, "--lock-timeout"),
        (("restore", "latest", "--yes", "--lock-timeout", "1e300"), {}, None, "--lock-timeout"),
        (("guard", "--lock-timeout", "inf", "--", "true"), {}, None, "--lock-timeout"),
        (("restore", "latest", "--yes", "--target-url", f"postgresql://u@{LONG_HOST}/db"), {},
         None, "--target-url"),
        (("snapshot",), {"DATABASE_URL": f"postgresql://u:pw@{LONG_HOST}:5432/db"}, None,
         "DATABASE_URL"),
        (("snapshot",), {"DATABASE_URL": f"{UNREACHABLE_DB}?service=app&sslpassword=pw"}, None,
         "DATABASE_URL"),
        (("snapshot", "--store", "file://"), {}, None, "--store"),
        (("snapshot", "--store", "local://"), {}, None, "--store"),
        (("list", "--store", f"https://{LONG_HOST}/snaps"), {}, None, "--store"),
        (("list", "--store", "s3://bucket/app"),
         {"AWS_ENDPOINT_URL_S3": f"http://{LONG_HOST}:9000"}, None, "AWS_ENDPOINT_URL_S3"),
        (("prune", "--keep-last", "1"), {"SNAPMGR_ORPHAN_GRACE": "soon"}, None,
         "SNAPMGR_ORPHAN_GRACE"),
        (("snapshot",), {"SNAPMGR_COMPRESSION_LEVEL": "high"}, None, "SNAPMGR_COMPRESSION_LEVEL"),
        (("snapshot",), {"SNAPMGR_PROGRESS_INTERVAL": "nan"}, None, "SNAPMGR_PROGRESS_INTERVAL"),
        (("snapshot",), {"SNAPMGR_PROGRESS_INTERVAL": "1e309"}, None,
         "SNAPMGR_PROGRESS_INTERVAL"),
        (("snapshot",), {}, b'label = "\xff"\n', "is not UTF-8"),
        (("snapshot",), {}, b"compression_level = inf\n", "compression_level"),
        (("snapshot",), {}, b"compression_level = 1e400\n", "compression_level"),
        (("snapshot",), {}, b"progress_interval = nan\n", "progress_interval"),
        (("list",), {}, DEEP_ARRAY.encode(), "nested too deeply"),
        (("list",), {}, DEEP_TABLE.encode(), "nested too deeply"),
        (("list", "--no-such-flag"), {}, None, "--no-such-flag"),
    ],
    ids=lambda value: " ".join(value)[:60] if isinstance(value, tuple) else None,
)  # fmt: skip
def test_bad_numbers_and_durations_exit_2_naming_the_flag(
    cli: Cli, tmp_path: Path, args: tuple[str, ...], env: dict[str, str], config: bytes | None,
    named: str,
) -> None:  # fmt: skip
    """Bad values from flags, variables and config files: exit 2 and one line naming
    the flag, key or variable, before any connection (the database URL leads
    nowhere and the store stays empty, so a late check would fail otherwise)."""
    if config is not None:
        (tmp_path / "bad.toml").write_bytes(config)
        args = (*args, "--config", str(tmp_path / "bad.toml"))
    result = cli(*args, env={"DATABASE_URL": UNREACHABLE_DB, "AWS_MAX_ATTEMPTS": "1", **env})
    assert result.returncode == 2, result.stderr
    assert named in one_error_line(result.stderr)
    assert result.stderr.count("\n") == 1, result.stderr  # nothing else said, nothing done
    assert not cli.store.exists() and not cli.pointer.exists()


# --- S3 refusing or vanishing --------------------------------------------------------------------


def test_s3_denying_access_exits_5_with_one_line_about_credentials(
    cli: Cli, pg_server: Server, pagila_db: str
) -> None:
    with DenyingEndpoint() as denied:
        cli.env.update(aws_env(denied.url), AWS_MAX_ATTEMPTS="1")
        for args in (("snapshot",), ("list",), ("verify", "--all"), ("prune", "--keep-last", "1")):
            result = cli(*args, "--store", "s3://locked-bucket/app",
                         env={"DATABASE_URL": pg_server.url(pagila_db)})  # fmt: skip
            assert result.returncode == 5, (args, result.stderr)
            line = one_error_line(result.stderr)
            assert "access denied" in line and "credentials" in line, line
            assert "s3://locked-bucket/app" in line
        assert denied.requests > 0
    assert not cli.pointer.exists()


def test_s3_bucket_that_does_not_exist_exits_5_and_commits_nothing(
    cli: Cli, pg_server: Server, pagila_db: str, moto_server: str
) -> None:
    """With boto3 (``s3://``) and with fsspec (``fsspec+s3://``, s3fs) alike."""
    cli.env.update(aws_env(moto_server))
    for url in ("s3://no-such-bucket-here/app", "fsspec+s3://no-such-bucket-here/app"):
        for args in (("snapshot",), ("list",), ("show", "latest")):
            result = cli(*args, "--store", url, env={"DATABASE_URL": pg_server.url(pagila_db)})
            assert result.returncode == 5, (url, args, result.stderr)
            line = one_error_line(result.stderr)
            assert "bucket" in line and "does not exist" in line, line
            assert "no-such-bucket-here" in line
    assert not cli.pointer.exists()


class TrueUploadTimes(FaultProxy):
    """Forwards to moto, which reports every multipart upload as started on
    2010-11-10; S3 reports when it really started. This puts back the time each
    upload was seen to start, so prune's age check meets what S3 would say."""

    def __init__(self, target: str) -> None:
        super().__init__(target, fail_from_part=1 << 30)
        self.started: dict[str, str] = {}

    def rewrite(self, method: str, path: str, body: bytes) -> bytes:
        text = body.decode("utf-8", "replace")
        if method == "POST" and path.endswith("?uploads"):
            for upload_id in re.findall(r"<UploadId>([^<]+)</UploadId>", text):
                self.started[upload_id] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        elif method == "GET" and "uploads" in parse_qs(urlsplit(path).query, True):
            text = re.sub(r"<Upload>.*?</Upload>", self._true_time, text, flags=re.DOTALL)
            return text.encode()
        return body

    def _true_time(self, match: re.Match[str]) -> str:
        upload_id = re.search(r"<UploadId>([^<]+)</UploadId>", match.group(0))
        started = self.started.get(upload_id.group(1)) if upload_id else None
        if started is None:
            return match.group(0)
        return re.sub(r"<Initiated>[^<]*</Initiated>", f"<Initiated>{started}</Initiated>",
                      match.group(0))  # fmt: skip


class VanishingEndpoint(FaultProxy):
    """Forwards to moto until part 2 of an upload; from then on the endpoint is gone
    for good: every request, the AbortMultipartUpload included, is cut."""

    gone = False

    def _should_cut(self, method: str, path: str) -> int | None:
        if super()._should_cut(method, path) is not None:
            self.gone = True
        return 0 if self.gone else None


def s3_config(tmp_path: Path, bucket: str) -> str:
    path = tmp_path / "s3.toml"
    path.write_text(f'[stores.cloud]\nurl = "s3://{bucket}/app"\npart_size = "5MiB"\n')
    return str(path)


def test_s3_endpoint_vanishing_mid_upload_then_prune_aborts_the_upload(
    cli: Cli, pg_server: Server, pagila_db: str, moto_server: str, tmp_path: Path
) -> None:
    """The worst S3 case: not even the abort gets through, so the upload stays
    (invisible, billed) until a later prune, past orphan_grace, aborts it."""
    s3 = s3_client(moto_server)
    bucket = new_bucket(s3)
    add_incompressible_table(pg_server, pagila_db)
    store = ("--config", s3_config(tmp_path, bucket), "--store", "cloud")
    with TrueUploadTimes(moto_server) as s3_endpoint:
        cli.env.update(aws_env(s3_endpoint.url), DATABASE_URL=pg_server.url(pagila_db))
        first = cli.ok("snapshot", "--compression", "none", *store).stdout.strip()
        pointer = cli.pointer.read_text()

        with VanishingEndpoint(s3_endpoint.url, fail_from_part=2) as endpoint:
            vanished = {"AWS_ENDPOINT_URL_S3": endpoint.url, "AWS_MAX_ATTEMPTS": "1"}
            result = cli("snapshot", "--compression", "none", "--label", "doomed", *store,
                         env=vanished)  # fmt: skip
            assert endpoint.gone, "the upload never reached part 2"
        assert result.returncode == 5, result.stderr
        line = one_error_line(result.stderr)
        assert "s3://" in line and "doomed" in line
        assert "could not abort the multipart upload" in result.stderr
        assert cli.pointer.read_text() == pointer
        assert sorted(bucket_keys(s3, bucket)) == [f"app/{first}.json", f"app/{first}.sql"]
        (pending,) = pending_uploads(s3, bucket)
        assert pending.startswith("app/doomed_")

        second = cli.ok("snapshot", "--compression", "none", *store).stdout.strip()
        young = json.loads(cli.ok("prune", "--keep-last", "1", "--json", *store).stdout)
        assert {item["id"] for item in young["remove"]} == {first}
        (orphan,) = young["orphans"]
        assert orphan["name"].startswith(".doomed_") and orphan["name"].endswith(".partial")
        assert not orphan["removed"]  # it may be a snapshot in progress: within orphan_grace
        assert pending_uploads(s3, bucket) == [pending]
        time.sleep(1.1)
        old = json.loads(cli.ok("prune", "--keep-last", "1", "--json", *store,
                                env={"SNAPMGR_ORPHAN_GRACE": "1s"}).stdout)  # fmt: skip
        assert [o["removed"] for o in old["orphans"]] == [True] and old["remove"] == []
        assert pending_uploads(s3, bucket) == []
        assert sorted(bucket_keys(s3, bucket)) == [f"app/{second}.json", f"app/{second}.sql"]
        cli.ok("verify", "latest", *store)


def test_sigkill_mid_s3_upload_leaves_nothing_prune_cannot_clean(
    cli: Cli, pg_server: Server, pagila_db: str, moto_server: str, tmp_path: Path
) -> None:
    s3 = s3_client(moto_server)
    bucket = new_bucket(s3)
    add_incompressible_table(pg_server, pagila_db)
    store = ("--config", s3_config(tmp_path, bucket), "--store", "cloud")
    with TrueUploadTimes(moto_server) as s3_endpoint, SlowParts(s3_endpoint.url, 0.5) as slow:
        cli.env.update(aws_env(s3_endpoint.url), DATABASE_URL=pg_server.url(pagila_db))
        proc = start(cli, "snapshot", "--compression", "none", "--label", "killed", *store,
                     env={"AWS_ENDPOINT_URL_S3": slow.url})  # fmt: skip
        assert slow.part_seen.wait(60), "no part upload started"
        proc.kill()
        proc.communicate(timeout=30)
        assert not cli.pointer.exists()
        assert bucket_keys(s3, bucket) == []
        assert len(pending_uploads(s3, bucket)) == 1  # nobody was left to abort it

        after = cli.ok("snapshot", "--compression", "none", *store).stdout.strip()
        time.sleep(1.1)  # past the 1s orphan_grace below
        report = json.loads(cli.ok("prune", "--keep-last", "1", "--json", *store,
                                   env={"SNAPMGR_ORPHAN_GRACE": "1s"}).stdout)  # fmt: skip
        assert [o["removed"] for o in report["orphans"]] == [True]
        assert [item["id"] for item in report["keep"]] == [after]
        assert pending_uploads(s3, bucket) == []
        cli.ok("verify", after, *store)


# --- full and read-only filesystems --------------------------------------------------------------


@pytest.fixture
def mount_tmpfs() -> Iterator[Callable[[Path, int], Path]]:
    """Mount a tmpfs of a given size: a real filesystem that fills up or turns
    read-only, even for root. Skips where mounting is not allowed."""
    mounted: list[Path] = []

    def mount(path: Path, size: int) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                               str(path)], capture_output=True, text=True, check=False)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def test_a_really_full_disk_exits_5_and_leaves_only_what_was_there(
    cli: Cli, pg_server: Server, pagila_db: str, tmp_path: Path,
    mount_tmpfs: Callable[[Path, int], Path],
) -> None:  # fmt: skip
    url = pg_server.url(pagila_db)
    first = cli.ok("snapshot", env={"DATABASE_URL": url}).stdout.strip()
    dump_size = (cli.store / f"{first}.sql.gz").stat().st_size
    disk = mount_tmpfs(tmp_path / "disk", (dump_size * 3 // 2) // 4096 * 4096)
    for name in files(cli.store):
        (disk / name).write_bytes((cli.store / name).read_bytes())
    before = state(disk)
    pointer = cli.pointer.read_text()

    result = cli("snapshot", "--store", str(disk), env={"DATABASE_URL": url})

    assert result.returncode == 5, result.stderr
    line = one_error_line(result.stderr)
    assert "No space left on device" in line and "free some space" in line
    assert state(disk) == before  # no partial file, no reservation, no manifest
    assert cli.pointer.read_text() == pointer

    remount(disk, f"size={dump_size * 4}")  # the operator frees some space
    second = cli.ok("snapshot", "--store", str(disk), env={"DATABASE_URL": url}).stdout.strip()
    report = json.loads(cli.ok("prune", "--store", str(disk), "--keep-last", "1", "--json").stdout)
    assert [item["id"] for item in report["keep"]] == [second]
    assert committed(disk) == {second}
    cli.ok("verify", second, "--store", str(disk))


def test_a_read_only_store_and_pointer_directory(
    cli: Cli, pg_server: Server, pagila_db: str, tmp_path: Path,
    mount_tmpfs: Callable[[Path, int], Path],
) -> None:  # fmt: skip
    """Unwritable for everyone, root included: a filesystem remounted read-only."""
    url = pg_server.url(pagila_db)
    ro = mount_tmpfs(tmp_path / "ro", 64 << 20)
    store = ("--store", str(ro / "store"))
    first = cli.ok("snapshot", *store, env={"DATABASE_URL": url}).stdout.strip()
    pointer = cli.pointer.read_text()
    remount(ro, "ro")
    before = state(ro / "store")

    for where in (store, ("--store", str(ro / "new" / "store"))):
        result = cli("snapshot", *where, env={"DATABASE_URL": url})
        assert result.returncode == 5, result.stderr
        line = one_error_line(result.stderr)
        assert "Read-only file system" in line and "permissions" in line, line
    assert state(ro / "store") == before and cli.pointer.read_text() == pointer
    # What is stored stays readable: listed, verified, shown.
    assert [e["id"] for e in json.loads(cli.ok("list", "--json", *store).stdout)] == [first]
    cli.ok("verify", first, *store)
    pruned = cli("prune", "--keep-within", "1s", *store)  # nothing to remove: no write needed
    assert pruned.returncode == 0, pruned.stderr

    # A pointer file that cannot be replaced: the snapshot is committed, and said so.
    (tmp_path / "disk").mkdir()
    stuck = {"DATABASE_URL": url, "SNAPMGR_POINTER_FILE": str(ro / "last.txt")}
    result = cli("snapshot", "--store", str(tmp_path / "disk"), env=stuck)
    assert result.returncode == 5, result.stderr
    line = one_error_line(result.stderr)
    (new_id,) = committed(tmp_path / "disk")
    assert f"snapshot {new_id} is committed" in line and "pointer file" in line
    assert cli.pointer.read_text() == pointer

    remount(ro, "rw")
    cli.ok("snapshot", *store, env={"DATABASE_URL": url})
    assert len(committed(ro / "store")) == 2


# --- concurrency ---------------------------------------------------------------------------------


def test_snapshots_racing_for_taken_seconds_all_commit_with_distinct_ids(
    cli: Cli, pg_server: Server, empty_db: str
) -> None:
    """Every second around now already has a snapshot of the label, so each of
    four concurrent snapshots must take a suffix, and none may overwrite."""
    url = pg_server.url(empty_db)
    template = take_template(cli, pg_server, empty_db)
    now = datetime.now(UTC).replace(microsecond=0)
    planted = {
        plant(cli.store, template, now + timedelta(seconds=n), label="same") for n in range(-2, 60)
    }
    before = state(cli.store)

    procs = [start(cli, "snapshot", "--label", "same", env={"DATABASE_URL": url})
             for _ in range(4)]  # fmt: skip
    ids = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        ids.append(out.strip())

    assert len(set(ids)) == 4
    assert all(i.startswith("same_") and i.rsplit("-", 1)[-1].isdigit() for i in ids), ids
    assert not set(ids) & planted
    after = state(cli.store)
    assert {name: after[name] for name in before} == before  # nothing overwritten
    listed = {e["id"] for e in json.loads(cli.ok("list", "--json").stdout)}
    assert set(ids) <= listed
    for snapshot_id in ids:
        cli.ok("verify", snapshot_id)


def partial_dump_growing(store: Path) -> bool:
    return any(
        name.endswith(".partial") and (store / name).stat().st_size > 1_000_000
        for name in files(store)
    )


def test_prune_beside_a_running_snapshot_never_deletes_it(
    cli: Cli, pg_server: Server, big_db: str
) -> None:
    url = pg_server.url(big_db)
    older = cli.ok("snapshot", "--label", "app", env={"DATABASE_URL": url}).stdout.strip()
    proc = start(cli, "snapshot", "--label", "app", env={"DATABASE_URL": url})
    wait_for(lambda: partial_dump_growing(cli.store), what="the snapshot's upload")
    # Freeze it mid-upload so the prune below surely runs while it is in progress.
    proc.send_signal(signal.SIGSTOP)
    in_progress = files(cli.store) - {f"{older}.json", f"{older}.sql.gz"}

    during = json.loads(cli.ok("prune", "--keep-last", "1", "--json").stdout)
    proc.send_signal(signal.SIGCONT)

    assert [item["id"] for item in during["keep"]] == [older] and during["remove"] == []
    assert {o["name"] for o in during["orphans"]} == in_progress
    assert not [o for o in during["orphans"] if o["remove"] or o["removed"]]
    assert proc.poll() is None, "the snapshot should still be running"
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    newer = out.strip()
    cli.ok("verify", newer)

    after = json.loads(cli.ok("prune", "--keep-last", "1", "--json").stdout)
    assert [item["id"] for item in after["keep"]] == [newer]
    assert [item["id"] for item in after["remove"]] == [older]
    assert files(cli.store) == {f"{newer}.json", f"{newer}.sql.gz"}


# --- signals during a restore --------------------------------------------------------------------


def fingerprint(server: Server, dbname: str) -> tuple[Any, ...]:
    """The schema (as pg_dump prints it) and every row of the big tables, hashed."""
    schema = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", "--no-acl", "-d", server.conninfo(dbname)],
        env=server.child_env(), capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    lines = [line for line in schema.splitlines() if not line.startswith(("--", "\\"))]
    rows = server.execute(
        dbname,
        "SELECT (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM big_a t), "
        "(SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM big_b t)",
    )
    return (lines, rows, server.row_counts(dbname))


def restore_backends(server: Server, dbname: str) -> list[tuple[Any, ...]]:
    return server.execute(
        "postgres",
        "SELECT pid, state, query FROM pg_stat_activity "
        f"WHERE application_name = 'snapmgr restore' AND datname = '{dbname}'",
    )


def test_ctrl_c_during_a_restore_rolls_back_and_exits_130(
    cli: Cli, pg_server: Server, big_db: str
) -> None:
    url = pg_server.url(big_db)
    snapshot_id = cli.ok("snapshot", env={"DATABASE_URL": url}).stdout.strip()
    pg_server.execute(
        big_db,
        "DELETE FROM big_a WHERE id <= 10; UPDATE big_b SET payload = 'migrated' WHERE id = 7;"
        "CREATE TABLE migrated (a int); INSERT INTO migrated VALUES (1)",
    )
    before = fingerprint(pg_server, big_db)
    proc = start(cli, "restore", snapshot_id, "--yes", env={"DATABASE_URL": url}, group=True)

    def in_second_table() -> bool:
        return any(
            state == "active" and str(query).startswith("COPY public.big_b")
            for _, state, query in restore_backends(pg_server, big_db)
        )

    wait_for(in_second_table, what="the restore to be loading big_b (big_a already in)")
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole group
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 130, err
    line = one_error_line(err)
    assert "interrupted" in line and "unchanged" in line
    wait_for(lambda: not restore_backends(pg_server, big_db), what="the session to end")
    assert fingerprint(pg_server, big_db) == before
