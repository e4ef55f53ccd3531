"""``python -m snapmgr`` and the ``snapmgr`` console script.

Ctrl-C and SIGTERM are handled from the first line: :mod:`snapmgr.signals`
(which imports only the standard library's lightest modules) takes them over
before the CLI's modules import, notes one that arrives meanwhile, and the
command then stops with one line and exit 130 before doing anything, instead
of a traceback or a death by signal.
"""

from snapmgr import signals


def main() -> None:
    """Take over SIGINT/SIGTERM, then import and run the CLI."""
    signals.install()
    signals.pause_point("starting")
    from snapmgr.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
