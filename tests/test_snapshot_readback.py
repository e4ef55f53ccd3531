"""A snapshot re-reads every stored copy before it writes a manifest.

The read-back and ``verify`` share one check of a stored copy (size and
sha256, :func:`snapmgr.verify.check_stored_object`). The damage is done for
real: the CLI stops itself right after the dump objects are committed
(``SNAPMGR_TEST_PAUSE_AT=after-dump-commit``), the test alters the committed
file in one of two local stores, and lets it go on. The damaged copy must
be refused and removed, the good one committed, and the result must say so
(exit 5: a store failed); with no good copy left it is exit 6 and nothing stays.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.pgutil import Server
from tests.test_signals_commit import run_to


def only_dump(store: Path) -> Path:
    dumps = [p for p in store.iterdir() if p.name.endswith(".sql.gz")]
    assert len(dumps) == 1, sorted(p.name for p in store.iterdir())
    return dumps[0]


@pytest.mark.parametrize(
    ("damage", "said"),
    [("flip", "xxh3_128 differs from what was written"), ("truncate", "bytes, what was written")],
)
def test_a_copy_altered_after_its_commit_is_refused_and_the_other_stands(
    cli: Cli, pg_server: Server, pagila_db: str, tmp_path: Path, damage: str, said: str
) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    args = ("snapshot", "--json", "--store", str(good), "--store", str(bad))
    proc = run_to(cli, "after-dump-commit", *args, env={"DATABASE_URL": pg_server.url(pagila_db)})
    dump = only_dump(bad)
    data = bytearray(dump.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
    else:
        del data[len(data) // 2 :]
    dump.write_bytes(bytes(data))
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=120)

    # Exit 5: one store failed; the snapshot is committed in the other and says so.
    assert proc.returncode == 5, err
    result = json.loads(out)
    assert [store["store"] for store in result["stores"]] == [str(good)]
    [failed] = result["failed_stores"]
    assert failed["store"] == str(bad) and said in failed["error"]
    assert err.count("error:") == 1 and f"committed only in {good}" in err
    # The damaged copy is gone and has no manifest; the good one verifies.
    assert sorted(p.name for p in bad.iterdir()) == []
    snapshot_id = result["id"]
    assert (good / f"{snapshot_id}.json").is_file()
    cli.ok("verify", snapshot_id, "--store", str(good))


def test_every_copy_altered_is_exit_6_and_nothing_is_committed(
    cli: Cli, pg_server: Server, pagila_db: str, tmp_path: Path
) -> None:
    store = tmp_path / "only"
    args = ("snapshot", "--store", str(store))
    proc = run_to(cli, "after-dump-commit", *args, env={"DATABASE_URL": pg_server.url(pagila_db)})
    dump = only_dump(store)
    data = bytearray(dump.read_bytes())
    data[len(data) // 3] ^= 0x01
    dump.write_bytes(bytes(data))
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)

    assert proc.returncode == 6, err
    assert "xxh3_128 differs from what was written" in err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert sorted(p.name for p in store.iterdir()) == []
    assert not cli.pointer.exists()
