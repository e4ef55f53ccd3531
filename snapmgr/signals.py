"""SIGINT and SIGTERM: an interruption before a commit point, a note after it.

The CLI treats SIGTERM (what platforms and Kubernetes send) like Ctrl-C: both
raise ``KeyboardInterrupt`` in the main thread, which unwinds through the
cleanup that aborts a partial upload or rolls a restore back. Around a commit
point that would be wrong, so:

* ``signals_held()`` holds the signals while a short step that must not be cut
  in half runs (committing the dump objects, writing manifests and the
  pointer, settling a restore's COMMIT). A signal that arrived meanwhile is
  delivered when the step ends (``deliver_after``) or dropped: the step was a
  commit, or cleanup on the way to a failure that is being reported anyway.
* ``commit_passed(what)`` marks the commit point. From then on the result
  stands: a SIGINT/SIGTERM is only noted, ``late()`` tells the CLI to mention
  it, and the command exits with its own code. ``reopen()`` makes signals
  interrupt again (guard, between its snapshot and its command).

The CLI's process-wide phases: ``install()`` at start (signals are noted),
``interruptible()`` around a command's body (they interrupt; one noted
before, e.g. while the modules import, stops the body as it starts), then
noted again, and
``settle()`` right before exit, which ignores them: interpreter shutdown
resets Python's handlers to the default, fatal ones, and a signal then would
turn a finished command into a death by signal.

Without ``install()`` (the Python API), signals keep Python's defaults;
``signals_held`` and ``commit_passed`` still hold, deliver or drop them.

``pause_point(name)`` is a test hook: it stops the process (SIGSTOP) when the
environment variable ``SNAPMGR_TEST_PAUSE_AT`` names the point, so a test
can send a signal that lands exactly there. Unset, it costs one lookup.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from types import FrameType

from snapmgr.errors import Interrupted

HANDLED = (signal.SIGINT, signal.SIGTERM)
PAUSE_ENV = "SNAPMGR_TEST_PAUSE_AT"


class _State:
    """The process's signal phase (a plain class: this module must import fast)."""

    def __init__(self) -> None:
        self.installed = False
        self.raising = False  # a signal raises KeyboardInterrupt now
        self.committed: str | None = None  # e.g. "snapshot X was committed"
        self.noted: list[int] = []
        self.block_commits: list[str] | None = None  # commits inside the current held block


_state = _State()


def name_of(signum: int) -> str:
    return signal.Signals(signum).name


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _state.raising:
        # One interruption: the cleanup it starts must run to its end.
        _state.raising = False
        raise KeyboardInterrupt(name_of(signum))
    _state.noted.append(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install(noted: Iterable[int] = ()) -> None:
    """The CLI's handler for SIGINT and SIGTERM; signals are noted until ``interruptible``
    (``noted``: those an earlier handler already received)."""
    if not _main_thread():
        return
    for signum in HANDLED:
        signal.signal(signum, _on_signal)
    _state.installed = True
    _state.noted.extend(noted)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """A command's body: SIGINT/SIGTERM raise ``KeyboardInterrupt`` until a commit
    point passes; one noted before the body starts interrupts it at once."""
    if not _state.installed:
        install()
    _state.raising, _state.committed = True, None
    try:
        if _state.noted:
            first = _state.noted[0]
            _state.noted.clear()
            _state.raising = False
            raise Interrupted(f"interrupted by {name_of(first)} while starting; nothing was done")
        yield
    finally:
        _state.raising = False


def settle() -> None:
    """Ignore SIGINT/SIGTERM from now on: the outcome is decided and being reported."""
    if _main_thread():
        for signum in HANDLED:
            signal.signal(signum, signal.SIG_IGN)
    _state.raising = False
    forget_interrupt()


def forget_interrupt() -> None:
    """Let a caught ``KeyboardInterrupt`` stay caught at exit.

    CPython remembers a ``KeyboardInterrupt`` raised inside ``eval``/``exec``
    of a string (namedtuple and dataclass creation do that) and, at exit,
    kills the process with SIGINT even though it was caught (exit -2).
    Evaluating a string resets that flag.
    """
    exec("")  # noqa: S102 - a constant empty string, evaluated only for the reset


def commit_passed(what: str) -> None:
    """The result now stands (``what`` says which, e.g. ``snapshot X was committed``):
    later SIGINT/SIGTERM are noted, never turned into a failure."""
    if _state.block_commits is not None:
        _state.block_commits.append(what)
    if _state.installed:
        _state.committed = what
        _state.raising = False
        _state.noted.clear()


def reopen(then: str) -> None:
    """Let signals interrupt again after a commit point (guard: before its command).

    A signal noted since the commit point raises ``Interrupted`` (exit 130)
    saying what was committed and, in ``then``, what was therefore not done.
    """
    what, noted = _state.committed, list(_state.noted)
    _state.committed = None
    _state.noted.clear()
    _state.raising = _state.installed
    if noted and what is not None:
        _state.raising = False
        raise Interrupted(f"interrupted by {name_of(noted[0])} after {what}; {then}")


def late() -> tuple[list[str], str | None]:
    """Signals noted after the commit point, and what had been committed."""
    return [name_of(signum) for signum in _state.noted], _state.committed


@contextlib.contextmanager
def signals_held(deliver_after: bool = False) -> Iterator[None]:
    """Hold SIGINT/SIGTERM inside the block (main thread only; elsewhere a no-op).

    When the block completes, a held signal is noted if the block passed a
    commit point, re-delivered if ``deliver_after``, else dropped. If the
    block raises, its error is what is reported and the signal is dropped.
    """
    if not _main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(signum)

    outer_commits = _state.block_commits
    _state.block_commits = []
    previous = {signum: signal.signal(signum, hold) for signum in HANDLED}
    try:
        yield
    finally:
        committed_here = bool(_state.block_commits)
        _state.block_commits = outer_commits
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if not held:
        return
    if committed_here or _state.committed is not None:
        _state.noted.extend(held)
    elif deliver_after:
        signal.raise_signal(held[0])


def pause_point(name: str) -> None:
    """Test hook: stop here (SIGSTOP) if ``SNAPMGR_TEST_PAUSE_AT`` names this point."""
    if os.environ.get(PAUSE_ENV) == name:
        os.kill(os.getpid(), signal.SIGSTOP)
