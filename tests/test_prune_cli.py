"""End-to-end: prune, delete, pin and unpin through the real CLI on real stored snapshots.

Histories are copies of one real snapshot with chosen dates (see
tests/snapshot_history.py), so every kept snapshot still verifies.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import Cli
from tests.metrics_text import parse_metrics
from tests.pgutil import Server
from tests.s3_server import FaultProxy, aws_env, bucket_keys, moto_server, new_bucket, s3_client
from tests.snapshot_history import (
    Template,
    at,
    names,
    plant,
    plant_s3,
    set_mtime,
    state,
    take_template,
)

__all__ = ["moto_server"]  # a fixture, used by name

DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def template(pg_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Template:
    dbname = f"prune_tpl_{os.getpid()}"
    pg_server.create_db(dbname)
    try:
        return take_template(Cli(tmp_path_factory.mktemp("template")), pg_server, dbname)
    finally:
        pg_server.drop_db(dbname)


def daily(store: Path, template: Template, last: str, days: int, **kw: Any) -> list[str]:
    """One snapshot a day at the time of ``last`` for ``days`` days; IDs newest first."""
    newest = at(last)
    return [plant(store, template, newest - n * DAY, **kw) for n in range(days)]


@dataclass(frozen=True)
class Where:
    """A store directory reached through the local backend or fsspec's file filesystem."""

    path: Path
    backend: str

    @property
    def args(self) -> tuple[str, str]:
        spec = str(self.path) if self.backend == "local" else f"fsspec+file://{self.path}"
        return ("--store", spec)

    def location(self, name: str) -> str:
        return str(self.path / name) if self.backend == "local" else f"file://{self.path / name}"


@pytest.fixture(params=["local", "fsspec"])
def where(request: pytest.FixtureRequest, cli: Cli) -> Where:
    return Where(cli.store, request.param)


def run_json(cli: Cli, *args: str, env: dict[str, str] | None = None) -> Any:
    return json.loads(cli.ok(*args, "--json", env=env).stdout)


def kept(report: dict[str, Any]) -> dict[str, list[str]]:
    return {item["id"]: item["reasons"] for item in report["keep"]}


def removed(report: dict[str, Any]) -> set[str]:
    return {item["id"] for item in report["remove"]}


def committed_ids(store: Path) -> set[str]:
    return {name.removesuffix(".json") for name in names(store) if name.endswith(".json")}


def assert_consistent(cli: Cli, store: Path, suffix: str, *args: str) -> None:
    """Every manifest has its dump, and `list` shows exactly the committed snapshots."""
    for snapshot_id in committed_ids(store):
        assert (store / f"{snapshot_id}{suffix}").exists(), snapshot_id
    listed = run_json(cli, "list", *(args or ("--store", str(store))))
    assert {item["id"] for item in listed} == committed_ids(store)


def test_keeps_exactly_what_restic_keeps_and_says_why(
    cli: Cli, template: Template, where: Where
) -> None:
    ids = daily(cli.store, template, "2025-09-30 02:00", 122)  # 2025-06-01 .. 2025-09-30
    report = run_json(cli, "prune", *where.args, "--keep-daily", "7", "--keep-weekly", "4",
                      "--keep-monthly", "6")  # fmt: skip

    # Worked out by hand: 7 days; the newest of ISO weeks 40, 39, 38, 37 (2025-09-30 is a
    # Tuesday); the newest of Sep, Aug, Jul, Jun, and with monthly not used up (4 of 6
    # months), the oldest snapshot.
    expected = {
        "2025-09-30": ["daily", "weekly", "monthly", "newest"],
        "2025-09-29": ["daily"], "2025-09-27": ["daily"], "2025-09-26": ["daily"],
        "2025-09-25": ["daily"], "2025-09-24": ["daily"],
        "2025-09-28": ["daily", "weekly"],
        "2025-09-21": ["weekly"], "2025-09-14": ["weekly"],
        "2025-08-31": ["monthly"], "2025-07-31": ["monthly"], "2025-06-30": ["monthly"],
        "2025-06-01": ["oldest monthly"],
    }  # fmt: skip
    expected_ids = {f"nightly_{day.replace('-', '')}_020000": r for day, r in expected.items()}
    assert kept(report) == expected_ids
    assert removed(report) == set(ids) - set(expected_ids)
    assert report["dry_run"] is False
    assert all(item["removed"] for item in report["remove"])
    assert report["policy"]["source"] == "--keep-* flags"
    assert committed_ids(cli.store) == set(expected_ids)
    assert len(names(cli.store)) == 2 * len(expected_ids)
    assert_consistent(cli, cli.store, template.suffix, *where.args)
    cli.ok("verify", "--all", *where.args)


def test_human_output_explains_every_decision(cli: Cli, template: Template) -> None:
    newest, middle, oldest = daily(cli.store, template, "2025-09-30 02:00", 3)
    out = cli.ok("prune", "--keep-last", "2").stdout.splitlines()
    assert out[0].startswith("policy (--keep-* flags): keep 2 latest snapshots")
    assert f"keep        {newest}  2025-09-30 02:00:00 UTC  last, newest" in out
    assert f"keep        {middle}  2025-09-29 02:00:00 UTC  last" in out
    assert f"remove      {oldest}  2025-09-28 02:00:00 UTC" in out
    assert out[-1] == "kept 2, removed 1 snapshot(s) and 0 orphan(s)"


def test_dry_run_changes_nothing(cli: Cli, template: Template) -> None:
    where = Where(cli.store, "local")
    ids = daily(cli.store, template, "2025-09-30 02:00", 10)
    orphan = plant(cli.store, template, datetime.now(UTC) - 3 * DAY, manifest=False)
    before = state(cli.store)

    human = cli.ok("prune", *where.args, "--dry-run", "--keep-last", "3").stdout
    report = run_json(cli, "prune", *where.args, "--dry-run", "--keep-last", "3")

    assert state(cli.store) == before
    assert report["dry_run"] is True
    assert removed(report) == set(ids[3:])
    assert not any(item["removed"] for item in report["remove"])
    assert [(o["name"], o["remove"], o["removed"]) for o in report["orphans"]] == [
        (f"{orphan}{template.suffix}", True, False)
    ]
    assert f"would remove {ids[3]}" in human
    assert f"would remove orphan {where.location(orphan + template.suffix)} (age 3d)" in human
    assert "nothing was deleted" in human.splitlines()[-1]


def test_pinned_snapshots_survive_until_unpinned(cli: Cli, template: Template) -> None:
    ids = daily(cli.store, template, "2025-09-30 02:00", 4)
    assert cli.ok("pin", ids[2]).stdout == f"pinned {ids[2]}\n"
    assert json.loads((cli.store / f"{ids[2]}.json").read_text())["pinned"] is True

    report = run_json(cli, "prune", "--keep-last", "1")
    assert kept(report) == {ids[0]: ["last", "newest"], ids[2]: ["pinned"]}
    assert committed_ids(cli.store) == {ids[0], ids[2]}
    result = cli("delete", ids[2], "--yes")
    assert result.returncode == 9 and "unpin" in result.stderr

    assert run_json(cli, "unpin", ids[2]) == {"id": ids[2], "pinned": False, "stores": ["local"]}
    report = run_json(cli, "prune", "--keep-last", "1")
    assert removed(report) == {ids[2]}
    assert committed_ids(cli.store) == {ids[0]}


def test_newest_of_each_label_is_always_kept_and_label_limits_prune(
    cli: Cli, template: Template
) -> None:
    nightly = daily(cli.store, template, "2025-09-30 02:00", 3)
    hourly = daily(cli.store, template, "2025-09-30 05:00", 3, label="hourly")

    report = run_json(cli, "prune", "--label", "hourly", "--keep-within", "1h")
    assert kept(report) == {hourly[0]: ["within 1h", "newest"]}
    assert committed_ids(cli.store) == {hourly[0], *nightly}

    report = run_json(cli, "prune", "--keep-within", "1h")
    assert set(kept(report)) == {hourly[0], nightly[0]}
    assert committed_ids(cli.store) == {hourly[0], nightly[0]}


def test_empty_policy_is_refused_and_touches_nothing(
    cli: Cli, template: Template, tmp_path: Path
) -> None:
    daily(cli.store, template, "2025-09-30 02:00", 3)
    plant(cli.store, template, datetime.now(UTC) - 3 * DAY, manifest=False)
    config = tmp_path / "snapmgr.toml"
    config.write_text("[retention]\nkeep_daily = 0\n")
    before = state(cli.store)
    for args in ((), ("--keep-daily", "0"), ("--config", str(config))):
        result = cli("prune", *args)
        assert result.returncode == 9, result.stderr
        assert "empty" in result.stderr and "--keep-daily 7" in result.stderr
        assert len(result.stderr.splitlines()) == 1
    assert state(cli.store) == before


def test_flags_replace_the_configured_policy_as_a_whole(
    cli: Cli, template: Template, tmp_path: Path
) -> None:
    ids = daily(cli.store, template, "2025-09-30 02:00", 5)
    config = tmp_path / "snapmgr.toml"
    config.write_text("[retention]\nkeep_last = 3\n")

    from_file = run_json(cli, "prune", "--dry-run", "--config", str(config))
    assert set(kept(from_file)) == set(ids[:3])
    assert from_file["policy"]["source"] == f"file {config}"
    from_env = run_json(cli, "prune", "--dry-run", "--config", str(config),
                        env={"SNAPMGR_KEEP_LAST": "2"})  # fmt: skip
    assert set(kept(from_env)) == set(ids[:2])
    from_flags = run_json(cli, "prune", "--dry-run", "--config", str(config),
                          "--keep-daily", "1", env={"SNAPMGR_KEEP_LAST": "2"})  # fmt: skip
    assert kept(from_flags) == {ids[0]: ["daily", "newest"]}
    assert from_flags["policy"]["keep_last"] is None
    unlimited = run_json(cli, "prune", "--dry-run", "--keep-daily", "-1")
    assert set(kept(unlimited)) == set(ids)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--keep-within", "7x"), "--keep-within"),
        (("--keep-within", "1m30s"), "--keep-within"),
        (("--keep-daily", "-2"), "--keep-daily"),
        (("--label", "../x", "--keep-last", "1"), "label"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(cli: Cli, args: tuple[str, ...], named: str) -> None:
    result = cli("prune", *args)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_timezone_moves_the_day_buckets(cli: Cli, template: Template) -> None:
    # 23:30 and 00:30 UTC are different UTC days but the same day in Tokyo (+9).
    c = plant(cli.store, template, at("2025-01-03 12:00"))
    b = plant(cli.store, template, at("2025-01-02 00:30"))
    a = plant(cli.store, template, at("2025-01-01 23:30"))
    d = plant(cli.store, template, at("2024-12-20 12:00"))
    utc = run_json(cli, "prune", "--dry-run", "--keep-daily", "3")
    assert set(kept(utc)) == {c, b, a}
    tokyo = run_json(cli, "prune", "--dry-run", "--keep-daily", "3",
                     env={"SNAPMGR_TIMEZONE": "Asia/Tokyo"})  # fmt: skip
    assert set(kept(tokyo)) == {c, b, d}
    human = cli.ok("prune", "--dry-run", "--keep-daily", "3",
                   env={"SNAPMGR_TIMEZONE": "Asia/Tokyo"}).stdout  # fmt: skip
    assert f"{b}  2025-01-02 09:30:00 JST  daily" in human


def test_old_orphans_are_removed_and_young_ones_kept(
    cli: Cli, template: Template, where: Where
) -> None:
    ids = daily(cli.store, template, "2025-09-30 02:00", 2)
    now = datetime.now(UTC)
    old = plant(cli.store, template, now - 3 * DAY, label="crashed", manifest=False)
    young = plant(cli.store, template, now - timedelta(hours=2), label="running", manifest=False)
    old_temp = cli.store / f".{ids[0]}.json.1a2b3c4d.partial"
    young_temp = cli.store / f".{young}{template.suffix}.5e6f7a8b.partial"
    for path, when in ((old_temp, now - 2 * DAY), (young_temp, now - timedelta(minutes=5))):
        path.write_bytes(b"partial")
        set_mtime(path, when)

    out = cli.ok("prune", *where.args, "--keep-last", "5").stdout
    old_dump = cli.store / f"{old}{template.suffix}"
    young_dump = cli.store / f"{young}{template.suffix}"
    assert f"remove orphan {where.location(old_dump.name)} (age 3d)" in out
    assert f"remove orphan {where.location(old_temp.name)} (age 2d)" in out
    assert f"keep orphan {where.location(young_dump.name)} (age 2h < orphan_grace 24h)" in out
    # Seconds pass between planting and pruning (a loaded machine: more than one).
    young_line = f"keep orphan {where.location(young_temp.name)} (age 5min"
    assert re.search(re.escape(young_line) + r"(\d+s)? < orphan_grace 24h\)", out), out
    assert "kept 2, removed 0 snapshot(s) and 2 orphan(s), 2 younger orphan(s) left alone" in out
    assert not old_dump.exists() and not old_temp.exists()
    assert young_dump.exists() and young_temp.exists()
    assert committed_ids(cli.store) == set(ids)

    report = run_json(
        cli, "prune", *where.args, "--keep-last", "5", env={"SNAPMGR_ORPHAN_GRACE": "1h"}
    )
    assert {o["name"]: o["removed"] for o in report["orphans"]} == {
        young_dump.name: True,
        young_temp.name: False,
    }


def test_interrupted_prune_leaves_a_consistent_store(
    cli: Cli, template: Template, where: Where
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    ids = [plant(cli.store, template, now - n * timedelta(hours=6)) for n in range(2)]
    ids += daily(cli.store, template, "2025-09-30 02:00", 3)
    # A prune killed between its two steps: the manifests of the snapshots it
    # removed are gone, their dumps are not. One of them is recent (6h old).
    for snapshot_id in ids[1:4]:
        (cli.store / f"{snapshot_id}.json").unlink()

    assert_consistent(cli, cli.store, template.suffix, *where.args)
    assert {item["id"] for item in run_json(cli, "list", *where.args)} == {ids[0], ids[4]}
    cli.ok("verify", "--all", *where.args)

    report = run_json(cli, "prune", *where.args, "--keep-last", "2")
    assert set(kept(report)) == {ids[0], ids[4]}
    leftovers = {o["name"]: o["removed"] for o in report["orphans"]}
    assert leftovers == {
        f"{ids[1]}{template.suffix}": False,  # 6h old: could be a snapshot in progress
        f"{ids[2]}{template.suffix}": True,
        f"{ids[3]}{template.suffix}": True,
    }
    assert_consistent(cli, cli.store, template.suffix, *where.args)

    run_json(cli, "prune", *where.args, "--keep-last", "2", env={"SNAPMGR_ORPHAN_GRACE": "1h"})
    assert names(cli.store) == {f"{i}{suffix}" for i in (ids[0], ids[4])
                                for suffix in (".json", template.suffix)}  # fmt: skip


def copy_store(source: Path, target: Path, ids: list[str], suffix: str) -> None:
    target.mkdir(mode=0o700, exist_ok=True)
    for snapshot_id in ids:
        for name in (f"{snapshot_id}.json", f"{snapshot_id}{suffix}"):
            (target / name).write_bytes((source / name).read_bytes())
            mtime = (source / name).stat().st_mtime
            os.utime(target / name, (mtime, mtime))


def test_multi_store_prune_removes_from_every_store(
    cli: Cli, template: Template, tmp_path: Path
) -> None:
    ids = daily(cli.store, template, "2025-09-30 02:00", 5)
    other = tmp_path / "other"
    copy_store(cli.store, other, ids[1:], template.suffix)  # ids[0] only in the first store
    stores = ("--store", str(cli.store), "--store", str(other))

    report = run_json(cli, "prune", *stores, "--keep-last", "2")
    assert set(kept(report)) == set(ids[:2])
    assert {item["id"]: item["stores"] for item in report["keep"]} == {
        ids[0]: [str(cli.store)],
        ids[1]: [str(cli.store), str(other)],
    }
    assert {item["id"]: item["stores"] for item in report["remove"]} == {
        i: [str(cli.store), str(other)] for i in ids[2:]
    }
    assert committed_ids(cli.store) == set(ids[:2])
    assert committed_ids(other) == {ids[1]}
    assert_consistent(cli, other, template.suffix)


def test_unreadable_store_exits_5_naming_it_after_pruning_the_others(
    cli: Cli, template: Template, tmp_path: Path
) -> None:
    ids = daily(cli.store, template, "2025-09-30 02:00", 4)
    broken = tmp_path / "not-a-directory"
    broken.write_text("x")
    result = cli("prune", "--store", str(cli.store), "--store", str(broken), "--keep-last", "1")
    assert result.returncode == 5, result.stderr
    assert str(broken) in result.stderr and len(result.stderr.splitlines()) == 1
    assert f"remove      {ids[1]}" in result.stdout
    assert committed_ids(cli.store) == {ids[0]}


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Files made undeletable with chattr +i: a real storage fault, undone afterwards."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def make_immutable(paths: list[Path], path: Path) -> None:
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"chattr +i not possible here: {done.stderr.decode().strip()}")
    paths.append(path)


def test_delete_failure_in_one_store_keeps_it_consistent(
    cli: Cli, template: Template, tmp_path: Path, immutable: list[Path]
) -> None:
    ids = daily(cli.store, template, "2025-09-30 02:00", 4)
    other = tmp_path / "other"
    copy_store(cli.store, other, ids, template.suffix)
    make_immutable(immutable, other / f"{ids[3]}.json")
    stores = ("--store", str(cli.store), "--store", str(other))

    result = cli("prune", *stores, "--keep-last", "1", "--json")
    assert result.returncode == 5, result.stderr
    assert str(other) in result.stderr and "re-run prune" in result.stderr
    report = json.loads(result.stdout)
    assert [f["store"] for f in report["failed_stores"]] == [str(other)]
    assert {item["id"]: item["removed"] for item in report["remove"]} == {
        ids[1]: False, ids[2]: False, ids[3]: False,
    }  # fmt: skip
    assert committed_ids(cli.store) == {ids[0]}
    assert ids[3] in committed_ids(other)
    assert_consistent(cli, other, template.suffix)

    subprocess.run(["chattr", "-i", str(other / f"{ids[3]}.json")], check=True)
    run_json(cli, "prune", *stores, "--keep-last", "1")
    assert committed_ids(other) == {ids[0]}
    assert names(other) == {f"{ids[0]}.json", f"{ids[0]}{template.suffix}"}


def test_delete_needs_yes_and_removes_from_every_store(
    cli: Cli, template: Template, tmp_path: Path
) -> None:
    ids = daily(cli.store, template, "2025-09-30 02:00", 3)
    other = tmp_path / "other"
    copy_store(cli.store, other, ids, template.suffix)
    stores = ("--store", str(cli.store), "--store", str(other))
    before = state(cli.store), state(other)

    refused = cli("delete", ids[1], *stores)
    assert refused.returncode == 9 and "--yes" in refused.stderr
    assert cli("delete", ids[1], *stores, env={"CONFIRM_RESTORE": "yes"}).returncode == 9
    assert cli("delete", "latest", "--yes", *stores).returncode == 2
    assert cli("delete", "../x", "--yes", *stores).returncode == 2
    assert cli("delete", "nightly_20200101_000000", "--yes", *stores).returncode == 7
    assert (state(cli.store), state(other)) == before

    out = cli.ok("delete", ids[1], "--yes", *stores).stdout
    assert out == f"deleted {ids[1]} from {cli.store}, {other}\n"
    for store in (cli.store, other):
        assert committed_ids(store) == {ids[0], ids[2]}
        assert names(store) == {
            f"{i}{s}" for i in (ids[0], ids[2]) for s in (".json", template.suffix)
        }
    assert run_json(cli, "delete", ids[2], "--yes", *stores) == {
        "id": ids[2], "deleted": True, "stores": [str(cli.store), str(other)], "failed_stores": [],
    }  # fmt: skip

    # A store that cannot be checked may hold a copy: exit 5 naming it, the rest is done.
    broken = tmp_path / "not-a-directory"
    broken.write_text("x")
    result = cli("delete", ids[0], "--yes", *stores, "--store", str(broken), "--json")
    assert result.returncode == 5, result.stderr
    assert str(broken) in result.stderr and len(result.stderr.splitlines()) == 1
    report = json.loads(result.stdout)
    assert report["deleted"] is False
    assert report["stores"] == [str(cli.store), str(other)]
    assert [f["store"] for f in report["failed_stores"]] == [str(broken)]
    assert names(cli.store) == names(other) == set()


def test_pin_latest_and_json(cli: Cli, template: Template) -> None:
    ids = daily(cli.store, template, "2025-09-30 02:00", 2)
    assert run_json(cli, "pin", "latest") == {"id": ids[0], "pinned": True, "stores": ["local"]}
    assert cli.ok("unpin", ids[0]).stdout == f"unpinned {ids[0]}\n"
    assert cli("pin", "nightly_20200101_000000").returncode == 7


def test_prune_metrics_file(cli: Cli, template: Template, tmp_path: Path) -> None:
    daily(cli.store, template, "2025-09-30 02:00", 4)
    plant(cli.store, template, datetime.now(UTC) - 3 * DAY, manifest=False)
    metrics = tmp_path / "textfile" / "snapmgr_prune.prom"
    metrics.parent.mkdir()

    cli.ok("prune", "--dry-run", "--keep-last", "1", "--metrics-file", str(metrics))
    assert not metrics.exists()
    cli.ok("prune", "--keep-last", "1", "--metrics-file", str(metrics))
    values = parse_metrics(metrics.read_text())
    label = '{stores="local"}'
    assert values[f"snapmgr_last_prune_success{label}"] == 1
    assert values[f"snapmgr_last_prune_kept_snapshots{label}"] == 1
    assert values[f"snapmgr_last_prune_removed_snapshots{label}"] == 3
    assert values[f"snapmgr_last_prune_removed_orphans{label}"] == 1
    ran_at = values[f"snapmgr_last_prune_timestamp_seconds{label}"]
    assert abs(ran_at - datetime.now(UTC).timestamp()) < 60
    assert oct(metrics.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in metrics.parent.iterdir()) == ["snapmgr_prune.prom"]

    assert cli("prune", "--metrics-file", str(metrics)).returncode == 9
    assert parse_metrics(metrics.read_text())[f"snapmgr_last_prune_success{label}"] == 0


class RequestLog(FaultProxy):
    """A proxy in front of the moto server that forwards everything and records
    each request's method and path."""

    def __init__(self, target: str) -> None:
        super().__init__(target, fail_from_part=1 << 30)
        self.requests: list[tuple[str, str]] = []

    def _should_cut(self, method: str, path: str) -> int | None:
        self.requests.append((method, path))
        return None

    def delete_calls(self) -> int:
        return sum(
            method == "POST" and "delete" in parse_qs(urlsplit(path).query, keep_blank_values=True)
            for method, path in self.requests
        )


def test_prune_on_s3_batches_deletes_and_keeps_the_store_consistent(
    cli: Cli, template: Template, moto_server: str
) -> None:
    client = s3_client(moto_server)
    bucket = new_bucket(client)
    newest = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    ids = [plant_s3(client, bucket, "db", template, newest - n * DAY) for n in range(6)]
    crashed = plant_s3(client, bucket, "db", template, newest, label="crashed", manifest=False)
    uploaded = time.monotonic()
    store = ("--store", f"s3://{bucket}/db")

    def keys() -> set[str]:
        return {key.removeprefix("db/") for key in bucket_keys(client, bucket)}

    def objects(*snapshot_ids: str) -> set[str]:
        return {f"{i}{s}" for i in snapshot_ids for s in (".json", template.suffix)}

    with RequestLog(moto_server) as proxy:
        env = aws_env(proxy.url)
        before = keys()
        dry = run_json(cli, "prune", *store, "--dry-run", "--keep-last", "2", env=env)
        assert removed(dry) == set(ids[2:]) and keys() == before
        cli.ok("pin", ids[4], *store, env=env)

        proxy.requests.clear()
        report = run_json(cli, "prune", *store, "--keep-last", "2", env=env)
        assert kept(report) == {ids[0]: ["last", "newest"], ids[1]: ["last"], ids[4]: ["pinned"]}
        # Four snapshots removed: one batched call for their manifests, one for the dumps.
        assert proxy.delete_calls() == 2
        assert [(o["name"], o["remove"]) for o in report["orphans"]] == [
            (f"{crashed}{template.suffix}", False)  # uploaded seconds ago: maybe in progress
        ]
        assert keys() == objects(ids[0], ids[1], ids[4]) | {f"{crashed}{template.suffix}"}

        # A prune killed between its two steps left a dump without its manifest.
        client.delete_object(Bucket=bucket, Key=f"db/{ids[1]}.json")
        listed = run_json(cli, "list", *store, env=env)
        assert {item["id"] for item in listed} == {ids[0], ids[4]}
        time.sleep(max(0.0, 1.1 - (time.monotonic() - uploaded)))  # beyond a 1s grace
        report = run_json(cli, "prune", *store, "--keep-last", "2",
                          env={**env, "SNAPMGR_ORPHAN_GRACE": "1s"})  # fmt: skip
        assert {o["name"] for o in report["orphans"] if o["removed"]} == {
            f"{ids[1]}{template.suffix}",
            f"{crashed}{template.suffix}",
        }
        assert keys() == objects(ids[0], ids[4])
        cli.ok("verify", "--all", *store, env=env)
        assert cli("check", "--max-age", "2h", "--min-count", "2", *store, env=env).returncode == 0
