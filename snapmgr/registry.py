"""Find storage backends by kind, through the ``snapmgr.backends`` entry points.

The built-in backends register through the same entry-point group as
third-party ones (see pyproject.toml), so a plugin package adds a kind without
touching this repository. Loading is lazy: listing kinds imports nothing, and
boto3 or fsspec are imported only when a store of that kind is opened. A
backend whose library is missing fails with a one-line install hint.

A built-in kind is opened without reading the environment's entry points
(importing ``importlib.metadata`` and scanning every installed package costs
more than the rest of a small command); plugins are looked up for other kinds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from snapmgr.backends.base import Backend, BackendFactory
from snapmgr.errors import ConfigError, StorageError

GROUP = "snapmgr.backends"

#: The built-in kinds. They also answer when snapmgr runs from a source tree
#: that was never installed (no entry points in the environment's metadata),
#: and they win over an entry point of the same name: a plugin adds kinds, it
#: cannot silently replace ``s3`` (nor can metadata left by an older install).
_BUILTIN = {
    "local": "snapmgr.backends.local:LocalBackend",
    "s3": "snapmgr.backends.s3:S3Backend",
    "fsspec": "snapmgr.backends.fsspec_store:FsspecBackend",
}

#: pip packages that provide a backend kind's library.
_INSTALL_HINTS = {"s3": "boto3", "fsspec": "fsspec"}


@dataclass(frozen=True)
class BackendEntry:
    """An available backend kind and where its code lives (``module:attr``)."""

    kind: str
    target: str


def available() -> dict[str, BackendEntry]:
    """Every backend kind known to this environment, built-in and plugins."""
    from importlib.metadata import entry_points

    # Built-in kinds are always snapmgr's own: a plugin adds kinds, never replaces them.
    found = {ep.name: BackendEntry(ep.name, ep.value) for ep in entry_points(group=GROUP)}
    found.update((kind, BackendEntry(kind, target)) for kind, target in _BUILTIN.items())
    return found


def _load(entry: BackendEntry) -> BackendFactory:
    module_name, _, attr = entry.target.partition(":")
    try:
        module = __import__(module_name, fromlist=[attr or "_"])
    except ImportError as exc:
        package = _INSTALL_HINTS.get(entry.kind, exc.name or module_name)
        raise StorageError(
            f"the {entry.kind} backend needs a package that is not installed: "
            f"{exc.name or module_name}; run: pip install {package}"
        ) from exc
    return cast(BackendFactory, getattr(module, attr))


def open_backend(kind: str, url: str, options: Mapping[str, Any]) -> Backend:
    """Instantiate the backend ``kind`` for ``url`` with its option table."""
    if kind in _BUILTIN:
        return _load(BackendEntry(kind, _BUILTIN[kind]))(url, options)
    kinds = available()
    if kind not in kinds:
        known = ", ".join(sorted(kinds))
        raise ConfigError(f"unknown backend {kind!r} (available: {known})")
    return _load(kinds[kind])(url, options)


def kind_for_url(url: str) -> tuple[str, str]:
    """Pick the backend kind for a store URL and return ``(kind, url)``.

    A bare path or ``file://`` is local; ``s3://`` is the boto3 backend;
    ``fsspec+SCHEME://`` forces fsspec; a scheme that names a registered
    backend (a plugin's) goes to it; any other scheme goes to fsspec.
    """
    scheme, sep, _ = url.partition("://")
    if not sep or "/" in scheme:
        return "local", url
    scheme = scheme.lower()
    if scheme == "file":
        return "local", url
    if scheme.startswith("fsspec+"):
        return "fsspec", url[len("fsspec+") :]
    if scheme in available() and scheme != "fsspec":
        return scheme, url
    return "fsspec", url
