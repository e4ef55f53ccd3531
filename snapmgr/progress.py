"""Progress for long work: a rich bar on a terminal, periodic plain lines in logs.

PaaS logs (Render, Heroku, Fly) are not terminals: a redrawn bar there turns
into noise, so off a terminal we print one line every ``interval`` seconds
(bytes, rate, elapsed) through the ``snapmgr`` logger on stderr instead.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Protocol

log = logging.getLogger("snapmgr")


def human_bytes(count: float) -> str:
    """``1.5 MiB``-style sizes."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


class Progress(Protocol):
    """A task's progress; ``advance`` is called from the hot loop, so it must be cheap."""

    def __enter__(self) -> Progress: ...

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def update(self, done: int, total: int | None = None) -> None: ...


class NullProgress:
    """No output at all (``--quiet``, ``--json`` without a terminal)."""

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, done: int, total: int | None = None) -> None:
        return None


class LogProgress:
    """One log line every ``interval`` seconds and one at the end."""

    def __init__(self, task: str, interval: float) -> None:
        self._task = task
        self._interval = interval
        self._start = time.monotonic()
        self._next = self._start + interval
        self._done = 0
        self._total: int | None = None

    def __enter__(self) -> LogProgress:
        self._start = time.monotonic()
        self._next = self._start + self._interval
        return self

    def __exit__(self, t: type[BaseException] | None, *exc: object) -> None:
        if t is None:
            self._emit("done")

    def update(self, done: int, total: int | None = None) -> None:
        self._done, self._total = done, total if total is not None else self._total
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self._interval
            self._emit("")

    def _emit(self, suffix: str) -> None:
        elapsed = max(time.monotonic() - self._start, 1e-6)
        of = f" of {human_bytes(self._total)}" if self._total else ""
        rate = human_bytes(self._done / elapsed)
        end = f" {suffix}" if suffix else ""
        log.info(
            "%s: %s%s, %s/s, %.0fs%s", self._task, human_bytes(self._done), of, rate, elapsed, end
        )


class BarProgress:
    """A rich progress bar on stderr (terminals only)."""

    def __init__(self, task: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task_name = task
        self._task = self._bar.add_task(task, total=None)

    def __enter__(self) -> BarProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def update(self, done: int, total: int | None = None) -> None:
        self._bar.update(self._task, completed=done, total=total)


def make_progress(task: str, mode: str, interval: float, quiet: bool = False) -> Progress:
    """Pick the reporter: ``mode`` is auto|bar|log|off (the ``progress`` setting)."""
    if quiet or mode == "off":
        return NullProgress()
    if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
        return BarProgress(task)
    return LogProgress(task, interval)
