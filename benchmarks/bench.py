"""Benchmark: snapmgr snapshot/restore against pg_dump and the shell script it replaces.

Builds a mixed table (bigint id, md5 text, jsonb, timestamptz; about 280 bytes
of dump text per row) with ``generate_series`` in a throwaway PostgreSQL
cluster (or in the server named by ``BENCH_DATABASE_URL``, a superuser URL),
and loads the Pagila sample (``../shared/testdata/pagila``, or ``--pagila DIR``)
as the small database, then measures, in alternating rounds so that machine
noise hits every variant alike:

* ``snapmgr --version``: start-up alone;
* ``pg_dump > /dev/null``: the limit, what the database can produce;
* ``pg_dump | igzip -2 > f``: the floor for any gzip snapshot on this machine,
  ISA-L's own C command line at snapmgr's level with no hash, no row count, no
  read-back and no commit (skipped without ``igzip``, Debian package ``isal``);
* the usual script: ``pg_dump | gzip > f && gzip -t f``;
* ``snapmgr snapshot`` with gzip (the default) and with zstd, verification included;
* ``gunzip -c f | psql`` into a fresh database, and ``snapmgr restore`` of the
  same snapshot into another fresh database (skipped, saying so, when this
  snapmgr has no ``restore`` command);
* Pagila: the script against ``snapmgr snapshot``, where start-up dominates.

Before each measurement the server checkpoints and the machine syncs (outside
the timing), so that no variant pays for the writeback of the one before.
Wall time is ``time.perf_counter`` around each child; CPU time (user and
system, the whole process tree: pg_dump, psql and gzip included) is the
``getrusage(RUSAGE_CHILDREN)`` difference around it; peak RSS comes from
``/usr/bin/time -v`` (Debian package ``time``). It prints the CPU model,
medians, file sizes, peak RSS and every target's ratio with PASS/FAIL. With
``--pairs N`` it runs each snapmgr variant right next to its baseline, N
times, flipping the order each time, and a ratio is the median of the N
per-pair ratios, which a busy machine disturbs much less than a ratio of
medians. It never fails on timings: the exit code is 0 unless something could
not run at all.

    .venv/bin/python benchmarks/bench.py              # full run (1.5M rows, 3 rounds)
    .venv/bin/python benchmarks/bench.py --pairs 5    # 5 alternating pairs per target
    .venv/bin/python benchmarks/bench.py --quick      # smoke run (20k rows, 1 round)
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: E402

from snapmgr.formats import GZIP  # noqa: E402
from snapmgr.manifest import dump_name  # noqa: E402
from snapmgr.postgres import PG_DUMP_FLAGS  # noqa: E402

GNU_TIME = "/usr/bin/time"
SOURCE_DB = "snapmgr_bench_{rows}"
RESTORE_DB = "snapmgr_bench_restore"
MARKER = "snapmgr-bench rows={rows} v1"
PAGILA_DIR = ROOT.parent / "shared" / "testdata" / "pagila"
PAGILA_DB = "snapmgr_bench_pagila"
PAGILA_MARKER = "snapmgr-bench pagila v1"

# Targets from the issues: maximum ratios (or seconds, megabytes).
SNAPSHOT_VS_PG_DUMP = 1.15
SNAPSHOT_VS_SCRIPT = 0.30
RESTORE_VS_PSQL = 1.05
PAGILA_VS_SCRIPT = 1.60
VERSION_LIMIT_S = 0.25
ENCRYPTED_VS_PLAIN = 1.10  # the encrypted snapshot against the plain one, same run
RSS_LIMIT_MB = 100.0
RSS_FLAT_RATIO = 1.15  # the larger database's peak RSS within 15% (or 16 MB) of the smaller's
RSS_FLAT_SLACK_MB = 16.0
FLOOR_LEVEL = GZIP.default_level  # snapmgr's own gzip level (isal)

BUILD_SQL = """
CREATE TABLE public.events (
    id bigint PRIMARY KEY,
    account text NOT NULL,
    note text,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz
);
INSERT INTO public.events
SELECT i,
       md5(i::text),
       md5((i * 31)::text) || md5((i * 17)::text),
       jsonb_build_object(
           'user', i % 100000,
           'hash', md5((i * 7)::text),
           'score', ((i * 7919) % 10000) / 100.0,
           'tags', jsonb_build_array('t' || (i % 10), 'u' || (i % 7)),
           'active', i % 3 = 0),
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second',
       timestamptz '2024-06-01 00:00:00+00' + (i % 86400) * interval '17 second'
FROM generate_series(1::bigint, %(rows)s::bigint) AS i;
"""


# --------------------------------------------------------------------------- server


@dataclass
class Server:
    """A superuser connection target; the password travels only in the environment."""

    url: str

    def params(self, dbname: str) -> dict[str, Any]:
        params = conninfo_to_dict(self.url)
        params["dbname"] = dbname
        return params

    def conninfo(self, dbname: str) -> str:
        params = self.params(dbname)
        params.pop("password", None)
        return make_conninfo(**params)

    def url_for(self, dbname: str) -> str:
        params = self.params(dbname)
        user = params.get("user", "")
        secret = f":{params['password']}" if params.get("password") else ""
        host = params.get("host", "127.0.0.1")
        port = params.get("port", "5432")
        return f"postgresql://{user}{secret}@{host}:{port}/{dbname}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        password = conninfo_to_dict(self.url).get("password")
        if password:
            env["PGPASSWORD"] = str(password)
        return env

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(make_conninfo(**self.params(dbname)), autocommit=True)

    def recreate(self, name: str) -> None:
        with self.connect() as db:
            db.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop(self, name: str) -> None:
        with self.connect() as db:
            db.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def ensure_dataset(self, rows: int) -> str:
        """The source database with ``rows`` rows, built once and reused while it matches."""
        name = SOURCE_DB.format(rows=rows)
        marker = MARKER.format(rows=rows)
        with contextlib.suppress(psycopg.OperationalError), self.connect(name) as db:
            row = db.execute("SELECT obj_description('public.events'::regclass)").fetchone()
            if row and row[0] == marker:
                say(f"reusing database {name} ({rows:,} rows)")
                return name
        say(f"building database {name}: {rows:,} rows ...")
        started = time.perf_counter()
        self.recreate(name)
        with self.connect(name) as db:
            db.execute(BUILD_SQL.replace("%(rows)s", str(int(rows))).encode())  # type: ignore[arg-type]
            db.execute("VACUUM (FREEZE, ANALYZE) public.events")
            db.execute(sql.SQL("COMMENT ON TABLE public.events IS {}").format(sql.Literal(marker)))
            db.execute("CHECKPOINT")
        say(f"  built in {time.perf_counter() - started:.1f}s")
        return name

    def ensure_pagila(self, source: Path) -> str:
        """The Pagila database, loaded once from ``source`` and reused while it matches."""
        with contextlib.suppress(psycopg.OperationalError), self.connect(PAGILA_DB) as db:
            row = db.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                "WHERE datname = current_database()"
            ).fetchone()
            if row and row[0] == PAGILA_MARKER:
                say(f"reusing database {PAGILA_DB} (Pagila)")
                return PAGILA_DB
        say(f"loading Pagila from {source} into {PAGILA_DB} ...")
        self.recreate(PAGILA_DB)
        psql = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", f"--dbname={self.conninfo(PAGILA_DB)}"]
        schema = (source / "pagila-schema.sql").read_bytes()
        data = gzip.decompress((source / "pagila-data.sql.gz").read_bytes())
        for part in (schema, data):
            subprocess.run(psql, input=part, env=self.env(), stdout=subprocess.DEVNULL, check=True)
        with self.connect(PAGILA_DB) as db:
            db.execute("VACUUM (FREEZE, ANALYZE)")
            db.execute(
                sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                    sql.Identifier(PAGILA_DB), sql.Literal(PAGILA_MARKER)
                )
            )
        return PAGILA_DB


@contextlib.contextmanager
def server_for_bench() -> Iterator[Server]:
    url = os.environ.get("BENCH_DATABASE_URL")
    if url:
        say("using the server in BENCH_DATABASE_URL")
        yield Server(url)
        return
    from snapmgr.cluster import TempCluster

    say("starting a throwaway PostgreSQL cluster ...")
    cluster = TempCluster().start()
    try:
        yield Server(cluster.url("postgres"))
    finally:
        cluster.stop()


# --------------------------------------------------------------------------- measuring


@dataclass
class Sample:
    seconds: float
    rss_kb: int | None
    user_s: float = 0.0  # CPU time of the whole process tree
    sys_s: float = 0.0

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


@dataclass
class Variant:
    key: str
    title: str
    samples: list[Sample] = field(default_factory=list)
    size: int | None = None
    skipped: str | None = None
    failed: str | None = None

    def median(self) -> float | None:
        return statistics.median(s.seconds for s in self.samples) if self.samples else None

    def median_of(self, attr: str) -> float | None:
        values = [getattr(s, attr) for s in self.samples]
        return statistics.median(values) if values else None

    def peak_rss_mb(self) -> float | None:
        values = [s.rss_kb for s in self.samples if s.rss_kb is not None]
        return max(values) / 1024 if values else None


class Runner:
    """Runs a child under ``/usr/bin/time -v`` (when present) and times it."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.gnu_time = GNU_TIME if Path(GNU_TIME).exists() else None
        if self.gnu_time is None:
            say(
                f"note: {GNU_TIME} is missing, so peak RSS comes from wait4() instead; "
                "install it with: apt-get install time"
            )

    def run(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        *,
        stdout: Any = subprocess.DEVNULL,
        what: str,
    ) -> tuple[Sample, str]:
        report = self.work / "time.txt"
        full = [self.gnu_time, "-v", "-o", str(report), *argv] if self.gnu_time else list(argv)
        err_path = self.work / "stderr.txt"
        with open(err_path, "wb") as err:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            # In the work directory: ``python -m`` puts the current directory first on
            # sys.path, which must not shadow the snapmgr named by PYTHONPATH.
            proc = subprocess.Popen(
                full, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err, cwd=self.work
            )
            _, status, usage = os.wait4(proc.pid, 0)
            elapsed = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            proc.returncode = os.waitstatus_to_exitcode(status)
        errors = err_path.read_text(errors="replace")
        if proc.returncode != 0:
            raise BenchError(f"{what} failed (exit {proc.returncode}): {errors.strip()[-2000:]}")
        rss = parse_gnu_time(report.read_text()) if self.gnu_time else int(usage.ru_maxrss)
        user = after.ru_utime - before.ru_utime
        system = after.ru_stime - before.ru_stime
        return Sample(elapsed, rss, user, system), errors


class BenchError(Exception):
    pass


def parse_gnu_time(text: str) -> int | None:
    for line in text.splitlines():
        if "Maximum resident set size" in line:
            return int(line.rsplit(":", 1)[1].strip())
    return None


def say(message: str) -> None:
    print(message, flush=True)


def cpu_model() -> str:
    """``AMD EPYC 7B13 (2 CPUs)``: the model name from /proc/cpuinfo and the CPU count."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model} ({os.cpu_count()} CPUs)"


def snapmgr_argv() -> list[str]:
    return [sys.executable, "-m", "snapmgr"]


def snapmgr_env(server: Server, dbname: str, store: Path, pointer: Path) -> dict[str, str]:
    # PYTHONDONTWRITEBYTECODE goes too: an installed snapmgr runs from cached
    # bytecode, and start-up is part of what is measured.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SNAPMGR_", "PG", "AWS_"))
        and k not in ("DATABASE_URL", "BACKUP_DIR", "CONFIRM_RESTORE", "PYTHONDONTWRITEBYTECODE")
    }
    env.update(
        DATABASE_URL=server.url_for(dbname),
        BACKUP_DIR=str(store),
        SNAPMGR_POINTER_FILE=str(pointer),
        PYTHONPATH=str(ROOT),
    )
    return env


def has_restore(env: dict[str, str], cwd: Path) -> bool:
    result = subprocess.run(
        [*snapmgr_argv(), "restore", "--help"],
        env=env,
        capture_output=True,
        check=False,
        cwd=cwd,
    )
    return result.returncode == 0


# --------------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, server: Server, work: Path, args: argparse.Namespace) -> None:
        self.server = server
        self.work = work
        self.args = args
        self.runner = Runner(work)
        self.pg_env = server.env()
        self.pointer = work / "last_snapshot.txt"

    def pg_dump_argv(self, dbname: str) -> list[str]:
        return ["pg_dump", *PG_DUMP_FLAGS, f"--dbname={self.server.conninfo(dbname)}"]

    # ---- snapshot side

    def run_pg_dump(self, dbname: str) -> Sample:
        sample, _ = self.runner.run(self.pg_dump_argv(dbname), self.pg_env, what="pg_dump")
        return sample

    def run_script(self, dbname: str) -> tuple[Sample, int]:
        """``pg_dump | gzip > f && gzip -t f``: the script snapmgr replaces."""
        return self._run_into_file(dbname, "script.sql.gz", "gzip > {f} && gzip -t {f}")

    def run_floor(self, dbname: str) -> tuple[Sample, int]:
        """``pg_dump | igzip -2 > f``: compression alone, in C, nothing checked."""
        return self._run_into_file(dbname, "floor.sql.gz", f"igzip -{FLOOR_LEVEL} -c > {{f}}")

    def _run_into_file(self, dbname: str, name: str, tail: str) -> tuple[Sample, int]:
        """``pg_dump | TAIL`` in bash (``{f}`` in ``tail``: the file it writes); the
        sample and the file's size (the file is removed)."""
        target = self.work / name
        command = tail.format(f=shlex.quote(str(target)))
        pipeline = f"set -o pipefail; {shlex.join(self.pg_dump_argv(dbname))} | {command}"
        what = f"pg_dump | {tail.split(maxsplit=1)[0]}"
        sample, _ = self.runner.run(["bash", "-c", pipeline], self.pg_env, what=what)
        size = target.stat().st_size
        target.unlink()
        return sample, size

    def run_snapshot(
        self, dbname: str, compression: str, store: Path, extra_env: dict[str, str] | None = None
    ) -> tuple[Sample, str, int]:
        env = {**snapmgr_env(self.server, dbname, store, self.pointer), **(extra_env or {})}
        out = self.work / "snapshot.out"
        with open(out, "wb") as handle:
            sample, _ = self.runner.run(
                [*snapmgr_argv(), "snapshot", "-q", "--compression", compression],
                env,
                stdout=handle,
                what=f"snapmgr snapshot --compression {compression}",
            )
        snapshot_id = out.read_text().strip().splitlines()[-1]
        encrypted = bool(extra_env and extra_env.get("SNAPMGR_ENCRYPTION_RECIPIENTS"))
        size = (store / dump_name(snapshot_id, compression, encrypted)).stat().st_size
        return sample, snapshot_id, size

    def run_encrypted_snapshot(self, dbname: str, store: Path) -> tuple[Sample, int]:
        """``snapmgr snapshot`` (gzip) with age encryption to a throwaway recipient."""
        from pyrage import x25519

        recipient = str(x25519.Identity.generate().to_public())
        sample, _, size = self.run_snapshot(
            dbname, "gzip", store, {"SNAPMGR_ENCRYPTION_RECIPIENTS": recipient}
        )
        return sample, size

    # ---- restore side

    def run_psql_restore(self, dump: Path) -> Sample:
        self.server.recreate(RESTORE_DB)
        pipeline = (
            f"set -o pipefail; gunzip -c {shlex.quote(str(dump))} | "
            "psql -X -q -v ON_ERROR_STOP=1 "
            f"--dbname={shlex.quote(self.server.conninfo(RESTORE_DB))} > /dev/null"
        )
        sample, _ = self.runner.run(["bash", "-c", pipeline], self.pg_env, what="gunzip -c | psql")
        return sample

    def run_snapmgr_restore(self, dbname: str, store: Path, snapshot_id: str) -> Sample:
        self.server.recreate(RESTORE_DB)
        env = snapmgr_env(self.server, dbname, store, self.pointer)
        sample, _ = self.runner.run(
            [
                *snapmgr_argv(), "restore", snapshot_id, "-q", "--yes",
                "--target-url", self.server.url_for(RESTORE_DB),
            ],
            env,
            what="snapmgr restore",
        )  # fmt: skip
        return sample

    def run_version(self) -> Sample:
        env = snapmgr_env(self.server, "postgres", self.work / "store", self.pointer)
        sample, _ = self.runner.run([*snapmgr_argv(), "--version"], env, what="snapmgr --version")
        return sample

    # ---- orchestration

    def variants(self) -> dict[str, Variant]:
        return {
            key: Variant(key, title)
            for key, title in (
                ("startup", "snapmgr --version"),
                ("pg_dump", "pg_dump > /dev/null"),
                ("floor", f"pg_dump | igzip -{FLOOR_LEVEL} > f (floor)"),
                ("script", "pg_dump | gzip > f && gzip -t f"),
                ("snap_gzip", "snapmgr snapshot (gzip)"),
                ("snap_zstd", "snapmgr snapshot (zstd)"),
                ("snap_age", "snapmgr snapshot (gzip, age encrypted)"),
                ("psql_restore", "gunzip -c f | psql"),
                ("snap_restore", "snapmgr restore"),
                ("pagila_script", "Pagila: pg_dump | gzip && gzip -t"),
                ("pagila_snap", "Pagila: snapmgr snapshot (gzip)"),
                ("snap_gzip_rss", "snapmgr snapshot (gzip), smaller db"),
            )
        }

    def run(self) -> dict[str, Variant]:
        args = self.args
        variants = self.variants()
        dbname = self.server.ensure_dataset(args.rows)
        rss_db = self.server.ensure_dataset(args.rss_rows) if args.rss_rows else None
        pagila_db = None
        if (args.pagila / "pagila-schema.sql").is_file():
            pagila_db = self.server.ensure_pagila(args.pagila)
        else:
            for key in ("pagila_script", "pagila_snap"):
                variants[key].skipped = f"no Pagila in {args.pagila} (see --pagila)"
        if shutil.which("igzip") is None:
            variants["floor"].skipped = "no igzip on PATH (Debian package isal)"
        ref_store = self.work / "ref-store"
        say("warm-up: pg_dump > /dev/null, one reference snapshot for the restores")
        self.run_pg_dump(dbname)
        _, ref_id, _ = self.run_snapshot(dbname, "gzip", ref_store)
        ref_dump = ref_store / f"{ref_id}.sql.gz"

        env = snapmgr_env(self.server, dbname, ref_store, self.pointer)
        restore_ok = has_restore(env, self.work)
        if not restore_ok:
            variants[
                "snap_restore"
            ].skipped = "`snapmgr restore --help` failed: this snapmgr has no restore command yet"
            say(f"SKIP snapmgr restore: {variants['snap_restore'].skipped}")

        def measure(key: str, variant: Variant) -> Sample:
            if key == "startup":
                return self.run_version()
            if key == "pg_dump":
                return self.run_pg_dump(dbname)
            if key in ("script", "pagila_script"):
                source = pagila_db if key == "pagila_script" else dbname
                assert source is not None
                sample, variant.size = self.run_script(source)
                return sample
            if key == "floor":
                sample, variant.size = self.run_floor(dbname)
                return sample
            if key == "snap_age":
                store = self.work / "store"
                sample, variant.size = self.run_encrypted_snapshot(dbname, store)
                shutil.rmtree(store)
                return sample
            if key in ("snap_gzip", "snap_zstd", "snap_gzip_rss", "pagila_snap"):
                store = self.work / "store"
                compression = "zstd" if key == "snap_zstd" else "gzip"
                source = {"snap_gzip_rss": rss_db, "pagila_snap": pagila_db}.get(key, dbname)
                assert source is not None
                sample, _, variant.size = self.run_snapshot(source, compression, store)
                shutil.rmtree(store)
                return sample
            if key == "psql_restore":
                variant.size = ref_dump.stat().st_size
                return self.run_psql_restore(ref_dump)
            return self.run_snapmgr_restore(dbname, ref_store, ref_id)

        def step(key: str) -> None:
            variant = variants[key]
            if variant.skipped or variant.failed:
                return
            self.settle()
            try:
                sample = measure(key, variant)
            except BenchError as exc:
                variant.failed = str(exc)
                say(f"  {variant.title:<38} FAILED: {exc}")
                return
            variant.samples.append(sample)
            rss = f"{sample.rss_kb / 1024:6.1f} MB" if sample.rss_kb is not None else "   n/a"
            say(
                f"  {variant.title:<38} {sample.seconds:7.2f}s  CPU {sample.user_s:6.2f}u "
                f"{sample.sys_s:5.2f}s  peak RSS {rss}"
            )

        if args.pairs:
            self.run_pairs(step)
        else:
            self.run_rounds(step, with_rss=rss_db is not None)
        self.server.drop(RESTORE_DB)
        if args.cleanup:
            for name in {dbname, rss_db, pagila_db} - {None}:
                assert name is not None
                self.server.drop(name)
        return variants

    def settle(self) -> None:
        """Start each measurement from a quiet machine, outside its timing: the
        server's checkpoint, then every dirty page on disk. Otherwise a variant
        pays for the writes of the ones before it: a restore leaves about 1 GB
        of table and WAL pages that the kernel writes back some 30 s later, and
        whatever fsyncs meanwhile waits (in one run without this, Pagila
        snapshots took 0.47-1.03 s of wall time for 0.31-0.46 s of CPU)."""
        with self.server.connect() as db:
            db.execute("CHECKPOINT")
        os.sync()

    def wanted(self, keys: Sequence[str]) -> list[str]:
        return [key for key in keys if not self.args.only or key in self.args.only]

    def run_rounds(self, step: Callable[[str], None], *, with_rss: bool) -> None:
        order = self.wanted([
            "startup", "pg_dump", "floor", "script", "snap_gzip", "snap_zstd", "snap_age",
            "psql_restore", "snap_restore", "pagila_script", "pagila_snap",
            *(["snap_gzip_rss"] if with_rss else []),
        ])  # fmt: skip
        for number in range(self.args.rounds):
            say(f"round {number + 1}/{self.args.rounds} (load average {os.getloadavg()[0]:.2f})")
            shift = number % len(order) if order else 0
            for key in order[shift:] + order[:shift]:
                step(key)

    def run_pairs(self, step: Callable[[str], None]) -> None:
        """Each snapmgr variant right next to its baseline (and the other variants of
        its group), the order flipped every time."""
        startup = self.wanted(["startup"])
        for number in range(self.args.pairs):
            say(f"pair {number + 1}/{self.args.pairs} (load average {os.getloadavg()[0]:.2f})")
            for key in startup:
                step(key)
            for group in GROUPS:
                keys = self.wanted(group)
                if len(keys) < 2:
                    continue
                for key in keys if number % 2 else reversed(keys):
                    step(key)


# What is measured side by side in --pairs mode, each key in one group only (so each
# gets one sample per pair and per-pair ratios line up): the snapmgr variant first.
GROUPS = (
    ("snap_gzip", "pg_dump", "floor", "snap_age"),
    ("pagila_snap", "pagila_script"),
    ("snap_restore", "psql_restore"),
)
# The per-pair (or per-round) ratios reported: a variant over what it is judged against.
PAIRS = (
    ("snap_gzip", "pg_dump"),
    ("floor", "pg_dump"),
    ("snap_gzip", "floor"),
    ("snap_age", "snap_gzip"),
    ("pagila_snap", "pagila_script"),
    ("snap_restore", "psql_restore"),
)


# --------------------------------------------------------------------------- report


def fmt_s(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def fmt_mb(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def fmt_size(value: int | None) -> str:
    return f"{value / 1e6:.1f} MB" if value is not None else "-"


def ratio_line(
    name: str, value: float | None, limit: float, unit: str = "x", digits: int = 2
) -> tuple[str, bool]:
    target = f"(target <= {limit:.{digits}f}{unit})"
    if value is None:
        return f"ratio: {name} = n/a {target} SKIP", True
    ok = value <= limit
    return f"ratio: {name} = {value:.{digits}f}{unit} {target} {'PASS' if ok else 'FAIL'}", ok


def pair_ratios(a: Variant, b: Variant, attr: str = "seconds") -> list[float]:
    """``a``'s samples over ``b``'s, sample by sample (pair by pair, or round by round)."""
    if not a.samples or len(a.samples) != len(b.samples):
        return []
    return [
        getattr(x, attr) / getattr(y, attr)
        for x, y in zip(a.samples, b.samples, strict=True)
        if getattr(y, attr)
    ]


def quotient(variants: dict[str, Variant], a: str, b: str, attr: str = "seconds") -> float | None:
    """The median of the per-pair ratios; the ratio of medians if the counts differ."""
    ratios = pair_ratios(variants[a], variants[b], attr)
    if ratios:
        return statistics.median(ratios)
    x, y = variants[a].median_of(attr), variants[b].median_of(attr)
    return x / y if x is not None and y else None


BASES = {
    "snap_gzip": "pg_dump", "snap_zstd": "pg_dump", "script": "pg_dump", "snap_age": "snap_gzip",
    "floor": "pg_dump",
    "snap_gzip_rss": "pg_dump", "snap_restore": "psql_restore", "pagila_snap": "pagila_script",
}  # fmt: skip


def print_table(variants: dict[str, Variant], args: argparse.Namespace) -> None:
    header = (
        f"{'variant':<40} {'median s':>9} {'min s':>7} {'max s':>7} {'x base':>7} "
        f"{'CPU user':>9} {'CPU sys':>8} {'x base':>7} {'file':>10} {'peak RSS MB':>12}"
    )
    say(header)
    say("-" * len(header))
    for variant in variants.values():
        if variant.skipped:
            say(f"{variant.title:<40} skipped: {variant.skipped}")
            continue
        if variant.failed:
            say(f"{variant.title:<40} FAILED: {variant.failed[:200]}")
            continue
        if not variant.samples:
            continue
        times = [s.seconds for s in variant.samples]
        base = BASES.get(variant.key)
        wall_x = quotient(variants, variant.key, base) if base else None
        cpu_x = quotient(variants, variant.key, base, "cpu_s") if base else None
        title = variant.title
        if variant.key == "snap_gzip_rss":
            title = f"snapmgr snapshot (gzip), {args.rss_rows:,} rows"
        say(
            f"{title:<40} {fmt_s(variant.median()):>9} {fmt_s(min(times)):>7} "
            f"{fmt_s(max(times)):>7} {fmt_s(wall_x):>7} {fmt_s(variant.median_of('user_s')):>9} "
            f"{fmt_s(variant.median_of('sys_s')):>8} {fmt_s(cpu_x):>7} "
            f"{fmt_size(variant.size):>10} {fmt_mb(variant.peak_rss_mb()):>12}"
        )
    say("")
    say(
        "x base: snapshots against pg_dump > /dev/null, restore against gunzip | psql, Pagila "
        "against its script; "
        + ("the median of the per-pair ratios" if args.pairs else "the median of per-round ratios")
    )


def report(variants: dict[str, Variant], args: argparse.Namespace) -> dict[str, Any]:
    say("")
    mode = f"{args.pairs} pair(s)" if args.pairs else f"{args.rounds} round(s)"
    say(
        f"results: {args.rows:,} rows, {mode}, medians; {cpu_model()}; "
        f"load average now {os.getloadavg()[0]:.2f}"
    )
    print_table(variants, args)
    say("")

    snap_rss = variants["snap_gzip"].peak_rss_mb()
    small_rss = variants["snap_gzip_rss"].peak_rss_mb()
    size_ratio = (
        variants["snap_gzip"].size / variants["script"].size
        if variants["snap_gzip"].size and variants["script"].size
        else None
    )
    flat = None
    if snap_rss is not None and small_rss is not None:
        low, high = sorted((snap_rss, small_rss))
        flat = high / low if high - low > RSS_FLAT_SLACK_MB else 1.0
    lines = [
        ratio_line(
            "snapmgr snapshot (gzip) / pg_dump > /dev/null",
            quotient(variants, "snap_gzip", "pg_dump"),
            SNAPSHOT_VS_PG_DUMP,
        ),
        ratio_line(
            "snapmgr snapshot (gzip) / pg_dump | gzip script",
            quotient(variants, "snap_gzip", "script"),
            SNAPSHOT_VS_SCRIPT,
        ),
        ratio_line("snapmgr .sql.gz size / gzip -6 size", size_ratio, 1.0, digits=3),
        ratio_line("snapmgr snapshot peak RSS", snap_rss, RSS_LIMIT_MB, unit=" MB", digits=1),
        ratio_line(
            f"peak RSS flatness ({args.rows:,} vs {args.rss_rows:,} rows, "
            f"{fmt_mb(snap_rss)} vs {fmt_mb(small_rss)} MB)",
            flat,
            RSS_FLAT_RATIO,
        ),
        ratio_line(
            "snapmgr restore / gunzip -c | psql",
            quotient(variants, "snap_restore", "psql_restore"),
            RESTORE_VS_PSQL,
        ),
        ratio_line(
            "Pagila snapmgr snapshot / pg_dump | gzip && gzip -t",
            quotient(variants, "pagila_snap", "pagila_script"),
            PAGILA_VS_SCRIPT,
        ),
        ratio_line(
            "snapmgr snapshot (gzip, age) / snapmgr snapshot (gzip)",
            quotient(variants, "snap_age", "snap_gzip"),
            ENCRYPTED_VS_PLAIN,
        ),
        ratio_line(
            "snapmgr --version wall time",
            variants["startup"].median(),
            VERSION_LIMIT_S,
            unit=" s",
        ),
    ]
    for line, _ in lines:
        say(line)
    for key, base in PAIRS:
        ratios = pair_ratios(variants[key], variants[base])
        if ratios:
            kind = "pairs" if args.pairs else "rounds"
            say(
                f"{kind}: {variants[key].title} / {variants[base].title}: median "
                f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) over "
                f"{len(ratios)}; CPU {quotient(variants, key, base, 'cpu_s'):.2f}x"
            )
    floor = quotient(variants, "floor", "pg_dump")
    if floor is not None:
        say(
            f"info: pg_dump | igzip -{FLOOR_LEVEL} (floor) / pg_dump > /dev/null = {floor:.2f}x, "
            f"file {fmt_size(variants['floor'].size)}: no gzip snapshot does better on this "
            f"machine; snapmgr snapshot (gzip) / floor = "
            f"{fmt_s(quotient(variants, 'snap_gzip', 'floor'))}x"
        )
    info = quotient(variants, "snap_zstd", "pg_dump")
    if info is not None:
        say(f"info: snapmgr snapshot (zstd) / pg_dump > /dev/null = {info:.2f}x, "
            f"file {fmt_size(variants['snap_zstd'].size)}")  # fmt: skip
    return {
        "rows": args.rows,
        "rss_rows": args.rss_rows,
        "rounds": args.rounds,
        "pairs": args.pairs,
        "cpu": cpu_model(),
        "variants": {
            key: {
                "title": v.title,
                "seconds": [s.seconds for s in v.samples],
                "user_s": [s.user_s for s in v.samples],
                "sys_s": [s.sys_s for s in v.samples],
                "rss_kb": [s.rss_kb for s in v.samples],
                "median_s": v.median(),
                "median_cpu_s": v.median_of("cpu_s"),
                "size": v.size,
                "skipped": v.skipped,
                "failed": v.failed,
            }
            for key, v in variants.items()
        },
        "ratios": [line for line, _ in lines],
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", type=int, help="rows in the main table (default 1,500,000; --quick 20,000)"
    )
    parser.add_argument(
        "--rss-rows",
        type=int,
        help="a second database size, snapshotted to show that peak RSS stays flat "
        "(default rows/4; 0 to skip)",
    )
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 3; --quick 1)")
    parser.add_argument(
        "--pairs",
        type=int,
        default=0,
        help="instead of rounds: run each snapmgr variant next to its baseline N times "
        "(order flipped each time) and report the median of the per-pair ratios",
    )
    parser.add_argument("--quick", action="store_true", help="small and fast: a smoke run")
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        help="measure only these variants (comma-separated keys: startup, pg_dump, floor, script, "
        "snap_gzip, snap_zstd, snap_age, psql_restore, snap_restore, pagila_script, pagila_snap, "
        "snap_gzip_rss)",
    )
    parser.add_argument(
        "--pagila",
        type=Path,
        default=PAGILA_DIR,
        help=f"the Pagila sample's directory, the small database (default {PAGILA_DIR})",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--work-dir", type=Path, help="where dumps go (default: a temp dir)")
    parser.add_argument(
        "--cleanup",
        action="store_true",
        help="drop the data set databases at the end (they are kept and reused otherwise)",
    )
    args = parser.parse_args(argv)
    if args.rows is None:
        args.rows = 20_000 if args.quick else 1_500_000
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rss_rows is None:
        args.rss_rows = max(args.rows // 4, 1000)
    if args.pairs:
        args.rss_rows = 0  # pairs measure ratios; the RSS flatness run belongs to rounds
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("pg_dump", "psql", "gzip", "gunzip", "bash"):
        if shutil.which(tool) is None:
            say(f"error: {tool} is not on PATH (install the PostgreSQL client and gzip)")
            return 2
    say(f"CPU: {cpu_model()}")
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.work_dir:
            args.work_dir.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix="snapmgr-bench-", dir=args.work_dir))
        else:
            work = Path(tempfile.mkdtemp(prefix="snapmgr-bench-"))
        stack.callback(shutil.rmtree, work, True)
        server = stack.enter_context(server_for_bench())
        try:
            variants = Bench(server, work, args).run()
        except BenchError as exc:
            say(f"error: {exc}")
            return 1
        result = report(variants, args)
    say(f"total benchmark time {time.perf_counter() - started:.0f}s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    failed = [v.title for v in variants.values() if v.failed]
    if failed:
        say(f"error: these variants failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
