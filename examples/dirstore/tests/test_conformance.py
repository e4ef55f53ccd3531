"""The plugin's tests: snapmgr's shipped conformance suite, run against DirBackend."""

from __future__ import annotations

from pathlib import Path

import pytest
from snapmgr_dirstore import DirBackend

from snapmgr.backends.testing import BackendConformance, MakeBackend


class TestDirBackend(BackendConformance):
    @pytest.fixture
    def make_backend(self, tmp_path: Path) -> MakeBackend:
        return lambda sub="": DirBackend(f"dir://{tmp_path / 'store' / sub}", {})
