"""The benchmark script runs end to end on a tiny data set (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pgutil import PAGILA_DIR, Server

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
RATIO_LINES = (
    "ratio: snapmgr snapshot (gzip) / pg_dump > /dev/null = ",
    "ratio: snapmgr snapshot (gzip) / pg_dump | gzip script = ",
    "ratio: snapmgr .sql.gz size / gzip -6 size = ",
    "ratio: snapmgr snapshot peak RSS = ",
    "ratio: peak RSS flatness ",
    "ratio: snapmgr restore / gunzip -c | psql = ",
    "ratio: snapmgr snapshot (gzip, age) / snapmgr snapshot (gzip) = ",
    "ratio: Pagila snapmgr snapshot / pg_dump | gzip && gzip -t = ",
    "ratio: snapmgr --version wall time = ",
)


def run_bench(pg_server: Server, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAPMGR_", "PG"))}
    env["BENCH_DATABASE_URL"] = pg_server.admin_url
    result = subprocess.run(
        [sys.executable, str(BENCH), "--rows", "20000", "--pagila", str(PAGILA_DIR), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def only_line(text: str, prefix: str) -> str:
    matching = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(matching) == 1, f"no single line starting {prefix!r} in:\n{text}"
    return matching[0]


@pytest.mark.slow
def test_quick_benchmark_completes_and_prints_its_ratios(pg_server: Server) -> None:
    out = run_bench(pg_server, "--quick", "--cleanup")
    for prefix in RATIO_LINES:
        assert only_line(out, prefix).endswith(("PASS", "FAIL", "SKIP"))
    assert "SKIP" not in only_line(out, "ratio: Pagila snapmgr snapshot")
    assert "SKIP" not in only_line(out, "ratio: snapmgr --version")
    assert only_line(out, "CPU: ").removeprefix("CPU: ").strip()
    header = only_line(out, "variant ")
    assert "CPU user" in header and "CPU sys" in header
    for title in ("pg_dump > /dev/null", "snapmgr snapshot (zstd)", "Pagila: snapmgr snapshot"):
        assert title in out
    # The floor: ISA-L's own command line, no checks (.ci/install installs igzip).
    floor = only_line(out, "info: pg_dump | igzip -2 (floor) / pg_dump > /dev/null = ")
    assert "snapmgr snapshot (gzip) / floor = " in floor


@pytest.mark.slow
def test_pairs_alternate_snapmgr_with_its_baseline(pg_server: Server, tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    only = "startup,pg_dump,floor,snap_gzip,pagila_script,pagila_snap"
    out = run_bench(pg_server, "--pairs", "2", "--only", only, "--json", str(report), "--cleanup")
    lines = out.splitlines()
    first = next(n for n, line in enumerate(lines) if line.startswith("pair 1/2"))
    second = next(n for n, line in enumerate(lines) if line.startswith("pair 2/2"))
    results = next(n for n, line in enumerate(lines) if line.startswith("results: "))

    def order(start: int, end: int) -> list[str]:
        titles = ("pg_dump > /dev/null", "snapmgr snapshot (gzip)")
        return [t for line in lines[start:end] for t in titles if line.strip().startswith(t)]

    # The order flips from one pair to the next, so neither side always runs first.
    assert order(first, second) == ["pg_dump > /dev/null", "snapmgr snapshot (gzip)"]
    assert order(second, results) == ["snapmgr snapshot (gzip)", "pg_dump > /dev/null"]
    assert " over 2; CPU " in only_line(out, "pairs: snapmgr snapshot (gzip) / pg_dump > /dev/null")
    assert " over 2; CPU " in only_line(out, "pairs: Pagila: snapmgr snapshot (gzip) / ")
    assert " over 2; CPU " in only_line(out, "pairs: snapmgr snapshot (gzip) / pg_dump | igzip")

    data = json.loads(report.read_text())
    assert data["pairs"] == 2 and data["cpu"]
    for key in ("startup", "pg_dump", "floor", "snap_gzip", "pagila_script", "pagila_snap"):
        variant = data["variants"][key]
        assert len(variant["seconds"]) == 2, key
        assert len(variant["user_s"]) == 2 and all(u >= 0 for u in variant["user_s"]), key
    assert data["variants"]["snap_restore"]["seconds"] == []  # not asked for
