"""Compression and hashing for dump streams: gzip (isal), zstd, or none.

Both libraries release the GIL while they work, so compression in its own
thread runs in parallel with reading pg_dump and with the stores' uploads.
gzip output is standard (``gunzip -c`` reads it), made by isal at level 2 by
default: on pg_dump output that is about ten times faster than zlib -6 and
slightly smaller. Decompressors detect truncation: ``finish`` raises when the
stream ended before its end-of-stream marker.

zstd frames carry their content checksum (xxh64 of the SQL), as gzip members
carry their CRC-32: ``zstd -t X.sql.zst`` then proves a copy by hand the way
``gzip -t`` does, and a flipped byte inside a stored (incompressible) block,
which the block format alone cannot notice, fails decompression too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, cast

from isal import isal_zlib

from snapmgr import fingerprint
from snapmgr.errors import VerificationError
from snapmgr.formats import GZIP, ZSTD, check_level

_ISAL_ERROR = cast(type[Exception], isal_zlib.error)
GZIP_WBITS = 31  # zlib's "gzip container" window bits
READ_CHUNK = 1 << 20
#: What (de)compressors accept: snapshot and verify hand them views of larger chunks.
Buffer = bytes | bytearray | memoryview


class Compressor(Protocol):
    """Turns raw SQL chunks into stored bytes."""

    def compress(self, data: Buffer) -> bytes: ...

    def flush(self) -> bytes: ...


class Decompressor(Protocol):
    """Turns stored bytes back into SQL; ``finish`` raises if the stream was cut."""

    def decompress(self, data: Buffer) -> bytes: ...

    def finish(self) -> bytes: ...


class _Identity:
    def compress(self, data: Buffer) -> bytes:
        return bytes(data)  # never hand on a caller's (reusable) buffer

    def flush(self) -> bytes:
        return b""

    def decompress(self, data: Buffer) -> bytes:
        return bytes(data)

    def finish(self) -> bytes:
        return b""


class _GzipCompressor:
    def __init__(self, level: int) -> None:
        self._obj = isal_zlib.compressobj(level, isal_zlib.DEFLATED, GZIP_WBITS)

    def compress(self, data: Buffer) -> bytes:
        return bytes(self._obj.compress(data))

    def flush(self) -> bytes:
        return bytes(self._obj.flush())


class _GzipDecompressor:
    """Reads concatenated gzip members, as gunzip does."""

    def __init__(self) -> None:
        self._obj: Any = isal_zlib.decompressobj(GZIP_WBITS)

    def decompress(self, data: Buffer) -> bytes:
        out = []
        while data:
            try:
                out.append(self._obj.decompress(data))
            except _ISAL_ERROR as exc:
                raise VerificationError(f"gzip data is corrupt: {exc}") from exc
            if not self._obj.eof:
                break
            data = self._obj.unused_data
            if data:
                self._obj = isal_zlib.decompressobj(GZIP_WBITS)
        return b"".join(out)

    def finish(self) -> bytes:
        if not self._obj.eof:
            raise VerificationError("gzip data is truncated: the stream ends before its trailer")
        return b""


class _ZstdCompressor:
    def __init__(self, level: int) -> None:
        import zstandard

        self._obj = zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj()

    def compress(self, data: Buffer) -> bytes:
        return bytes(self._obj.compress(data))

    def flush(self) -> bytes:
        return bytes(self._obj.flush())


class _ZstdDecompressor:
    def __init__(self) -> None:
        import zstandard

        self._zstd = zstandard
        self._obj: Any = zstandard.ZstdDecompressor().decompressobj()
        self._done = False

    def decompress(self, data: Buffer) -> bytes:
        out = []
        while data:
            try:
                out.append(self._obj.decompress(data))
            except self._zstd.ZstdError as exc:
                raise VerificationError(f"zstd data is corrupt: {exc}") from exc
            if not self._obj.eof:
                self._done = False
                break
            self._done = True
            data = self._obj.unused_data
            if data:
                self._obj = self._zstd.ZstdDecompressor().decompressobj()
                self._done = False
        return b"".join(out)

    def finish(self) -> bytes:
        if not self._done:
            raise VerificationError("zstd data is truncated: the stream ends before its last frame")
        return b""


def compressor(compression: str, level: int | None) -> Compressor:
    """A fresh compressor for ``compression`` at ``level`` (``None``: the format's default)."""
    effective = check_level(compression, level)
    if effective is None:
        return _Identity()
    if compression == GZIP.name:
        return _GzipCompressor(effective)
    return _ZstdCompressor(effective)


def decompressor(compression: str) -> Decompressor:
    """A fresh decompressor for streams made by :func:`compressor`."""
    if compression == GZIP.name:
        return _GzipDecompressor()
    if compression == ZSTD.name:
        return _ZstdDecompressor()
    return _Identity()


#: The hash a snapshot's read-back compares: the stored copy against what was
#: written a moment earlier, so it looks for an accident (a short or altered
#: write), not an adversary, and xxh3-128 does that at several GB/s where
#: sha256 manages about one (0.11 s of a large snapshot's tail). The manifest's
#: sha256 stays every copy's checksum for ``verify``, restore and users.
READBACK = fingerprint.ALGORITHM  # xxh3-128, as the content fingerprints


def _new_hash(algorithm: str) -> Any:
    if algorithm == READBACK:
        import xxhash

        return xxhash.xxh3_128()
    return hashlib.new(algorithm)


@dataclass
class Digest:
    """The hashes (sha256 unless ``algorithms`` says otherwise) and byte count of a
    stream, fed chunk by chunk."""

    size: int = 0
    algorithms: tuple[str, ...] = ("sha256",)

    def __post_init__(self) -> None:
        self._hashes = [_new_hash(name) for name in self.algorithms]

    def update(self, data: bytes | memoryview) -> None:
        for hasher in self._hashes:
            hasher.update(data)
        self.size += len(data)

    def update_from(self, handle: BinaryIO, chunk: int = READ_CHUNK) -> None:
        """Hash everything ``handle`` yields, reusing one buffer when it can ``readinto``."""
        readinto = getattr(handle, "readinto", None)
        if readinto is None:
            while data := handle.read(chunk):
                self.update(data)
            return
        buffer = bytearray(chunk)
        view = memoryview(buffer)
        while count := readinto(buffer):
            self.update(view[:count])

    def hexdigest(self, algorithm: str = "sha256") -> str:
        return str(self._hashes[self.algorithms.index(algorithm)].hexdigest())
