"""A snapshot's fixed costs stay small: one pre-flight connection, no pg_wrapper.

On a small database the fixed costs are most of a snapshot's time: every
database connection is a round of authentication, and Debian's ``pg_wrapper``
(``/usr/bin/pg_dump`` is a perl script) starts perl before each run of the
real ``/usr/lib/postgresql/N/bin/pg_dump`` it execs.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from snapmgr import libpq, snapshot
from snapmgr.backends import local
from snapmgr.config import load_config
from snapmgr.manager import SnapshotManager
from snapmgr.postgres import find_tool
from tests.conftest import Cli
from tests.pgutil import Server

SIDE_BY_SIDE = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))
needs_side_by_side = pytest.mark.skipif(
    not SIDE_BY_SIDE, reason="no Debian-style /usr/lib/postgresql/N/bin/pg_dump here"
)


def _fake_wrapper(tmp_path: Path) -> tuple[Path, Path]:
    """A PATH directory whose ``pg_dump`` links to a ``pg_wrapper`` that records being run."""
    marker = tmp_path / "wrapper-ran"
    common = tmp_path / "share" / "postgresql-common"
    common.mkdir(parents=True)
    wrapper = common / "pg_wrapper"
    wrapper.write_text(f'#!/bin/sh\ntouch {marker}\necho "pg_dump (PostgreSQL) 99.0"\n')
    wrapper.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pg_dump").symlink_to(wrapper)
    return bin_dir, marker


@needs_side_by_side
def test_pg_wrapper_on_path_is_bypassed_for_the_real_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir, marker = _fake_wrapper(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    major = int(Path(SIDE_BY_SIDE[0]).parent.parent.name)

    tool = find_tool("pg_dump", major)

    assert tool.path == SIDE_BY_SIDE[0]
    assert tool.major == major
    assert not marker.exists(), "pg_wrapper was run"


def test_a_program_on_path_that_is_not_the_wrapper_is_still_preferred(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = SIDE_BY_SIDE[-1] if SIDE_BY_SIDE else None
    if real is None:
        pytest.skip("no /usr/lib/postgresql/N/bin/pg_dump to link to")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pg_dump").write_text(f'#!/bin/sh\nexec {real} "$@"\n')
    (bin_dir / "pg_dump").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    major = int(Path(real).parent.parent.name)

    assert find_tool("pg_dump", major).path == str(bin_dir / "pg_dump")


def test_snapshot_opens_one_connection_the_deploy_locks_or_its_own(
    pg_server: Server, pagila_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    real_init = libpq.Connection.__init__

    def counting_init(self: libpq.Connection, conninfo: str, timeout_s: float) -> None:
        opened.append(libpq.parse_conninfo(conninfo).get("application_name", "?"))
        real_init(self, conninfo, timeout_s)

    def no_psycopg(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a snapshot connected through psycopg")

    monkeypatch.setattr(libpq.Connection, "__init__", counting_init)
    monkeypatch.setattr(psycopg, "connect", no_psycopg)
    config = load_config({}, {"DATABASE_URL": pg_server.url(pagila_db)}, None)
    with SnapshotManager(config, [str(tmp_path / "store")], quiet=True) as manager:
        locked = manager.snapshot(label="conn")
        unlocked = manager.snapshot(label="conn", wait_s=None)

    assert locked.manifest.tables and unlocked.manifest.tables
    assert locked.manifest.objects["relations"] > 0  # the survey ran on that connection
    # With the deploy lock, the pre-flight check, survey and size estimate run on
    # the lock's session; without it, on one session of their own.
    assert len(opened) == 2, opened
    assert opened[0].startswith("snapmgr deploy lock ") and opened[1:] == ["?"]


def test_each_chunk_of_sql_reaches_the_store_as_one_write(
    pg_server: Server, pagila_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compressor joins a chunk's compressed pieces: one hash update, queue
    hand-off and write per MiB of SQL, not one per 256 KiB compressed."""
    writes: list[int] = []
    real_write = local.LocalWriter._write

    def recording(self: local.LocalWriter, data: bytes) -> None:
        writes.append(len(data))
        real_write(self, data)

    monkeypatch.setattr(local.LocalWriter, "_write", recording)
    config = load_config({}, {"DATABASE_URL": pg_server.url(pagila_db)}, None)
    store = tmp_path / "store"
    with SnapshotManager(config, [str(store)], quiet=True) as manager:
        manifest = manager.snapshot(label="writes", wait_s=None).manifest

    chunks = -(-manifest.raw_size // snapshot.CHUNK)
    assert chunks >= 3  # Pagila's ~3 MB: enough chunks for the count to mean something
    assert len(writes) <= chunks + 1  # + the compressor's flush
    stored = (store / manifest.dump_name).read_bytes()
    assert sum(writes) == len(stored) == manifest.size
    assert hashlib.sha256(stored).hexdigest() == manifest.sha256


# Runs the real CLI's main() with ARGS after registering an atexit function and,
# with THREAD, starting a non-daemon thread that finishes after the command.
EXIT_PROBE = """
import atexit, os, sys, threading, time
from pathlib import Path

marker = Path(os.environ["EXIT_PROBE_DIR"])
atexit.register(lambda: (marker / "atexit").write_text("ran"))
if os.environ.get("EXIT_PROBE_THREAD"):
    def late():
        time.sleep(0.5)
        (marker / "thread").write_text("done")
    threading.Thread(target=late).start()
sys.argv = ["snapmgr", *sys.argv[1:]]
from snapmgr.cli import main
main()
"""


def _exit_probe(cli: Cli, tmp_path: Path, *args: str, thread: bool = False) -> Any:
    env = {**cli.env, "EXIT_PROBE_DIR": str(tmp_path)}
    if thread:
        env["EXIT_PROBE_THREAD"] = "1"
    return subprocess.run(
        [sys.executable, "-c", EXIT_PROBE, *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_cli_exit_runs_atexit_and_flushes_piped_output(cli: Cli, tmp_path: Path) -> None:
    result = _exit_probe(cli, tmp_path, "config", "--json")
    assert result.returncode == 0, result.stderr
    assert "compression" in json.loads(result.stdout)  # block-buffered on a pipe: flushed
    assert (tmp_path / "atexit").read_text() == "ran"


def test_the_cli_exit_keeps_the_exit_code_and_waits_for_running_threads(
    cli: Cli, tmp_path: Path
) -> None:
    failed = _exit_probe(cli, tmp_path, "show", "nosuch_20250101_000000")
    assert failed.returncode == 7, failed.stderr
    assert "nosuch_20250101_000000" in failed.stderr
    result = _exit_probe(cli, tmp_path, "config", "--json", thread=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "thread").read_text() == "done"


def test_local_writer_starts_writeback_as_it_goes_and_commits_every_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[tuple[int, int]] = []
    real = local._start_writeback

    def recording(fd: int, offset: int, length: int) -> None:
        started.append((offset, length))
        real(fd, offset, length)

    monkeypatch.setattr(local, "_start_writeback", recording)
    piece = os.urandom(1 << 20)
    writer = local.LocalBackend(str(tmp_path), {}).open_writer("x.sql.gz")
    for _ in range(20):
        writer.write(piece)
    writer.commit()

    step = local.WRITEBACK_STEP
    assert started == [(0, step), (step, step)]  # 8 + 8 MiB handed on, 4 left for the fsync
    assert (tmp_path / "x.sql.gz").read_bytes() == piece * 20
    assert local._load_sync_file_range() is not None  # Linux: the real call was made
