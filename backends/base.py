"""The storage backend interface: what snapmgr needs from a place that holds bytes.

A backend stores flat named objects under one location (a directory, a bucket
prefix, an fsspec URL). snapmgr's commit protocol lives in the core, not here:
a backend only has to (1) create an object exclusively, streaming, so that it
either appears whole or not at all, (2) read it back, (3) list, stat and
delete. Names are plain file names (``<id>.sql.gz``, ``<id>.json``), already
validated by the core; backends never see a path separator in a name.

Every backend raises only snapmgr errors: ``NotFoundError`` for a missing
object, ``IdTakenError`` when an exclusive create finds the name taken, and
``StorageError`` for anything else, with the library's exception chained.

In-progress objects are hidden: a write that has not committed (or whose
writer was killed) is never listed as an ordinary object. Either it stays out
of ``list_objects`` (an fsspec temp file elsewhere), or it is listed with
``ObjectInfo.in_progress`` set (a local temp file, an unfinished S3 multipart
upload), so the catalog treats it as an orphan that prune removes after
``orphan_grace``, never as part of a snapshot. :func:`in_progress_name` gives
such staged objects one naming scheme; the flag, not the name, is the contract.
The only exception is the final name itself, which a backend that cannot hide
it may reserve (empty) until ``commit`` or ``abort``.

A backend holds clients or sessions; ``close`` releases them and
``SnapshotManager.close`` (or leaving ``with SnapshotManager(...)``) calls it.
"""

from __future__ import annotations

import contextlib
import io
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Protocol, runtime_checkable


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its name under the store's location, size and mtime (UTC)."""

    name: str
    size: int
    modified: datetime
    #: A write still in progress, or one a killed writer left behind (a temp
    #: file, an unfinished multipart upload): never part of a snapshot.
    in_progress: bool = False


IN_PROGRESS_SUFFIX = ".partial"


def in_progress_name(name: str, token: str, sep: str = ".") -> str:
    """The name a write of ``name`` is staged under where the listing shows it:
    a leading dot hides it from ``ls``, ``token`` keeps concurrent writers apart."""
    return f".{name}{sep}{token}{IN_PROGRESS_SUFFIX}"


def is_in_progress_name(name: str) -> bool:
    """Whether ``name`` was made by :func:`in_progress_name`."""
    return name.startswith(".") and name.endswith(IN_PROGRESS_SUFFIX)


@runtime_checkable
class Writer(Protocol):
    """A streaming, exclusive create. Nothing is visible under the name until
    ``commit`` returns (or, for backends that cannot hide it, the object is
    reserved and removed again by ``abort``)."""

    def write(self, data: bytes) -> None:
        """Append bytes; may block while the store catches up (back-pressure)."""

    def commit(self) -> None:
        """Make the object durable and visible; raises if it could not be."""

    def abort(self) -> None:
        """Discard everything written; safe to call after a failure, and twice."""


@runtime_checkable
class Backend(Protocol):
    """A store's backend. Constructed with ``(url, options)`` by the registry."""

    #: Short kind name, e.g. ``"local"``, ``"s3"``, ``"fsspec"``.
    kind: str

    def location(self, name: str) -> str:
        """Where the object lives, for people: a path for local, a URL otherwise."""

    def open_writer(self, name: str, size_hint: int | None = None) -> Writer:
        """Start an exclusive create of ``name``; raises ``IdTakenError`` if it exists."""

    def put_bytes(self, name: str, data: bytes, *, overwrite: bool = False) -> None:
        """Store a small object atomically; exclusive unless ``overwrite``."""

    def open_reader(self, name: str) -> BinaryIO:
        """Open the object for streaming reads; raises ``NotFoundError``."""

    def stat(self, name: str) -> ObjectInfo:
        """Size and modification time of ``name``; raises ``NotFoundError``."""

    def list_objects(self) -> Iterator[ObjectInfo]:
        """Every object under the location (no recursion into sub-folders)."""

    def delete(self, names: list[str]) -> None:
        """Delete the named objects; missing ones are ignored."""

    def close(self) -> None:
        """Release clients and sessions; safe to call twice. Not used afterwards."""


class WriterBase(ABC):
    """An optional base for writers: the closed-state rules, once.

    ``write`` or ``commit`` after the writer closed is a ``StorageError``;
    ``abort`` after it closed does nothing. Subclasses implement ``_write``,
    ``_commit`` (which may call ``abort`` on failure) and ``_abort``.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            raise _storage_error(f"write to {self.where} after it was closed")
        self._write(data)

    def commit(self) -> None:
        if self.closed:
            raise _storage_error(f"commit of {self.where} after it was closed")
        self._commit()
        self.closed = True

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._abort()

    @abstractmethod
    def _write(self, data: bytes) -> None: ...

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _abort(self) -> None: ...


def _storage_error(message: str) -> Exception:
    from snapmgr.errors import StorageError

    return StorageError(message)


class BackendFactory(Protocol):
    """What the ``snapmgr.backends`` entry point must name: a class or callable
    taking the store's URL and its option table."""

    def __call__(self, url: str, options: Mapping[str, Any]) -> Backend: ...


def check_options(kind: str, options: Mapping[str, Any], allowed: frozenset[str]) -> None:
    """Refuse option keys a backend does not know, naming the key: a typo in a
    store table must not be silently ignored (it could disable encryption)."""
    from snapmgr.errors import ConfigError

    unknown = sorted(set(options) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise ConfigError(
            f"unknown option {unknown[0]!r} for a {kind} store (known options: {known})"
        )


class _Source(Protocol):
    """What a library's download stream offers: ``read(n)`` and ``close()``."""

    def read(self, size: int = ..., /) -> bytes: ...

    def close(self) -> None: ...


class _TranslatingRaw(io.RawIOBase):
    def __init__(self, source: _Source, translate: Callable[[Exception], Exception]) -> None:
        self._source = source
        self._translate = translate

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._source.read(len(view))
        except Exception as exc:
            if _is_snapmgr_error(exc):
                raise
            raise self._translate(exc) from exc
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self._source.close()
        super().close()


def _is_snapmgr_error(exc: Exception) -> bool:
    from snapmgr.errors import SnapmgrError

    return isinstance(exc, SnapmgrError)


def translating_reader(
    source: _Source, translate: Callable[[Exception], Exception], buffer_size: int = 1 << 20
) -> BinaryIO:
    """Wrap a library's download stream as a ``BinaryIO`` whose read errors (a dropped
    connection, a timeout) come out as the snapmgr error ``translate`` returns."""
    return io.BufferedReader(_TranslatingRaw(source, translate), buffer_size)
