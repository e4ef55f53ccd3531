"""``snapmgr rekey``: key rotation with the real CLI on a real cluster and real stores,
including SIGKILL at every step of its commit protocol and at random moments."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.agekeys import Key
from tests.conftest import Cli
from tests.pgutil import Server
from tests.restore_cases import PAGILA_MUTATIONS
from tests.s3_server import aws_env, bucket_keys, moto_server, new_bucket, s3_client

__all__ = ["moto_server"]  # a pytest fixture, used by name

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def old(tmp_path: Path) -> Key:
    return Key(tmp_path / "old-key.txt")


@pytest.fixture
def new(tmp_path: Path) -> Key:
    return Key(tmp_path / "new-key.txt")


def one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr
    return errors[0]


def files(store: Path) -> dict[str, str]:
    """Every object in a store directory and its sha256."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(store.iterdir())}


def manifest(store: Path, snapshot_id: str) -> dict[str, object]:
    return json.loads((store / f"{snapshot_id}.json").read_text())  # type: ignore[no-any-return]


def snapshot(cli: Cli, *args: str, key: Key | None = None) -> str:
    env = {"SNAPMGR_ENCRYPTION_RECIPIENTS": key.public} if key else {}
    return cli.ok("snapshot", *args, env=env).stdout.strip()


def test_rekey_moves_a_snapshot_to_the_new_key(
    cli: Cli, pg_server: Server, pagila_db: str, old: Key, new: Key
) -> None:
    cli.env["DATABASE_URL"] = url = pg_server.url(pagila_db)
    snapshot_id = snapshot(cli, key=old)
    before = manifest(cli.store, snapshot_id)
    expected = pg_server.dump(pagila_db)

    result = cli.ok(
        "rekey", snapshot_id, "--to-recipients", new.public, "--identity-file", str(old.path)
    )

    new_name = f"{snapshot_id}.k2.sql.gz.age"
    assert result.stdout.strip() == (
        f"re-encrypted {snapshot_id} to {new.public[:12]}…{new.public[-6:]}: {new_name}"
    )
    assert sorted(files(cli.store)) == [f"{snapshot_id}.json", new_name]
    after = manifest(cli.store, snapshot_id)
    stored = (cli.store / new_name).read_bytes()
    assert after["recipients"] == [new.public] and after["dump_object"] == new_name
    assert after["sha256"] == hashlib.sha256(stored).hexdigest() and after["size"] == len(stored)
    changed = ("recipients", "sha256", "size", "dump_object")
    unchanged = {k: v for k, v in before.items() if k not in changed}
    assert {k: after[k] for k in unchanged} == unchanged  # counts, created_at, pin... kept
    assert cli.pointer.read_text() == f"{cli.store / new_name}\nid: {snapshot_id}\n"

    pg_server.psql_file(pagila_db, PAGILA_MUTATIONS)
    mutated = pg_server.dump(pagila_db)
    refused = cli("restore", snapshot_id, "--yes", "--identity-file", str(old.path))
    assert refused.returncode == 6, refused.stderr
    assert pg_server.dump(pagila_db) == mutated
    cli.ok("restore", "latest", "--yes", env={"SNAPMGR_AGE_IDENTITY": new.secret})
    assert pg_server.dump(pagila_db) == expected
    assert url in cli.env["DATABASE_URL"]

    again = cli.ok("rekey", snapshot_id, "--to-recipients", new.public)
    assert again.stdout.startswith(f"unchanged {snapshot_id}: already encrypted to")


def test_dry_run_says_what_it_would_do_and_changes_nothing(
    cli: Cli, pg_server: Server, pagila_db: str, old: Key, new: Key
) -> None:
    cli.env["DATABASE_URL"] = pg_server.url(pagila_db)
    plain = snapshot(cli, "--label", "plain")
    sealed = snapshot(cli, "--label", "sealed", key=old)
    before = files(cli.store)

    result = cli.ok(
        "rekey", "--all", "--dry-run", "--to-recipients", new.public,
        "--identity-file", str(old.path),
    )  # fmt: skip

    lines = sorted(result.stdout.splitlines())
    assert lines[0].startswith(f"would encrypt (plaintext now) {plain} to ")
    assert lines[1].startswith(f"would re-encrypt {sealed} to ")
    assert files(cli.store) == before


def test_rekey_without_the_old_key_changes_nothing(
    cli: Cli, pg_server: Server, pagila_db: str, old: Key, new: Key
) -> None:
    cli.env["DATABASE_URL"] = pg_server.url(pagila_db)
    snapshot_id = snapshot(cli, key=old)
    before = files(cli.store)

    missing = cli("rekey", snapshot_id, "--to-recipients", new.public)
    assert missing.returncode == 2, missing.stderr
    assert "SNAPMGR_AGE_IDENTITY_FILE" in one_error_line(missing.stderr)
    wrong = cli("rekey", snapshot_id, "--to-recipients", new.public, "--identity-file",
                str(new.path))  # fmt: skip
    assert wrong.returncode == 6, wrong.stderr
    assert "cannot decrypt" in one_error_line(wrong.stderr)
    bad = cli("rekey", snapshot_id, "--to-recipients", "age1nope", "--identity-file",
              str(old.path))  # fmt: skip
    assert bad.returncode == 2 and "--to-recipients" in one_error_line(bad.stderr)
    assert files(cli.store) == before


def test_rekey_all_across_two_stores_writes_the_same_object_to_both(
    cli: Cli, pg_server: Server, pagila_db: str, old: Key, new: Key, moto_server: str
) -> None:
    """A plaintext and an encrypted snapshot, each in a local store and in S3: after
    ``rekey --all`` both are encrypted to the new key, with one ciphertext per snapshot
    (the manifests of both stores agree), and each store restores on its own."""
    client = s3_client(moto_server)
    bucket = new_bucket(client)
    cli.env.update(aws_env(moto_server))
    remote = f"s3://{bucket}/db"
    stores = ["--store", str(cli.store), "--store", remote]
    cli.env["DATABASE_URL"] = pg_server.url(pagila_db)
    plain = snapshot(cli, *stores, "--label", "plain")
    sealed = snapshot(cli, *stores, "--label", "sealed", key=old)
    expected = pg_server.dump(pagila_db)

    result = cli.ok(
        "rekey", "--all", *stores, "--to-recipients", new.public,
        "--identity-file", str(old.path),
    )  # fmt: skip

    assert sorted(line.split()[0] for line in result.stdout.splitlines()) == [
        "encrypted",
        "re-encrypted",
    ]
    for snapshot_id in (plain, sealed):
        local = manifest(cli.store, snapshot_id)
        s3 = json.loads(
            client.get_object(Bucket=bucket, Key=f"db/{snapshot_id}.json")["Body"].read()
        )
        assert local == s3
        assert local["recipients"] == [new.public]
    assert sorted(bucket_keys(client, bucket)) == sorted(f"db/{name}" for name in files(cli.store))
    for where in (str(cli.store), remote):
        verified = cli.ok("verify", "--all", "--store", where, "--identity-file", str(new.path))
        assert verified.stdout.count("sha256 matches, decrypted, complete") == 2
        pg_server.psql_file(pagila_db, PAGILA_MUTATIONS)
        cli.ok("restore", sealed, "--yes", "--store", where, "--identity-file", str(new.path))
        assert pg_server.dump(pagila_db) == expected


# --- SIGKILL ------------------------------------------------------------------------------


def rekey_process(cli: Cli, point: str | None, flag: Path, *args: str) -> subprocess.Popen[str]:
    runner = ["-m", "tests.rekey_pause", point, str(flag), "--"] if point else ["-m", "snapmgr"]
    env = {**cli.env, "PYTHONPATH": os.pathsep.join([str(ROOT), cli.env.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, *runner, "rekey", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_every_copy_reads(cli: Cli, stores: list[Path], ids: list[str], keys: list[Key]) -> None:
    """Each store's manifest of each snapshot names a whole object that the key it
    lists (the old or the new one) decrypts, with the right sha256 and row counts."""
    by_public = {key.public: key for key in keys}
    for store in stores:
        for snapshot_id in ids:
            recipients = manifest(store, snapshot_id)["recipients"]
            assert isinstance(recipients, list) and len(recipients) == 1
            key = by_public[recipients[0]]
            result = cli("verify", snapshot_id, "--store", str(store), "--identity-file",
                         str(key.path))  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert "sha256 matches, decrypted, complete" in result.stdout


def kill_at(proc: subprocess.Popen[str], flag: Path | None, delay: float) -> None:
    deadline = time.monotonic() + 120
    if flag is not None:
        while not flag.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the rekey never reached its freeze point"
            time.sleep(0.01)
    else:
        time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


@dataclass(frozen=True)
class SealedPair:
    """Two snapshots encrypted to ``old``, each in a local store and an fsspec mirror."""

    url: str
    old: Key
    ids: list[str]
    store: Path
    mirror: Path
    pointer: str

    def copy_into(self, cli: Cli, mirror: Path) -> None:
        """A private copy of both stores (mtimes kept) and of the pointer file, so each
        kill point starts from the same committed state and no test sees another's."""
        shutil.copytree(self.store, cli.store)
        shutil.copytree(self.mirror, mirror)
        cli.pointer.write_text(self.pointer.replace(str(self.store), str(cli.store)))


@pytest.fixture(scope="module")
def sealed_pair(
    pg_server: Server, pagila_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SealedPair]:
    """Taken once for the kill matrix: every point rekeys the same two snapshots, and
    taking them is not what these tests prove (the tests above take their own)."""
    root = tmp_path_factory.mktemp("rekey-kill")
    dbname = f"rekey_kill_{os.getpid()}"
    pg_server.create_db(dbname, template=pagila_template)
    maker = Cli(root)
    maker.env["DATABASE_URL"] = pg_server.url(dbname)
    key = Key(root / "old-key.txt")
    mirror = root / "mirror"
    store_args = ["--store", str(maker.store), "--store", f"fsspec+file://{mirror}"]
    ids = [snapshot(maker, *store_args, "--label", f"s{n}", key=key) for n in range(2)]
    yield SealedPair(
        maker.env["DATABASE_URL"], key, ids, maker.store, mirror, maker.pointer.read_text()
    )
    pg_server.drop_db(dbname)


@pytest.mark.xdist_group("rekey_kill")  # one worker, one sealed_pair for the whole matrix
@pytest.mark.parametrize(
    "point",
    ["writing", "written", "flipped-one", "flipped", "random-1", "random-2", "random-3"],
)
def test_sigkill_at_any_moment_leaves_every_snapshot_readable(
    cli: Cli, sealed_pair: SealedPair, new: Key, tmp_path: Path, point: str
) -> None:
    cli.env["DATABASE_URL"] = sealed_pair.url
    mirror = tmp_path / "mirror"
    sealed_pair.copy_into(cli, mirror)
    old, ids = sealed_pair.old, sealed_pair.ids
    stores = [cli.store, mirror]
    store_args = ["--store", str(cli.store), "--store", f"fsspec+file://{mirror}"]
    args = [
        *store_args, "--all", "--to-recipients", new.public, "--identity-file", str(old.path),
    ]  # fmt: skip
    flag = tmp_path / "frozen"

    if point.startswith("random"):
        started = time.monotonic()
        timed = rekey_process(cli, None, flag, *args, "--dry-run")
        timed.communicate()
        full = (time.monotonic() - started) * 3  # the real run reads and writes everything
        kill_at(rekey_process(cli, None, flag, *args), None, random.uniform(0.3, full))
    else:
        kill_at(rekey_process(cli, point, flag, *args), flag, 0)

    assert_every_copy_reads(cli, stores, ids, [old, new])
    # Running it again finishes the job; prune then removes what the kill left behind.
    cli.ok("rekey", *args)
    assert_every_copy_reads(cli, stores, ids, [new])
    for store in stores:
        for path in store.iterdir():
            os.utime(path, (time.time() - 3 * 86400,) * 2)  # older than orphan_grace
    cli.ok("prune", *store_args, "--keep-last", "5")
    for store in stores:
        named = {str(manifest(store, i)["dump_object"]) for i in ids}
        assert set(files(store)) == named | {f"{i}.json" for i in ids}
