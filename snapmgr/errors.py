"""snapmgr's exceptions: one root, each class carrying its documented exit code.

Library code raises these with a message a user can act on; the CLI prints
``str(error)`` as one line and exits with ``error.exit_code``. Libraries'
own exceptions (psycopg, boto3, fsspec, OSError) are translated at the
boundary where they occur (``raise StorageError(...) from exc``) and never
reach the CLI.

The tree::

    SnapmgrError                 1  unexpected
    ├── UsageError               2  bad flags, arguments or IDs
    │   └── ConfigError          2  unknown key or bad value (names the key)
    ├── DatabaseError            3  server unreachable, auth refused, client too old
    ├── DumpError                4  pg_dump failed or produced an incomplete dump
    ├── StorageError             5  a store could not be read or written
    │   └── IdTakenError         5  an object with that name already exists
    ├── VerificationError        6  stored bytes corrupt or incomplete
    ├── NotFoundError            7  no such snapshot (or object)
    ├── RestoreError             8  restore failed, target unchanged
    ├── SafetyRefusal            9  refused: no confirmation, empty policy, ...
    └── Interrupted            130  SIGINT/SIGTERM stopped it; says what is left
"""

from __future__ import annotations


class SnapmgrError(Exception):
    """Root of every error snapmgr raises on purpose."""

    exit_code = 1


class UsageError(SnapmgrError):
    """The command line or an argument (such as a snapshot ID) is not valid."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration key is unknown or its value is invalid."""


class DatabaseError(SnapmgrError):
    """The database cannot be reached, refused us, or our client is too old."""

    exit_code = 3


class DumpError(SnapmgrError):
    """pg_dump failed or its output is not a complete dump."""

    exit_code = 4


class StorageError(SnapmgrError):
    """A store could not be read, written, listed or deleted from."""

    exit_code = 5


class IdTakenError(StorageError):
    """The object already exists; snapmgr never overwrites a snapshot."""


class VerificationError(SnapmgrError):
    """Stored bytes do not match their manifest, or the dump is incomplete."""

    exit_code = 6


class NotFoundError(SnapmgrError):
    """The snapshot (or a stored object) does not exist."""

    exit_code = 7


class RestoreError(SnapmgrError):
    """The restore failed and was rolled back: the target is unchanged."""

    exit_code = 8


class SafetyRefusal(SnapmgrError):
    """snapmgr refused to do something that could lose data."""

    exit_code = 9


class Interrupted(SnapmgrError):
    """SIGINT/SIGTERM stopped the work; the message says what was (not) committed."""

    exit_code = 130
