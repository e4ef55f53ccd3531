"""A stored ``.sql.zst`` is checkable by hand: ``zstd -t`` and ``snapmgr verify`` both
catch a flipped byte."""

from __future__ import annotations

import subprocess

from tests.conftest import Cli
from tests.pgutil import Server


def test_zstd_t_and_verify_detect_a_flipped_byte_in_a_stored_dump(
    cli: Cli, pg_server: Server, pagila_db: str
) -> None:
    url = pg_server.url(pagila_db)
    snapshot_id = cli.ok(
        "snapshot", "--compression", "zstd", env={"DATABASE_URL": url}
    ).stdout.strip()
    dump = cli.store / f"{snapshot_id}.sql.zst"
    assert subprocess.run(["zstd", "-t", "-q", str(dump)], check=False).returncode == 0
    cli.ok("verify", snapshot_id)

    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01
    dump.write_bytes(bytes(data))

    checked = subprocess.run(["zstd", "-t", str(dump)], capture_output=True, check=False)
    assert checked.returncode != 0, "zstd -t accepted a damaged dump"
    verified = cli("verify", snapshot_id)
    assert verified.returncode == 6, verified.stderr
    assert "corrupt" in verified.stderr
