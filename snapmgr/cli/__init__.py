"""The ``snapmgr`` command line: a thin typer layer over :mod:`snapmgr.manager`.

Each command group lives in its own module and registers on the shared
``app`` through :func:`snapmgr.cli.common.command`.
"""

from __future__ import annotations

import typer

from snapmgr.cli import demo_cmd, snapshot_cmds

app = typer.Typer(
    name="snapmgr",
    help="Verified, compressed PostgreSQL snapshots: snapshot, restore, prune, guard.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
for group in (snapshot_cmds, demo_cmd):
    app.registered_commands.extend(group.app.registered_commands)


def main() -> None:
    """Console-script entry point."""
    app()
