"""The conformance suite ships in the package (``snapmgr.backends.testing``) so plugin
authors can run it; this name stays for the tests written against it."""

from snapmgr.backends.testing import (
    MIB,
    BackendConformance,
    BackendFixtures,
    BucketConformance,
    MakeBackend,
    names,
    read_all,
    write_all,
)

__all__ = [
    "MIB",
    "BackendConformance",
    "BackendFixtures",
    "BucketConformance",
    "MakeBackend",
    "names",
    "read_all",
    "write_all",
]
