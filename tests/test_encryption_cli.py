"""End-to-end age encryption with the real CLI, a real cluster, real stores and the real
``age`` tool: only ciphertext is stored, the key brings the database back, a person
with the key and ``age`` can restore by hand, and every key or ciphertext problem is a
documented exit code with the target unchanged."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agekeys import Key
from tests.conftest import Cli
from tests.pgutil import Server
from tests.restore_cases import PAGILA_MUTATIONS
from tests.s3_server import aws_env, bucket_keys, moto_server, new_bucket, s3_client

__all__ = ["moto_server"]  # a pytest fixture, used by name

MARKER = "plaintext-marker-5f1c0e9a-do-not-store"


@pytest.fixture
def key(tmp_path: Path) -> Key:
    return Key(tmp_path / "key.txt")


@pytest.fixture
def other_key(tmp_path: Path) -> Key:
    return Key(tmp_path / "other-key.txt")


def one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr
    return errors[0]


def plant_marker(server: Server, dbname: str) -> None:
    server.execute(dbname, f"UPDATE public.customer SET email = '{MARKER}' WHERE customer_id = 7")


class Watcher:
    """Reads every file that appears under some directories while a command runs, and
    keeps the names of those that held the marker (temp files, partial objects...)."""

    def __init__(self, *roots: Path) -> None:
        self.roots = roots
        self.seen: set[str] = set()
        self.leaks: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._scan()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self._scan()

    def _scan(self) -> None:
        for root in self.roots:
            for path in root.rglob("*") if root.exists() else ():
                try:
                    data = path.read_bytes() if path.is_file() else b""
                except OSError:
                    continue  # gone between listing and reading
                self.seen.add(path.name)
                if MARKER.encode() in data:
                    self.leaks.add(str(path))


class Store:
    """Where a test's snapshots go, and a way to read back every stored object."""

    def __init__(self, kind: str, tmp_path: Path, endpoint: str | None) -> None:
        self.kind = kind
        self.dir = tmp_path / f"{kind}-store"
        if kind == "s3":
            assert endpoint is not None
            self.client = s3_client(endpoint)
            self.bucket = new_bucket(self.client)
            self.spec = f"s3://{self.bucket}/app"
        else:
            self.spec = str(self.dir) if kind == "local" else f"fsspec+file://{self.dir}"

    def objects(self) -> dict[str, bytes]:
        if self.kind == "s3":
            return {
                key.removeprefix("app/"): self.client.get_object(Bucket=self.bucket, Key=key)[
                    "Body"
                ].read()
                for key in bucket_keys(self.client, self.bucket)
            }
        return {path.name: path.read_bytes() for path in self.dir.iterdir()}

    def put(self, name: str, data: bytes) -> None:
        if self.kind == "s3":
            self.client.put_object(Bucket=self.bucket, Key=f"app/{name}", Body=data)
        else:
            (self.dir / name).write_bytes(data)


@pytest.fixture(params=["local", "s3", "fsspec"])
def store(request: pytest.FixtureRequest, tmp_path: Path, cli: Cli) -> Store:
    endpoint = None
    if request.param == "s3":
        endpoint = request.getfixturevalue("moto_server")
        cli.env.update(aws_env(endpoint))
    return Store(request.param, tmp_path, endpoint)


def test_only_ciphertext_is_stored_and_the_key_restores_it(
    cli: Cli, pg_server: Server, pagila_db: str, store: Store, key: Key, tmp_path: Path
) -> None:
    url = pg_server.url(pagila_db)
    plant_marker(pg_server, pagila_db)
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {
        "DATABASE_URL": url,
        "SNAPMGR_ENCRYPTION_RECIPIENTS": key.public,
        "TMPDIR": str(temp),
        # uncompressed, so that a plaintext copy anywhere would show the marker
        "SNAPMGR_COMPRESSION": "none",
    }
    with Watcher(temp, store.dir, cli.pointer.parent) as watcher:
        result = cli.ok("snapshot", "--store", store.spec, "-v", env=env)
    snapshot_id = result.stdout.strip()
    expected = pg_server.dump(pagila_db)

    objects = store.objects()
    assert sorted(objects) == [f"{snapshot_id}.json", f"{snapshot_id}.sql.age"]
    for name, data in objects.items():
        assert MARKER.encode() not in data, name
    assert not watcher.leaks
    assert MARKER not in result.stdout + result.stderr
    ciphertext = objects[f"{snapshot_id}.sql.age"]
    assert ciphertext.startswith(b"age-encryption.org/v1\n")
    manifest = json.loads(objects[f"{snapshot_id}.json"])
    assert manifest["encryption"] == "age"
    assert manifest["recipients"] == [key.public]
    assert manifest["sha256"] == hashlib.sha256(ciphertext).hexdigest()
    assert manifest["size"] == len(ciphertext)
    assert manifest["tables"] == pg_server.row_counts(pagila_db)  # counted from the plaintext

    pg_server.psql_file(pagila_db, PAGILA_MUTATIONS)
    restored = cli(
        "restore", "latest", "--yes", "--store", store.spec,
        env={"DATABASE_URL": url, "SNAPMGR_AGE_IDENTITY": key.secret},
    )  # fmt: skip

    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith(f"restored {snapshot_id} into ")
    assert pg_server.dump(pagila_db) == expected
    assert key.secret not in restored.stdout + restored.stderr


def test_a_plaintext_copy_would_show_the_marker(
    cli: Cli, pg_server: Server, pagila_db: str, tmp_path: Path
) -> None:
    """The control for the test above: without encryption the marker is found."""
    plant_marker(pg_server, pagila_db)
    snapshot_id = cli.ok(
        "snapshot", env={"DATABASE_URL": pg_server.url(pagila_db), "SNAPMGR_COMPRESSION": "none"}
    ).stdout.strip()
    assert MARKER.encode() in (cli.store / f"{snapshot_id}.sql").read_bytes()


def test_by_hand_with_the_age_cli_gives_an_equal_database(
    cli: Cli, pg_server: Server, pagila_db: str, empty_db: str, key: Key
) -> None:
    url = pg_server.url(pagila_db)
    recipients = key.path.parent / "recipients.txt"
    public = subprocess.run(["age-keygen", "-y", str(key.path)], capture_output=True, check=True)
    recipients.write_bytes(b"# the ops team\n" + public.stdout)
    snapshot_id = cli.ok(
        "snapshot", env={"DATABASE_URL": url, "SNAPMGR_ENCRYPTION_RECIPIENTS_FILE": str(recipients)}
    ).stdout.strip()
    dump = cli.store / f"{snapshot_id}.sql.gz.age"
    assert dump.exists()

    # README's recipe, exactly: age -d -i key.txt X.sql.gz.age | gunzip | psql "$DATABASE_URL"
    by_hand = subprocess.run(
        [
            "bash", "-o", "pipefail", "-c",
            'age -d -i key.txt "$DUMP" | gunzip | psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1',
        ],
        cwd=key.path.parent,
        env={**pg_server.child_env(), "DUMP": str(dump), "DATABASE_URL": pg_server.url(empty_db)},
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip

    assert by_hand.returncode == 0, by_hand.stderr
    assert pg_server.dump(empty_db) == pg_server.dump(pagila_db)


@pytest.fixture
def encrypted(cli: Cli, pg_server: Server, pagila_db: str, key: Key) -> Iterator[str]:
    """A snapshot of pagila encrypted to ``key``; then pagila is changed by a migration."""
    url = pg_server.url(pagila_db)
    snapshot_id = cli.ok(
        "snapshot", env={"DATABASE_URL": url, "SNAPMGR_ENCRYPTION_RECIPIENTS": key.public}
    ).stdout.strip()
    pg_server.psql_file(pagila_db, PAGILA_MUTATIONS)
    cli.env["DATABASE_URL"] = url
    yield snapshot_id


def test_restore_without_a_key_names_the_three_ways_and_changes_nothing(
    cli: Cli, pg_server: Server, pagila_db: str, encrypted: str
) -> None:
    before = pg_server.dump(pagila_db)

    result = cli("restore", encrypted, "--yes")

    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    for way in ("--identity-file", "SNAPMGR_AGE_IDENTITY_FILE", "SNAPMGR_AGE_IDENTITY="):
        assert way in line
    assert pg_server.dump(pagila_db) == before


def test_a_wrong_key_is_one_line_exit_6_and_the_target_is_unchanged(
    cli: Cli, pg_server: Server, pagila_db: str, encrypted: str, key: Key, other_key: Key
) -> None:
    before = pg_server.dump(pagila_db)

    result = cli("restore", encrypted, "--yes", "--identity-file", str(other_key.path))

    assert result.returncode == 6, result.stderr
    line = one_error_line(result.stderr)
    assert "cannot decrypt" in line and other_key.public[:12] in line
    assert other_key.secret not in result.stderr
    assert pg_server.dump(pagila_db) == before
    verify = cli("verify", encrypted, env={"SNAPMGR_AGE_IDENTITY": other_key.secret})
    assert verify.returncode == 6, verify.stderr
    assert other_key.secret not in verify.stderr + verify.stdout


def test_a_key_listed_in_a_tampered_manifest_still_fails_before_psql_starts(
    cli: Cli, pg_server: Server, pagila_db: str, encrypted: str, other_key: Key
) -> None:
    """The manifest claims the wrong key is a recipient: the file's header says otherwise,
    and that is found by decrypting its start, before the target is touched."""
    path = cli.store / f"{encrypted}.json"
    manifest = json.loads(path.read_text())
    manifest["recipients"].append(other_key.public)
    path.write_text(json.dumps(manifest))
    before = pg_server.dump(pagila_db)

    result = cli("restore", encrypted, "--yes", "--identity-file", str(other_key.path))

    assert result.returncode == 6, result.stderr
    line = one_error_line(result.stderr)
    assert "does not decrypt it" in line and "unchanged" in line
    assert "restoring" not in result.stderr  # psql never started
    assert pg_server.dump(pagila_db) == before


@pytest.mark.parametrize("damage", ["truncate", "flip", "flip-and-fix-manifest", "flip-header"])
def test_damaged_ciphertext_exits_6_and_the_target_is_unchanged(
    cli: Cli, pg_server: Server, pagila_db: str, encrypted: str, key: Key, damage: str
) -> None:
    dump = cli.store / f"{encrypted}.sql.gz.age"
    data = bytearray(dump.read_bytes())
    if damage == "truncate":
        del data[len(data) * 2 // 3 :]
    elif damage == "flip-header":
        data[data.index(b"\n-> X25519 ") + 20] ^= 0x01
    else:
        data[len(data) // 2] ^= 0x01
    dump.write_bytes(bytes(data))
    if damage == "flip-and-fix-manifest":  # sha256 and size agree: age's own tags catch it
        path = cli.store / f"{encrypted}.json"
        manifest = json.loads(path.read_text())
        manifest.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        path.write_text(json.dumps(manifest))
    before = pg_server.dump(pagila_db)
    with_key = {"SNAPMGR_AGE_IDENTITY_FILE": str(key.path)}

    result = cli("restore", encrypted, "--yes", env=with_key)

    assert result.returncode == 6, result.stderr
    line = one_error_line(result.stderr)
    assert "unchanged" in line
    assert pg_server.dump(pagila_db) == before
    assert cli("verify", encrypted, env=with_key).returncode == 6
    without_key = cli("verify", encrypted)
    assert without_key.returncode == (0 if damage == "flip-and-fix-manifest" else 6)


def test_verify_without_a_key_checks_sha256_and_size_and_says_so(
    cli: Cli, encrypted: str, key: Key
) -> None:
    result = cli.ok("verify", encrypted)
    assert "not decrypted" in result.stdout
    assert "SNAPMGR_AGE_IDENTITY" in result.stderr
    data = json.loads(cli.ok("verify", encrypted, "--json").stdout)
    assert data[0]["decrypted"] is False and data[0]["rows"] is None

    full = cli.ok("verify", encrypted, "--identity-file", str(key.path))
    assert "sha256 matches, decrypted, complete" in full.stdout
    data = json.loads(cli.ok("verify", "--all", "--json", "--identity-file", str(key.path)).stdout)
    assert data[0]["decrypted"] is True and data[0]["rows"] > 0


def test_list_and_show_mark_encrypted_snapshots_in_a_mixed_store(
    cli: Cli, pg_server: Server, pagila_db: str, key: Key
) -> None:
    url = pg_server.url(pagila_db)
    plain = cli.ok("snapshot", "--label", "plain", env={"DATABASE_URL": url}).stdout.strip()
    sealed = cli.ok(
        "snapshot", "--label", "sealed",
        env={"DATABASE_URL": url, "SNAPMGR_ENCRYPTION_RECIPIENTS": key.public},
    ).stdout.strip()  # fmt: skip
    cli.env["DATABASE_URL"] = url

    rows = {line.split()[0]: line for line in cli.ok("list").stdout.splitlines()[1:]}
    assert " age " in rows[sealed] and " age " not in rows[plain]
    listed = {item["id"]: item for item in json.loads(cli.ok("list", "--json").stdout)}
    assert listed[sealed]["encryption"] == "age" and listed[sealed]["recipients"] == [key.public]
    assert listed[plain]["encryption"] is None
    assert f"age to {key.public}" in cli.ok("show", sealed).stdout
    assert "none (plaintext)" in cli.ok("show", plain).stdout

    # Both stay restorable: the old one without a key, the new one with it.
    expected = pg_server.dump(pagila_db)
    pg_server.psql_file(pagila_db, PAGILA_MUTATIONS)
    cli.ok("restore", plain, "--yes")
    assert pg_server.dump(pagila_db) == expected
    pg_server.psql_file(pagila_db, PAGILA_MUTATIONS)
    cli.ok("restore", sealed, "--yes", env={"SNAPMGR_AGE_IDENTITY": key.secret})
    assert pg_server.dump(pagila_db) == expected


def test_the_key_is_never_printed(
    cli: Cli, pg_server: Server, pagila_db: str, encrypted: str, key: Key
) -> None:
    env = {"SNAPMGR_AGE_IDENTITY": key.secret}
    shown = cli.ok("config", env=env).stdout + cli.ok("config", "--json", env=env).stdout
    assert key.secret not in shown and "age_identity = '***'" in shown
    bad = cli("restore", encrypted, "--yes", "-vv", "--target-url", "postgresql://x@127.0.0.1:1/x",
              env=env)  # fmt: skip
    assert bad.returncode != 0
    assert key.secret not in bad.stdout + bad.stderr
    broken = cli("verify", encrypted, env={"SNAPMGR_AGE_IDENTITY": key.secret[:-3] + "QQQ"})
    assert broken.returncode == 2, broken.stderr
    assert "SNAPMGR_AGE_IDENTITY" in one_error_line(broken.stderr)
    assert key.secret[20:40] not in broken.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SNAPMGR_ENCRYPTION_RECIPIENTS": "age1notakey"}, "encryption_recipients"),
        ({"SNAPMGR_ENCRYPTION_RECIPIENTS_FILE": "/no/r.txt"}, "encryption_recipients_file"),
        ({"SNAPMGR_AGE_IDENTITY_FILE": "/nonexistent/key.txt"}, "age_identity_file"),
        ({"SNAPMGR_ENCRYPTION_RECIPIENTS_FILE": "{key}"}, "is a private key (an identity)"),
    ],
)
def test_bad_key_settings_are_exit_2_naming_the_setting(
    cli: Cli, encrypted: str, key: Key, env: dict[str, str], named: str
) -> None:
    env = {name: value.replace("{key}", str(key.path)) for name, value in env.items()}
    command = "snapshot" if "RECIPIENTS" in next(iter(env)) else "restore"
    args = [encrypted, "--yes"] if command == "restore" else []
    result = cli(command, *args, env=env)
    assert result.returncode == 2, result.stderr
    assert named in one_error_line(result.stderr)
    assert key.secret[15:] not in result.stderr
    assert sorted(p.name for p in cli.store.iterdir()) == [
        f"{encrypted}.json",
        f"{encrypted}.sql.gz.age",
    ]


def test_guard_restore_on_failure_refuses_to_start_without_the_key(
    cli: Cli, pg_server: Server, pagila_db: str, key: Key, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    env = {"DATABASE_URL": pg_server.url(pagila_db), "SNAPMGR_ENCRYPTION_RECIPIENTS": key.public}
    result = cli("guard", "--restore-on-failure", "--", "touch", str(ran), env=env)
    assert result.returncode == 2, result.stderr
    assert "SNAPMGR_AGE_IDENTITY" in one_error_line(result.stderr)
    assert not ran.exists() and not cli.store.exists()

    env["SNAPMGR_AGE_IDENTITY"] = key.secret
    expected = pg_server.dump(pagila_db)
    migration = 'psql "$DATABASE_URL" -q -c "DROP TABLE public.payment CASCADE"; exit 3'
    result = cli("guard", "--restore-on-failure", "--", "bash", "-c", migration, env=env)
    assert result.returncode == 3, result.stderr
    assert "restored" in result.stderr
    assert pg_server.dump(pagila_db) == expected
    assert len(list(cli.store.glob("*.sql.gz.age"))) == 1
