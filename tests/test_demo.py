"""`snapmgr demo` runs end to end on its own throwaway cluster and cleans up."""

from __future__ import annotations

import glob

import pytest

from tests.conftest import Cli


@pytest.mark.parametrize("builtin", [False, True])
def test_demo_snapshots_breaks_and_restores(cli: Cli, builtin: bool) -> None:
    before = set(glob.glob("/tmp/snapmgr-pg-*")) | set(glob.glob("/tmp/snapmgr-demo-*"))
    args = ["demo", "--builtin-sample"] if builtin else ["demo"]
    result = cli.ok(*args)
    lines = result.stdout.splitlines()
    assert [line.split(".")[0] for line in lines[:7]] == ["1", "2", "3", "4", "5", "6", "7"]
    assert ("built-in sample" in lines[1]) == builtin
    assert "counts match" in lines[6] and "half_migrated is gone" in lines[6]
    assert lines[-1].startswith("done")
    after = set(glob.glob("/tmp/snapmgr-pg-*")) | set(glob.glob("/tmp/snapmgr-demo-*"))
    assert after <= before  # the cluster and the snapshots were removed
