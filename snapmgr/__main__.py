"""``python -m snapmgr``: the same as the ``snapmgr`` console script."""

from snapmgr.cli import main

main()
