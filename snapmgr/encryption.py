"""age encryption of dump streams (the age v1 format, through pyrage), and the keys.

Snapshots are encrypted to public *recipients* (``age1…``) and read with
private *identities* (``AGE-SECRET-KEY-1…``), in the standard age format, so
``age -d -i key.txt X.sql.gz.age | gunzip | psql`` works by hand without
snapmgr. The compressed stream is what gets encrypted (ciphertext does not
compress), so encryption works on the smaller side of the pipeline.

pyrage's ``encrypt_io``/``decrypt_io`` stream through file-like objects but
hold the GIL while they encrypt, so each runs in a pipeline stage of its own
fed by a bounded channel (:func:`encrypt_stream`, :func:`decrypt_stream`):
the other stages keep running between its chunks and memory stays bounded.
age authenticates every 64 KiB chunk, so a flipped byte or a cut stream is an
error at the chunk where it happens, never wrong plaintext; a wrong key fails
on the header, before any plaintext.

Identities are secrets: they are never printed, and pyrage's messages, which
never quote a key, are the only detail given when one cannot be read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from snapmgr.errors import ConfigError, SnapmgrError, UsageError, VerificationError
from snapmgr.formats import ENCRYPTION

if TYPE_CHECKING:
    from pyrage import x25519

SCHEME = ENCRYPTION
OUT_CHUNK = 1 << 20  # hand ciphertext/plaintext on in pieces of about this size
IDENTITY_HINT = (
    "--identity-file PATH, SNAPMGR_AGE_IDENTITY_FILE=PATH, or "
    "SNAPMGR_AGE_IDENTITY=AGE-SECRET-KEY-1… (the key itself)"
)


class WrongKeyError(VerificationError):
    """None of the given identities can decrypt the snapshot (exit 6). Every copy
    is encrypted to the same recipients, so trying another copy cannot help."""


def parse_recipients(values: Iterable[str]) -> tuple[str, ...]:
    """Check age recipients (``age1…`` public keys), without duplicates; a bad one is a
    ``ValueError`` saying which (by position) and why."""
    from pyrage import RecipientError, x25519

    found: list[str] = []
    for number, value in enumerate(values, 1):
        text = value.strip()
        if text.upper().startswith("AGE-SECRET-KEY-"):
            raise ValueError(
                f"recipient {number} is a private key (an identity), not a recipient: give "
                "its public key (`age-keygen -y key.txt` prints it) and keep the private key "
                "away from where snapshots are taken"
            )
        try:
            x25519.Recipient.from_str(text)
        except RecipientError as exc:
            shown = f" {text!r}" if text.startswith("age1") and len(text) < 100 else ""
            raise ValueError(
                f"recipient {number}{shown} is not an age public key ({exc}); expected "
                "age1… (`age-keygen -y key.txt` prints it)"
            ) from None
        found.append(text)
    return tuple(dict.fromkeys(found))


def recipients_from_text(text: str) -> tuple[str, ...]:
    """Recipients from an age recipients file: one per line, ``#`` comments, blank lines."""
    lines = [line.strip() for line in text.splitlines()]
    return parse_recipients([ln for ln in lines if ln and not ln.startswith("#")])


def read_recipients_file(path: str, origin: str) -> tuple[str, ...]:
    """The recipients listed in ``path``; a missing, bad or empty file is a config
    error naming ``origin`` (the key or flag that named the file)."""
    try:
        found = recipients_from_text(Path(path).expanduser().read_text())
    except OSError as exc:
        raise ConfigError(f"{origin}: cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{origin}: {path}: {exc}") from None
    if not found:
        raise ConfigError(f"{origin}: {path} lists no recipient (expected age1… lines)")
    return found


@dataclass(frozen=True)
class Keyring:
    """The private keys given for reading encrypted snapshots, and where from.

    ``repr`` shows neither the keys nor their text (pyrage's objects do not)."""

    identities: tuple[x25519.Identity, ...] = ()
    source: str = ""

    def __bool__(self) -> bool:
        return bool(self.identities)

    def public_keys(self) -> frozenset[str]:
        return frozenset(str(identity.to_public()) for identity in self.identities)

    def check_can_read(self, snapshot_id: str, recipients: Sequence[str]) -> None:
        """Raise ``WrongKeyError`` when no identity belongs to ``recipients``, so a wrong
        key is one line before anything is read or changed."""
        if recipients and not self.public_keys() & set(recipients):
            ours = ", ".join(sorted(short_key(key) for key in self.public_keys()))
            theirs = ", ".join(short_key(key) for key in recipients)
            raise WrongKeyError(
                f"the key from {self.source} (public key {ours}) cannot decrypt {snapshot_id}: "
                f"it is encrypted to {theirs}; give the matching identity ({IDENTITY_HINT})"
            )


def short_key(recipient: str) -> str:
    """A public key shortened for messages: enough to tell keys apart."""
    return f"{recipient[:12]}…{recipient[-6:]}" if len(recipient) > 24 else recipient


def identities_from_text(text: str, origin: str) -> tuple[x25519.Identity, ...]:
    """Identities from an age identity file's text (``AGE-SECRET-KEY-1…`` lines,
    ``#`` comments). Errors name ``origin`` and the line, never the key."""
    from pyrage import IdentityError, x25519

    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(x25519.Identity.from_str(line))
        except IdentityError as exc:
            raise ConfigError(
                f"{origin}: line {number} is not an age identity ({exc}); "
                "expected AGE-SECRET-KEY-1… as made by age-keygen"
            ) from None
    if not found:
        raise ConfigError(f"{origin}: no age identity in it (expected AGE-SECRET-KEY-1…)")
    return tuple(found)


def load_keyring(identity_file: str | None, identity: str | None, file_origin: str) -> Keyring:
    """Every identity from the identity file and the inline key (either may be unset)."""
    identities: list[x25519.Identity] = []
    sources = []
    if identity_file:
        path = Path(identity_file).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(
                f"{file_origin}: cannot read identity file {path}: {exc.strerror}"
            ) from None
        identities += identities_from_text(text, f"identity file {path}")
        sources.append(str(path))
    if identity:
        identities += identities_from_text(identity, "SNAPMGR_AGE_IDENTITY (age_identity)")
        sources.append("SNAPMGR_AGE_IDENTITY")
    return Keyring(tuple(identities), " and ".join(sources))


def missing_key(snapshot_id: str, doing: str) -> UsageError:
    """The refusal for an encrypted snapshot without a key (exit 2), naming the three ways."""
    return UsageError(
        f"snapshot {snapshot_id} is encrypted (age); {doing} needs its private key: "
        f"give it with {IDENTITY_HINT}"
    )


class _Source:
    """The file-like object pyrage reads: chunks from an iterator, in the sizes asked for.

    An exception raised while pyrage calls in (the pipeline was cancelled) is
    kept, because pyrage turns it into its own error type."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = memoryview(b"")
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            while not self._buffer:
                chunk = next(self._chunks, None)
                if chunk is None:
                    return b""
                self._buffer = memoryview(chunk)
            if size < 0:
                size = len(self._buffer)
            piece, self._buffer = self._buffer[:size], self._buffer[size:]
            return piece.tobytes()
        except BaseException as exc:
            self.error = exc
            raise


class _Sink:
    """The file-like object pyrage writes: gathers output into ``OUT_CHUNK`` pieces
    for ``emit``, so the stages downstream see few, large chunks."""

    def __init__(self, emit: Callable[[bytes], None]) -> None:
        self._emit = emit
        self._pending = bytearray()
        self.error: BaseException | None = None

    def write(self, data: bytes) -> int:
        try:
            self._pending += data
            if len(self._pending) >= OUT_CHUNK:
                self._emit(bytes(self._pending))
                self._pending.clear()
        except BaseException as exc:
            self.error = exc
            raise
        return len(data)

    def flush(self) -> None:
        """pyrage flushes as it finishes; the last piece is passed on by :meth:`drain`."""

    def drain(self) -> None:
        if self._pending:
            self._emit(bytes(self._pending))
            self._pending.clear()


def encrypt_stream(
    chunks: Iterable[bytes], emit: Callable[[bytes], None], recipients: Sequence[str]
) -> None:
    """Encrypt the concatenation of ``chunks`` to ``recipients`` (age v1, binary),
    passing the ciphertext to ``emit``. Blocks until ``chunks`` is exhausted."""
    import pyrage
    from pyrage import x25519

    keys = [x25519.Recipient.from_str(recipient) for recipient in recipients]
    source, sink = _Source(chunks), _Sink(emit)
    try:
        pyrage.encrypt_io(source, sink, keys)  # type: ignore[arg-type]
    except (pyrage.EncryptError, OSError) as exc:
        _reraise_callback_error(source, sink)
        raise SnapmgrError(f"age encryption failed: {exc}") from None
    sink.drain()


def decrypt_stream(
    chunks: Iterable[bytes], emit: Callable[[bytes], None], keyring: Keyring, where: str
) -> None:
    """Decrypt the age ciphertext in ``chunks`` with ``keyring``, passing the plaintext to
    ``emit``; ``WrongKeyError`` when no identity matches, ``VerificationError`` when
    the ciphertext is damaged or cut (``where`` names the object in messages)."""
    import pyrage

    source, sink = _Source(chunks), _Sink(emit)
    try:
        pyrage.decrypt_io(source, sink, list(keyring.identities))  # type: ignore[arg-type]
    except pyrage.DecryptError as exc:
        _reraise_callback_error(source, sink)
        if "no matching keys" in str(exc).lower():
            raise WrongKeyError(
                f"{where}: the key from {keyring.source} does not decrypt it (no matching "
                "recipient, or its header is damaged)"
            ) from None
        raise VerificationError(
            f"{where}: not a readable age file ({_one_line(exc)}): the copy is damaged"
        ) from None
    except OSError as exc:
        _reraise_callback_error(source, sink)
        raise VerificationError(
            f"{where}: age decryption failed ({_one_line(exc)}): the ciphertext is damaged "
            "or truncated"
        ) from None
    sink.drain()


def _reraise_callback_error(source: _Source, sink: _Sink) -> None:
    """What pyrage reported as its own error was ours (cancelled, a store failed)."""
    for error in (source.error, sink.error):
        if error is not None:
            raise error


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
