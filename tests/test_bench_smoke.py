"""The benchmark script runs end to end on a tiny data set (no timing assertions)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pgutil import Server

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
RATIO_LINES = (
    "ratio: snapmgr snapshot (gzip) / pg_dump > /dev/null = ",
    "ratio: snapmgr snapshot (gzip) / pg_dump | gzip script = ",
    "ratio: snapmgr .sql.gz size / gzip -6 size = ",
    "ratio: snapmgr snapshot peak RSS = ",
    "ratio: peak RSS flatness ",
    "ratio: snapmgr restore / gunzip -c | psql = ",
    "ratio: snapmgr snapshot (gzip, age) / snapmgr snapshot (gzip) = ",
)


@pytest.mark.slow
def test_quick_benchmark_completes_and_prints_its_ratios(pg_server: Server) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAPMGR_", "PG"))}
    env["BENCH_DATABASE_URL"] = pg_server.admin_url
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--rows", "20000", "--cleanup"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"
    lines = result.stdout.splitlines()
    for prefix in RATIO_LINES:
        matching = [line for line in lines if line.startswith(prefix)]
        assert len(matching) == 1, f"no line starting {prefix!r} in:\n{result.stdout}"
        assert matching[0].endswith(("PASS", "FAIL", "SKIP")), matching[0]
    assert "pg_dump > /dev/null" in result.stdout
    assert "snapmgr snapshot (zstd)" in result.stdout
