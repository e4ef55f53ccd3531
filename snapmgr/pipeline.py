"""Bounded channels and worker threads: the plumbing of the streaming pipelines.

Stages run in their own threads joined by small bounded queues, so the
slowest stage sets the pace and memory stays at (queue depth x chunk size)
whatever the dump's size. Every blocking call wakes up regularly to check a
shared cancel event, so one failing stage (or Ctrl-C) stops all the others
promptly instead of leaving threads blocked on a full or empty queue.
"""

from __future__ import annotations

import array
import fcntl
import os
import queue
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
            if self._cancel.is_set():
                raise Cancelled
            try:
                item = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if item is _CLOSED:
                return
            yield item  # type: ignore[misc]


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


def read_pipe(fd: int, chunk: int, low_water: int, nap: float) -> Iterator[bytes]:
    """Read a pipe in chunks of up to ``chunk`` bytes, waking up rarely.

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
    while True:
        if pipe:
            try:
                fcntl.ioctl(fd, termios.FIONREAD, waiting)
            except OSError:
                pipe = False
            else:
                if waiting[0] < low_water:
                    time.sleep(nap)
        data = os.read(fd, chunk)
        if not data:
            return
        yield data


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
