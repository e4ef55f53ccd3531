"""Storage backends for snapmgr: local disk, S3 (boto3), any fsspec filesystem.

Installed as ``snapmgr.backends`` (the repository keeps them in its top-level
``backends/`` directory): snapmgr owns one top-level import package only.

Each backend implements :class:`snapmgr.backends.base.Backend` and is registered under
the ``snapmgr.backends`` entry-point group, the same way a third-party package
adds its own.
"""
