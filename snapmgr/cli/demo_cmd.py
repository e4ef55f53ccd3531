"""`snapmgr demo`: a guided tour on a throwaway cluster; see :mod:`snapmgr.demo`."""

from __future__ import annotations

import typer

from snapmgr.cli.common import Ctx, command
from snapmgr.demo import run_demo

app = typer.Typer()


@command(app, "demo")
def demo(ctx: Ctx) -> int:
    """Snapshot, break and restore a sample database on a throwaway local cluster."""
    run_demo(lambda line: print(line, flush=True))
    return 0
