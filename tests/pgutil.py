"""Helpers for tests that need a real PostgreSQL: a server handle and dump comparison."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PAGILA_DIR = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "pagila"
_IGNORED = re.compile(r"^(-- Dumped (from|by) |\\restrict |\\unrestrict )")


@dataclass
class Server:
    """A PostgreSQL server tests may create and drop databases on."""

    admin_url: str

    def url(self, dbname: str) -> str:
        params = conninfo_to_dict(self.admin_url)
        params["dbname"] = dbname
        user = params.get("user", "")
        password = params.get("password", "")
        host = params.get("host", "127.0.0.1")
        port = params.get("port", "5432")
        secret = f":{password}" if password else ""
        return f"postgresql://{user}{secret}@{host}:{port}/{dbname}"

    def connect(self, dbname: str | None = None) -> psycopg.Connection[Any]:
        params = conninfo_to_dict(self.admin_url)
        if dbname:
            params["dbname"] = dbname
        return psycopg.connect(make_conninfo(**params), autocommit=True)

    def create_db(self, name: str, template: str | None = None) -> str:
        with self.connect() as db:
            db.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            if template:
                db.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
            else:
                db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_db(self, name: str) -> None:
        with self.connect() as db:
            db.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def execute(self, dbname: str, statement: str) -> list[tuple[Any, ...]]:
        with self.connect(dbname) as db:
            cur = db.execute(statement)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def psql_file(self, dbname: str, text: str) -> None:
        env = self.child_env()
        subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.conninfo(dbname)],
            input=text.encode(),
            env=env,
            check=True,
            capture_output=True,
        )

    def conninfo(self, dbname: str) -> str:
        params = conninfo_to_dict(self.admin_url)
        params.pop("password", None)
        params["dbname"] = dbname
        return make_conninfo(**params)

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        password = conninfo_to_dict(self.admin_url).get("password")
        if password:
            env["PGPASSWORD"] = str(password)
        return env

    def dump(self, dbname: str, *flags: str) -> str:
        """pg_dump of ``dbname`` with owners and privileges, minus the lines that always differ."""
        out = subprocess.run(
            ["pg_dump", "--clean", "--if-exists", *flags, "-d", self.conninfo(dbname)],
            env=self.child_env(),
            check=True,
            capture_output=True,
        ).stdout.decode()
        return normalize_dump(out)

    def row_counts(self, dbname: str) -> dict[str, int]:
        from snapmgr.postgres import ROW_COUNTS_SQL

        return {name: int(n) for name, n in self.execute(dbname, ROW_COUNTS_SQL)}


def normalize_dump(text: str) -> str:
    """Drop pg_dump's per-run lines (version comments, \\restrict keys)."""
    return "\n".join(line for line in text.splitlines() if not _IGNORED.match(line))


def load_pagila(server: Server, dbname: str) -> None:
    server.create_db(dbname)
    server.psql_file(dbname, (PAGILA_DIR / "pagila-schema.sql").read_text())
    import gzip

    server.psql_file(
        dbname, gzip.decompress((PAGILA_DIR / "pagila-data.sql.gz").read_bytes()).decode()
    )
