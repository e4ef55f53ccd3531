"""Local-disk backend: a directory of 0600 files inside a 0700 directory.

Exclusive creates reserve the final name with ``O_EXCL`` first, then stream
into a hidden temp file in the same directory, fsync it and rename it over the
reservation. So a second snapshot in the same second can never take the same
name, and a file under a final name is always either empty (reserved, in
progress or abandoned) or complete. The directory is fsynced after renames so
a crash cannot lose a committed name.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse

from snapmgr.backends.base import (
    ObjectInfo,
    WriterBase,
    check_options,
    in_progress_name,
    is_in_progress_name,
)
from snapmgr.errors import IdTakenError, NotFoundError, StorageError

FILE_MODE = 0o600
DIR_MODE = 0o700


def _storage_error(action: str, path: Path, exc: OSError) -> StorageError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        hint = "free some space or choose another store"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "check the directory's permissions or choose another BACKUP_DIR"
    elif exc.errno == errno.ENOTDIR:
        hint = "a path component is a regular file; choose another directory"
    else:
        hint = "check the store's directory"
    return StorageError(f"cannot {action} {path}: {reason}; {hint}")


#: Hand the kernel what was written every this many bytes (see :func:`_start_writeback`).
WRITEBACK_STEP = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing ``length`` bytes at ``offset`` to disk, without waiting (Linux).

    The kernel otherwise leaves a freshly written dump in the page cache until
    ``commit``'s fsync, which then writes all of it while the snapshot waits:
    a third of a second per 150 MB. Started as the dump streams, that writing
    overlaps the dump, and the fsync (still done, still the durability point)
    has only the last few megabytes left. Elsewhere, or if the call fails, it
    does nothing.
    """
    function = _load_sync_file_range()
    if function is not None:
        function(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


@functools.cache
def _load_sync_file_range() -> Any:
    try:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalWriter(WriterBase):
    """Streams into a temp file; ``commit`` fsyncs and renames it into place."""

    def __init__(self, final: Path) -> None:
        super().__init__(str(final))
        self._final = final
        self._temp = final.with_name(in_progress_name(final.name, secrets.token_hex(4)))
        try:
            os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        except FileExistsError as exc:
            raise IdTakenError(f"{final} already exists; snapmgr never overwrites") from exc
        except OSError as exc:
            raise _storage_error("create", final, exc) from exc
        try:
            fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            self._file: BinaryIO = os.fdopen(fd, "wb", buffering=0)
        except OSError as exc:
            self._unlink(final)
            raise _storage_error("create", self._temp, exc) from exc
        self._written = 0
        self._flushed = 0  # where the last started writeback ended

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise _storage_error("write", self._final, exc) from exc
        self._written += len(data)
        if self._written - self._flushed >= WRITEBACK_STEP:
            _start_writeback(self._file.fileno(), self._flushed, self._written - self._flushed)
            self._flushed = self._written

    def _commit(self) -> None:
        try:
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._temp, self._final)
            _fsync_dir(self._final.parent)
        except OSError as exc:
            self.abort()
            raise _storage_error("commit", self._final, exc) from exc

    def _abort(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        self._unlink(self._temp)
        self._unlink(self._final)

    @staticmethod
    def _unlink(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class LocalBackend:
    """A directory on this machine (``/path``, ``./rel``, ``~/x``, ``file:///path``)."""

    kind = "local"
    OPTIONS = frozenset[str]()

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        check_options(self.kind, options or {}, self.OPTIONS)
        self.root = self._path_from_url(url)

    @staticmethod
    def _path_from_url(url: str) -> Path:
        if url.lower().startswith(("file://", "local://")):  # local:// routes here by kind name
            parsed = urlparse(url)
            if parsed.netloc not in ("", "localhost"):
                raise StorageError(f"file URL {url!r} names a remote host; use file:///path")
            return Path(unquote(parsed.path))
        return Path(url).expanduser().absolute()

    def location(self, name: str) -> str:
        return str(self.root / name)

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise _storage_error("create directory", self.root, exc) from exc
        if not self.root.is_dir():
            raise StorageError(f"{self.root} is not a directory; choose another store path")

    def open_writer(self, name: str, size_hint: int | None = None) -> LocalWriter:
        self._ensure_root()
        return LocalWriter(self.root / name)

    def put_bytes(self, name: str, data: bytes, *, overwrite: bool = False) -> None:
        self._ensure_root()
        final = self.root / name
        temp = final.with_name(in_progress_name(name, secrets.token_hex(4)))
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if overwrite:
                os.replace(temp, final)
            else:
                os.link(temp, final)  # fails with EEXIST instead of replacing
                temp.unlink()
            _fsync_dir(self.root)
        except FileExistsError as exc:
            temp.unlink(missing_ok=True)
            raise IdTakenError(f"{final} already exists; snapmgr never overwrites") from exc
        except OSError as exc:
            with contextlib.suppress(OSError):  # on a read-only filesystem this fails too
                temp.unlink(missing_ok=True)
            raise _storage_error("write", final, exc) from exc

    def open_reader(self, name: str) -> BinaryIO:
        path = self.root / name
        try:
            return path.open("rb")
        except FileNotFoundError as exc:
            raise NotFoundError(f"{path} does not exist") from exc
        except OSError as exc:
            raise _storage_error("read", path, exc) from exc

    def stat(self, name: str) -> ObjectInfo:
        path = self.root / name
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise NotFoundError(f"{path} does not exist") from exc
        except OSError as exc:
            raise _storage_error("stat", path, exc) from exc
        return ObjectInfo(name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def list_objects(self) -> Iterator[ObjectInfo]:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _storage_error("list", self.root, exc) from exc
        for entry in entries:
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while we listed: a concurrent prune or abort
            modified = datetime.fromtimestamp(st.st_mtime, UTC)
            yield ObjectInfo(entry.name, st.st_size, modified, is_in_progress_name(entry.name))

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own files."""

    def delete(self, names: list[str]) -> None:
        for name in names:
            path = self.root / name
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise _storage_error("delete", path, exc) from exc
        if names:
            with contextlib.suppress(OSError):
                _fsync_dir(self.root)
