"""Shared fixtures: a private PostgreSQL cluster per session (per xdist worker), CLI, stores.

The cluster is started by :class:`snapmgr.cluster.TempCluster` (as the
``postgres`` user when we are root, on a private socket dir and port) and
removed at the end. Set ``SNAPMGR_TEST_DATABASE_URL`` (a superuser URL) to
use an existing server instead.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from snapmgr.cluster import TempCluster
from tests.pgutil import Server, load_pagila

PAGILA_TEMPLATE = "pagila_template"
BIG_TEMPLATE = "big_template"
BIG_ROWS = 200_000
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    existing = os.environ.get("SNAPMGR_TEST_DATABASE_URL")
    if existing:
        yield Server(existing)
        return
    cluster = TempCluster().start()
    try:
        yield Server(cluster.url("postgres"))
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pagila_template(pg_server: Server) -> str:
    """A database holding Pagila, used as a template for fast per-test copies."""
    load_pagila(pg_server, PAGILA_TEMPLATE)
    return PAGILA_TEMPLATE


@pytest.fixture
def fresh_db_name() -> str:
    return f"t{os.getpid()}_{next(_counter)}"


@pytest.fixture
def pagila_db(pg_server: Server, pagila_template: str, fresh_db_name: str) -> Iterator[str]:
    """A private copy of Pagila for one test; its name."""
    pg_server.create_db(fresh_db_name, template=pagila_template)
    yield fresh_db_name
    pg_server.drop_db(fresh_db_name)


@pytest.fixture(scope="session")
def big_template(pg_server: Server) -> str:
    """Two tables of ~105 MB of COPY text in all: a dump or restore long enough to
    interrupt in the middle of a table. Built once per session."""
    pg_server.create_db(BIG_TEMPLATE)
    pg_server.execute(
        BIG_TEMPLATE,
        "CREATE TABLE big_a AS SELECT g AS id, repeat(md5(g::text), 16) AS payload "
        f"FROM generate_series(1, {BIG_ROWS}) g;"
        "CREATE TABLE big_b AS SELECT * FROM big_a;",
    )
    return BIG_TEMPLATE


@pytest.fixture
def big_db(pg_server: Server, big_template: str, fresh_db_name: str) -> Iterator[str]:
    """A private copy of the big database for one test; its name."""
    pg_server.create_db(fresh_db_name, template=big_template)
    yield fresh_db_name
    pg_server.drop_db(fresh_db_name)


@pytest.fixture
def empty_db(pg_server: Server, fresh_db_name: str) -> Iterator[str]:
    pg_server.create_db(fresh_db_name)
    yield fresh_db_name
    pg_server.drop_db(fresh_db_name)


class Cli:
    """Runs the real ``snapmgr`` CLI in a subprocess with a controlled environment."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = tmp_path / "store"
        self.pointer = tmp_path / "last_snapshot.txt"
        self.env: dict[str, str] = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("SNAPMGR_", "PG", "AWS_"))
            and key not in ("DATABASE_URL", "BACKUP_DIR", "CONFIRM_RESTORE")
        }
        self.env.update(
            BACKUP_DIR=str(self.store),
            SNAPMGR_POINTER_FILE=str(self.pointer),
            SNAPMGR_PROGRESS="log",
            PYTHONUNBUFFERED="1",
        )

    def __call__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        input: str | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        merged = {**self.env, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "snapmgr", *args],
            env=merged,
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        result = self(*args, **kwargs)  # type: ignore[arg-type]
        assert result.returncode == 0, (
            f"snapmgr {' '.join(args)} exited {result.returncode}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
        return result


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)
