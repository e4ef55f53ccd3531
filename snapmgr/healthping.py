"""Dead man's switch pings for scheduled runs (healthchecks.io conventions).

A cron job nobody watches is only noticed when it stops running, so
``snapshot``, ``prune`` (and ``drill``) ping ``healthcheck_url``: ``URL/start``
when they begin, ``URL`` when they succeed and ``URL/fail`` with the error
line as the body when they fail. That is healthchecks.io's scheme (Better
Stack's heartbeats take ``URL`` and ``URL/fail`` too); the monitor alerts
when a success ping is late or a fail ping arrives.

Plain ``urllib`` with a short timeout: a monitor that is down must cost a
run seconds, not its result. A ping that fails is a warning (URL masked).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from snapmgr import __version__
from snapmgr.redact import mask_service_url, scrub

log = logging.getLogger("snapmgr")

#: Commands that ping: the ones cron runs. ``drill`` joins by using this name.
PINGED = ("snapshot", "prune", "drill")
TIMEOUT_S = 10.0
MAX_BODY = 10_000  # healthchecks.io keeps the first 100 kB; a line or two is plenty
SUFFIX = {"start": "/start", "success": "", "fail": "/fail"}


def parse_ping_url(value: object) -> str | None:
    """``healthcheck_url``: empty, or an http(s) URL; ``ValueError`` otherwise."""
    if not isinstance(value, str):
        raise ValueError("expected a URL string")
    text = value.strip()
    if not text:
        return None
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL such as https://hc-ping.com/UUID")
    return text


def ping_url(url: str, kind: str) -> str:
    """``url`` with ``/start`` or ``/fail`` appended to its path (a query stays last)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + SUFFIX[kind]))


def ping(
    url: str,
    kind: str,
    body: str = "",
    *,
    timeout_s: float = TIMEOUT_S,
    secrets: Sequence[str | None] = (),
) -> bool:
    """POST one ping (``kind``: start, success or fail); ``False`` after a warning."""
    import http.client  # here, not at import time: most runs never ping
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - the scheme is checked when configured
        ping_url(url, kind),
        data=body.encode()[:MAX_BODY],
        method="POST",
        headers={"User-Agent": f"snapmgr/{__version__}", "Content-Type": "text/plain"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            response.read(1024)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        reason = scrub(" ".join(str(getattr(exc, "reason", exc)).split()), [url, *secrets])
        log.warning(
            "healthcheck ping (%s) to %s failed: %s; the command's result is unaffected",
            kind,
            mask_service_url(url),
            reason or type(exc).__name__,
        )
        return False
    log.debug("healthcheck ping (%s) to %s sent", kind, mask_service_url(url))
    return True
