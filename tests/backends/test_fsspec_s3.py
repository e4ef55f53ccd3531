"""The conformance suite against the fsspec backend on s3fs, talking to a moto
server on 127.0.0.1 (``fsspec+s3://`` forces fsspec over the boto3 backend)."""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable
from typing import Any

import pytest

from snapmgr.backends.fsspec_store import FsspecBackend
from snapmgr.backends.testing import BackendConformance, BucketConformance, MakeBackend, read_all
from snapmgr.errors import IdTakenError
from snapmgr.registry import kind_for_url, open_backend
from tests.s3_server import fake_aws, moto_server, new_bucket, pending_uploads, s3_client

__all__ = ["fake_aws", "moto_server"]  # pytest fixtures, used by name
MIB = 1 << 20


@pytest.fixture
def bucket(fake_aws: None, moto_server: str) -> str:
    return new_bucket(s3_client(moto_server))


def storage_options(endpoint: str) -> dict[str, Any]:
    return {
        "endpoint_url": endpoint,
        "key": "testing",
        "secret": "testing",
        # small blocks, so an 11 MiB object is a real multipart upload
        "default_block_size": 5 * MIB,
        "skip_instance_cache": True,
    }


def make_fsspec_s3(bucket: str, endpoint: str) -> MakeBackend:
    def make(sub: str = "") -> FsspecBackend:
        kind, url = kind_for_url(f"fsspec+s3://{bucket}/app/db" + (f"/{sub}" if sub else ""))
        assert kind == "fsspec"
        backend = open_backend(kind, url, {"storage_options": storage_options(endpoint)})
        assert isinstance(backend, FsspecBackend)
        return backend

    return make


class TestFsspecS3(BackendConformance, BucketConformance):
    @pytest.fixture
    def make_backend(self, bucket: str, moto_server: str) -> MakeBackend:
        return make_fsspec_s3(bucket, moto_server)

    @pytest.fixture
    def make_in_missing_bucket(self, fake_aws: None, moto_server: str) -> MakeBackend:
        return make_fsspec_s3("no-such-bucket-here", moto_server)

    @pytest.fixture
    def leftovers(self, bucket: str, moto_server: str) -> Callable[[], list[str]]:
        return lambda: pending_uploads(s3_client(moto_server), bucket)

    @pytest.fixture
    def seed(self, bucket: str, moto_server: str) -> Callable[[list[str]], None]:
        # Plain PUTs: s3fs runs every call through one event-loop thread, which
        # makes a thousand exclusive creates slow without testing anything more.
        client = s3_client(moto_server)

        def put_all(names: list[str]) -> None:
            def put(name: str) -> None:
                client.put_object(Bucket=bucket, Key=f"app/db/{name}", Body=name.encode())

            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                list(pool.map(put, names))

        return put_all


def test_s3fs_commit_is_conditional(bucket: str, moto_server: str) -> None:
    """On s3fs the commit itself carries If-None-Match, so a name taken after the
    writer opened is still never overwritten (no check-then-write window)."""
    backend = FsspecBackend(f"s3://{bucket}/app", {"storage_options": storage_options(moto_server)})
    assert backend.conditional_commit
    writer = backend.open_writer("late.sql.gz")
    writer.write(os.urandom(6 * MIB))
    s3_client(moto_server).put_object(Bucket=bucket, Key="app/late.sql.gz", Body=b"first")
    with pytest.raises(IdTakenError):
        writer.commit()
    assert read_all(backend, "late.sql.gz") == b"first"
    assert pending_uploads(s3_client(moto_server), bucket) == []
