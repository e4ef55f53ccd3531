"""Tell people what happened: one notification per command run, through Apprise.

Apprise reaches Slack, Discord, Teams, Telegram, e-mail, ntfy, generic JSON
webhooks and about a hundred more services with one URL syntax, so snapmgr
only builds an :class:`Event` (what ran, whether it worked, the snapshot,
the database, size, duration, the one error line) and hands its text to
every URL in ``notify_urls``. Which events are sent is ``notify_on``: a list
of rules such as ``failure`` (the default), ``success``, ``always``,
``guard`` or ``snapshot:success``.

Apprise is an optional extra (``pip install 'snapmgr[notify]'``) and is
imported only when there is something to send. Sending never fails a
command: a missing package, a URL Apprise does not accept or a service that
does not answer is a warning on stderr, with the URL masked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from snapmgr.progress import human_bytes
from snapmgr.redact import mask_service_url, scrub

log = logging.getLogger("snapmgr")

#: Commands whose runs are events. ``drill`` joins by using this name.
EVENTS = ("snapshot", "restore", "guard", "prune", "drill", "check")
OUTCOMES = ("failure", "success", "always")
DEFAULT_NOTIFY_ON = ("failure",)
INSTALL_HINT = "pip install 'snapmgr[notify]'"


@dataclass(frozen=True)
class Event:
    """The outcome of one command run, as a notification tells it."""

    command: str
    ok: bool
    summary: str
    exit_code: int = 0
    snapshot_id: str | None = None
    database: str | None = None
    size: int | None = None
    duration_s: float | None = None
    error: str | None = None
    host: str = ""

    @property
    def outcome(self) -> str:
        return "success" if self.ok else "failure"

    def title(self) -> str:
        state = "ok" if self.ok else f"FAILED (exit {self.exit_code})"
        where = f" on {self.host}" if self.host else ""
        return f"snapmgr {self.command} {state}{where}"

    def body(self) -> str:
        """The summary line, then one ``key: value`` line per known fact."""
        facts = [
            ("snapshot", self.snapshot_id),
            ("database", self.database),
            ("size", human_bytes(self.size) if self.size is not None else None),
            ("duration", f"{self.duration_s:.1f}s" if self.duration_s is not None else None),
            ("error", self.error),
            ("host", self.host or None),
        ]
        return "\n".join([self.summary, *(f"{k}: {v}" for k, v in facts if v is not None)])


def this_host() -> str:
    """Which instance is speaking: several may run the same command at once.
    (``gethostname()``'s answer, without importing :mod:`socket` for it.)"""
    return os.uname().nodename


def parse_rules(value: Any) -> tuple[str, ...]:
    """``notify_on``: a list (or a comma/space separated string) of rules, each
    ``OUTCOME``, ``COMMAND`` or ``COMMAND:OUTCOME``; ``ValueError`` names a bad one."""
    if isinstance(value, str):
        items = value.replace(",", " ").split()
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = [item.strip() for item in value if item.strip()]
    else:
        raise ValueError("expected a list of rules such as failure, success, guard:success")
    for item in items:
        command, _, outcome = item.lower().rpartition(":")
        if not command and outcome in EVENTS:
            command, outcome = outcome, "always"
        if outcome not in OUTCOMES or (command and command not in EVENTS):
            raise ValueError(
                f"unknown rule {item!r}: expected {', '.join(OUTCOMES)}, a command "
                f"({', '.join(EVENTS)}) or COMMAND:OUTCOME such as guard:success"
            )
    return tuple(item.lower() for item in items)


def wanted(event: Event, rules: Iterable[str]) -> bool:
    """Does any ``notify_on`` rule ask for this event?"""
    for rule in rules:
        command, _, outcome = rule.rpartition(":")
        if not command and outcome in EVENTS:
            command, outcome = outcome, "always"
        if command in ("", event.command) and outcome in ("always", event.outcome):
            return True
    return False


def send(event: Event, urls: Sequence[str], secrets: Sequence[str | None] = ()) -> int:
    """Send ``event`` to every URL; how many accepted it. Never raises."""
    apprise = _import_apprise()
    if apprise is None:
        log.warning(
            "notifications are configured (notify_urls) but Apprise is not installed; run: %s",
            INSTALL_HINT,
        )
        return 0
    sent = 0
    for number, url in enumerate(urls, 1):
        shown = f"notification {number} ({mask_service_url(url)})"
        try:
            problem = _send_one(apprise, url, event)
        except Exception as exc:  # a library bug must not fail the command
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            sent += 1
            log.debug("%s sent", shown)
        else:
            problem = scrub(" ".join(problem.split()), [url, *secrets])
            log.warning("%s not sent: %s; the command's result is unaffected", shown, problem)
    return sent


def _import_apprise() -> Any:
    try:
        import apprise
    except ImportError:
        return None
    return apprise


def _send_one(apprise: Any, url: str, event: Event) -> str | None:
    """Send through one URL; ``None`` when it was accepted, else why not."""
    capture = _Capture()
    library_log = logging.getLogger("apprise")
    saved = library_log.propagate
    library_log.addHandler(capture)
    library_log.propagate = False  # its lines may hold URL parts; we report them scrubbed
    try:
        asset = apprise.AppriseAsset(app_id="snapmgr", app_desc="snapmgr", storage_mode="memory")
        client = apprise.Apprise(asset=asset)
        if not client.add(url):
            return capture.last() or "Apprise does not accept this URL (see its list of services)"
        notify_type = apprise.NotifyType.SUCCESS if event.ok else apprise.NotifyType.FAILURE
        if client.notify(body=event.body(), title=event.title(), notify_type=notify_type):
            return None
        return capture.last() or "the service did not accept it"
    finally:
        library_log.removeHandler(capture)
        library_log.propagate = saved


class _Capture(logging.Handler):
    """Keeps Apprise's warnings so the reason a send failed can be reported."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def last(self) -> str | None:
        return self.lines[-1] if self.lines else None
