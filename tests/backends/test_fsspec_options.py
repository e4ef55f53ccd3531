"""fsspec backend set-up: URL routing, storage_options, and the errors a user
meets when an implementation package is missing or a scheme is unknown."""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path
from typing import ClassVar

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from snapmgr.backends.fsspec_store import FsspecBackend
from snapmgr.backends.testing import read_all, write_all
from snapmgr.config import load_config
from snapmgr.errors import ConfigError, StorageError
from snapmgr.registry import kind_for_url, open_backend


@pytest.mark.parametrize(
    ("url", "kind", "backend_url"),
    [
        ("/var/backups/db", "local", "/var/backups/db"),
        ("relative/dir", "local", "relative/dir"),
        ("file:///srv/snaps", "local", "file:///srv/snaps"),
        ("s3://bucket/app/db", "s3", "s3://bucket/app/db"),
        ("fsspec+s3://bucket/app/db", "fsspec", "s3://bucket/app/db"),
        ("fsspec+file:///srv/snaps", "fsspec", "file:///srv/snaps"),
        ("gcs://bucket/db", "fsspec", "gcs://bucket/db"),
        ("az://container/db", "fsspec", "az://container/db"),
        ("sftp://host/srv/db", "fsspec", "sftp://host/srv/db"),
        ("memory://x/db", "fsspec", "memory://x/db"),
    ],
)
def test_urls_route_to_their_backend(url: str, kind: str, backend_url: str) -> None:
    assert kind_for_url(url) == (kind, backend_url)


@pytest.mark.parametrize(
    ("url", "package"), [("gcs://bucket/db", "gcsfs"), ("az://container/db", "adlfs")]
)
def test_missing_implementation_names_the_package(url: str, package: str) -> None:
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    with pytest.raises(StorageError) as caught:
        open_backend("fsspec", url, {})
    message = str(caught.value)
    assert f"pip install {package}" in message
    assert "\n" not in message
    assert caught.value.exit_code == 5


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nosuchfs://") as caught:
        open_backend("fsspec", "nosuchfs://bucket/db", {})
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("options", "named"),
    [({"endpoint_url": "http://x"}, "endpoint_url"), ({"storage_options": "x"}, "storage_options")],
)
def test_bad_options_are_config_errors(options: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        FsspecBackend("memory://opts/db", options)


class SnapmgrTestFS(MemoryFileSystem):
    """Stands in for an installed implementation package (gcsfs, adlfs, ...)."""

    protocol = "snapmgrtestfs"
    seen_options: ClassVar[dict[str, object]] = {}

    def __init__(self, *args: object, **options: object) -> None:
        type(self).seen_options = dict(options)
        super().__init__(*args, global_store=False)


def test_any_registered_scheme_works_with_its_storage_options() -> None:
    fsspec.register_implementation("snapmgrtestfs", SnapmgrTestFS, clobber=True)
    url = f"snapmgrtestfs://bucket/{uuid.uuid4().hex}"
    kind, routed = kind_for_url(url)
    assert kind == "fsspec"
    backend = open_backend(kind, routed, {"storage_options": {"project": "p1", "token": "t"}})
    assert SnapmgrTestFS.seen_options == {"project": "p1", "token": "t"}
    write_all(backend, "x.sql.gz", b"dump bytes")
    assert read_all(backend, "x.sql.gz") == b"dump bytes"
    assert backend.location("x.sql.gz").startswith("snapmgrtestfs://")


def test_config_redacts_secrets_in_storage_options(tmp_path: Path) -> None:
    config_file = tmp_path / "snapmgr.toml"
    config_file.write_text(
        """
[stores.blob]
url = "az://container/db"
storage_options = { account_name = "acct", account_key = "K3y==", sas_token = "sv=x" }

[stores.s3fs]
url = "fsspec+s3://bucket/db"

[stores.s3fs.storage_options]
key = "AKIAEXAMPLE"
secret = "s3cr3t"
client_kwargs = { region_name = "eu-west-1" }
"""
    )
    config = load_config({}, {}, str(config_file))
    assert config.stores["blob"].kind == "fsspec"
    assert config.stores["s3fs"].url == "s3://bucket/db"
    shown = json.dumps(config.redacted())
    for secret in ("K3y==", "sv=x", "s3cr3t"):
        assert secret not in shown
    assert "acct" in shown and "eu-west-1" in shown
