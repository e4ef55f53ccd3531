"""Build snapmgr's wheel and sdist and check what users would install.

The wheel must hold one top-level import package (``snapmgr``, with
``snapmgr.backends`` and the shipped plugin kit ``snapmgr.backends.testing``),
both ``py.typed`` markers and no tests; its metadata names the project, its
Python floor and the built-in backends' entry points. The sdist must hold the
sources the wheel is built from. Run from the repository root; exits 1 with one
line per problem.
"""

from __future__ import annotations

import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from setuptools import build_meta

EXPECTED_ENTRY_POINTS = (
    "local = snapmgr.backends.local:LocalBackend",
    "s3 = snapmgr.backends.s3:S3Backend",
    "fsspec = snapmgr.backends.fsspec_store:FsspecBackend",
)


def check_wheel(path: Path) -> list[str]:
    problems = []
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    tops = {n.split("/")[0] for n in names} - {info}
    if tops != {"snapmgr"}:
        problems.append(f"wheel: top-level entries {sorted(tops)}, expected only snapmgr")
    for needed in ("snapmgr/py.typed", "snapmgr/backends/py.typed", "snapmgr/backends/testing.py"):
        if needed not in names:
            problems.append(f"wheel: {needed} is missing")
    problems += [f"wheel: holds a test file {n}" for n in names if "/tests/" in f"/{n}"]
    for line in ("Name: snapmgr", "Requires-Python: >=3.11"):
        if line not in metadata.splitlines():
            problems.append(f"wheel metadata: no {line!r}")
    problems += [
        f"wheel: entry point {e!r} missing" for e in EXPECTED_ENTRY_POINTS if e not in entry_points
    ]
    return problems


def check_sdist(path: Path) -> list[str]:
    with tarfile.open(path) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    needed = (
        "pyproject.toml",
        "README.md",
        "snapmgr/__init__.py",
        "backends/base.py",
        "backends/testing.py",
    )
    return [f"sdist: {n} is missing" for n in needed if n not in names]


def main() -> int:
    with tempfile.TemporaryDirectory() as out:
        wheel = Path(out) / build_meta.build_wheel(out)
        sdist = Path(out) / build_meta.build_sdist(out)
        problems = check_wheel(wheel) + check_sdist(sdist)
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            print(f"dist ok: {wheel.name}, {sdist.name}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
