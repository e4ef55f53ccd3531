"""What a command run tells the outside world when it ends: notifications and pings.

Commands note what they learn as they go (``ctx.note(snapshot_id=…,
summary=…)``); when the run ends, :func:`finished` turns the notes, the exit
code and the one error line into a :class:`~snapmgr.notify.Event`, sends it
to ``notify_urls`` if ``notify_on`` asks for it, and completes the
healthcheck ping sequence that :func:`started` opened. Nothing here may
change a run's exit code or stdout: every problem is a warning on stderr.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

from snapmgr.config import Config, load_config
from snapmgr.errors import SnapmgrError
from snapmgr.healthping import PINGED, ping
from snapmgr.notify import EVENTS, Event, send, this_host, wanted
from snapmgr.redact import scrub

if TYPE_CHECKING:
    from snapmgr.cli.common import Ctx

log = logging.getLogger("snapmgr")


def started(ctx: Ctx) -> None:
    """Ping ``healthcheck_url/start`` for a scheduled kind of run (snapshot, prune)."""
    if ctx.command not in PINGED:
        return
    config = _config(ctx)
    url = config.healthcheck_url if config else None
    if url:
        ctx.note(pinged=True)
        ping(url, "start", f"snapmgr {ctx.command} on {this_host()}", secrets=ctx.secrets())


def finished(ctx: Ctx, exit_code: int, duration_s: float) -> None:
    """Notify and ping about a run that ended with ``exit_code``. Never raises."""
    if ctx.command not in EVENTS or ctx.facts.get("dry_run"):
        return
    try:
        config = _config(ctx)
        if config is None:
            return
        event = build_event(ctx, exit_code, duration_s, config)
        urls = config.notify_urls
        if urls and wanted(event, config.notify_on):
            send(event, urls, ctx.secrets())
        url = config.healthcheck_url
        if url and ctx.facts.get("pinged"):
            body = event.summary if event.ok else event.error or event.summary
            ping(url, "success" if event.ok else "fail", body, secrets=ctx.secrets())
    except Exception as exc:  # reporting must never turn into the run's failure
        log.warning("could not report the outcome: %s: %s", type(exc).__name__, exc)


def build_event(ctx: Ctx, exit_code: int, duration_s: float, config: Config) -> Event:
    """The run's outcome from its notes, exit code and error line; secrets scrubbed."""
    facts = ctx.facts
    ok = exit_code == 0
    secrets = ctx.secrets()
    error = None
    if not ok:
        error = scrub(str(facts.get("error") or ctx.error_line or f"exit {exit_code}"), secrets)
    default = f"{ctx.command} succeeded" if ok else f"{ctx.command} failed: {error}"
    return Event(
        command=ctx.command,
        ok=ok,
        summary=scrub(str(facts.get("summary") or default), secrets),
        exit_code=exit_code,
        snapshot_id=facts.get("snapshot_id"),
        database=facts.get("database") or _database(config),
        size=facts.get("size"),
        duration_s=round(duration_s, 1),
        error=error,
        host=this_host(),
    )


def _database(config: Config) -> str | None:
    """``user@host:port/db`` of the configured database, if there is a valid one."""
    if not config.database_url:
        return None
    from snapmgr.postgres import ConnInfo

    try:
        return ConnInfo.parse(config.database_url).display()
    except SnapmgrError:
        return None


def _config(ctx: Ctx) -> Config | None:
    """The run's configuration; loaded apart (as the command would load it) when the
    command has not loaded it yet, so its own overrides are not frozen early."""
    if ctx.loaded_config is not None:
        return ctx.loaded_config
    try:
        return load_config({"database_url": ctx.database_url}, os.environ, ctx.config_path)
    except SnapmgrError:
        return None  # the command reports this error itself


def note_database(ctx: Ctx, url: str | None) -> None:
    """Record the database a command works on, shown without a password."""
    from snapmgr.postgres import ConnInfo

    with contextlib.suppress(SnapmgrError):  # the command itself reports a bad URL
        ctx.note(database=ConnInfo.parse(url or ctx.config.database_url).display())


def facts_of_snapshot(manifest: Any) -> dict[str, Any]:
    """The facts every event about one snapshot carries."""
    return {"snapshot_id": manifest.id, "size": manifest.size}
