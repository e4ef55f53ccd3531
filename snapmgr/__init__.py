"""snapmgr: verified, compressed PostgreSQL snapshots you can bet a deploy on.

The public API is :class:`snapmgr.manager.SnapshotManager`; the CLI is a thin
layer over it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("snapmgr")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
