"""The conformance suite against fsspec's local filesystem (``fsspec+file://``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapmgr.backends.fsspec_store import FsspecBackend
from snapmgr.backends.testing import BackendConformance, MakeBackend
from snapmgr.registry import kind_for_url, open_backend


class TestFsspecFile(BackendConformance):
    @pytest.fixture
    def make_backend(self, tmp_path: Path) -> MakeBackend:
        def make(sub: str = "") -> FsspecBackend:
            # fsspec+ forces the fsspec backend even for a scheme another backend owns.
            kind, url = kind_for_url(f"fsspec+file://{tmp_path}/store/{sub}".rstrip("/"))
            assert kind == "fsspec"
            backend = open_backend(kind, url, {})
            assert isinstance(backend, FsspecBackend)
            return backend

        return make
