"""fsspec backend: a store on any filesystem fsspec resolves (gcs://, az://, sftp://, ...).

The URL goes to ``fsspec.core.url_to_fs``; the store table's
``storage_options`` go verbatim to the filesystem. A missing implementation
package (gcsfs, adlfs, paramiko...) is a one-line ``StorageError`` naming the
package to install.

Writes open the final path with ``autocommit=False``, the same mechanism
fsspec transactions use: object stores keep the data in an unfinished
upload (s3fs and gcsfs multipart/resumable uploads, adlfs uncommitted
blocks) and the local filesystem in a temp file, and ``commit`` publishes it
while ``discard`` throws it away. A filesystem whose files cannot hide
unfinished data (fsspec's memory filesystem ignores ``autocommit``) shows the
object while it is written; ``abort`` then removes it again, as the Writer
protocol allows, and the core never counts a dump without its manifest.

Exclusive create: on s3fs the commit itself is conditional (mode ``xb``:
``If-None-Match: *``). Elsewhere fsspec offers no portable conditional
commit, so the name is checked when the writer opens and again right before
it commits; two writers committing the same name in that instant could
still both succeed. snapmgr's IDs carry the second they were taken, so that
needs two snapshots of one label in the same second on two machines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

import fsspec
import fsspec.core

from snapmgr.backends.base import ObjectInfo, WriterBase, check_options, translating_reader
from snapmgr.errors import ConfigError, IdTakenError, NotFoundError, SnapmgrError, StorageError
from snapmgr.redact import redact_url

OPTIONS = frozenset({"storage_options"})
# Commits on these protocols honour mode "xb" with a conditional request.
EXCLUSIVE_COMMIT_PROTOCOLS = frozenset({"s3", "s3a"})
# Filesystems with real directories: the store's directory is created on the
# first write. On object stores makedirs could create a bucket, which snapmgr
# must never do behind the user's back.
DIRECTORY_PROTOCOLS = frozenset({"file", "local", "memory", "sftp", "ssh", "ftp", "smb"})
DELETE_BATCH = 1000
MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created")


def translate(exc: Exception, action: str, where: str) -> SnapmgrError:
    """Turn an fsspec or implementation exception into a snapmgr error."""
    if isinstance(exc, SnapmgrError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return NotFoundError(f"{where} does not exist")
    if isinstance(exc, FileExistsError):
        return IdTakenError(f"{where} already exists; snapmgr never overwrites")
    if isinstance(exc, PermissionError):
        return StorageError(
            f"cannot {action} {where}: permission denied; check the credentials in the "
            "store's storage_options and the location's permissions"
        )
    reason = str(exc) or type(exc).__name__
    return StorageError(f"cannot {action} {where}: {reason}")


def _missing_package(url: str, exc: ImportError) -> StorageError:
    scheme = url.partition("://")[0]
    cause = exc.__cause__ if isinstance(exc.__cause__, ImportError) else exc
    package = cause.name.split(".")[0] if cause.name else None
    install = f"; run: pip install {package}" if package else ""
    return StorageError(
        f"the {scheme}:// store needs a package that is not installed: {exc}{install}"
    )


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return _as_datetime(datetime.fromisoformat(value.replace("Z", "+00:00")))
    return None


class FsspecWriter(WriterBase):
    """One create of ``path`` through an fsspec file opened with ``autocommit=False``."""

    def __init__(self, backend: FsspecBackend, path: str, *, exclusive: bool) -> None:
        super().__init__(backend.fs.unstrip_protocol(path))
        self._backend = backend
        self._fs = backend.fs
        self._path = path
        self._where = self.where
        self._exclusive = exclusive
        self._conditional = exclusive and backend.conditional_commit
        mode = "xb" if self._conditional else "wb"
        try:
            self._file = self._fs.open(path, mode, autocommit=False)
        except Exception as exc:
            raise backend.translate(exc, "create", self._where) from exc
        # Most filesystems' files take autocommit; sftp's stage in a temp path and
        # get commit/discard bound to them; one that does neither (memory)
        # publishes the path at once, and abort must remove it.
        self._hidden = getattr(self._file, "autocommit", None) is False or hasattr(
            self._file, "temppath"
        )

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except Exception as exc:
            raise translate(exc, "write", self._where) from exc

    def _commit(self) -> None:
        try:
            self._file.close()
            if self._hidden:
                if self._exclusive and not self._conditional and self._backend.exists(self._path):
                    raise FileExistsError(self._path)
                self._file.commit()
        except Exception as exc:
            self.abort()
            raise self._backend.translate(exc, "store", self._where) from exc
        self._finish()

    def _abort(self) -> None:
        # Close before discard, the order fsspec transactions use: closing may
        # flush (s3fs then starts the multipart upload that discard aborts).
        with contextlib.suppress(Exception):
            self._file.close()
        if self._hidden:
            with contextlib.suppress(Exception):
                self._file.discard()
        else:
            with contextlib.suppress(Exception):
                self._fs.rm_file(self._path)
        self._finish()

    def _finish(self) -> None:
        # fs.open(autocommit=False) also enrols the file in the filesystem's
        # (shared, cached) transaction; a later `with fs.transaction` must not
        # commit or discard it a second time.
        with contextlib.suppress(Exception):
            self._fs.transaction.files.remove(self._file)


class FsspecBackend:
    """Any fsspec URL; ``storage_options`` are passed to the filesystem."""

    kind = "fsspec"
    OPTIONS = OPTIONS

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        options = options or {}
        check_options(self.kind, options, self.OPTIONS)
        storage_options = options.get("storage_options", {})
        if not isinstance(storage_options, Mapping):
            raise ConfigError("fsspec store option storage_options: expected a table")
        self.url = url
        shown = redact_url(url)
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **dict(storage_options))
        except ImportError as exc:
            raise _missing_package(url, exc) from exc
        except ValueError as exc:
            if "Protocol not known" in str(exc):
                scheme = url.partition("://")[0]
                raise ConfigError(
                    f"no filesystem for {scheme}:// URLs ({shown}); check the store URL or "
                    "install the fsspec implementation that provides it"
                ) from exc
            raise ConfigError(f"invalid fsspec store {shown}: {exc}") from exc
        except TypeError as exc:
            raise ConfigError(f"fsspec store {shown}: bad storage_options: {exc}") from exc
        except Exception as exc:  # an implementation's own set-up failure (credentials...)
            raise StorageError(f"cannot open the fsspec store {shown}: {exc}") from exc
        self.root = str(root).rstrip("/")
        protocols = self.fs.protocol
        self.protocols = {protocols} if isinstance(protocols, str) else set(protocols)
        self.conditional_commit = bool(self.protocols & EXCLUSIVE_COMMIT_PROTOCOLS)
        self._has_directories = bool(self.protocols & DIRECTORY_PROTOCOLS)

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def translate(self, exc: Exception, action: str, where: str) -> SnapmgrError:
        """:func:`translate`, except that "not found" from an object store whose
        bucket (or container) does not exist is a ``StorageError`` saying so: the
        store is misconfigured, not merely empty or without that object."""
        if isinstance(exc, FileNotFoundError):
            bucket = self._missing_bucket()
            if bucket is not None:
                return StorageError(
                    f"cannot {action} {where}: the bucket or container {bucket!r} does not "
                    "exist; create it or fix the URL"
                )
        return translate(exc, action, where)

    def _missing_bucket(self) -> str | None:
        """The root's bucket (or container) if this is an object store and it does not
        exist; directories are created on the first write, so they are never missing."""
        if self._has_directories:
            return None
        bucket = self.root.split("/", 1)[0]
        self.fs.invalidate_cache(bucket)
        try:
            return None if self.fs.exists(bucket) else bucket
        except Exception:  # cannot tell: report the original error
            return None

    def location(self, name: str) -> str:
        return str(self.fs.unstrip_protocol(self.path(name)))

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists now, bypassing fsspec's listing cache."""
        self.fs.invalidate_cache(path)
        try:
            return bool(self.fs.exists(path))
        except Exception as exc:
            raise translate(exc, "check", self.fs.unstrip_protocol(path)) from exc

    def _prepare(self, name: str, *, exclusive: bool) -> str:
        path = self.path(name)
        if exclusive and self.exists(path):
            raise IdTakenError(f"{self.location(name)} already exists; snapmgr never overwrites")
        if self._has_directories:
            try:
                self.fs.makedirs(self.root, exist_ok=True)
            except Exception as exc:
                where = self.fs.unstrip_protocol(self.root)
                raise translate(exc, "create directory", where) from exc
        return path

    def open_writer(self, name: str, size_hint: int | None = None) -> FsspecWriter:
        return FsspecWriter(self, self._prepare(name, exclusive=True), exclusive=True)

    def put_bytes(self, name: str, data: bytes, *, overwrite: bool = False) -> None:
        exclusive = not overwrite
        writer = FsspecWriter(self, self._prepare(name, exclusive=exclusive), exclusive=exclusive)
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        writer.commit()

    def open_reader(self, name: str) -> BinaryIO:
        where = self.location(name)
        self.fs.invalidate_cache(self.path(name))
        try:
            handle = self.fs.open(self.path(name), "rb")
        except Exception as exc:
            raise translate(exc, "read", where) from exc
        return translating_reader(handle, lambda exc: translate(exc, "read", where))

    def stat(self, name: str) -> ObjectInfo:
        path = self.path(name)
        self.fs.invalidate_cache(path)
        try:
            info = self.fs.info(path)
        except Exception as exc:
            raise translate(exc, "stat", self.location(name)) from exc
        if info.get("type") == "directory":
            raise NotFoundError(f"{self.location(name)} is a directory, not a stored object")
        return ObjectInfo(name, int(info.get("size") or 0), self._modified(path, info))

    def _modified(self, path: str, info: Mapping[str, Any]) -> datetime:
        for key in MTIME_KEYS:
            when = _as_datetime(info.get(key))
            if when is not None:
                return when
        with contextlib.suppress(Exception):
            when = _as_datetime(self.fs.modified(path))
            if when is not None:
                return when
        # Unknown age counts as new, so retention never removes an orphan
        # that might still be in progress.
        return datetime.now(UTC)

    def list_objects(self) -> Iterator[ObjectInfo]:
        self.fs.invalidate_cache(self.root)
        where = self.fs.unstrip_protocol(self.root)
        try:
            entries = self.fs.ls(self.root, detail=True)
        except FileNotFoundError as exc:
            error = self.translate(exc, "list", where)
            if isinstance(error, NotFoundError):
                return  # an empty prefix or a directory not created yet: no objects
            raise error from exc
        except Exception as exc:
            raise translate(exc, "list", where) from exc
        for entry in cast(list[dict[str, Any]], entries):
            if entry.get("type") == "directory":
                continue
            name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            if not name:
                continue
            path = self.path(name)
            yield ObjectInfo(name, int(entry.get("size") or 0), self._modified(path, entry))

    def close(self) -> None:
        """Forget this location's cached listings. The filesystem instance itself
        is fsspec's, cached and shared by every backend with the same options,
        so it stays open; fsspec closes its sessions when the process exits."""
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(self.root)

    def delete(self, names: list[str]) -> None:
        for start in range(0, len(names), DELETE_BATCH):
            paths = [self.path(name) for name in names[start : start + DELETE_BATCH]]
            try:
                self.fs.rm(paths)
            except FileNotFoundError as exc:
                bucket = self._missing_bucket()
                if bucket is not None:
                    raise self.translate(exc, "delete from", self.location("")) from exc
                self._delete_one_by_one(paths)
            except Exception as exc:
                raise translate(exc, "delete from", self.fs.unstrip_protocol(self.root)) from exc
        if names:
            self.fs.invalidate_cache(self.root)

    def _delete_one_by_one(self, paths: list[str]) -> None:
        """Some filesystems refuse a batch naming a missing path; missing is fine here."""
        for path in paths:
            try:
                self.fs.rm_file(path)
            except FileNotFoundError:
                continue
            except Exception as exc:
                raise translate(exc, "delete", self.fs.unstrip_protocol(path)) from exc
