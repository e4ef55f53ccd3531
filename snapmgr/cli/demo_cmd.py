"""`snapmgr demo`: a guided tour on a throwaway cluster; see :mod:`snapmgr.demo`."""

from __future__ import annotations

from typing import Annotated

import typer

from snapmgr.cli.common import Ctx, command

app = typer.Typer()


@command(app, "demo")
def demo(
    ctx: Ctx,
    builtin_sample: Annotated[
        bool, typer.Option(help="Use the small built-in sample even if Pagila is there.")
    ] = False,
) -> int:
    """Snapshot, break and restore a sample database on a throwaway local cluster."""
    from snapmgr.demo import run_demo  # a cluster, psycopg...: only for this command

    run_demo(lambda line: print(line, flush=True), builtin_sample)
    return 0
