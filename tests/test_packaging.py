"""Packaging: one top-level import package (``snapmgr``), so snapmgr runs next to an
application's own ``backends`` package and never overwrites another distribution's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import Cli

ROOT = Path(__file__).resolve().parent.parent
PIP = [sys.executable, "-m", "pip"]


def django_style_app(path: Path) -> Path:
    """An application directory with a ``backends`` package of its own, no ``base``."""
    (path / "backends").mkdir(parents=True)
    (path / "backends" / "__init__.py").write_text('"""The app\'s auth backends."""\n')
    (path / "backends" / "auth.py").write_text("ROLE = 'app'\n")
    return path


def test_snapmgr_runs_from_a_directory_with_its_own_backends_package(
    cli: Cli, tmp_path: Path
) -> None:
    app = django_style_app(tmp_path / "app")
    store = tmp_path / "store"

    def run(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "snapmgr", *args],
            cwd=app,
            env=cli.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert json.loads(run("list", "--json", "--store", str(store))) == []
    targets = json.loads(run("stores", "--json", "--store", str(store)))["backends"]
    assert targets["local"] == "snapmgr.backends.local:LocalBackend"


def build_wheel(tmp_path: Path) -> Path:
    """Build the wheel from a copy of the checkout (the build writes into its tree)."""
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".*cache"
        ),
    )
    dist = tmp_path / "dist"
    subprocess.run(
        [*PIP, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("snapmgr-*.whl")
    return wheel


@pytest.mark.slow
def test_the_wheel_installs_exactly_one_top_level_package(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (record,) = [n for n in names if n.endswith(".dist-info/RECORD")]
        recorded = [line.split(",")[0] for line in archive.read(record).decode().splitlines()]
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["snapmgr"]
        entry_points = archive.read(record.replace("RECORD", "entry_points.txt")).decode()
    packages = {n.split("/")[0] for n in recorded if not n.split("/")[0].endswith(".dist-info")}
    assert packages == {"snapmgr"}
    assert {"snapmgr/py.typed", "snapmgr/backends/py.typed", "snapmgr/backends/base.py"} <= set(
        names
    )
    assert not [n for n in names if "tests/" in n or n.startswith("backends/")]
    assert "local = snapmgr.backends.local:LocalBackend" in entry_points
    assert "= backends." not in entry_points

    # Installed (not editable) next to an app with its own `backends`: the stores load.
    target = tmp_path / "site"
    subprocess.run(
        [*PIP, "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert sorted(
        p.name for p in target.iterdir() if p.name != "bin" and not p.name.endswith(".dist-info")
    ) == ["snapmgr"]
    app = django_style_app(tmp_path / "app")
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = (
        "import snapmgr.backends.local, backends.auth, snapmgr.registry as r;"
        "print(snapmgr.backends.local.__file__);"
        "print(r.open_backend('local', 'x', {}).kind)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], cwd=app, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert shown == [str(target / "snapmgr" / "backends" / "local.py"), "local"]
