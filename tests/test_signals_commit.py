"""SIGINT and SIGTERM at the commit points, and during start-up.

Each window is hit exactly: the CLI runs with ``SNAPMGR_TEST_PAUSE_AT=<point>``
and stops itself (SIGSTOP) there; the test checks the state of every store
at that moment, sends the signal (pending while stopped) and SIGCONT, so
the signal lands at the point itself. Then it checks the exit code, the
output, and what is left in every store (a local directory and moto S3).

* between "the dump objects are committed" and "the manifest is written":
  exit 130, and nothing of the attempt is left anywhere (or, when a store
  cannot be reached, the line names what is left there);
* while the manifests are written or a restore commits (the signal is held),
  after the manifest (and the pointer), after the output, after a restore's
  COMMIT: the result stands: exit 0, the result printed, one warning line
  naming the signal, no traceback;
* guard stopped between its snapshot's commit and its command: the command
  is not run, exit 130, the snapshot is kept and the line says so;
* a signal while the CLI's modules import: one line, exit 130.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.pgutil import Server
from tests.s3_server import (
    FaultProxy,
    aws_env,
    bucket_keys,
    moto_server,
    new_bucket,
    pending_uploads,
    s3_client,
)
from tests.test_hardening import one_error_line, wait_for

__all__ = ["moto_server"]  # a pytest fixture, used by name

SIGNALS = [signal.SIGTERM, signal.SIGINT]


def start(cli: Cli, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "snapmgr", *args],
        env={**cli.env, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stopped(proc: subprocess.Popen[str]) -> bool:
    """True once the process stopped itself at its pause point."""
    if proc.poll() is not None:
        raise AssertionError(f"exited {proc.returncode} before its pause point: {proc.stderr}")
    stat = Path(f"/proc/{proc.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def run_to(cli: Cli, point: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """The CLI, stopped at ``point``."""
    proc = start(cli, *args, env={**env, "SNAPMGR_TEST_PAUSE_AT": point})
    try:
        wait_for(lambda: stopped(proc), timeout=120, what=f"the pause at {point}")
    except BaseException:
        proc.kill()
        raise
    return proc


def signal_there(proc: subprocess.Popen[str], signum: int) -> tuple[str, str]:
    """Deliver ``signum`` at the pause point; the process's stdout and stderr."""
    proc.send_signal(signum)
    proc.send_signal(signal.SIGCONT)
    return proc.communicate(timeout=120)


def local_files(store: Path) -> set[str]:
    return {p.name for p in store.iterdir()} if store.exists() else set()


class Switchable(FaultProxy):
    """Forwards to moto until ``gone`` is set; then every request is cut."""

    gone = False

    def __init__(self, target: str) -> None:
        super().__init__(target, fail_from_part=1 << 30)

    def _should_cut(self, method: str, path: str) -> int | None:
        return 0 if self.gone else None


@pytest.fixture
def s3(moto_server: str) -> Any:
    return s3_client(moto_server)


@pytest.fixture
def bucket(s3: Any) -> str:
    return new_bucket(s3)


# --- snapshot: between the dump's commit and the manifest ---------------------------------------


def point_id(value: object) -> str:
    return signal.Signals(value).name if isinstance(value, int) else str(value)


@pytest.mark.parametrize(
    ("point", "signum"),
    [("committing-dumps", signal.SIGTERM),  # held while the dump objects commit, then delivered
     ("after-dump-commit", signal.SIGTERM), ("after-dump-commit", signal.SIGINT)],
    ids=point_id,
)  # fmt: skip
def test_signal_between_dump_commit_and_manifest_leaves_nothing_in_any_store(
    cli: Cli, pg_server: Server, pagila_db: str, moto_server: str, s3: Any, bucket: str,
    point: str, signum: int,
) -> None:  # fmt: skip
    cli.env.update(aws_env(moto_server), DATABASE_URL=pg_server.url(pagila_db))
    stores = ("--store", str(cli.store), "--store", f"s3://{bucket}/app")
    proc = run_to(cli, point, "snapshot", "--label", "cut", *stores, env={})

    (dump,) = [n for n in local_files(cli.store) if not n.startswith(".")]
    assert dump.startswith("cut_") and dump.endswith(".sql.gz")
    if point == "committing-dumps":  # reserved (empty) and uploaded, not yet committed
        assert (cli.store / dump).stat().st_size == 0 and bucket_keys(s3, bucket) == []
    else:  # both dump objects complete and visible, no manifest anywhere
        assert (cli.store / dump).stat().st_size > 10_000
        assert bucket_keys(s3, bucket) == [f"app/{dump}"]

    out, err = signal_there(proc, signum)

    assert proc.returncode == 130, err
    line = one_error_line(err)
    name = signal.Signals(signum).name
    assert f"interrupted by {name}; nothing was committed: its dump, already stored in" in line
    assert str(cli.store) in line and f"s3://{bucket}/app" in line and "removed again" in line
    assert out == ""
    assert local_files(cli.store) == set()
    assert bucket_keys(s3, bucket) == [] and pending_uploads(s3, bucket) == []
    assert not cli.pointer.exists()
    # The next snapshot works.
    cli.ok("snapshot", *stores)


def test_a_store_unreachable_for_the_cleanup_is_named_with_what_is_left(
    cli: Cli, pg_server: Server, pagila_db: str, moto_server: str, s3: Any, bucket: str
) -> None:
    cli.env.update(aws_env(moto_server), DATABASE_URL=pg_server.url(pagila_db))
    with Switchable(moto_server) as proxy:
        stores = ("--store", str(cli.store), "--store", f"s3://{bucket}/app")
        endpoint = {"AWS_ENDPOINT_URL_S3": proxy.url, "AWS_MAX_ATTEMPTS": "1"}
        proc = run_to(cli, "after-dump-commit", "snapshot", "--label", "cut", *stores,
                      env=endpoint)  # fmt: skip
        (dump,) = local_files(cli.store)
        proxy.gone = True  # S3 vanishes before the cleanup can reach it
        _, err = signal_there(proc, signal.SIGTERM)

    assert proc.returncode == 130, err
    line = one_error_line(err)
    assert "interrupted by SIGTERM; nothing was committed" in line
    assert f"could not be removed from s3://{bucket}/app/{dump}" in line
    assert "orphan_grace" in line
    # The local copy is gone; S3 keeps exactly the dump (no manifest: never listed).
    assert local_files(cli.store) == set()
    assert bucket_keys(s3, bucket) == [f"app/{dump}"]
    assert json.loads(cli.ok("list", "--json", *stores).stdout) == []
    # What the line says is left is what prune removes as an orphan.
    time.sleep(1.1)
    report = json.loads(cli.ok("prune", "--keep-last", "1", "--json", *stores,
                               env={"SNAPMGR_ORPHAN_GRACE": "1s"}).stdout)  # fmt: skip
    assert [(o["name"], o["removed"]) for o in report["orphans"]] == [(dump, True)]
    assert bucket_keys(s3, bucket) == []


# --- after the commit point: the result stands ---------------------------------------------------


@pytest.mark.parametrize(
    ("point", "signum"),
    [("writing-manifests", signal.SIGINT),  # held while the manifests and pointer are written
     ("after-commit", signal.SIGTERM), ("after-commit", signal.SIGINT)],
    ids=point_id,
)  # fmt: skip
def test_signal_right_after_the_manifest_keeps_the_snapshot_and_exits_0(
    cli: Cli, pg_server: Server, pagila_db: str, moto_server: str, s3: Any, bucket: str,
    point: str, signum: int,
) -> None:  # fmt: skip
    cli.env.update(aws_env(moto_server), DATABASE_URL=pg_server.url(pagila_db))
    stores = ("--store", str(cli.store), "--store", f"s3://{bucket}/app")
    proc = run_to(cli, point, "snapshot", *stores, env={})
    manifests = [n for n in local_files(cli.store) if n.endswith(".json")]
    if point == "writing-manifests":
        assert manifests == [] and not cli.pointer.exists()
    else:
        assert len(manifests) == 1 and cli.pointer.exists()

    out, err = signal_there(proc, signum)

    assert proc.returncode == 0, err
    snapshot_id = out.strip()
    assert [n for n in local_files(cli.store) if n.endswith(".json")] == [f"{snapshot_id}.json"]
    name = signal.Signals(signum).name
    assert f"{name} arrived after snapshot {snapshot_id} was committed; that result stands" in err
    assert "Traceback" not in err and "error:" not in err
    assert sorted(bucket_keys(s3, bucket)) == [f"app/{snapshot_id}.json",
                                               f"app/{snapshot_id}.sql.gz"]  # fmt: skip
    assert cli.pointer.read_text().endswith(f"id: {snapshot_id}\n")
    cli.ok("verify", snapshot_id, *stores)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_after_the_json_is_printed_exits_0(
    cli: Cli, pg_server: Server, pagila_db: str, signum: int
) -> None:
    proc = run_to(cli, "after-output", "snapshot", "--json",
                  env={"DATABASE_URL": pg_server.url(pagila_db)})  # fmt: skip
    out, err = signal_there(proc, signum)

    assert proc.returncode == 0, err
    snapshot_id = json.loads(out)["id"]
    assert f"arrived after snapshot {snapshot_id} was committed" in err
    assert "Traceback" not in err and "error:" not in err
    assert [e["id"] for e in json.loads(cli.ok("list", "--json").stdout)] == [snapshot_id]


@pytest.mark.parametrize(
    ("point", "signum"),
    [("committing-restore", signal.SIGTERM), ("after-restore-commit", signal.SIGTERM),
     ("after-restore-commit", signal.SIGINT)],
    ids=point_id,
)  # fmt: skip
def test_signal_right_after_a_restore_commit_reports_the_restore(
    cli: Cli, pg_server: Server, pagila_db: str, point: str, signum: int
) -> None:
    url = pg_server.url(pagila_db)
    snapshot_id = cli.ok("snapshot", env={"DATABASE_URL": url}).stdout.strip()
    at_snapshot = pg_server.dump(pagila_db)
    pg_server.execute(pagila_db, "DELETE FROM payment; CREATE TABLE migrated (a int)")

    proc = run_to(cli, point, "restore", snapshot_id, "--yes", env={"DATABASE_URL": url})
    # Stopped right after its COMMIT; or right before it, with every table locked
    # by the restore's transaction (a dump now would wait for it): nothing to look at.
    if point == "after-restore-commit":
        assert pg_server.dump(pagila_db) == at_snapshot
    out, err = signal_there(proc, signum)

    assert proc.returncode == 0, err
    assert out.startswith(f"restored {snapshot_id} into ") and "counts match" in out
    name = signal.Signals(signum).name
    assert f"{name} arrived after the restore of {snapshot_id}" in err
    assert "Traceback" not in err and "error:" not in err
    assert pg_server.dump(pagila_db) == at_snapshot


def test_guard_told_to_stop_as_its_snapshot_commits_does_not_run_the_command(
    cli: Cli, pg_server: Server, pagila_db: str, tmp_path: Path
) -> None:
    marker = tmp_path / "migrated"
    proc = run_to(cli, "after-commit", "guard", "--", "touch", str(marker),
                  env={"DATABASE_URL": pg_server.url(pagila_db)})  # fmt: skip
    _, err = signal_there(proc, signal.SIGTERM)

    assert proc.returncode == 130, err
    line = one_error_line(err)
    (snapshot_id,) = [e["id"] for e in json.loads(cli.ok("list", "--json").stdout)]
    assert f"interrupted by SIGTERM after snapshot {snapshot_id} was committed" in line
    assert "the command was not run" in line
    assert not marker.exists()
    cli.ok("verify", snapshot_id)


# --- start-up -------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_while_starting_is_one_line_and_exit_130(cli: Cli, signum: int) -> None:
    """Exactly at the start of the imports (a pause point), then at a moment the
    imports are seen loading an extension module."""
    proc = run_to(cli, "starting", "list", env={})
    _, err = signal_there(proc, signum)
    assert proc.returncode == 130, err
    name = signal.Signals(signum).name
    assert one_error_line(err) == (
        f"snapmgr: error: interrupted by {name} while starting; nothing was done"
    )

    # A server that accepts and never answers: the start-up no longer takes long
    # enough (snapshot imports no psycopg) for a refused connection to lose the race
    # with the signal; this one keeps the process starting or connecting until then.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"postgresql://u:pw@127.0.0.1:{silent.getsockname()[1]}/db?sslmode=disable"
        proc = start(cli, "snapshot", env={"DATABASE_URL": url})

        def importing() -> bool:
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
            return "site-packages" in maps

        wait_for(importing, timeout=30, what="an extension module to load")
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"interrupted by {name}" in one_error_line(err)
