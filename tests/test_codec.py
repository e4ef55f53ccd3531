"""Compression round trips and truncation/corruption detection for every codec."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess

import pytest
import xxhash

from snapmgr.codec import READBACK, Digest, check_level, compressor, decompressor
from snapmgr.errors import ConfigError, VerificationError

DATA = b"".join(b'%d\tsome text row %d\t{"k": %d}\n' % (i, i * 7, i % 13) for i in range(50_000))
DATA += os.urandom(4096)


def compress(kind: str, level: int | None = None) -> bytes:
    comp = compressor(kind, check_level(kind, level))
    chunks = [comp.compress(DATA[i : i + 65536]) for i in range(0, len(DATA), 65536)]
    return b"".join(chunks) + comp.flush()


def inflate(kind: str, blob: bytes, step: int = 7777) -> bytes:
    dec = decompressor(kind)
    out = [dec.decompress(blob[i : i + step]) for i in range(0, len(blob), step)]
    out.append(dec.finish())
    return b"".join(out)


@pytest.mark.parametrize("kind", ["gzip", "zstd", "none"])
def test_round_trip(kind: str) -> None:
    assert inflate(kind, compress(kind)) == DATA


def test_gzip_output_is_standard_and_gunzip_reads_it() -> None:
    blob = compress("gzip")
    assert gzip.decompress(blob) == DATA
    assert (
        subprocess.run(["gunzip", "-c"], input=blob, capture_output=True, check=True).stdout == DATA
    )


def test_concatenated_gzip_members_are_read_like_gunzip() -> None:
    blob = gzip.compress(b"a\n") + gzip.compress(b"b\n")
    assert inflate("gzip", blob, step=5) == b"a\nb\n"


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_truncation_is_detected(kind: str) -> None:
    blob = compress(kind)
    with pytest.raises(VerificationError, match="truncated"):
        inflate(kind, blob[: len(blob) - 100])


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_corruption_is_detected(kind: str) -> None:
    blob = bytearray(compress(kind))
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(VerificationError):
        inflate(kind, bytes(blob))


def test_levels_are_checked() -> None:
    assert check_level("gzip", None) == 2
    assert check_level("zstd", None) == 3
    assert check_level("none", 5) is None
    with pytest.raises(ConfigError, match="compression_level"):
        check_level("gzip", 4)
    with pytest.raises(ConfigError, match="compression"):
        check_level("brotli", None)


def test_zstd_frames_carry_a_content_checksum_that_zstd_t_checks() -> None:
    """A flipped byte inside a stored (raw) block passes the block format; only the
    frame's content checksum catches it, in ``zstd -t`` and in our decompressor."""
    noise = os.urandom(300_000)
    comp = compressor("zstd", check_level("zstd", None))
    blob = comp.compress(noise) + comp.flush()
    assert blob[:4] == b"\x28\xb5\x2f\xfd"
    assert blob[4] & 0x04, "Content_Checksum_flag is not set in the frame header"
    assert subprocess.run(["zstd", "-t", "-q"], input=blob, check=False).returncode == 0
    at = blob.index(noise[150_000:150_064]) + 10  # incompressible: stored verbatim
    damaged = bytearray(blob)
    damaged[at] ^= 0x01
    checked = subprocess.run(["zstd", "-t"], input=bytes(damaged), capture_output=True, check=False)
    assert checked.returncode != 0
    assert b"checksum" in checked.stderr.lower()
    dec = decompressor("zstd")
    with pytest.raises(VerificationError, match="zstd data is corrupt"):
        dec.decompress(bytes(damaged))
        dec.finish()


def test_a_digest_keeps_each_hash_it_is_asked_for_over_the_same_bytes() -> None:
    """The snapshot hashes what it writes with sha256 (the manifest) and the
    read-back's xxh3-128 at once; both must be the plain algorithms' values."""
    data = os.urandom(3 << 20)
    both = Digest(algorithms=("sha256", READBACK))
    for start in range(0, len(data), 100_000):
        both.update(memoryview(data)[start : start + 100_000])
    assert both.size == len(data)
    assert both.hexdigest() == hashlib.sha256(data).hexdigest()
    assert both.hexdigest(READBACK) == xxhash.xxh3_128(data).hexdigest()
    read_back = Digest(algorithms=(READBACK,))
    read_back.update_from(io.BytesIO(data))
    assert read_back.hexdigest(READBACK) == both.hexdigest(READBACK)
