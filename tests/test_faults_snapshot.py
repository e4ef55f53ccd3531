"""Faults during a snapshot, each forced for real: nothing half-committed, nothing lost.

Every test checks the same safety property afterwards: no manifest for the
failed attempt (so no committed snapshot), the pointer file unchanged, no
stray files in the store, and the next snapshot and prune still work.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.pgutil import Server


def store_files(cli: Cli) -> list[str]:
    return sorted(p.name for p in cli.store.iterdir()) if cli.store.exists() else []


def start_snapshot(cli: Cli, url: str, **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "snapmgr", "snapshot", "--label", "faulty"],
        env={**cli.env, "DATABASE_URL": url}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, **popen,
    )  # fmt: skip


def wait_for(predicate: object, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def pg_dump_pids(dbname: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"pg_dump") and any(dbname.encode() in a for a in argv):
            pids.append(int(entry.name))
    return pids


def partial_upload_started(cli: Cli) -> bool:
    return any(
        name.endswith(".partial") and (cli.store / name).stat().st_size > 1_000_000
        for name in store_files(cli)
    )


@pytest.fixture(scope="module")
def big_baseline(
    pg_server: Server, big_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Cli]]:
    """One good snapshot of the big database, taken once per module: its ID and the Cli
    (store and pointer file) that took it."""
    dbname = f"faults_big_{os.getpid()}"
    pg_server.create_db(dbname, template=big_template)
    maker = Cli(tmp_path_factory.mktemp("faults-baseline"))
    snapshot_id = maker.ok("snapshot", env={"DATABASE_URL": pg_server.url(dbname)}).stdout
    yield snapshot_id.strip(), maker
    pg_server.drop_db(dbname)


@pytest.fixture
def baseline(cli: Cli, big_baseline: tuple[str, Cli]) -> tuple[str, str]:
    """One good snapshot first, so we can check the pointer and list stay as they were:
    a private copy of the module's baseline store and pointer file, as if just taken."""
    snapshot_id, maker = big_baseline
    shutil.copytree(maker.store, cli.store)
    cli.pointer.write_text(maker.pointer.read_text().replace(str(maker.store), str(cli.store)))
    return snapshot_id, cli.pointer.read_text()


def assert_nothing_committed(cli: Cli, baseline: tuple[str, str]) -> None:
    snapshot_id, pointer = baseline
    assert cli.pointer.read_text() == pointer
    manifests = [n for n in store_files(cli) if n.endswith(".json")]
    assert manifests == [f"{snapshot_id}.json"]
    listed = cli.ok("list", "--json").stdout
    assert '"faulty' not in listed


def assert_next_snapshot_and_prune_work(cli: Cli, url: str) -> None:
    """After a fault: a new snapshot commits and verifies, and prune keeps every
    committed snapshot while removing what the fault left once past orphan_grace."""
    committed = {n.removesuffix(".json") for n in store_files(cli) if n.endswith(".json")}
    new_id = cli.ok("snapshot", "--label", "after", env={"DATABASE_URL": url}).stdout.strip()
    cli.ok("verify", new_id)
    # Whatever the fault left is older than the snapshot just taken (seconds): past 1s.
    report = json.loads(
        cli.ok("prune", "--keep-last", "1", "--json", env={"SNAPMGR_ORPHAN_GRACE": "1s"}).stdout
    )
    assert {item["id"] for item in report["keep"]} == committed | {new_id}
    assert report["remove"] == [] and all(o["removed"] for o in report["orphans"])
    assert set(store_files(cli)) == {
        name for i in committed | {new_id} for name in (f"{i}.json", f"{i}.sql.gz")
    }
    cli.ok("verify", "--all")


@pytest.mark.xdist_group("faults_big")  # one worker, one big_baseline
def test_server_terminating_pg_dump_mid_copy_exits_4(
    cli: Cli, pg_server: Server, big_db: str, baseline: tuple[str, str]
) -> None:
    proc = start_snapshot(cli, pg_server.url(big_db))

    def copy_running() -> bool:
        rows = pg_server.execute(
            "postgres",
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_dump' "
            f"AND datname = '{big_db}' AND query LIKE 'COPY %'",
        )
        for (pid,) in rows:
            pg_server.execute("postgres", f"SELECT pg_terminate_backend({pid})")
        return bool(rows)

    wait_for(copy_running, what="pg_dump's COPY")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err
    assert "pg_dump failed" in err and "nothing was committed" in err
    assert err.count("error:") == 1
    assert_nothing_committed(cli, baseline)
    assert not [n for n in store_files(cli) if "faulty" in n]
    assert_next_snapshot_and_prune_work(cli, pg_server.url(big_db))


@pytest.mark.xdist_group("faults_big")  # one worker, one big_baseline
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_upload_stops_pg_dump_and_discards(
    cli: Cli, pg_server: Server, big_db: str, baseline: tuple[str, str], signum: int
) -> None:
    proc = start_snapshot(cli, pg_server.url(big_db))
    wait_for(lambda: partial_upload_started(cli), what="a partial upload")
    # Stopped first, so the signal surely lands mid-upload however fast the machine is.
    proc.send_signal(signal.SIGSTOP)
    proc.send_signal(signum)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert_nothing_committed(cli, baseline)
    assert not [n for n in store_files(cli) if "faulty" in n or n.endswith(".partial")]
    wait_for(lambda: not pg_dump_pids(big_db), timeout=10, what="pg_dump to exit")
    assert_next_snapshot_and_prune_work(cli, pg_server.url(big_db))


@pytest.mark.xdist_group("faults_big")  # one worker, one big_baseline
def test_sigkill_leaves_only_an_uncommitted_orphan(
    cli: Cli, pg_server: Server, big_db: str, baseline: tuple[str, str]
) -> None:
    proc = start_snapshot(cli, pg_server.url(big_db))
    wait_for(lambda: partial_upload_started(cli), what="a partial upload")
    proc.send_signal(signal.SIGSTOP)
    proc.kill()
    proc.communicate(timeout=30)
    assert_nothing_committed(cli, baseline)
    # What a SIGKILL leaves is never counted: no manifest, so not listed, not `latest`.
    leftovers = [n for n in store_files(cli) if "faulty" in n]
    assert leftovers and not [n for n in leftovers if n.endswith(".json")]
    shown = cli.ok("show", "latest", "--json").stdout
    assert baseline[0] in shown
    # pg_dump notices its reader is gone (broken pipe) and exits by itself.
    wait_for(lambda: not pg_dump_pids(big_db), timeout=30, what="the orphaned pg_dump to exit")
    assert_next_snapshot_and_prune_work(cli, pg_server.url(big_db))


def test_disk_full_exits_5_and_removes_the_partial_file(
    cli: Cli, pg_server: Server, pagila_db: str
) -> None:
    url = pg_server.url(pagila_db)
    first = cli.ok("snapshot", env={"DATABASE_URL": url}).stdout.strip()
    pointer = cli.pointer.read_text()
    limit = 200_000  # bytes: a file-size limit stands in for a full disk (EFBIG ~ ENOSPC)

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = start_snapshot(cli, url, preexec_fn=limit_file_size)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 5, err
    assert err.count("error:") == 1 and "cannot write" in err and "free some space" in err
    assert cli.pointer.read_text() == pointer
    assert store_files(cli) == sorted([f"{first}.sql.gz", f"{first}.json"])
    assert_next_snapshot_and_prune_work(cli, url)


def test_store_path_under_a_regular_file_exits_5(
    cli: Cli, pg_server: Server, pagila_db: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    result = cli(
        "snapshot", "--store", str(blocker / "snaps"),
        env={"DATABASE_URL": pg_server.url(pagila_db)},
    )  # fmt: skip
    assert result.returncode == 5, result.stderr
    assert "not_a_dir" in result.stderr and "Traceback" not in result.stderr
    assert not cli.pointer.exists()


def test_missing_database_exits_3(cli: Cli, pg_server: Server) -> None:
    result = cli("snapshot", env={"DATABASE_URL": pg_server.url("no_such_db_here")})
    assert result.returncode == 3, result.stderr
    assert "no_such_db_here" in result.stderr and "database name" in result.stderr


def fake_pg_dump(directory: Path, version: str) -> None:
    directory.mkdir()
    script = directory / "pg_dump"
    script.write_text(f"#!/bin/sh\necho 'pg_dump (PostgreSQL) {version}'\n")
    script.chmod(0o755)


@pytest.mark.parametrize(
    ("version", "expected"), [(None, "pg_dump not found"), ("12.4", "pg_dump 12")]
)
def test_pg_dump_missing_or_too_old_exits_4(
    cli: Cli, pg_server: Server, pagila_db: str, tmp_path: Path,
    version: str | None, expected: str,
) -> None:  # fmt: skip
    bin_dir = tmp_path / "pgbin"
    if version is None:
        bin_dir.mkdir()
    else:
        fake_pg_dump(bin_dir, version)
    result = cli(
        "snapshot",
        env={"DATABASE_URL": pg_server.url(pagila_db), "SNAPMGR_PG_BIN_DIR": str(bin_dir)},
    )
    assert result.returncode == 4, result.stderr
    assert expected in result.stderr and "postgresql-client-15" in result.stderr
    assert not cli.store.exists() or not store_files(cli)


def test_password_never_in_child_argv_or_outputs(
    cli: Cli, pg_server: Server, big_db: str, tmp_path: Path
) -> None:
    password = "snapmgr-demo-pw"
    assert password in pg_server.url(big_db)
    proc = start_snapshot(cli, pg_server.url(big_db))
    seen: list[bytes] = []

    def scan() -> bool:
        for pid in pg_dump_pids(big_db):
            try:
                seen.append(Path(f"/proc/{pid}/cmdline").read_bytes())
            except OSError:
                continue
        return proc.poll() is not None

    wait_for(scan, timeout=120, what="the snapshot to finish")
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert seen, "pg_dump was never observed running"
    assert not [argv for argv in seen if password.encode() in argv]
    snapshot_id = out.strip()
    outputs = [out, err]
    for args in (["list"], ["show", snapshot_id], ["show", snapshot_id, "--json"],
                 ["config"], ["config", "--json"], ["verify", snapshot_id, "-v"]):  # fmt: skip
        result = cli.ok(*args, "-v", env={"DATABASE_URL": pg_server.url(big_db)})
        outputs += [result.stdout, result.stderr]
    written = [p.read_bytes() for p in cli.store.iterdir() if p.suffix == ".json"]
    written.append(cli.pointer.read_bytes())
    assert not [text for text in outputs if password in text]
    assert not [blob for blob in written if password.encode() in blob]
    assert os.environ.get("PGPASSWORD") != password
