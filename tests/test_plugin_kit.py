"""The plugin kit, used the way a third party would: examples/dirstore is built and
installed into a throwaway venv, registers through the ``snapmgr.backends`` entry
points, passes the shipped conformance suite and works from the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapmgr.backends.testing import BackendConformance
from tests.conftest import Cli
from tests.pgutil import Server

# One pytest worker builds the venv and runs all three (pytest-xdist, pyproject addopts).
pytestmark = pytest.mark.xdist_group("plugin_venv")

PIP = [sys.executable, "-m", "pip"]
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "dirstore"


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv that sees this environment's packages (snapmgr, pytest) and has the
    example plugin installed from a copy of its source, offline."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "dirstore"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # This environment's site-packages, .pth files included (an editable snapmgr).
    parent = sysconfig.get_path("purelib")
    (Path(site) / "parent_env.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    subprocess.run(
        [*PIP, "--python", str(python), "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    yield python


def test_the_plugin_is_listed_by_snapmgr_stores(cli: Cli, plugin_venv: Path) -> None:
    result = subprocess.run(
        [plugin_venv, "-m", "snapmgr", "stores", "--json"],
        env=cli.env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    backends = json.loads(result.stdout)["backends"]
    assert backends["dir"] == "snapmgr_dirstore:DirBackend"
    assert backends["local"] == "snapmgr.backends.local:LocalBackend"


def test_the_plugin_passes_the_shipped_conformance_suite(plugin_venv: Path, tmp_path: Path) -> None:
    # Only the test file, away from the plugin's source: the installed plugin is tested.
    shutil.copy(EXAMPLE / "tests" / "test_conformance.py", tmp_path)
    result = subprocess.run(
        [plugin_venv, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_conformance.py"],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    conformance_tests = [name for name in dir(BackendConformance) if name.startswith("test_")]
    assert f"{len(conformance_tests)} passed" in result.stdout, result.stdout


def test_snapshot_and_list_through_the_plugin_store(
    cli: Cli, plugin_venv: Path, pg_server: Server, pagila_db: str, tmp_path: Path
) -> None:
    store = tmp_path / "dirstore"
    url = f"dir://{store}"

    def run(*args: str) -> str:
        result = subprocess.run(
            [plugin_venv, "-m", "snapmgr", *args, "--store", url],
            env={**cli.env, "DATABASE_URL": pg_server.url(pagila_db)},
            capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    snapshot_id = run("snapshot", "--label", "plugin").strip()
    assert sorted(p.name for p in store.iterdir()) == [
        f"{snapshot_id}.json",
        f"{snapshot_id}.sql.gz",
    ]
    assert [item["id"] for item in json.loads(run("list", "--json"))] == [snapshot_id]
    run("verify", snapshot_id)
