"""Start-up stays light: a command loads only the libraries its own path needs.

Each test runs the real CLI in a subprocess and records, at exit, which
modules it had imported. No timings: what is checked is that boto3, fsspec,
psycopg, rich, typer... are not loaded where they are not needed, which is
what keeps ``snapmgr --version`` and small snapshots fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import Cli
from tests.pgutil import Server

# Runs ``python -m snapmgr ARGS`` in this process and writes sys.modules at exit.
PROBE = """
import atexit, json, os, runpy, sys

def report():
    with open(os.environ["STARTUP_PROBE_OUT"], "w") as handle:
        json.dump(sorted(sys.modules), handle)

atexit.register(report)
sys.argv = ["snapmgr", *json.loads(os.environ["STARTUP_PROBE_ARGS"])]
runpy.run_module("snapmgr", run_name="__main__", alter_sys=True)
"""
CLOUD = ("boto3", "botocore", "fsspec", "s3fs")
MACHINERY = ("snapmgr.restore", "snapmgr.guard", "snapmgr.psql", "snapmgr.demo")
COMMAND_MODULES = (
    "snapshot_cmds", "restore_cmds", "retention_cmds", "rekey_cmd", "doctor_cmd", "demo_cmd",
)  # fmt: skip


def loaded(cli: Cli, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> set[str]:
    """The modules a real ``snapmgr ARGS`` run had imported when it exited (it must exit 0)."""
    out = tmp_path / "modules.json"
    merged = {
        **cli.env,
        **(env or {}),
        "STARTUP_PROBE_OUT": str(out),
        "STARTUP_PROBE_ARGS": json.dumps(args),
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=merged,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"
    return set(json.loads(out.read_text()))


def present(modules: set[str], *names: str) -> list[str]:
    """Which of ``names`` (packages count with their submodules) were imported."""
    return sorted(n for n in names if any(m == n or m.startswith(f"{n}.") for m in modules))


def test_version_answers_before_any_heavy_library_is_imported(cli: Cli, tmp_path: Path) -> None:
    modules = loaded(cli, tmp_path, "--version")
    heavy = ("typer", "click", "rich", "pydantic", "psycopg", "importlib.metadata", *CLOUD)
    assert present(modules, *heavy) == []
    assert present(modules, "snapmgr.config", "snapmgr.manager", "snapmgr.cli.app") == []


def test_version_fast_path_prints_what_the_typer_option_prints(cli: Cli) -> None:
    fast = cli("--version")
    via_typer = subprocess.run(
        [sys.executable, "-c", "from snapmgr.cli.app import main; main()", "--version"],
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (fast.returncode, fast.stdout, fast.stderr) == (
        via_typer.returncode,
        via_typer.stdout,
        via_typer.stderr,
    )
    assert fast.returncode == 0
    assert fast.stdout.startswith("snapmgr ")
    # Anything else on the line goes to typer, as before: a bad option is still an error.
    assert cli("--version", "--no-such-option").returncode == 2


def test_listing_a_local_store_loads_no_database_cloud_or_terminal_library(
    cli: Cli, tmp_path: Path
) -> None:
    modules = loaded(cli, tmp_path, "list")
    assert present(modules, "psycopg", "rich", *CLOUD) == []
    assert present(modules, *MACHINERY, "snapmgr.snapshot", "snapmgr.verify") == []


def test_snapshot_into_a_local_store_loads_only_its_own_path(
    cli: Cli, tmp_path: Path, pg_server: Server, empty_db: str
) -> None:
    modules = loaded(cli, tmp_path, "snapshot", env={"DATABASE_URL": pg_server.url(empty_db)})
    assert present(modules, "snapmgr.snapshot", "snapmgr.libpq") == [
        "snapmgr.libpq",
        "snapmgr.snapshot",
    ]
    # The lock and the catalog queries go through libpq directly (psycopg's import
    # alone is about 0.3 s); progress goes to the log off a terminal, so no rich.
    assert present(modules, "psycopg", "psycopg_binary", "rich", *CLOUD) == []
    assert present(modules, *MACHINERY) == []
    # Only the snapshot command's own module is loaded, not the other commands'.
    commands = present(modules, *(f"snapmgr.cli.{name}" for name in COMMAND_MODULES))
    assert commands == ["snapmgr.cli.snapshot_cmds"]
    assert present(modules, "snapmgr.prune", "snapmgr.health", "snapmgr.doctor") == []
    assert len(list(cli.store.glob("*.json"))) == 1


def test_help_and_an_unknown_command_still_see_every_command(cli: Cli) -> None:
    """A run loads only its own command's module; help and a typo must not notice."""
    listed = cli("--help")
    assert listed.returncode == 0
    for name in ("snapshot", "restore", "prune", "check", "doctor", "demo", "rekey"):
        assert f" {name} " in listed.stdout, name
    typo = cli("snapsot")
    assert typo.returncode == 2 and "No such command 'snapsot'" in typo.stderr
    assert cli("prune", "--help").returncode == 0
