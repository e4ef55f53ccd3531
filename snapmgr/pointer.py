"""The last-snapshot pointer file that start-up scripts read.

Line 1 is where the dump lives (a path for local stores, a URL otherwise);
line 2 is ``id: <ID>``. It is replaced atomically (temp file + rename in the
same directory), so a reader never sees half a pointer.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from snapmgr.errors import StorageError


def replace_file(path: str, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` atomically: a temp file in the same directory, fsynced, renamed
    over it, so a reader sees the old content or the new, never half. Raises OSError."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def write_pointer(path: str, location: str, snapshot_id: str) -> None:
    """Atomically replace the pointer file at ``path``."""
    try:
        replace_file(path, f"{location}\nid: {snapshot_id}\n")
    except OSError as exc:
        raise StorageError(
            f"snapshot {snapshot_id} is committed, but the pointer file {path} could not be "
            f"written: {exc.strerror}; set pointer_file to a writable path"
        ) from exc


def read_pointer(path: str) -> tuple[str, str] | None:
    """``(location, id)`` from the pointer file, or ``None`` if there is none."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read the pointer file {path}: {exc.strerror}") from exc
    if len(lines) < 2 or not lines[1].startswith("id: "):
        return None
    return lines[0], lines[1].removeprefix("id: ").strip()
