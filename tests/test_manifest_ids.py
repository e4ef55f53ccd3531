"""Snapshot IDs, object names, manifests and redaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from snapmgr.errors import UsageError, VerificationError
from snapmgr.manifest import DatabaseInfo, Manifest, make_id, split_object_name, validate_id
from snapmgr.redact import redact_url, scrub


def test_ids_are_utc_and_suffixed() -> None:
    when = datetime(2025, 9, 30, 23, 25, 11, tzinfo=timezone(timedelta(hours=2)))
    assert make_id("pre_migration", when) == "pre_migration_20250930_212511"
    assert make_id("pre_migration", when, 3) == "pre_migration_20250930_212511-3"


@pytest.mark.parametrize(
    "bad", ["", "../x", "a/b", "a\\b", ".hidden", "x..y", "a b", "é", "-x", "a" * 129, "a\nb"]
)
def test_bad_ids_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        validate_id(bad)


def test_object_names() -> None:
    assert split_object_name("a_1.json") == ("a_1", "manifest")
    assert split_object_name("a_1.sql.gz") == ("a_1", "dump")
    assert split_object_name("a_1.sql.zst") == ("a_1", "dump")
    assert split_object_name("a_1.sql") == ("a_1", "dump")
    assert split_object_name("notes.txt") is None
    assert split_object_name("..json") is None


def manifest() -> Manifest:
    return Manifest(
        id="x_20250101_000000", label="x", created_at=datetime(2025, 1, 1, tzinfo=UTC),
        duration_s=1.5, database=DatabaseInfo("db", "h", 5432, "u", "15.1"),
        pg_dump_version="15.1", format="plain", compression="gzip", compression_level=2,
        size=10, raw_size=20, sha256="0" * 64, tables={"public.t": 3}, tags={"k": "v"},
    )  # fmt: skip


def test_manifest_round_trip() -> None:
    original = manifest()
    assert Manifest.from_json(original.to_json(), origin="t") == original
    assert b'"created_at": "2025-01-01T00:00:00.000000Z"' in original.to_json()


def test_broken_manifest_is_a_verification_error() -> None:
    with pytest.raises(VerificationError, match="unreadable"):
        Manifest.from_json(b"{not json", origin="store/x.json")
    with pytest.raises(VerificationError):
        Manifest.from_json(b'{"id": "x"}', origin="store/x.json")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cr%40t@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("postgres://app@db/app", "postgres://app@db/app"),
        ("host=db password='a b' user=x", "host=db password=*** user=x"),
        ("s3://bucket/p?token=abc&x=1", "s3://bucket/p?token=***&x=1"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub() -> None:
    assert (
        scrub("failed for hunter22 at hunter22", ["hunter22", None, ""]) == "failed for *** at ***"
    )
