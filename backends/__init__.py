"""Storage backends for snapmgr: local disk, S3 (boto3), any fsspec filesystem.

Each backend implements :class:`backends.base.Backend` and is registered under
the ``snapmgr.backends`` entry-point group, the same way a third-party package
adds its own.
"""
