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


_HOST_LIKE = re.compile(r"^(localhost|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+)$")
_URL_WORD = re.compile(r"[^/:@?&=#,;+]+")


def mask_service_url(url: str) -> str:
    """A notification or ping URL for people: its scheme and host, nothing else.

    Such URLs carry their secret anywhere (``slack://TokenA/TokenB/TokenC``,
    ``https://hooks.slack.com/services/T0/B0/XYZ``, ``https://hc-ping.com/UUID``),
    so everything but the scheme and a real host name is masked:
    ``https://hooks.slack.com/***``, ``slack://***``.
    """
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        return MASK
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
    _, at, hostport = netloc.rpartition("@")
    host = hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport
    if not _HOST_LIKE.match(host):
        return f"{scheme}://{MASK}"
    shown = f"{scheme}://{MASK + '@' if at else ''}{hostport}"
    return shown + (f"/{MASK}" if rest[len(netloc) :].strip("/") else "")


def service_url_secrets(url: str) -> list[str]:
    """What to scrub from text for a notification or ping URL: the URL itself and
    each of its words (tokens, IDs) except host names and short ones, and its password."""
    words = [url.strip()]
    netloc = re.split(r"[/?#]", url.partition("://")[2], maxsplit=1)[0]
    userinfo = netloc.rpartition("@")[0]
    if ":" in userinfo:
        words.append(userinfo.split(":", 1)[1])
    for word in _URL_WORD.findall(url.partition("://")[2]):
        if len(word) >= 6 and not _HOST_LIKE.match(word) and not word.isdigit():
            words += [word, unquote(word)]
    return list(dict.fromkeys(words))
