"""The conformance suite against fsspec's memory filesystem (``memory://``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import fsspec
import pytest

from snapmgr.backends.base import Backend
from snapmgr.backends.testing import BackendConformance, MakeBackend
from snapmgr.registry import kind_for_url, open_backend


class TestFsspecMemory(BackendConformance):
    @pytest.fixture
    def make_backend(self) -> Iterator[MakeBackend]:
        root = f"memory://snapmgr-tests/{uuid.uuid4().hex}/store"

        def make(sub: str = "") -> Backend:
            kind, url = kind_for_url(f"{root}/{sub}" if sub else root)
            assert kind == "fsspec"
            return open_backend(kind, url, {})

        yield make
        fs = fsspec.filesystem("memory")
        if fs.exists(root):
            fs.rm(root, recursive=True)
