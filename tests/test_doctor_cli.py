"""``snapmgr doctor`` against a healthy set-up and the set-ups it must warn about."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests import platform_db
from tests.conftest import Cli
from tests.pgutil import Server
from tests.s3_server import aws_env, moto_server
from tests.test_hardening import mount_tmpfs, remount

__all__ = ["moto_server", "mount_tmpfs"]  # pytest fixtures, used by name


def checks(stdout: str) -> dict[str, dict[str, str]]:
    return {item["check"]: item for item in json.loads(stdout)}


def test_a_healthy_setup_is_all_ok(cli: Cli, pg_server: Server, pagila_db: str) -> None:
    result = cli("doctor", env={"DATABASE_URL": pg_server.url(pagila_db)})
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["OK"] * len(lines)
    names = {line.split()[1].rstrip(":") for line in lines}
    assert {"connection", "role", "readable", "lock", "pg_dump", "psql", "store"} <= names
    assert not list(cli.store.iterdir())  # the write probe was removed


def test_non_superuser_owner_with_an_unreadable_table(
    cli: Cli, pg_server: Server, fresh_db_name: str
) -> None:
    platform_db.create_roles(pg_server)
    url = platform_db.build(pg_server, fresh_db_name)
    try:
        pg_server.execute(
            fresh_db_name, "SET ROLE plat_platform; CREATE TABLE public.secret_tbl (a int)"
        )
        result = cli("doctor", "--json", env={"DATABASE_URL": url})
        assert result.returncode == 1
        found = checks(result.stdout)
        assert found["role"]["status"] == "OK" and "not a superuser" in found["role"]["detail"]
        assert found["readable"]["status"] == "FAIL"
        assert "permission denied for table secret_tbl" in found["readable"]["detail"]
        assert "--exclude-table public.secret_tbl" in found["readable"]["detail"]
        excluded = cli(
            "doctor", "--json",
            env={"DATABASE_URL": url, "SNAPMGR_EXCLUDE_TABLES": "public.secret_tbl",
                 "SNAPMGR_EXCLUDE_SCHEMAS": "platform_managed"},
        )  # fmt: skip
        assert checks(excluded.stdout)["readable"]["status"] == "OK", excluded.stdout
    finally:
        pg_server.drop_db(fresh_db_name)


def test_missing_bucket_fails_the_store_check(
    cli: Cli, pg_server: Server, pagila_db: str, moto_server: str
) -> None:
    cli.env.update(aws_env(moto_server))
    result = cli(
        "doctor", "--json", "--store", "s3://no-such-bucket-doctor/app",
        env={"DATABASE_URL": pg_server.url(pagila_db)},
    )  # fmt: skip
    assert result.returncode == 1
    store = checks(result.stdout)["store s3://no-such-bucket-doctor/app"]
    assert store["status"] == "FAIL" and "bucket does not exist" in store["detail"]


def test_a_pg_dump_older_than_the_server_fails(
    cli: Cli, pg_server: Server, pagila_db: str, tmp_path: Path
) -> None:
    # No PostgreSQL 14 client is installed here, so a stand-in that answers --version
    # like one is the only way to meet "older than the server".
    bin_dir = tmp_path / "old-client"
    bin_dir.mkdir()
    for name in ("pg_dump", "psql"):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) 14.11'\n")
        script.chmod(0o755)
    result = cli(
        "doctor", "--json",
        env={"DATABASE_URL": pg_server.url(pagila_db), "SNAPMGR_PG_BIN_DIR": str(bin_dir)},
    )  # fmt: skip
    assert result.returncode == 1
    found = checks(result.stdout)
    assert found["pg_dump"]["status"] == "FAIL"
    assert "older than the PostgreSQL 15 server" in found["pg_dump"]["detail"]


def test_unreachable_database_is_one_failed_check(cli: Cli) -> None:
    result = cli("doctor", "--json", env={"DATABASE_URL": "postgresql://u:pw@127.0.0.1:1/db"})
    assert result.returncode == 1
    found = checks(result.stdout)
    assert found["connection"]["status"] == "FAIL"
    assert "pw" not in found["connection"]["detail"].replace("password", "")
    assert found["store local"]["status"] == "OK"


def test_a_read_only_store_fails_the_store_check(
    cli: Cli, pg_server: Server, pagila_db: str, tmp_path: Path,
    mount_tmpfs: Callable[[Path, int], Path],
) -> None:  # fmt: skip
    """Unwritable for root too: a filesystem remounted read-only."""
    ro = mount_tmpfs(tmp_path / "ro", 16 << 20)
    (ro / "store").mkdir()
    remount(ro, "ro")
    result = cli(
        "doctor", "--json", "--store", str(ro / "store"),
        env={"DATABASE_URL": pg_server.url(pagila_db)},
    )  # fmt: skip
    assert result.returncode == 1
    store = checks(result.stdout)[f"store {ro / 'store'}"]
    assert store["status"] == "FAIL" and "Read-only file system" in store["detail"]
