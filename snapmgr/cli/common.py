"""What every command shares: the common options, error handling and output.

``@command(app)`` registers a function ``fn(ctx, ...)`` as a typer command
and adds the options DESIGN.md promises on every command (``--config``,
``--store``, ``--database-url``, ``--json``, ``-q``, ``-v``), so each command
module declares only its own. Every ``SnapmgrError`` becomes one line on
stderr and its documented exit code; anything else is exit 1 with a hint to
re-run with ``-v`` for the traceback. Secrets are scrubbed from both.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, get_type_hints

import typer

from snapmgr import signals
from snapmgr.cli import reporting
from snapmgr.config import Config, load_config
from snapmgr.errors import SnapmgrError
from snapmgr.manager import SnapshotManager
from snapmgr.redact import scrub, service_url_secrets, url_secrets

if TYPE_CHECKING:  # both are imported by the commands that use them
    from rich.console import Console

    from snapmgr.manager import SnapshotManager

log = logging.getLogger("snapmgr")
EXIT_INTERRUPTED = 130
SECRET_VARIABLES = (
    "PGPASSWORD",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "SNAPMGR_AGE_IDENTITY",
)

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", help="TOML config file (default: $SNAPMGR_CONFIG).",
                 show_default=False),
]  # fmt: skip
StoreOpt = Annotated[
    list[str] | None,
    typer.Option("--store", "-s", help="Store name, path or URL; repeat for several.",
                 show_default=False),
]  # fmt: skip
DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option("--database-url", help="PostgreSQL URL (default: $DATABASE_URL).",
                 show_default=False),
]  # fmt: skip
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine output on stdout; logs on stderr.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")]
VerboseOpt = Annotated[
    int, typer.Option("--verbose", "-v", count=True, help="More detail (-vv for debug).")
]

COMMON: dict[str, tuple[Any, Any]] = {
    "config": (ConfigOpt, None),
    "store": (StoreOpt, None),
    "database_url": (DatabaseUrlOpt, None),
    "json_output": (JsonOpt, False),
    "quiet": (QuietOpt, False),
    "verbose": (VerboseOpt, 0),
}


@dataclass
class Ctx:
    """One invocation: the common options, the effective config and output helpers."""

    config_path: str | None
    stores: list[str]
    database_url: str | None
    json_output: bool
    quiet: bool
    verbose: int
    overrides: dict[str, Any] = field(default_factory=dict)
    _config: Config | None = None
    command: str = ""
    #: What the run learned, for its notification (see :mod:`snapmgr.cli.reporting`).
    facts: dict[str, Any] = field(default_factory=dict)
    error_line: str | None = None

    def note(self, **facts: Any) -> None:
        self.facts.update(facts)

    @property
    def loaded_config(self) -> Config | None:
        return self._config

    @property
    def config(self) -> Config:
        if self._config is None:
            flags = {"database_url": self.database_url, **self.overrides}
            self._config = load_config(flags, os.environ, self.config_path)
        return self._config

    def manager(self) -> SnapshotManager:
        from snapmgr.manager import SnapshotManager

        return SnapshotManager(self.config, self.stores, quiet=self.quiet)

    @property
    def out(self) -> Console:
        from rich.console import Console

        # Off a terminal (logs, pipes) a wide fixed width keeps IDs unbroken.
        return Console(highlight=False, width=None if sys.stdout.isatty() else 200)

    def emit_json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")
        sys.stdout.flush()

    def secrets(self) -> list[str | None]:
        """Every secret value this invocation knows of, to scrub from what it prints."""
        candidates: list[str | None] = [os.environ.get(name) for name in SECRET_VARIABLES]
        for line in os.environ.get("SNAPMGR_AGE_IDENTITY", "").splitlines():  # a key per line
            candidates += [] if line.strip().startswith("#") else [line.strip()]
        for url in (self.database_url, os.environ.get("DATABASE_URL"), *self.stores):
            candidates += url_secrets(url or "")
        for name in ("SNAPMGR_NOTIFY_URLS", "SNAPMGR_HEALTHCHECK_URL"):
            for url in os.environ.get(name, "").replace(",", " ").split():
                candidates += service_url_secrets(url)
        if self._config is not None:
            candidates += self._config.secrets()
        return candidates


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


class _Scrubbing(logging.Formatter):
    """Formats a record, then masks every known secret in the text."""

    def __init__(self, secrets: Callable[[], list[str | None]]) -> None:
        super().__init__("snapmgr: %(message)s")
        self._secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record), self._secrets())


def setup_logging(
    quiet: bool, verbose: int, secrets: Callable[[], list[str | None]] = list
) -> None:
    """Logs go to stderr, so ``--json`` output on stdout stays parseable; secrets
    are masked in every line."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose >= 2 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Scrubbing(secrets))
    root = logging.getLogger("snapmgr")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def fail(ctx: Ctx | None, message: str, code: int) -> NoReturn:
    secrets = ctx.secrets() if ctx else []
    line = " ".join(scrub(message, secrets).split())  # one line, whatever a library said
    if ctx is not None:
        ctx.error_line = line
    sys.stderr.write(f"snapmgr: error: {line}\n")
    sys.stderr.flush()
    raise typer.Exit(code)


def run_guarded(ctx: Ctx, body: Callable[[], int | None]) -> None:
    """Run a command body, mapping every failure to one line and an exit code.

    SIGTERM (what PaaS platforms and Kubernetes send) is handled like Ctrl-C:
    it unwinds through the same cleanup, so a partial upload is aborted and
    a restore rolled back instead of the process dying mid-step. Once the body
    passed a commit point, a signal no longer interrupts: the result stands,
    is printed, and a warning names the signal (see :mod:`snapmgr.signals`).
    """
    setup_logging(ctx.quiet, ctx.verbose, ctx.secrets)
    try:
        with signals.interruptible():
            code = body()
    except typer.Exit:
        raise
    except SnapmgrError as exc:
        if ctx.verbose:
            sys.stderr.write(scrub(traceback.format_exc(), ctx.secrets()))
        fail(ctx, str(exc), exc.exit_code)
    except KeyboardInterrupt as exc:
        by = f" by {exc.args[0]}" if exc.args else ""
        fail(ctx, f"interrupted{by}; nothing was committed by the interrupted step",
             EXIT_INTERRUPTED)  # fmt: skip
    except Exception as exc:
        if ctx.verbose:
            sys.stderr.write(scrub(traceback.format_exc(), ctx.secrets()))
        hint = "" if ctx.verbose else " (run with -v for details)"
        fail(ctx, f"unexpected error: {type(exc).__name__}: {exc}{hint}", 1)
    signals.pause_point("after-output")
    names, committed = signals.late()
    if names and committed:
        log.warning("%s arrived after %s; that result stands", " and ".join(names), committed)
    if code:
        raise typer.Exit(code)


def command(app: typer.Typer, name: str | None = None, **kwargs: Any) -> Callable[..., Any]:
    """Register ``fn(ctx, **own_options)`` with the common options appended."""

    def decorate(fn: Callable[..., int | None]) -> Callable[..., int | None]:
        hints = get_type_hints(fn, include_extras=True)
        own = [
            param.replace(annotation=hints[param.name])
            for param in inspect.signature(fn).parameters.values()
            if param.name != "ctx"
        ]
        common = [
            inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
            for key, (ann, default) in COMMON.items()
        ]

        @functools.wraps(fn)
        def wrapper(**values: Any) -> None:
            ctx = Ctx(
                config_path=values.pop("config"),
                stores=list(values.pop("store") or []),
                database_url=values.pop("database_url"),
                json_output=values.pop("json_output"),
                quiet=values.pop("quiet"),
                verbose=values.pop("verbose"),
                command=name or fn.__name__,
            )
            began = time.monotonic()
            code = 0
            try:
                run_guarded(ctx, lambda: fn(ctx, **values))
            except typer.Exit as exc:
                code = exc.exit_code
                raise
            finally:
                reporting.finished(ctx, code, time.monotonic() - began)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + common
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__
        app.command(name, **kwargs)(wrapper)
        return fn

    return decorate


def parse_tags(values: list[str] | None) -> dict[str, str]:
    """``K=V`` pairs from ``--tag``; a malformed one is a usage error (exit 2)."""
    from snapmgr.errors import UsageError

    tags: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--tag {item!r}: expected KEY=VALUE")
        tags[key.strip()] = value
    return tags
