"""Run the snapmgr CLI with ``rekey`` frozen at one step, so a test can SIGKILL it there.

    python -m tests.rekey_pause POINT FLAG -- rekey ARGS...

POINT is where the run stops for good, after touching the file FLAG:

* ``writing``: the new object has received its first bytes;
* ``written``: every new object is committed, before they are re-read and checked;
* ``flipped-one``: the first store's manifest names the new object, the others not yet;
* ``flipped``: every manifest names the new object, before the old objects are deleted.

The freeze wraps snapmgr's own steps (a mock only to force the moment of the fault,
which no real failure can pick); everything else is the real CLI.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from snapmgr import rekey


def _freeze(flag: Path) -> None:
    flag.write_text("frozen\n")
    while True:
        time.sleep(3600)


def _patch(point: str, flag: Path) -> None:
    if point == "writing":
        original_encrypt = rekey.encrypt_stream

        def encrypt(chunks: Any, emit: Callable[[bytes], None], recipients: Any) -> None:
            def first_then_freeze(data: bytes) -> None:
                emit(data)
                _freeze(flag)

            original_encrypt(chunks, first_then_freeze, recipients)

        rekey.encrypt_stream = encrypt  # type: ignore[assignment]
    elif point == "written":
        original_check = rekey._check_new

        def check(*args: Any) -> None:
            _freeze(flag)
            original_check(*args)

        rekey._check_new = check
    elif point == "flipped-one":
        original_flip = rekey._flip

        def flip(*args: Any) -> Any:
            result = original_flip(*args)
            _freeze(flag)
            return result

        rekey._flip = flip
    elif point == "flipped":
        original_drop = rekey._drop

        def drop(*args: Any) -> None:
            _freeze(flag)
            original_drop(*args)

        rekey._drop = drop
    else:
        raise SystemExit(f"unknown point {point!r}")


def main() -> None:
    point, flag, separator, *argv = sys.argv[1:]
    assert separator == "--"
    _patch(point, Path(flag))
    from snapmgr.cli import main as cli_main

    sys.argv = ["snapmgr", *argv]
    cli_main()


if __name__ == "__main__":
    main()
