"""snapmgr: verified, compressed PostgreSQL snapshots you can bet a deploy on.

The public API is :class:`snapmgr.manager.SnapshotManager`; the CLI is a thin
layer over it.

Importing this package imports nothing else: ``snapmgr.__main__`` must be able
to install its signal handling before any heavy import, and
``importlib.metadata`` (which ``__version__`` needs) takes tens of milliseconds.
"""

from __future__ import annotations

import functools


@functools.cache
def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("snapmgr")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0+source"


def __getattr__(name: str) -> str:
    """``snapmgr.__version__``, read from the installed metadata on first use."""
    if name == "__version__":
        return _installed_version()
    raise AttributeError(f"module 'snapmgr' has no attribute {name!r}")
