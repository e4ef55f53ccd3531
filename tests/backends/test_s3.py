"""The conformance suite against the boto3 S3 backend on moto's in-process mock,
plus what only S3 has: part sizing, back-pressure, options, error translation."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import botocore.exceptions
import pytest
from moto import mock_aws

from snapmgr.backends.s3 import (
    DEFAULT_PART_SIZE,
    GIB,
    MAX_PART_SIZE,
    MIB,
    MIN_PART_SIZE,
    PartPlan,
    S3Backend,
    plan_parts,
    translate,
)
from snapmgr.backends.testing import (
    BackendConformance,
    BucketConformance,
    MakeBackend,
    read_all,
    write_all,
)
from snapmgr.errors import ConfigError, IdTakenError, NotFoundError, StorageError
from snapmgr.registry import kind_for_url, open_backend
from tests.s3_server import bucket_keys, fake_aws, moto_server, pending_uploads

__all__ = ["fake_aws", "moto_server"]  # pytest fixtures, used by name
TIB = 1 << 40
OPTIONS = {"part_size": "5MiB", "max_concurrency": 3}


@pytest.fixture
def s3(fake_aws: None) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="snapmgr-conformance")
        yield client


def make_s3(bucket: str, options: dict[str, Any] | None = None) -> MakeBackend:
    def make(sub: str = "") -> S3Backend:
        kind, url = kind_for_url(f"s3://{bucket}/app/db" + (f"/{sub}" if sub else ""))
        assert kind == "s3"
        backend = open_backend(kind, url, OPTIONS if options is None else options)
        assert isinstance(backend, S3Backend)
        return backend

    return make


class TestS3(BackendConformance, BucketConformance):
    @pytest.fixture
    def make_backend(self, s3: Any) -> MakeBackend:
        return make_s3("snapmgr-conformance")

    @pytest.fixture
    def make_in_missing_bucket(self, s3: Any) -> MakeBackend:
        return make_s3("no-such-bucket-here")

    @pytest.fixture
    def leftovers(self, s3: Any) -> Callable[[], list[str]]:
        return lambda: pending_uploads(s3, "snapmgr-conformance")


# -- part sizing ---------------------------------------------------------------


def test_default_plan_is_8mib_parts_growing_past_half_the_parts() -> None:
    plan = plan_parts(None)
    assert plan.base == DEFAULT_PART_SIZE
    assert plan.size(1) == plan.size(5000) == 8 * MIB
    assert plan.size(5001) == 16 * MIB
    assert plan.size(10_000) == MAX_PART_SIZE  # 8 MiB x 1024 capped at 5 GiB
    assert plan.capacity() >= 5 * TIB  # S3's largest object fits in 10,000 parts


@pytest.mark.parametrize("max_parts", [10_000, 1000])
@pytest.mark.parametrize("hint", [None, 1, 100 * MIB, 40 * GIB, 300 * GIB, 2 * TIB])
def test_plan_fits_a_hundred_times_the_estimate(hint: int | None, max_parts: int) -> None:
    plan = plan_parts(hint, max_parts=max_parts)
    sizes = [plan.size(n) for n in range(1, max_parts + 1)]
    assert all(MIN_PART_SIZE <= size <= MAX_PART_SIZE for size in sizes)
    assert sizes == sorted(sizes)
    assert plan.base % MIB == 0
    if hint:
        # the estimate fits in the first half of the parts at the base size...
        assert plan.base * (max_parts // 2) >= hint
        # ...and a dump far larger than estimated still fits (up to S3's 5 TiB)
        assert plan.capacity() >= min(100 * hint, 5 * TIB if max_parts == 10_000 else 0)
        # the base is no larger than needed: memory stays proportionate
        assert plan.base <= max(DEFAULT_PART_SIZE, hint // (max_parts // 2) + MIB)


def test_plan_with_a_fixed_part_size() -> None:
    plan = plan_parts(10 * TIB, part_size=64 * MIB)
    assert plan == PartPlan(64 * MIB)


def test_memory_ceiling_is_parts_in_flight(s3: Any) -> None:
    """write() blocks while max_concurrency parts are uploading (back-pressure)."""
    backend = make_s3("snapmgr-conformance", {"part_size": "5MiB", "max_concurrency": 2})()
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def slow_start(**_: Any) -> None:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.1)

    def done(**_: Any) -> None:
        with lock:
            state["now"] -= 1

    backend.client.meta.events.register("before-call.s3.UploadPart", slow_start)
    backend.client.meta.events.register("after-call.s3.UploadPart", done)
    data = os.urandom(MIB)
    writer = backend.open_writer("pressure.sql.gz")
    started = time.monotonic()
    for _ in range(6 * 5):  # six full parts
        writer.write(data)
    # 6 parts, 2 at a time, 0.1 s each: write() must have waited for at least 2 rounds
    assert time.monotonic() - started >= 0.2
    writer.commit()
    assert state["peak"] == 2
    assert read_all(backend, "pressure.sql.gz") == data * 30


# -- options -----------------------------------------------------------------------


def test_encryption_and_storage_class_apply_to_single_and_multipart(s3: Any) -> None:
    backend = make_s3(
        "snapmgr-conformance",
        {"part_size": "5MiB", "sse": "AES256", "storage_class": "standard_ia"},
    )()
    write_all(backend, "small.json", b"{}")
    write_all(backend, "big.sql.gz", os.urandom(6 * MIB))
    backend.put_bytes("m.json", b"{}")
    for key in ("small.json", "big.sql.gz", "m.json"):
        head = s3.head_object(Bucket="snapmgr-conformance", Key=f"app/db/{key}")
        assert head["ServerSideEncryption"] == "AES256"
        assert head["StorageClass"] == "STANDARD_IA"


def test_kms_key_is_sent(s3: Any) -> None:
    backend = make_s3(
        "snapmgr-conformance", {"sse": "aws:kms", "sse_kms_key_id": "alias/snapmgr"}
    )()
    backend.put_bytes("k.json", b"{}")
    head = s3.head_object(Bucket="snapmgr-conformance", Key="app/db/k.json")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert "snapmgr" in head["SSEKMSKeyId"]


def test_checksum_when_required_round_trips(s3: Any) -> None:
    options = {
        "part_size": "5MiB",
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
    }
    backend = make_s3("snapmgr-conformance", options)()
    config = backend.client.meta.config
    assert config.request_checksum_calculation == "when_required"  # type: ignore[attr-defined]
    assert config.response_checksum_validation == "when_required"  # type: ignore[attr-defined]
    data = os.urandom(11 * MIB)
    write_all(backend, "c.sql.gz", data)
    assert read_all(backend, "c.sql.gz") == data


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"regoin": "eu-west-1"}, "regoin"),
        ({"sse": "aes"}, "sse"),
        ({"sse_kms_key_id": "k"}, "sse_kms_key_id"),
        ({"storage_class": "DEEP_ARCHIVE"}, "storage_class"),
        ({"part_size": "1MiB"}, "part_size"),
        ({"part_size": "lots"}, "part_size"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_parts": 20_000}, "max_parts"),
        ({"request_checksum_calculation": "never"}, "request_checksum_calculation"),
        ({"addressing_style": "sideways"}, "addressing_style"),
        ({"endpoint_url": "127.0.0.1:9000"}, "endpoint_url"),
    ],
)
def test_bad_options_are_config_errors_naming_the_option(
    fake_aws: None, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError, match=named) as caught:
        S3Backend("s3://bucket/prefix", options)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("url", ["s3:///prefix", "s3://bucket/p?region=eu-west-1"])
def test_bad_urls_are_config_errors(fake_aws: None, url: str) -> None:
    with pytest.raises(ConfigError):
        S3Backend(url, {})


def test_unknown_profile_is_a_config_error(fake_aws: None) -> None:
    with pytest.raises(ConfigError, match="no-such-profile"):
        S3Backend("s3://bucket/x", {"profile": "no-such-profile"})


def test_location_and_prefixes(fake_aws: None) -> None:
    assert S3Backend("s3://b-1/app/db/", {}).location("x.json") == "s3://b-1/app/db/x.json"
    assert S3Backend("s3://b-1", {}).location("x.json") == "s3://b-1/x.json"


# -- failures are translated and clean up --------------------------------------------


def test_a_failed_part_surfaces_and_abort_cleans_up(s3: Any) -> None:
    backend = make_s3("snapmgr-conformance")()
    writer = backend.open_writer("doomed.sql.gz")
    data = os.urandom(MIB)
    for _ in range(6):
        writer.write(data)  # part 1 is on its way
    (upload,) = s3.list_multipart_uploads(Bucket="snapmgr-conformance")["Uploads"]
    s3.abort_multipart_upload(  # someone (a lifecycle rule) kills the upload
        Bucket="snapmgr-conformance", Key=upload["Key"], UploadId=upload["UploadId"]
    )
    with pytest.raises(StorageError, match=r"doomed\.sql\.gz"):
        for _ in range(20):
            writer.write(data)
        writer.commit()
    writer.abort()
    assert pending_uploads(s3, "snapmgr-conformance") == []
    assert bucket_keys(s3, "snapmgr-conformance") == []


def test_missing_bucket_is_a_storage_error(s3: Any) -> None:
    backend = make_s3("no-such-bucket-here")()
    with pytest.raises(StorageError, match="bucket does not exist"):
        list(backend.list_objects())
    with pytest.raises(StorageError, match="no-such-bucket-here"):
        backend.put_bytes("x.json", b"{}")


def test_no_credentials_is_a_storage_error(
    fake_aws: None, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    backend = S3Backend("s3://bucket/x", {"endpoint_url": moto_server})
    with pytest.raises(StorageError, match="no AWS credentials") as caught:
        backend.stat("a.json")
    assert not isinstance(caught.value, NotFoundError)


def test_unreachable_endpoint_is_a_storage_error(
    fake_aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    backend = S3Backend("s3://bucket/x", {"endpoint_url": "http://127.0.0.1:9"})
    with pytest.raises(StorageError, match="cannot reach"):
        list(backend.list_objects())


@pytest.mark.parametrize(
    ("code", "message", "expected", "hint"),
    [
        ("NoSuchKey", "gone", NotFoundError, "does not exist"),
        ("PreconditionFailed", "At least one...", IdTakenError, "never overwrites"),
        ("ConditionalRequestConflict", "busy", IdTakenError, "never overwrites"),
        ("AccessDenied", "no", StorageError, "credentials"),
        ("InvalidRequest", "Checksum Type mismatch occurred", StorageError, "when_required"),
        ("NotImplemented", "If-None-Match", StorageError, "conditional writes"),
        ("SlowDown", "reduce your request rate", StorageError, "SlowDown"),
    ],
)
def test_service_errors_become_actionable_snapmgr_errors(
    code: str, message: str, expected: type[Exception], hint: str
) -> None:
    error = botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": message}}, "PutObject"
    )
    translated = translate(error, "write", "s3://b/k")
    assert type(translated) is expected
    assert hint in str(translated) and "s3://b/k" in str(translated)
