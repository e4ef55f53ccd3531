"""snapmgr: verified, compressed PostgreSQL snapshots you can bet a deploy on.

The public API is :class:`snapmgr.manager.SnapshotManager`; the CLI is a thin
layer over it.

The version is written here, not read from the installed metadata: importing
``importlib.metadata`` costs more than the rest of ``snapmgr --version``, and
pyproject.toml takes its version from this line.
"""

__version__ = "0.1.0"
