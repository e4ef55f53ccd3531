"""Hold off SIGINT/SIGTERM around steps that must not be cut in half.

A commit point (writing manifests and the pointer, settling a restore's
COMMIT or ROLLBACK) takes milliseconds; being interrupted in the middle of it
would leave a state the error message could not describe truthfully. The
signals are ignored for that short window, and the step then finishes.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM inside the block (main thread only; elsewhere a no-op)."""
    held = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in held}
    except ValueError:  # not the main thread: nothing to hold
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
