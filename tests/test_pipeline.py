"""How pg_dump's output is read: large blocks, pooled buffers, each lent to one holder."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from snapmgr.pipeline import BufferPool, Cancelled, read_pipe, stdio_blocks

SIZE = 64 * 1024


def write_slowly(fd: int, data: bytes, piece: int = 4096) -> threading.Thread:
    """Write ``data`` into a pipe 4 KiB at a time, as pg_dump does, then close it."""

    def run() -> None:
        with os.fdopen(fd, "wb", buffering=0) as pipe:
            for start in range(0, len(data), piece):
                pipe.write(data[start : start + piece])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_read_pipe_yields_full_pooled_buffers_then_a_copy_of_the_rest() -> None:
    pool = BufferPool(2, SIZE, threading.Event())
    data = os.urandom(3 * SIZE + 12345)
    read_end, write_end = os.pipe()
    writer = write_slowly(write_end, data)
    received, buffers = [], set()
    for chunk in read_pipe(read_end, pool.take, low_water=SIZE // 4, nap=0.001):
        received.append(bytes(chunk))
        buffers.add(id(chunk))
        pool.give(chunk)
    writer.join()
    os.close(read_end)
    assert b"".join(received) == data
    assert [len(chunk) for chunk in received] == [SIZE, SIZE, SIZE, 12345]
    assert len(buffers) <= 3  # two pooled buffers, reused, and the copied tail


def test_pool_blocks_while_every_buffer_is_lent_and_wakes_up_on_cancel() -> None:
    cancel = threading.Event()
    pool = BufferPool(1, 16, cancel)
    lent = pool.take()
    pool.give(bytearray(8))  # a shorter copy is not one of ours: still nothing free
    outcome: list[object] = []

    def borrow() -> None:
        try:
            outcome.append(pool.take())
        except Cancelled:
            outcome.append("cancelled")

    thread = threading.Thread(target=borrow, daemon=True)
    thread.start()
    thread.join(0.3)
    assert thread.is_alive() and outcome == []
    cancel.set()
    thread.join(2)
    assert outcome == ["cancelled"]
    assert len(lent) == 16


@pytest.mark.parametrize("size", [0, 1, SIZE - 1, SIZE, 2 * SIZE])
def test_read_pipe_handles_every_boundary(size: int) -> None:
    pool = BufferPool(3, SIZE, threading.Event())
    data = os.urandom(size)
    read_end, write_end = os.pipe()
    writer = write_slowly(write_end, data)
    out = b""
    for chunk in read_pipe(read_end, pool.take, low_water=SIZE // 4, nap=0.001):
        out += chunk
        pool.give(chunk)
    writer.join()
    os.close(read_end)
    assert out == data


def test_stdio_blocks_keeps_the_bytes_and_falls_back_without_stdbuf(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # seq writes and sort reads through stdio, like pg_dump and psql.
    data = subprocess.run(["seq", "300000", "-1", "1"], capture_output=True, check=True).stdout
    writer = stdio_blocks(["seq", "300000", "-1", "1"], "output", 1 << 20)
    reader = stdio_blocks(["sort", "-n"], "input", 1 << 20)
    if shutil.which("stdbuf"):
        assert writer[:2] == [shutil.which("stdbuf"), "--output=1048576"]
        assert reader[:2] == [shutil.which("stdbuf"), "--input=1048576"]
    assert subprocess.run(writer, capture_output=True, check=True).stdout == data
    ordered = subprocess.run(reader, input=data, capture_output=True, check=True).stdout
    assert ordered == b"".join(f"{n}\n".encode() for n in range(1, 300001))

    monkeypatch.setenv("PATH", str(tmp_path))  # no stdbuf here
    assert stdio_blocks(["seq", "3"], "output", 1 << 20) == ["seq", "3"]


def test_pool_reuses_a_given_back_buffer_before_making_another() -> None:
    pool = BufferPool(4, SIZE, threading.Event())
    first = pool.take()
    pool.give(first)
    assert pool.take() is first  # nothing new made while one is free
    second = pool.take()
    assert second is not first and len(second) == SIZE


def test_a_cancelled_pool_lends_nothing_even_with_buffers_free() -> None:
    cancel = threading.Event()
    pool = BufferPool(2, SIZE, cancel)
    pool.give(pool.take())  # one made and free, one not made yet
    cancel.set()
    with pytest.raises(Cancelled):
        pool.take()
