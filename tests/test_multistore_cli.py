"""End-to-end: the real CLI snapshots a real cluster into a local store and S3
(a moto server on 127.0.0.1) at once, another machine reads it from S3 alone,
and a store that dies mid-upload leaves nothing behind while the others commit."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.pgutil import Server
from tests.s3_server import (
    FaultProxy,
    aws_env,
    bucket_keys,
    moto_server,
    new_bucket,
    pending_uploads,
    s3_client,
)

__all__ = ["moto_server"]  # a pytest fixture, used by name
MIB = 1 << 20


@pytest.fixture
def s3(moto_server: str) -> Any:
    return s3_client(moto_server)


@pytest.fixture
def bucket(s3: Any) -> str:
    return new_bucket(s3)


@pytest.fixture
def s3_cli(cli: Cli, moto_server: str) -> Cli:
    """The CLI with fake credentials and the moto endpoint from boto3's standard
    variable, as an operator would set AWS_ENDPOINT_URL_S3 for MinIO or R2."""
    cli.env.update(aws_env(moto_server))
    return cli


def other_machine(tmp_path: Path, moto_server: str) -> Cli:
    """A second environment: no local store, no pointer file, only S3 access."""
    home = tmp_path / "other-machine"
    home.mkdir()
    other = Cli(home)
    other.env.update(aws_env(moto_server))
    return other


def test_one_snapshot_in_local_and_s3_then_read_from_s3_alone(
    s3_cli: Cli, pg_server: Server, pagila_db: str, s3: Any, bucket: str, tmp_path: Path
) -> None:
    cli = s3_cli
    remote = f"s3://{bucket}/app/db"
    result = cli.ok(
        "snapshot", "--store", str(cli.store), "--store", remote,
        env={"DATABASE_URL": pg_server.url(pagila_db)},
    )  # fmt: skip
    snapshot_id = result.stdout.strip()

    local_dump = (cli.store / f"{snapshot_id}.sql.gz").read_bytes()
    s3_dump = s3.get_object(Bucket=bucket, Key=f"app/db/{snapshot_id}.sql.gz")["Body"].read()
    assert s3_dump == local_dump
    local_manifest = json.loads((cli.store / f"{snapshot_id}.json").read_text())
    s3_manifest = json.loads(
        s3.get_object(Bucket=bucket, Key=f"app/db/{snapshot_id}.json")["Body"].read()
    )
    assert s3_manifest == local_manifest
    assert local_manifest["sha256"] == hashlib.sha256(local_dump).hexdigest()
    assert sorted(bucket_keys(s3, bucket)) == [
        f"app/db/{snapshot_id}.json",
        f"app/db/{snapshot_id}.sql.gz",
    ]
    assert pending_uploads(s3, bucket) == []
    assert cli.pointer.read_text().splitlines() == [
        str(cli.store / f"{snapshot_id}.sql.gz"),
        f"id: {snapshot_id}",
    ]

    both = ("--store", str(cli.store), "--store", remote)
    (entry,) = json.loads(cli.ok("list", "--json", *both).stdout)
    assert entry["id"] == snapshot_id
    assert [copy["location"] for copy in entry["stores"]] == [
        str(cli.store / f"{snapshot_id}.sql.gz"),
        f"{remote}/{snapshot_id}.sql.gz",
    ]
    verified = json.loads(cli.ok("verify", snapshot_id, "--json", *both).stdout)
    assert [item["location"] for item in verified] == [c["location"] for c in entry["stores"]]
    assert all(item["ok"] and item["sha256"] == local_manifest["sha256"] for item in verified)

    # Another machine: nothing local, no pointer; S3 alone is enough.
    other = other_machine(tmp_path, cli.env["AWS_ENDPOINT_URL_S3"])
    listed = json.loads(other.ok("list", "--json", "--store", remote).stdout)
    assert [item["id"] for item in listed] == [snapshot_id]
    assert listed[0]["stores"][0]["location"] == f"{remote}/{snapshot_id}.sql.gz"
    human = other.ok("verify", snapshot_id, "--store", remote).stdout
    assert f"ok {snapshot_id} in {remote}/{snapshot_id}.sql.gz" in human
    shown = json.loads(other.ok("show", "latest", "--json", "--store", remote).stdout)
    assert shown["sha256"] == local_manifest["sha256"]
    assert shown["tables"] == pg_server.row_counts(pagila_db)
    assert not other.store.exists() and not other.pointer.exists()


def write_config(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_configured_stores_with_s3_options(
    s3_cli: Cli, pg_server: Server, pagila_db: str, s3: Any, bucket: str, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "snapmgr.toml",
        f"""
default_stores = ["disk", "cloud"]

[stores.disk]
url = "{s3_cli.store}"

[stores.cloud]
url = "s3://{bucket}/prod"
storage_class = "STANDARD_IA"
sse = "AES256"
request_checksum_calculation = "when_required"
response_checksum_validation = "when_required"

[stores.archive]
url = "gcs://{bucket}/db"
storage_options = {{ project = "demo" }}
""",
    )
    stores = json.loads(s3_cli.ok("stores", "--json", "--config", config).stdout)
    assert [s["name"] for s in stores["selected"]] == ["disk", "cloud"]
    configured = stores["configured"]
    assert configured["cloud"]["kind"] == "s3" and configured["cloud"]["status"] == "ok"
    assert configured["archive"]["kind"] == "fsspec"
    if importlib.util.find_spec("gcsfs") is None:
        assert "pip install gcsfs" in configured["archive"]["status"]
    assert {"local", "s3", "fsspec"} <= set(stores["backends"])

    env = {"DATABASE_URL": pg_server.url(pagila_db)}
    snapshot_id = s3_cli.ok("snapshot", "--config", config, env=env).stdout.strip()
    head = s3.head_object(Bucket=bucket, Key=f"prod/{snapshot_id}.sql.gz")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["StorageClass"] == "STANDARD_IA"
    (entry,) = json.loads(s3_cli.ok("list", "--json", "--config", config).stdout)
    assert [copy["store"] for copy in entry["stores"]] == ["disk", "cloud"]
    s3_cli.ok("verify", "latest", "--store", "cloud", "--config", config)


def add_incompressible_table(pg_server: Server, dbname: str) -> None:
    """About 14 MiB of hex text, so the dump needs several 5 MiB parts."""
    pg_server.execute(
        dbname,
        "CREATE TABLE public.blob AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS data "
        "FROM generate_series(1, 200000) AS g",
    )


def test_a_store_failing_mid_upload_leaves_nothing_and_the_others_commit(
    s3_cli: Cli,
    pg_server: Server,
    pagila_db: str,
    s3: Any,
    bucket: str,
    moto_server: str,
    tmp_path: Path,
) -> None:
    add_incompressible_table(pg_server, pagila_db)
    with FaultProxy(moto_server, fail_from_part=2) as proxy:
        config = write_config(
            tmp_path / "snapmgr.toml",
            f"""
default_stores = ["disk", "cloud", "flaky"]

[stores.disk]
url = "{s3_cli.store}"

[stores.cloud]
url = "s3://{bucket}/good"
part_size = "5MiB"

[stores.flaky]
url = "s3://{bucket}/flaky"
endpoint_url = "{proxy.url}"
part_size = "5MiB"
max_concurrency = 2
""",
        )
        result = s3_cli(
            "snapshot", "--compression", "none", "--config", config,
            env={"DATABASE_URL": pg_server.url(pagila_db), "AWS_MAX_ATTEMPTS": "1"},
        )  # fmt: skip
        assert proxy.cut, "the upload never reached part 2"
    assert result.returncode == 5, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert f"flaky (s3://{bucket}/flaky)" in errors[0]
    snapshot_id = result.stdout.strip()
    assert snapshot_id and snapshot_id in errors[0]

    # The failed store: no object of the snapshot, no unfinished upload.
    assert not [key for key in bucket_keys(s3, bucket) if key.startswith("flaky/")]
    assert pending_uploads(s3, bucket) == []
    # The other stores committed a verified copy, large enough to be multipart.
    assert sorted(bucket_keys(s3, bucket)) == [
        f"good/{snapshot_id}.json",
        f"good/{snapshot_id}.sql",
    ]
    etag = s3.head_object(Bucket=bucket, Key=f"good/{snapshot_id}.sql")["ETag"]
    assert int(etag.strip('"').rsplit("-", 1)[1]) >= 3  # parts
    assert (s3_cli.store / f"{snapshot_id}.json").exists()
    good = ("--store", "disk", "--store", "cloud", "--config", config)
    (entry,) = json.loads(s3_cli.ok("list", "--json", *good).stdout)
    assert [copy["store"] for copy in entry["stores"]] == ["disk", "cloud"]
    s3_cli.ok("verify", snapshot_id, *good)


def test_a_store_failing_early_does_not_stall_the_others(
    s3_cli: Cli,
    pg_server: Server,
    pagila_db: str,
    s3: Any,
    bucket: str,
    moto_server: str,
    tmp_path: Path,
) -> None:
    """The failing store's first part is cut while most of the dump is still to
    come: the healthy store must still get every byte and commit (no stall)."""
    add_incompressible_table(pg_server, pagila_db)
    pg_server.execute(pagila_db, "INSERT INTO public.blob SELECT * FROM public.blob")
    pg_server.execute(pagila_db, "INSERT INTO public.blob SELECT * FROM public.blob")
    with FaultProxy(moto_server, fail_from_part=1) as proxy:
        config = write_config(
            tmp_path / "snapmgr.toml",
            f"""
default_stores = ["disk", "flaky"]

[stores.disk]
url = "{s3_cli.store}"

[stores.flaky]
url = "s3://{bucket}/flaky"
endpoint_url = "{proxy.url}"
part_size = "5MiB"
max_concurrency = 1
""",
        )
        result = s3_cli(
            "snapshot", "--compression", "none", "--config", config,
            env={"DATABASE_URL": pg_server.url(pagila_db), "AWS_MAX_ATTEMPTS": "1"},
            timeout=120,
        )  # fmt: skip
        assert proxy.cut
    assert result.returncode == 5, result.stderr
    snapshot_id = result.stdout.strip()
    assert (s3_cli.store / f"{snapshot_id}.json").exists()
    assert pending_uploads(s3, bucket) == []
    assert not [key for key in bucket_keys(s3, bucket) if key.startswith("flaky/")]
    s3_cli.ok("verify", snapshot_id, "--store", "disk", "--config", config)


def test_missing_fsspec_package_is_one_line_with_an_install_hint(cli: Cli) -> None:
    result = cli("list", "--store", "gcs://bucket/db")
    assert result.returncode == 5, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "pip install gcsfs" in result.stderr


def test_unknown_store_scheme_is_a_usage_error(cli: Cli) -> None:
    result = cli("list", "--store", "nosuchfs://bucket/db")
    assert result.returncode == 2, result.stderr
    assert "nosuchfs://" in result.stderr and "Traceback" not in result.stderr


class SlowParts(FaultProxy):
    """Forwards everything, but holds each UploadPart for ``delay`` seconds."""

    def __init__(self, target: str, delay: float) -> None:
        super().__init__(target, fail_from_part=1 << 30)
        self.delay = delay
        self.part_seen = threading.Event()

    def _should_cut(self, method: str, path: str) -> int | None:
        if method == "PUT" and "partNumber=" in path:
            self.part_seen.set()
            time.sleep(self.delay)
        return None


def test_sigterm_during_an_s3_upload_aborts_it(
    s3_cli: Cli, pg_server: Server, pagila_db: str, s3: Any, bucket: str, moto_server: str
) -> None:
    """A PaaS stops the deploy mid-snapshot: the multipart upload is aborted."""
    add_incompressible_table(pg_server, pagila_db)
    with SlowParts(moto_server, delay=0.5) as proxy:
        env = {
            **s3_cli.env,
            "DATABASE_URL": pg_server.url(pagila_db),
            "AWS_ENDPOINT_URL_S3": proxy.url,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "snapmgr", "snapshot", "--compression", "none",
             "--store", f"s3://{bucket}/app"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proxy.part_seen.wait(60), "no part upload started"
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert pending_uploads(s3, bucket) == []
    assert bucket_keys(s3, bucket) == []
