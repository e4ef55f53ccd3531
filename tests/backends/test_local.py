"""The conformance suite against the local-disk backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from snapmgr.backends.local import LocalBackend
from snapmgr.backends.testing import BackendConformance, MakeBackend
from snapmgr.registry import kind_for_url, open_backend


class TestLocal(BackendConformance):
    @pytest.fixture
    def make_backend(self, tmp_path: Path) -> MakeBackend:
        return lambda sub="": LocalBackend(str(tmp_path / "store" / sub), {})

    @pytest.fixture
    def seed(self, tmp_path: Path) -> Callable[[list[str]], None]:
        # Plain files: put_bytes fsyncs each object, which only makes seeding slow.
        def write(names: list[str]) -> None:
            (tmp_path / "store").mkdir(exist_ok=True)
            for name in names:
                (tmp_path / "store" / name).write_bytes(name.encode())

        return write


@pytest.mark.parametrize("scheme", ["file", "local"])
def test_file_and_local_urls_are_absolute_paths(tmp_path: Path, scheme: str) -> None:
    kind, url = kind_for_url(f"{scheme}://{tmp_path}/store")
    backend = open_backend(kind, url, {})
    assert isinstance(backend, LocalBackend)
    assert backend.root == tmp_path / "store"
