"""End-to-end: the real CLI snapshots Pagila on a real cluster into a local store."""

from __future__ import annotations

import gzip
import json
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.pgutil import Server


def snapshot(cli: Cli, url: str, *args: str) -> str:
    result = cli.ok("snapshot", *args, env={"DATABASE_URL": url})
    return result.stdout.strip()


def test_snapshot_restores_by_hand_to_an_identical_database(
    cli: Cli, pg_server: Server, pagila_db: str, empty_db: str
) -> None:
    snapshot_id = snapshot(cli, pg_server.url(pagila_db))
    dump = cli.store / f"{snapshot_id}.sql.gz"
    assert (cli.store / f"{snapshot_id}.json").exists()

    # The emergency path, without snapmgr: gunzip -c X.sql.gz | psql
    sql = subprocess.run(["gunzip", "-c", str(dump)], capture_output=True, check=True).stdout
    pg_server.psql_file(empty_db, sql.decode())

    assert pg_server.dump(empty_db) == pg_server.dump(pagila_db)


def test_manifest_records_exact_row_counts_and_checksum(
    cli: Cli, pg_server: Server, pagila_db: str
) -> None:
    pg_server.execute(
        pagila_db,
        "DELETE FROM public.film_actor WHERE actor_id > 190;"
        "DELETE FROM public.actor WHERE actor_id > 190",
    )
    snapshot_id = snapshot(cli, pg_server.url(pagila_db), "--tag", "release=v42")
    manifest = json.loads((cli.store / f"{snapshot_id}.json").read_text())
    stored = (cli.store / f"{snapshot_id}.sql.gz").read_bytes()

    import hashlib

    assert manifest["sha256"] == hashlib.sha256(stored).hexdigest()
    assert manifest["size"] == len(stored)
    assert manifest["raw_size"] == len(gzip.decompress(stored))
    assert manifest["tables"] == pg_server.row_counts(pagila_db)
    assert manifest["tables"]["public.actor"] == 190
    assert manifest["tags"] == {"release": "v42"}
    assert manifest["database"]["name"] == pagila_db
    assert "snapmgr-demo-pw" not in json.dumps(manifest)
    for key in (
        "id",
        "label",
        "created_at",
        "duration_s",
        "pg_dump_version",
        "format",
        "compression",
        "pinned",
        "snapmgr_version",
    ):
        assert key in manifest


def test_layout_pointer_and_permissions(cli: Cli, pg_server: Server, pagila_db: str) -> None:
    snapshot_id = snapshot(cli, pg_server.url(pagila_db))
    assert snapshot_id.startswith("pre_migration_")
    dump = cli.store / f"{snapshot_id}.sql.gz"
    assert cli.pointer.read_text() == f"{dump}\nid: {snapshot_id}\n"
    assert stat.S_IMODE(cli.store.stat().st_mode) == 0o700
    for path in cli.store.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in cli.store.iterdir()) == sorted(
        [f"{snapshot_id}.sql.gz", f"{snapshot_id}.json"]
    )


def test_snapshots_in_the_same_second_get_distinct_ids(
    cli: Cli, pg_server: Server, pagila_db: str
) -> None:
    env = {**cli.env, "DATABASE_URL": pg_server.url(pagila_db)}
    import sys

    procs = [
        subprocess.Popen(
            # --no-lock: the deploy lock would take them one after the other
            [sys.executable, "-m", "snapmgr", "snapshot", "--label", "same", "--no-lock"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    ids = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        ids.append(out.strip())
    assert len(set(ids)) == 4
    listed = json.loads(cli.ok("list", "--json").stdout)
    assert sorted(item["id"] for item in listed) == sorted(ids)


def test_list_show_verify_json(cli: Cli, pg_server: Server, pagila_db: str) -> None:
    first = snapshot(cli, pg_server.url(pagila_db), "--label", "one")
    second = snapshot(cli, pg_server.url(pagila_db), "--label", "two", "--compression", "zstd")
    listed = json.loads(cli.ok("list", "--json").stdout)
    assert [item["id"] for item in listed] == [second, first]
    assert listed[0]["compression"] == "zstd"
    shown = json.loads(cli.ok("show", "latest", "--json").stdout)
    assert shown["id"] == second
    verified = json.loads(cli.ok("verify", "--all", "--json").stdout)
    assert {item["id"] for item in verified} == {first, second}
    assert all(item["ok"] for item in verified)
    human = cli.ok("list").stdout
    assert first in human and second in human


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_verify_detects_damage(cli: Cli, pg_server: Server, pagila_db: str, damage: str) -> None:
    snapshot_id = snapshot(cli, pg_server.url(pagila_db))
    dump: Path = cli.store / f"{snapshot_id}.sql.gz"
    data = bytearray(dump.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        del data[len(data) * 2 // 3 :]
    dump.write_bytes(bytes(data))
    result = cli("verify", snapshot_id)
    assert result.returncode == 6, result.stderr
    assert result.stderr.count("\n") == 1 and "error:" in result.stderr
    assert "Traceback" not in result.stderr


def test_zstd_and_none_compression_round_trip(cli: Cli, pg_server: Server, pagila_db: str) -> None:
    for compression, suffix in (("zstd", ".sql.zst"), ("none", ".sql")):
        snapshot_id = snapshot(cli, pg_server.url(pagila_db), "--compression", compression)
        assert (cli.store / f"{snapshot_id}{suffix}").exists()
        cli.ok("verify", snapshot_id)


def test_wrong_password_exits_3_without_printing_it(
    cli: Cli, pg_server: Server, pagila_db: str
) -> None:
    url = pg_server.url(pagila_db).replace(":snapmgr-demo-pw@", ":Wr0ngSecret99@")
    result = cli("snapshot", env={"DATABASE_URL": url})
    assert result.returncode == 3, result.stderr
    assert "Wr0ngSecret99" not in result.stderr + result.stdout
    assert "password" in result.stderr
    assert not cli.store.exists() or not list(cli.store.iterdir())
    assert not cli.pointer.exists()


def test_unreachable_server_exits_3(cli: Cli) -> None:
    result = cli("snapshot", env={"DATABASE_URL": "postgresql://u:SecretPw1@127.0.0.1:1/db"})
    assert result.returncode == 3, result.stderr
    assert "SecretPw1" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_malformed_url_is_a_usage_error(cli: Cli) -> None:
    result = cli("snapshot", env={"DATABASE_URL": "postgresql://u:pw@127.0.0.1:notaport/db"})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr


def test_missing_database_url_is_a_usage_error(cli: Cli) -> None:
    result = cli("snapshot")
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr


def test_unknown_config_key_exits_2_naming_it(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "snapmgr.toml"
    config.write_text('compresion = "zstd"\n')
    result = cli("list", "--config", str(config))
    assert result.returncode == 2
    assert "compresion" in result.stderr


def test_bad_value_exits_2_naming_the_key(cli: Cli) -> None:
    result = cli("list", env={"SNAPMGR_COMPRESSION": "lzma"})
    assert result.returncode == 2
    assert "compression" in result.stderr and "SNAPMGR_COMPRESSION" in result.stderr


def test_unknown_snapshot_exits_7_and_bad_id_exits_2(cli: Cli) -> None:
    assert cli("show", "nope_20200101_000000").returncode == 7
    result = cli("show", "../../etc/passwd")
    assert result.returncode == 2
    assert not cli.store.exists()
