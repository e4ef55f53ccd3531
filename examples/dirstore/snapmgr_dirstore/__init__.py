"""An example snapmgr storage plugin: a directory behind ``dir:///path`` URLs.

It shows what a third-party backend needs: a class taking ``(url, options)``
that implements ``snapmgr.backends.base.Backend``, a writer built on the
optional ``WriterBase``, staged objects named by ``in_progress_name`` and
flagged ``in_progress`` in the listing, and only snapmgr errors raised. Its
tests (``tests/test_conformance.py``) run snapmgr's shipped conformance suite.
"""

from __future__ import annotations

import contextlib
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


def _error(action: str, path: Path, exc: OSError) -> StorageError:
    return StorageError(f"cannot {action} {path}: {exc.strerror or exc}")


class DirWriter(WriterBase):
    """Writes a staged file; ``commit`` hard-links it to its name (which fails if
    the name exists, so the create is exclusive) and removes the staged name.
    With ``replace``, ``commit`` renames it over the name instead."""

    def __init__(self, final: Path, *, replace: bool = False) -> None:
        super().__init__(str(final))
        self._final = final
        self._replace = replace
        self._staged = final.with_name(in_progress_name(final.name, secrets.token_hex(4)))
        if not replace and final.exists():
            raise IdTakenError(f"{final} already exists")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._file: BinaryIO = open(self._staged, "xb")  # noqa: SIM115
        except OSError as exc:
            raise _error("create", self._staged, exc) from exc

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise _error("write", self._staged, exc) from exc

    def _commit(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            if self._replace:
                os.replace(self._staged, self._final)
                return
            os.link(self._staged, self._final)
        except FileExistsError as exc:
            self.abort()
            raise IdTakenError(f"{self._final} already exists") from exc
        except OSError as exc:
            self.abort()
            raise _error("commit", self._final, exc) from exc
        self._staged.unlink()

    def _abort(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self._staged.unlink()


class DirBackend:
    """A directory on this machine, named by a ``dir:///absolute/path`` URL."""

    kind = "dir"

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        check_options(self.kind, options or {}, frozenset())
        parsed = urlparse(url)
        if parsed.scheme != "dir" or parsed.netloc:
            raise StorageError(f"{url!r} is not a dir:///absolute/path URL")
        self.root = Path(unquote(parsed.path))

    def location(self, name: str) -> str:
        return f"dir://{self.root / name}"

    def open_writer(self, name: str, size_hint: int | None = None) -> DirWriter:
        return DirWriter(self.root / name)

    def put_bytes(self, name: str, data: bytes, *, overwrite: bool = False) -> None:
        writer = DirWriter(self.root / name, replace=overwrite)
        writer.write(data)
        writer.commit()

    def open_reader(self, name: str) -> BinaryIO:
        try:
            return open(self.root / name, "rb")
        except FileNotFoundError as exc:
            raise NotFoundError(f"{self.location(name)} does not exist") from exc
        except OSError as exc:
            raise _error("read", self.root / name, exc) from exc

    def stat(self, name: str) -> ObjectInfo:
        try:
            st = (self.root / name).stat()
        except FileNotFoundError as exc:
            raise NotFoundError(f"{self.location(name)} does not exist") from exc
        except OSError as exc:
            raise _error("stat", self.root / name, exc) from exc
        return ObjectInfo(name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def list_objects(self) -> Iterator[ObjectInfo]:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _error("list", self.root, exc) from exc
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    modified = datetime.fromtimestamp(st.st_mtime, UTC)
                    staged = is_in_progress_name(entry.name)
                    yield ObjectInfo(entry.name, st.st_size, modified, staged)

    def delete(self, names: list[str]) -> None:
        for name in names:
            try:
                (self.root / name).unlink(missing_ok=True)
            except OSError as exc:
                raise _error("delete", self.root / name, exc) from exc

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own files."""


__all__ = ["DirBackend", "DirWriter"]
