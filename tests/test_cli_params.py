"""snapmgr.cli.params: plain option values without pydantic, exactly as typer coerces them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
from typer._coercion import build_runtime_param

from snapmgr.cli import params
from snapmgr.cli.app import app as snapmgr_app
from tests.conftest import Cli

VALUES: list[Any] = [
    None, "", "x", " 5", "5", "-3", "007", "1_000", "+4", "٣", "9" * 30, 5, -2, True,
    (), ("a",), ("a", "b"), ["a", 1], "ab", b"bytes", 2.5, -0.5, 0.0, "2.5", "-0.25", "30.",
    ".5", "1e3", "inf", "nan", "0.1234567890123456789", "1.5 ", False, 10**20,
]  # fmt: skip


def _params() -> list[Any]:
    """The click parameters of a typer command with every plain annotation and some others."""
    demo = typer.Typer()

    @demo.command()
    def run(
        text: Annotated[str | None, typer.Option()] = None,
        number: Annotated[int | None, typer.Option()] = None,
        flag: Annotated[bool, typer.Option()] = False,
        many: Annotated[list[str] | None, typer.Option()] = None,
        bounded: Annotated[int, typer.Option(min=1, max=3)] = 1,
        path: Annotated[Path | None, typer.Option()] = None,
        ratio: Annotated[float, typer.Option()] = 1.0,
    ) -> None:
        pass

    demo.command()(lambda: None)  # a second command keeps "run" a subcommand
    group = typer.main.get_command(demo)
    return list(group.commands["run"].params)  # type: ignore[attr-defined]


def _outcome(coerce: Any, value: Any, param: Any) -> tuple[str, Any]:
    try:
        return "ok", coerce(value, param=param, ctx=None)
    except Exception as exc:  # the error typer reports: its type and message
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_plain_coercion_gives_what_typer_gives(value: Any) -> None:
    params.install()
    for param in _params():
        param._runtime_param = None
        ours = param.get_runtime_param()
        theirs = build_runtime_param(param.type_descriptor)
        expected = _outcome(theirs.coerce, value, param)
        got = _outcome(ours.coerce, value, param)
        assert repr(got) == repr(expected), (param.name, value)  # repr: nan == nan
        assert type(got[1]) is type(expected[1]), (param.name, value)


def test_only_plain_annotations_take_the_plain_path() -> None:
    kinds = {p.name: params.plain_kind(p.type_descriptor) for p in _params()}
    assert kinds == {
        "text": str, "number": int, "flag": bool, "many": list,
        "bounded": None, "path": None, "ratio": float,
    }  # fmt: skip


@pytest.mark.parametrize("name", ["snapshot", "restore", "guard", "list", "prune", "verify"])
def test_every_option_of_the_deploy_path_is_plain(name: str) -> None:
    """If one of these grows an option of another kind, pydantic is back on its path."""
    group = typer.main.get_command(snapmgr_app)
    command = group.commands[name]  # type: ignore[attr-defined]
    odd = [p.name for p in command.params if params.plain_kind(p.type_descriptor) is None]
    assert odd == []


PROBE = """
import atexit, json, os, runpy, sys
atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["snapmgr", "config", "--json", "--store", "a", "--store", "b", "-v"]
runpy.run_module("snapmgr", run_name="__main__", alter_sys=True)
"""


def test_a_command_runs_without_importing_pydantic(cli: Cli) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=cli.env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stderr.strip().splitlines()[-1])
    assert [m for m in modules if m.split(".")[0] in ("pydantic", "pydantic_core")] == []
    assert json.loads(result.stdout)["stores"] is not None


def test_a_bad_value_still_gets_typers_message(cli: Cli) -> None:
    result = cli("snapshot", "--level", "abc")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "snapmgr: error: Invalid value for '--level': Input should be a valid integer, "
        "unable to parse string as an integer; see `python -m snapmgr snapshot --help`"
    )


def test_the_hook_is_installed_only_on_the_locked_typer() -> None:
    """The coercion hooks a typer internal: it is checked against the typer that
    constraints.txt locks, and refreshing the lock to another minor version must
    re-check it (this test then fails until CHECKED_TYPER says so)."""
    from pathlib import Path

    import typer

    from snapmgr.cli import params

    lock = Path(__file__).resolve().parents[1] / "constraints.txt"
    [locked] = [
        line.split("==")[1] for line in lock.read_text().split() if line.startswith("typer==")
    ]
    assert params.typer_version(locked) in params.CHECKED_TYPER
    assert params.typer_version(typer.__version__) == params.typer_version(locked)
    assert params.typer_version("0.30.1") not in params.CHECKED_TYPER
    assert params.typer_version("unknown") is None


def test_each_command_is_found_in_the_module_that_registers_it() -> None:
    """``snapmgr.cli.app.COMMANDS`` (which module a run loads) matches what the
    command modules really register, and every module is in it."""
    import importlib

    app_module = importlib.import_module("snapmgr.cli.app")
    registered = {}
    for name in app_module.command_modules():
        group = importlib.import_module(f"snapmgr.cli.{name}").app
        for info in group.registered_commands:
            registered[info.name] = name
    assert registered == app_module.COMMANDS
    assert sorted(c.name for c in snapmgr_app.registered_commands) == sorted(registered)
