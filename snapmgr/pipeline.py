"""Bounded channels and worker threads: the plumbing of the streaming pipelines.

Stages run in their own threads joined by small bounded queues, so the
slowest stage sets the pace and memory stays at (queue depth x chunk size)
whatever the dump's size. Every blocking call wakes up regularly to check a
shared cancel event, so one failing stage (or Ctrl-C) stops all the others
promptly instead of leaving threads blocked on a full or empty queue.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import queue
import shutil
import termios
import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
POLL_S = 0.1
_CLOSED = object()


class Cancelled(Exception):
    """Raised inside a stage when the pipeline was cancelled by another stage."""


class Channel(Generic[T]):
    """A bounded queue with an end-of-stream marker and cancellation."""

    def __init__(self, maxsize: int, cancel: threading.Event) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize)
        self._cancel = cancel

    def put(self, item: T) -> None:
        self._put(item)

    def close(self) -> None:
        """Signal the end of the stream to the consumer."""
        self._put(_CLOSED)

    def _put(self, item: object) -> None:
        while True:
            if self._cancel.is_set():
                raise Cancelled
            try:
                self._queue.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._get()
            if item is _CLOSED:
                return
            yield item  # type: ignore[misc]

    def _get(self) -> object:
        while True:
            if self._cancel.is_set():
                raise Cancelled
            try:
                return self._queue.get(timeout=POLL_S)
            except queue.Empty:
                continue


class BufferPool(Channel[bytearray]):
    """A fixed set of equal ``bytearray`` buffers, lent out and given back.

    Reading each chunk into a fresh ``bytes`` object makes the allocator hand
    out fresh pages every time: one page fault per 4 KiB read, a good part of
    a snapshot's system time. A few buffers that circulate stay resident. A
    borrower blocks (waking up for cancellation) while all are lent out, so
    the pool also bounds memory. Buffers are made when first needed, after a
    free one is looked for: a small dump never touches more than one or two
    (zero-filling all six MiB up front was 6 ms of a 0.5 s snapshot).
    """

    def __init__(self, count: int, size: int, cancel: threading.Event) -> None:
        super().__init__(count, cancel)
        self.size = size
        self._unmade = count
        self._making = threading.Lock()

    def take(self) -> bytearray:
        """A free buffer (a new one while fewer than ``count`` exist); blocks while
        every buffer is lent out."""
        if self._cancel.is_set():
            raise Cancelled
        try:
            return self._queue.get_nowait()  # type: ignore[return-value]
        except queue.Empty:
            pass
        with self._making:
            if self._unmade:
                self._unmade -= 1
                return bytearray(self.size)
        return self._get()  # type: ignore[return-value]

    def give(self, buffer: bytearray) -> None:
        """Return ``buffer`` if it is one of ours (a shorter copy, a last partial chunk, is not)."""
        if len(buffer) == self.size:
            self.put(buffer)


class Worker(threading.Thread):
    """A daemon thread that records its exception instead of printing it."""

    def __init__(self, name: str, target: Callable[[], None], cancel: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self._cancel = cancel
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except Cancelled:
            pass
        except BaseException as exc:
            self.error = exc
            self._cancel.set()


F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1 << 20  # the most an unprivileged process may ask for (pipe-max-size)


def enlarge_pipe(fd: int, size: int = PIPE_SIZE) -> None:
    """Ask for a pipe of ``size`` bytes (best effort: the default 64 KiB stays if refused)."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, size)


def read_pipe(
    fd: int, take: Callable[[], bytearray], low_water: int, nap: float
) -> Iterator[bytearray]:
    """Read a pipe into buffers from ``take()``, waking up rarely.

    Each buffer is yielded once it is full, so consumers get few, large
    chunks; the last, partial one is yielded as a shorter copy, which a
    :class:`BufferPool` does not take back.

    A plain blocking read returns as soon as the writer has written anything:
    pg_dump writes 4 KiB at a time, so the reader would be woken (and would
    wake the writer) about a hundred thousand times for a 400 MB dump, which
    costs both processes CPU time on a busy machine. Instead, when fewer than
    ``low_water`` bytes are waiting, sleep ``nap`` seconds first and let the
    pipe fill (it must hold more than ``nap`` seconds of output, or the writer
    would stall); the read itself still blocks when the pipe is empty, so a
    quiet producer costs nothing. A pipe smaller than four times ``low_water``
    (its enlargement was refused) is read plainly: napping would stall the writer.
    """
    waiting = array.array("i", [0])
    try:
        pipe = fcntl.fcntl(fd, F_GETPIPE_SZ) >= 4 * low_water
    except OSError:
        pipe = False  # not a pipe: just read
    buffer = take()
    view = memoryview(buffer)
    filled = 0
    while True:
        if pipe:
            try:
                fcntl.ioctl(fd, termios.FIONREAD, waiting)
            except OSError:
                pipe = False
            else:
                if waiting[0] < low_water:
                    time.sleep(nap)
        count = os.readv(fd, [view[filled:]])
        if count == 0:
            if filled:
                yield bytearray(view[:filled])
            return
        filled += count
        if filled == len(buffer):
            yield buffer
            buffer = take()
            view = memoryview(buffer)
            filled = 0


def stdio_blocks(argv: list[str], stream: str, size: int) -> list[str]:
    """``argv`` run with its stdio ``stream`` ("input" or "output") buffered in
    ``size``-byte blocks, under coreutils' ``stdbuf`` where it is installed.

    pg_dump writes its output, and psql reads its input, through stdio, which
    buffers 4 KiB on a pipe: about 20,000 system calls per 84 MB, each waking
    the other end. In 1 MiB blocks they make about 80. The bytes are the same,
    and a read still returns whatever is waiting, so nothing waits for a block
    to fill. stdbuf execs the program, so the process (and its group) is the
    one started; without stdbuf the command is left as it is.
    """
    stdbuf = shutil.which("stdbuf")
    if stdbuf is None:
        return argv
    return [stdbuf, f"--{stream}={size}", *argv]


def join_all(
    workers: list[Worker],
    on_tick: Callable[[], None] | None = None,
    timeout: float | None = None,
) -> None:
    """Wait for every worker, calling ``on_tick`` about every ``POLL_S`` seconds;
    give up after ``timeout`` seconds (the workers are daemon threads)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for worker in workers:
        while worker.is_alive():
            if deadline is not None and time.monotonic() >= deadline:
                return
            worker.join(POLL_S)
            if on_tick is not None:
                on_tick()
