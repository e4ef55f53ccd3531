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
"""

from __future__ import annotations

import contextlib
import io
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
