"""SnapshotManager releases its stores' backends: ``close()`` and ``with``."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapmgr.backends.local import LocalBackend
from snapmgr.config import load_config
from snapmgr.manager import SnapshotManager


def test_leaving_the_manager_closes_every_store_backend_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[Path] = []
    real_close = LocalBackend.close

    def recording_close(self: LocalBackend) -> None:
        closed.append(self.root)
        real_close(self)

    monkeypatch.setattr(LocalBackend, "close", recording_close)
    first, second = tmp_path / "a", tmp_path / "b"
    with SnapshotManager(load_config({}, {}, None), [str(first), str(second)]) as manager:
        assert manager.list_snapshots() == []
        assert closed == []
    assert closed == [first, second]
    manager.close()  # nothing left open: a second close closes nothing again
    assert closed == [first, second]
    assert manager.list_snapshots() == []  # stores reopen on next use
