"""`snapmgr demo` runs end to end on its own throwaway cluster and cleans up."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from tests.conftest import Cli


@pytest.mark.parametrize("builtin", [False, True])
def test_demo_snapshots_breaks_and_restores(cli: Cli, builtin: bool) -> None:
    args = ["demo", "--builtin-sample"] if builtin else ["demo"]
    result = cli.ok(*args)
    lines = result.stdout.splitlines()
    assert [line.split(".")[0] for line in lines[:7]] == ["1", "2", "3", "4", "5", "6", "7"]
    assert ("built-in sample" in lines[1]) == builtin
    assert "counts match" in lines[6] and "half_migrated is gone" in lines[6]
    assert lines[-1].startswith("done")
    # What this run created is gone: its snapshot directory and its server.
    store = re.search(r"committed in (\S+)", lines[2])
    port = re.search(r"127\.0\.0\.1:(\d+)", lines[0])
    assert store and port
    assert not Path(store.group(1)).exists()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", int(port.group(1)))) != 0
