"""``snapmgr doctor``: one line per check of a deployment (see :mod:`snapmgr.doctor`)."""

from __future__ import annotations

from typing import Annotated

import typer

from snapmgr.cli.common import Ctx, command

app = typer.Typer()


@command(app, "doctor")
def doctor(
    ctx: Ctx,
    send_test: Annotated[
        bool, typer.Option("--send-test", help="Send a test message to every notify_urls URL.")
    ] = False,
) -> int:
    """Check a deployment once: database, role, client tools, stores, locks, notifications."""
    from snapmgr.doctor import FAIL, run_checks

    config = ctx.config

    def test_message() -> str:
        from snapmgr.notify import Event, send, this_host

        urls = config.notify_urls
        event = Event("doctor", True, "snapmgr doctor: test message", host=this_host())
        sent = send(event, urls, config.secrets())
        return "" if sent == len(urls) else f"{len(urls) - sent} of {len(urls)} URL(s) failed"

    checks = run_checks(
        config, lambda: ctx.manager().stores, send_test=test_message if send_test else None
    )
    if ctx.json_output:
        ctx.emit_json([{"check": c.name, "status": c.status, "detail": c.detail} for c in checks])
    else:
        for check in checks:
            print(check.line())
    return 1 if any(check.status == FAIL for check in checks) else 0
