"""The ``snapmgr`` command line: a thin typer layer over :mod:`snapmgr.manager`.

The typer application is built in :mod:`snapmgr.cli.app`; each command group
lives in its own module named ``*_cmds`` (or ``*_cmd``). This package itself
imports nothing heavy, so that ``snapmgr --version`` answers before typer,
rich or any command module is loaded.
"""

from __future__ import annotations

import sys
from typing import Any

from snapmgr import __version__

VERSION_LINE = f"snapmgr {__version__}"


def main() -> None:
    """Console-script entry point (``snapmgr``, ``python -m snapmgr``).

    ``snapmgr --version`` alone is answered here, exactly as the typer
    option would answer it, in a fraction of the time; everything else goes
    to the typer application.
    """
    if sys.argv[1:] == ["--version"]:
        print(VERSION_LINE)
        sys.exit(0)
    from snapmgr.cli.app import main as run_app

    run_app()


def __getattr__(name: str) -> Any:
    if name == "app":  # ``from snapmgr.cli import app``, for typer.testing and plugins
        from snapmgr.cli.app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
