"""Each fact has one definition, and everything that spells it out agrees with it.

The retention rules are :class:`snapmgr.retention.Policy`'s fields; the
``[retention]`` keys, their variables, ``prune``'s ``--keep-*`` flags and
``prune --json`` follow from them. The stored formats (names, suffixes,
levels) are :mod:`snapmgr.formats`. The expected values here are written out
by hand, so a change to the definition shows up as a failing test.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import typer

from snapmgr.cli.app import app
from snapmgr.config import KEYS, Config, Settings, load_config
from snapmgr.durations import parse_duration
from snapmgr.errors import ConfigError
from snapmgr.formats import COMPRESSIONS, check_level
from snapmgr.manifest import dump_name, split_object_name
from snapmgr.retention import POLICY_KEYS, Policy
from tests.conftest import Cli

RULES = (
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "keep_within",
)


def prune_options() -> dict[str, Any]:
    """``prune``'s options by their first name, as the CLI parses them."""
    group: Any = typer.main.get_command(app)
    return {
        param.opts[0]: param
        for param in group.commands["prune"].params
        if param.param_type_name == "option"
    }


def test_the_policy_fields_are_the_rules() -> None:
    assert POLICY_KEYS == RULES
    assert [f.name for f in fields(Policy)] == list(RULES)


def test_retention_keys_are_exactly_the_policy_rules() -> None:
    assert sorted(name for name, key in KEYS.items() if key.table == "retention") == sorted(RULES)


def test_prune_has_one_flag_per_rule_with_the_policy_help() -> None:
    options = {name: opt for name, opt in prune_options().items() if name.startswith("--keep")}
    assert sorted(options) == sorted(
        [
            "--keep-last",
            "--keep-hourly",
            "--keep-daily",
            "--keep-weekly",
            "--keep-monthly",
            "--keep-yearly",
            "--keep-within",
        ]
    )
    assert options["--keep-daily"].help == (
        "Keep the newest snapshot of each of the last N days (-1: all)."
    )
    assert options["--keep-last"].help == "Keep the N newest snapshots."
    assert options["--keep-within"].metavar == "DUR"


def test_every_rule_reaches_the_policy_from_the_file_and_the_environment(tmp_path: Path) -> None:
    config_file = tmp_path / "snapmgr.toml"
    config_file.write_text(
        "[retention]\nkeep_last = 1\nkeep_hourly = 2\nkeep_daily = 3\nkeep_weekly = 4\n"
        'keep_monthly = 5\nkeep_yearly = -1\nkeep_within = "1y6m"\n'
    )
    from_file = load_config({}, {}, str(config_file))
    assert from_file.retention == Policy(1, 2, 3, 4, 5, -1, parse_duration("1y6m"))
    env = {
        "SNAPMGR_KEEP_LAST": "7",
        "SNAPMGR_KEEP_HOURLY": "0",
        "SNAPMGR_KEEP_WITHIN": "36h",
    }
    from_env = load_config({}, env, str(config_file))
    assert from_env.retention == Policy(7, None, 3, 4, 5, -1, parse_duration("36h"))
    assert from_env.sources["keep_last"] == "env SNAPMGR_KEEP_LAST"
    assert from_env.sources["keep_daily"] == f"file {config_file}"
    assert from_env.value("keep_within") == parse_duration("36h")


@pytest.mark.parametrize(
    ("raw", "words"),
    [("-2", "from -1 to"), ("2.5", "whole number"), ("true", "whole number")],
)
def test_a_bad_count_from_a_variable_names_the_key(raw: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as refused:
        load_config({}, {"SNAPMGR_KEEP_DAILY": raw}, None)
    assert str(refused.value).startswith("keep_daily: invalid value")


def test_a_bad_count_from_a_flag_names_the_flag(cli: Cli) -> None:
    result = cli("prune", "--dry-run", "--keep-daily", "-2")
    assert result.returncode == 2, result.stderr
    assert "--keep-daily: expected a whole number from -1 to" in result.stderr


@pytest.mark.parametrize("value", [-2, True, 2.0, "3"])
def test_a_policy_refuses_what_is_not_a_count(value: object) -> None:
    with pytest.raises(ValueError, match="keep_daily"):
        Policy(keep_daily=value)  # type: ignore[arg-type]


def test_prune_json_policy_has_every_rule(cli: Cli) -> None:
    out = cli.ok("prune", "--dry-run", "--json", "--keep-weekly", "-1", "--keep-within", "2w")
    policy = json.loads(out.stdout)["policy"]
    assert {k: policy[k] for k in RULES} == {
        "keep_last": None,
        "keep_hourly": None,
        "keep_daily": None,
        "keep_weekly": -1,
        "keep_monthly": None,
        "keep_yearly": None,
        "keep_within": "2w",
    }


def test_config_has_a_typed_attribute_for_every_top_level_key() -> None:
    config = load_config({}, {}, None)
    top = [name for name, key in KEYS.items() if key.table == ""]
    assert top == [f.name for f in fields(Settings)]
    assert isinstance(config, Config)
    assert (config.label, config.compression, config.compression_level) == (
        "pre_migration",
        "gzip",
        2,
    )
    assert config.dump_owners is True and config.exclude_tables == ()
    assert str(config.orphan_grace) == "24h"


def test_stored_formats_name_their_dumps() -> None:
    assert sorted(COMPRESSIONS) == ["gzip", "none", "zstd"]
    names = {c: dump_name("app_20250101_000000", c) for c in COMPRESSIONS}
    assert names == {
        "gzip": "app_20250101_000000.sql.gz",
        "zstd": "app_20250101_000000.sql.zst",
        "none": "app_20250101_000000.sql",
    }
    assert dump_name("app_20250101_000000", "zstd", True, 3) == "app_20250101_000000.k3.sql.zst.age"
    for name in (*names.values(), "app_20250101_000000.k3.sql.zst.age"):
        assert split_object_name(name) == ("app_20250101_000000", "dump")
    assert (check_level("gzip", None), check_level("zstd", None), check_level("none", 9)) == (
        2,
        3,
        None,
    )
    with pytest.raises(ConfigError, match="gzip takes 0 to 3"):
        check_level("gzip", 4)
