"""Keep secrets out of everything snapmgr prints or writes.

URLs are shown as ``scheme://user:***@host/...``; libpq key/value strings get
``password=***``; and ``scrub`` removes known secret values from free text
(a child's stderr, an exception message) before it is shown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

MASK = "***"
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_SECRET = re.compile(
    r"([?&](?:password|sslpassword|secret|token|sig|signature|x-amz-signature|"
    r"x-amz-credential)=)[^&#]*",
    re.IGNORECASE,
)


def redact_url(text: str) -> str:
    """Mask the password of a URL (and secret query parameters), or of a conninfo string."""
    if "://" not in text:
        return _KV_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
    try:
        parts = urlsplit(text)
        netloc = parts.netloc
    except ValueError:
        return MASK
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostinfo}" if ":" in userinfo else f"{user}@{hostinfo}"
    query = _QUERY_SECRET.sub(lambda m: m.group(1) + MASK, "?" + parts.query)[1:]
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(text: str) -> list[str]:
    """The secret parts of a URL (its password, secret query values), as written and decoded."""
    if "://" not in text:
        return [m.group(2).strip("'") for m in _KV_PASSWORD.finditer(text)]
    try:
        parts = urlsplit(text)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return []
    userinfo = parts.netloc.rpartition("@")[0]
    found = [userinfo.split(":", 1)[1]] if ":" in userinfo else []
    found += [value for key, value in query if _QUERY_SECRET.match(f"?{key}=")]
    return list(dict.fromkeys(v for secret in found if secret for v in (secret, unquote(secret))))


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each non-empty secret in ``text`` with ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, MASK)
    return text
