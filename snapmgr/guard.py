"""Guard a command (a migration): snapshot first, run it, restore or explain on failure.

``snapmgr guard -- alembic upgrade head`` is the one line a PaaS start-up
script needs. The command runs only after a snapshot committed; its stdin,
stdout and stderr are the guard's own (passed through untouched), and its
exit code is the guard's. Exit codes follow the shell: 127 when the command
is not found, 126 when it cannot be executed, 128+N when signal N ended it.

Signals: SIGTERM and SIGHUP sent to snapmgr are forwarded to the command
(platforms send them to PID 1 only). SIGINT is forwarded only when stdin is
not a terminal: at a terminal, Ctrl-C already reaches the command, which
shares snapmgr's process group, and must not arrive twice. When snapmgr
itself was told to stop, a failed command is not followed by a restore (the
platform is shutting the process down); the restore command is printed.
Told to stop while its snapshot was being committed, guard keeps the
snapshot and does not start the command (exit 130, saying so).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from snapmgr import signals
from snapmgr.errors import SnapmgrError, UsageError
from snapmgr.restore import RestoreResult
from snapmgr.snapshot import SnapshotResult

log = logging.getLogger("snapmgr")

EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
FORWARDED = (signal.SIGTERM, signal.SIGHUP)


class CommandNotRunnable(SnapmgrError):
    """The guarded command does not exist or cannot be executed (exit 127 / 126)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class GuardResult:
    """What happened: the snapshot, the command's exit code, and any restore."""

    snapshot: SnapshotResult
    exit_code: int
    stopped_by: str | None = None
    restored: RestoreResult | None = None
    restore_error: SnapmgrError | None = None

    @property
    def snapshot_id(self) -> str:
        return self.snapshot.manifest.id


def check_command(command: Sequence[str]) -> str:
    """The executable ``command[0]`` resolves to; ``CommandNotRunnable`` like a shell."""
    if not command:
        raise UsageError("guard needs a command: snapmgr guard -- CMD [ARGS...]")
    name = command[0]
    path = name if os.sep in name else shutil.which(name)
    if path is None or not os.path.exists(path):
        raise CommandNotRunnable(f"{name}: command not found", EXIT_NOT_FOUND)
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise CommandNotRunnable(f"{name}: permission denied (not executable)", EXIT_NOT_EXECUTABLE)
    return path


def run_guard(
    command: Sequence[str],
    take_snapshot: Callable[[], SnapshotResult],
    restore: Callable[[str], RestoreResult],
    *,
    restore_on_failure: bool = False,
) -> GuardResult:
    """Snapshot (a failure raises: the command never runs), run, restore if asked."""
    check_command(command)
    snapshot = take_snapshot()
    snapshot_id = snapshot.manifest.id
    signals.reopen("the command was not run")  # a stop request since the commit is obeyed here
    how = "(reused) covers this run" if snapshot.reused else "committed"
    log.info("snapshot %s %s; running: %s", snapshot_id, how, _shell_words(command))
    exit_code, stopped_by = run_command(command)
    result = GuardResult(snapshot, exit_code, stopped_by)
    if exit_code == 0 or not restore_on_failure or stopped_by is not None:
        signals.commit_passed(f"the command ended (exit {exit_code})")
        return result
    log.warning("command failed (exit %d); restoring %s", exit_code, snapshot_id)
    try:
        return GuardResult(snapshot, exit_code, stopped_by, restored=restore(snapshot_id))
    except SnapmgrError as exc:
        signals.commit_passed(f"the command ended (exit {exit_code}) and its restore failed")
        return GuardResult(snapshot, exit_code, stopped_by, restore_error=exc)


def run_command(command: Sequence[str]) -> tuple[int, str | None]:
    """Run ``command`` with our stdio; its exit code (128+N if signal N ended it) and
    the name of the first signal forwarded to it, if any."""
    received: list[int] = []
    proc: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    sys.stdout.flush()
    sys.stderr.flush()
    with _handlers(forward, received):
        try:
            proc = subprocess.Popen(list(command))
        except FileNotFoundError:
            raise CommandNotRunnable(f"{command[0]}: command not found", EXIT_NOT_FOUND) from None
        except PermissionError:
            raise CommandNotRunnable(
                f"{command[0]}: permission denied", EXIT_NOT_EXECUTABLE
            ) from None
        code = proc.wait()
    stopped_by = signal.Signals(received[0]).name if received else None
    return (128 - code if code < 0 else code), stopped_by


@contextlib.contextmanager
def _handlers(forward: Callable[[int, object], None], received: list[int]) -> Iterator[None]:
    def note(signum: int, _frame: object) -> None:
        received.append(signum)  # at a terminal the command got Ctrl-C itself

    handlers: dict[int, Callable[[int, object], None]] = dict.fromkeys(FORWARDED, forward)
    handlers[signal.SIGINT] = note if sys.stdin.isatty() else forward
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _shell_words(command: Sequence[str]) -> str:
    import shlex

    return shlex.join(command)
