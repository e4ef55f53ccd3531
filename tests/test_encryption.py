"""The age stages and keys on their own: streams through pyrage in any chunking, what
the real ``age`` CLI reads and writes, errors for wrong keys and damaged ciphertext
(never quoting a private key), recipients and identity files, object names."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest
from pyrage import x25519

from snapmgr.catalog import Store, orphans
from snapmgr.config import StoreConfig
from snapmgr.encryption import (
    Keyring,
    WrongKeyError,
    decrypt_stream,
    encrypt_stream,
    identities_from_text,
    load_keyring,
    parse_recipients,
    read_recipients_file,
)
from snapmgr.errors import ConfigError, SnapmgrError, VerificationError
from snapmgr.manifest import Manifest, dump_generation, dump_name, split_object_name
from snapmgr.pipeline import Cancelled, Channel
from snapmgr.registry import open_backend
from tests.agekeys import Key

DATA = os.urandom(200_000) + b"-- PostgreSQL database dump complete\n" * 5000


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def encrypt(data: bytes, recipients: list[str], size: int = 65_536) -> bytes:
    out: list[bytes] = []
    encrypt_stream(pieces(data, size), out.append, recipients)
    return b"".join(out)


def decrypt(data: bytes, keyring: Keyring, size: int = 65_536) -> bytes:
    out: list[bytes] = []
    decrypt_stream(pieces(data, size), out.append, keyring, "X.sql.gz.age")
    return b"".join(out)


@pytest.fixture
def key(tmp_path: Path) -> Key:
    return Key(tmp_path / "key.txt")


@pytest.mark.parametrize("size", [1, 999, 65_536, 1 << 20, 3 << 20])
def test_round_trip_whatever_the_chunking(size: int) -> None:
    identity = x25519.Identity.generate()
    keyring = Keyring((identity,), "test")
    sealed = encrypt(DATA, [str(identity.to_public())], size if size > 1 else 4096)
    assert sealed.startswith(b"age-encryption.org/v1\n")
    assert decrypt(sealed, keyring, size if size > 1 else 7) == DATA


def test_ciphertext_is_read_by_the_age_cli_and_age_output_is_read_by_us(key: Key) -> None:
    sealed = encrypt(DATA, [key.public])
    plain = subprocess.run(
        ["age", "-d", "-i", str(key.path)], input=sealed, capture_output=True, check=True
    ).stdout
    assert plain == DATA
    by_age = subprocess.run(
        ["age", "-r", key.public], input=DATA, capture_output=True, check=True
    ).stdout
    keyring = load_keyring(str(key.path), None, "age_identity_file")
    assert decrypt(by_age, keyring) == DATA


def test_each_of_several_recipients_can_decrypt(key: Key) -> None:
    other = x25519.Identity.generate()
    sealed = encrypt(DATA, [key.public, str(other.to_public())])
    assert decrypt(sealed, Keyring((other,), "other")) == DATA
    assert decrypt(sealed, load_keyring(None, key.secret, "-")) == DATA


def test_a_wrong_key_fails_on_the_header_with_no_plaintext(key: Key) -> None:
    sealed = encrypt(DATA, [key.public])
    out: list[bytes] = []
    wrong = Keyring((x25519.Identity.generate(),), "the wrong file")
    with pytest.raises(WrongKeyError, match="the wrong file does not decrypt it"):
        decrypt_stream(pieces(sealed, 65_536), out.append, wrong, "X")
    assert out == []


@pytest.mark.parametrize("where", ["truncate", "truncate-at-chunk", "flip-payload", "flip-mac"])
def test_damaged_ciphertext_is_a_verification_error(key: Key, where: str) -> None:
    sealed = bytearray(encrypt(DATA, [key.public]))
    header = sealed.index(b"\n--- ") + 1
    if where == "truncate":
        del sealed[-100:]
    elif where == "truncate-at-chunk":  # whole chunks only: the last-chunk flag is missing
        del sealed[header + 64 + 16 + 65_552 :]
    elif where == "flip-payload":
        sealed[len(sealed) // 2] ^= 0x80
    else:
        sealed[header + 10] ^= 0x01
    keyring = load_keyring(str(key.path), None, "-")
    with pytest.raises(VerificationError, match=r"X\.sql\.gz\.age") as caught:
        decrypt(bytes(sealed), keyring)
    assert key.secret not in str(caught.value)


def test_an_error_in_the_pipeline_comes_out_as_itself() -> None:
    """pyrage wraps what its file objects raise; the stage re-raises the original."""
    cancel = threading.Event()
    channel: Channel[bytes] = Channel(2, cancel)
    cancel.set()
    with pytest.raises(Cancelled):
        encrypt_stream(channel, lambda data: None, [str(x25519.Identity.generate().to_public())])

    def full_store(data: bytes) -> None:
        raise SnapmgrError("the store is full")

    identity = x25519.Identity.generate()
    with pytest.raises(SnapmgrError, match="the store is full"):
        encrypt_stream([DATA] * 3, full_store, [str(identity.to_public())])

    sealed = encrypt(DATA * 8, [str(identity.to_public())])
    keyring = Keyring((identity,), "test")
    for cut in (10, 300_000):  # in the header, and in the payload
        stopping = threading.Event()
        stream: Channel[bytes] = Channel(2, stopping)

        def feed(cut: int = cut, stream: Channel[bytes] = stream) -> None:
            stream.put(sealed[:cut])
            stopping.set()

        threading.Thread(target=feed).start()
        with pytest.raises(Cancelled):
            decrypt_stream(stream, lambda data: None, keyring, "X")
    with pytest.raises(SnapmgrError, match="the store is full"):
        decrypt_stream(pieces(sealed, 65_536), full_store, keyring, "X")


def test_recipients_are_checked_and_a_private_key_is_refused_without_showing_it(
    key: Key, tmp_path: Path
) -> None:
    assert parse_recipients([key.public, f" {key.public} "]) == (key.public,)
    with pytest.raises(ValueError, match="recipient 2 'age1nope' is not an age public key"):
        parse_recipients([key.public, "age1nope"])
    with pytest.raises(ValueError, match="is a private key") as caught:
        parse_recipients([key.secret])
    assert key.secret not in str(caught.value)

    listed = tmp_path / "recipients.txt"
    listed.write_text(f"# ops\n\n{key.public}\n")
    assert read_recipients_file(str(listed), "encryption_recipients_file") == (key.public,)
    listed.write_text("# nobody\n")
    with pytest.raises(ConfigError, match=r"encryption_recipients_file: .* lists no recipient"):
        read_recipients_file(str(listed), "encryption_recipients_file")


def test_identity_errors_name_the_line_never_the_key(key: Key, tmp_path: Path) -> None:
    text = key.path.read_text()
    assert len(identities_from_text(text, "f")) == 1
    broken = text.replace(key.secret, key.secret[:-4] + "AAAA")
    with pytest.raises(ConfigError, match=r"identity file .*: line 3 is not an age identity") as e:
        identities_from_text(broken, f"identity file {key.path}")
    assert key.secret[16:-4] not in str(e.value)
    with pytest.raises(ConfigError, match="--identity-file: cannot read identity file"):
        load_keyring(str(tmp_path / "absent.txt"), None, "--identity-file")
    keyring = load_keyring(str(key.path), key.secret, "-")
    assert keyring.public_keys() == {key.public}
    assert key.secret not in repr(keyring)


def test_object_names_with_encryption_and_key_generations() -> None:
    assert dump_name("a_1", "gzip", True) == "a_1.sql.gz.age"
    assert dump_name("a_1", "none", True, 3) == "a_1.k3.sql.age"
    assert split_object_name("a_1.sql.zst.age") == ("a_1", "dump")
    assert split_object_name("a_1.k12.sql.gz.age") == ("a_1", "dump")
    assert split_object_name("a.k2_20250101_000000.sql.gz") == ("a.k2_20250101_000000", "dump")
    assert split_object_name("a_1.sql.gz.age.partial") is None
    assert dump_generation("a_1.k12.sql.gz.age") == 12
    assert dump_generation("a_1.sql.gz") == 1


def test_a_manifest_naming_another_snapshots_object_is_refused() -> None:
    raw = (
        b'{"id": "a_1", "label": "a", "created_at": "2025-01-01T00:00:00Z", "duration_s": 1,'
        b' "database": {"name": "d", "host": "h", "port": 5432, "user": "u",'
        b' "server_version": "15"}, "pg_dump_version": "15", "format": "plain",'
        b' "compression": "gzip", "compression_level": 2, "size": 1, "raw_size": 1,'
        b' "sha256": "x", "tables": {}, "encryption": "age", "recipients": [],'
        b' "dump_object": "%s"}'
    )
    assert Manifest.from_json(raw % b"a_1.k2.sql.gz.age", origin="m").dump_name == (
        "a_1.k2.sql.gz.age"
    )
    for bad in (b"b_1.sql.gz.age", b"../a_1.sql.gz", b"a_1.json"):
        with pytest.raises(VerificationError, match="names dump"):
            Manifest.from_json(raw % bad, origin="m")
    with pytest.raises(VerificationError, match="unknown encryption"):
        Manifest.from_json(raw.replace(b'"age"', b'"rot13"') % b"a_1.sql.gz.age", origin="m")


def test_orphans_include_the_object_a_manifest_no_longer_names(tmp_path: Path) -> None:
    """What an interrupted rekey leaves beside a committed snapshot is an orphan; the
    object the manifest names, and a lone dump whose manifest names another, are not."""
    config = StoreConfig(name="local", kind="local", url=str(tmp_path))
    store = Store(config, open_backend("local", str(tmp_path), {}))
    raw = (
        '{"id": "%s", "label": "a", "created_at": "2025-01-01T00:00:00Z", "duration_s": 1,'
        ' "database": {"name": "d", "host": "h", "port": 5432, "user": "u",'
        ' "server_version": "15"}, "pg_dump_version": "15", "format": "plain",'
        ' "compression": "gzip", "compression_level": 2, "size": 1, "raw_size": 1,'
        ' "sha256": "x", "tables": {}, "encryption": "age", "recipients": [],'
        ' "dump_object": "%s"}'
    )
    for name in ("a_1.sql.gz.age", "a_1.k2.sql.gz.age", "b_1.k3.sql.gz.age", "c_1.sql.gz"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "a_1.json").write_text(raw % ("a_1", "a_1.k2.sql.gz.age"))
    (tmp_path / "b_1.json").write_text(raw % ("b_1", "b_1.k2.sql.gz.age"))
    assert sorted(o.info.name for o in orphans(store)) == ["a_1.sql.gz.age", "c_1.sql.gz"]
