"""The typer application: the root options and every command group, collected.

Each command group lives in its own module of :mod:`snapmgr.cli` named
``*_cmds`` (or ``*_cmd``) with a module-level ``app = typer.Typer()`` on which
it registers commands through :func:`snapmgr.cli.common.command`; this module
collects them.

A run of one command loads only the module that defines it (:data:`COMMANDS`):
importing the others, and building click commands for all 17, costs every
start-up time that a snapshot of a small database is measured by. Help, an
unknown command and ``app`` itself (``from snapmgr.cli.app import app``, for
typer.testing) get every command.
"""

from __future__ import annotations

import atexit
import importlib
import os
import pkgutil
import sys
import threading
from typing import Annotated, NoReturn

import typer

import snapmgr.cli
from snapmgr import signals
from snapmgr.cli import VERSION_LINE, params

params.install()  # plain option values without importing pydantic

_app = typer.Typer(
    name="snapmgr",
    help="Verified, compressed PostgreSQL snapshots: snapshot, restore, prune, guard.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        print(VERSION_LINE)
        raise typer.Exit()


@_app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Verified, compressed PostgreSQL snapshots: snapshot, restore, prune, guard."""


#: The module of :mod:`snapmgr.cli` that registers each command
#: (``tests/test_cli_params.py`` checks it against what the modules register).
COMMANDS = {
    "snapshot": "snapshot_cmds", "list": "snapshot_cmds", "show": "snapshot_cmds",
    "verify": "snapshot_cmds", "config": "snapshot_cmds", "stores": "snapshot_cmds",
    "restore": "restore_cmds", "guard": "restore_cmds", "drill": "restore_cmds",
    "prune": "retention_cmds", "delete": "retention_cmds", "pin": "retention_cmds",
    "unpin": "retention_cmds", "check": "retention_cmds",
    "rekey": "rekey_cmd", "doctor": "doctor_cmd", "demo": "demo_cmd",
}  # fmt: skip
_loaded: set[str] = set()


def command_modules() -> list[str]:
    """Every command module of :mod:`snapmgr.cli`, by name."""
    found = pkgutil.iter_modules(snapmgr.cli.__path__)
    return sorted(m.name for m in found if m.name.endswith(("_cmds", "_cmd")))


def load_commands(args: list[str] | None = None) -> typer.Typer:
    """The application with the command ``args`` names registered (every command
    when ``args`` is ``None`` or names none: help, a typo, no arguments)."""
    wanted = COMMANDS.get(args[0]) if args else None
    for name in [wanted] if wanted else command_modules():
        if name not in _loaded:
            group = importlib.import_module(f"snapmgr.cli.{name}")
            _app.registered_commands.extend(group.app.registered_commands)
            _loaded.add(name)
    return _app


def __getattr__(name: str) -> typer.Typer:
    if name == "app":
        return load_commands()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Run the application on ``sys.argv``.

    A command-line mistake (unknown option, bad or missing value) is one line
    on stderr and exit 2, like every other failure, instead of click's usage
    block and boxed message. SIGINT/SIGTERM interrupt only a command's body
    (see :mod:`snapmgr.signals`); once the outcome is decided they are ignored,
    so the exit status is always the outcome's.
    """
    signals.install()
    app = load_commands(sys.argv[1:])
    try:
        code = app(standalone_mode=False)
    except _CLICK_ERROR as exc:
        if type(exc).__name__ != "NoArgsIsHelpError":  # the help text is already shown
            sys.stderr.write(f"snapmgr: error: {_one_line(exc)}\n")
        code = getattr(exc, "exit_code", 2)
    except typer.Abort:
        code = 1
    signals.settle()
    exit_now(code if isinstance(code, int) else 0)


def exit_now(code: int) -> NoReturn:
    """Exit with ``code`` once the outcome is printed, skipping the interpreter's
    teardown.

    Tearing down every module and object that typer, pydantic and psycopg
    created costs a small snapshot about a tenth of its time, and achieves
    nothing for a process about to end. What an exit must still do is done
    first: the ``atexit`` functions (logging's flush among them) and flushing
    stdout/stderr (a failed flush is exit 120, as Python's own exit makes it).
    While a non-daemon thread is still running, Python's ordinary exit (which
    waits for it) is used instead.
    """
    if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            code = code or 120
    os._exit(code)


# typer re-exports only BadParameter; its base is every click usage error
# (click's own, or the copy newer typers vendor).
_CLICK_ERROR: type[Exception] = next(
    cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException"
)


def _one_line(exc: Exception) -> str:
    message = " ".join(str(getattr(exc, "format_message", exc.__str__)()).split()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    return f"{message}; see `{ctx.command_path} --help`" if ctx is not None else message
