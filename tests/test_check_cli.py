"""End-to-end: `snapmgr check` as a monitoring probe, and its Prometheus textfile."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.metrics_text import parse_metrics
from tests.pgutil import Server
from tests.snapshot_history import Template, plant, take_template

HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def template(pg_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Template:
    dbname = f"check_tpl_{os.getpid()}"
    pg_server.create_db(dbname)
    try:
        return take_template(Cli(tmp_path_factory.mktemp("template")), pg_server, dbname)
    finally:
        pg_server.drop_db(dbname)


def ago(hours: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - hours * HOUR


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_a_snapshot_just_taken_is_healthy(cli: Cli, template: Template) -> None:
    # The template is a real snapshot taken by `snapmgr snapshot` in this module.
    result = cli.ok("check", "--max-age", "26h", "--store", str(template.store))
    snapshot_id = template.manifest["id"]
    line = one_line(result.stdout)
    assert line.startswith(f"ok: newest snapshot {snapshot_id} is ")
    assert line.endswith(" old (max 26h), 1 snapshot")


def test_a_stale_snapshot_exits_1_saying_how_old(cli: Cli, template: Template) -> None:
    plant(cli.store, template, ago(50))
    stale = plant(cli.store, template, ago(30))
    result = cli("check", "--max-age", "26h")
    assert result.returncode == 1, result.stderr
    assert one_line(result.stdout) == (
        f"unhealthy: newest snapshot {stale} is 1d6h old, older than --max-age 26h"
    )
    assert cli("check", "--max-age", "31h").returncode == 0


def test_no_committed_snapshot_exits_1(cli: Cli, template: Template) -> None:
    plant(cli.store, template, ago(1), manifest=False)  # a dump alone does not count
    result = cli("check", "--max-age", "26h")
    assert result.returncode == 1, result.stderr
    line = one_line(result.stdout)
    assert line.startswith("unhealthy: no committed snapshot in ") and str(cli.store) in line


def test_min_count_and_label(cli: Cli, template: Template) -> None:
    plant(cli.store, template, ago(1))
    plant(cli.store, template, ago(2))
    plant(cli.store, template, ago(40), label="weekly")
    assert cli("check", "--max-age", "26h", "--min-count", "3").returncode == 0
    result = cli("check", "--max-age", "26h", "--min-count", "3", "--label", "nightly")
    assert result.returncode == 1
    assert one_line(result.stdout) == (
        "unhealthy: only 2 snapshots with label nightly, fewer than --min-count 3"
    )
    result = cli("check", "--max-age", "26h", "--min-count", "2", "--label", "weekly")
    assert result.returncode == 1
    assert "older than --max-age 26h; only 1 snapshot with label weekly" in result.stdout


def test_json(cli: Cli, template: Template) -> None:
    newest = plant(cli.store, template, ago(3))
    plant(cli.store, template, ago(27))
    result = cli.ok("check", "--max-age", "1d", "--json")
    report = json.loads(result.stdout)
    assert report["healthy"] is True and report["problems"] == []
    assert report["count"] == 2 and report["max_age"] == "1d" and report["min_count"] == 1
    assert report["newest"]["id"] == newest
    assert report["newest"]["size"] == len(template.dump)
    assert 3 * 3600 <= report["newest"]["age_seconds"] < 3 * 3600 + 60

    result = cli("check", "--max-age", "2h", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["problems"] == [
        f"newest snapshot {newest} is 3h old, older than --max-age 2h"
    ]


def test_metrics_file(cli: Cli, template: Template, tmp_path: Path) -> None:
    newest = ago(2)
    plant(cli.store, template, newest)
    plant(cli.store, template, ago(30))
    metrics = tmp_path / "textfile" / "snapmgr.prom"
    metrics.parent.mkdir()

    cli.ok("check", "--max-age", "26h", "--metrics-file", str(metrics))
    values = parse_metrics(metrics.read_text())
    label = '{stores="local"}'
    assert values[f"snapmgr_check_healthy{label}"] == 1
    assert values[f"snapmgr_snapshots{label}"] == 2
    assert values[f"snapmgr_newest_snapshot_size_bytes{label}"] == len(template.dump)
    assert values[f"snapmgr_newest_snapshot_timestamp_seconds{label}"] == newest.timestamp()
    assert 7200 <= values[f"snapmgr_newest_snapshot_age_seconds{label}"] < 7260
    assert oct(metrics.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in metrics.parent.iterdir()] == ["snapmgr.prom"]

    assert cli("check", "--max-age", "1h", "--metrics-file", str(metrics)).returncode == 1
    assert parse_metrics(metrics.read_text())[f"snapmgr_check_healthy{label}"] == 0

    broken = tmp_path / "not-a-directory"
    broken.write_text("x")
    result = cli("check", "--max-age", "1h", "--store", str(broken), "--metrics-file",
                 str(metrics))  # fmt: skip
    assert result.returncode == 5, result.stderr
    assert str(broken) in result.stderr
    values = parse_metrics(metrics.read_text())
    assert values == {
        f'snapmgr_check_healthy{{stores="{broken}"}}': 0,
        f'snapmgr_check_timestamp_seconds{{stores="{broken}"}}': pytest.approx(
            datetime.now(UTC).timestamp(), abs=60
        ),
    }


@pytest.mark.parametrize(
    "args",
    [("--max-age", "26"), ("--max-age", "1m30s"), ("--max-age", "1h", "--min-count", "-1"), ()],
)
def test_usage_errors_exit_2(cli: Cli, args: tuple[str, ...]) -> None:
    result = cli("check", *args)
    assert result.returncode == 2, result.stderr
    assert ("--max-age" in result.stderr) or ("--min-count" in result.stderr)
