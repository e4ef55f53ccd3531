"""``python -m snapmgr`` and the ``snapmgr`` console script.

Ctrl-C and SIGTERM are handled from the first line: before anything else is
imported, a handler notes them; :mod:`snapmgr.signals` (which imports only
light standard modules) then takes them over before the CLI's modules
import, and a command told to stop meanwhile stops with one line and exit
130 before doing anything, instead of a traceback or a death by signal.
"""

import signal
from types import FrameType

_noted: list[int] = []


def _note(signum: int, frame: FrameType | None) -> None:
    _noted.append(signum)


for _signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_signum, _note)

from snapmgr import signals  # noqa: E402 - after the handler, on purpose


def main() -> None:
    """Take over SIGINT/SIGTERM, then import and run the CLI."""
    signals.install(_noted)
    signals.pause_point("starting")
    from snapmgr.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
