"""snapmgr.libpq against psycopg, the driver it stands in for on the snapshot path.

psycopg is the oracle: the same URL, query and parameters must give the same
parameters, rows, Python types and error texts. Everything runs against the
test cluster; faults are real (a wrong password, a closed port, a server that
never answers, a query interrupted by a signal).
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from snapmgr import libpq
from snapmgr.errors import DatabaseError
from snapmgr.postgres import ConnInfo
from tests.pgutil import Server

URLS = [
    "postgresql://app:s3cret@db.internal:5433/shop?sslmode=require&application_name=web%201",
    "postgres://u%40corp:p%2Fw%3Ad@[::1]:6543/d%20b?connect_timeout=5",
    "postgresql://a@h1:5432,h2:5433/db?target_session_attrs=read-write",
    "postgresql:///local?host=/var/run/postgresql&port=5999",
    "host=/tmp port=5 dbname='my db' user=o\\'brien options='-c search_path=a,b'",
    "dbname=x sslmode=verify-full sslrootcert=/etc/ssl/ca.pem keepalives=1",
    "service=prod",
    "",
]

# One column per type the catalog readers get back, with awkward values.
TYPES_SQL = r"""
SELECT true, false, 7::int2, 70000::int4, 9000000000::int8, 'pg_class'::regclass::oid,
       'plain', 'it''s "quoted" \ back', ''::text, 'pg_catalog'::name, NULL::text,
       ARRAY['a', 'b c', 'd,e', 'f"g', 'h\i', '', 'NULL', NULL]::text[],
       ARRAY[]::text[], ARRAY['x'::name, 'y z'], ARRAY[1, NULL, 3]::int4[],
       ARRAY[true, false]::bool[], '2026-03-04 05:06:07.089+00'::timestamptz,
       '2026-03-04 05:06:07'::timestamp,
       (SELECT datacl::text FROM pg_database WHERE datname = 'template1')
"""


@pytest.fixture
def url(pg_server: Server, empty_db: str) -> str:
    return pg_server.url(empty_db)


def url_as(pg_server: Server, dbname: str, user: str, password: str) -> str:
    server = conninfo_to_dict(pg_server.admin_url)
    return f"postgresql://{user}:{password}@{server['host']}:{server['port']}/{dbname}"


@pytest.fixture
def light(url: str) -> Iterator[libpq.Connection]:
    with ConnInfo.parse(url).session() as db:
        yield db


@pytest.fixture
def heavy(url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(url, autocommit=True) as db:
        yield db


@pytest.mark.parametrize("url", URLS)
def test_a_url_parses_as_psycopg_parses_it(url: str) -> None:
    assert libpq.parse_conninfo(url) == conninfo_to_dict(url)


@pytest.mark.parametrize(
    "bad", ["postgresql://h:5432/db?nosuchoption=1", "host=x dbname", "postgresql://[::1/db"]
)
def test_a_bad_url_fails_with_libpqs_own_message(bad: str) -> None:
    with pytest.raises(psycopg.ProgrammingError) as theirs:
        conninfo_to_dict(bad)
    with pytest.raises(libpq.Error) as ours:
        libpq.parse_conninfo(bad)
    assert str(ours.value) == str(theirs.value).strip()
    assert str(ours.value)  # e.g. 'invalid URI query parameter: "nosuchoption"'


def test_make_conninfo_round_trips_awkward_values() -> None:
    params = {
        "host": "/tmp/sock dir",
        "user": "o'brien",
        "dbname": "back\\slash",
        "options": "-c search_path=a,b",
        "application_name": "",
        "port": "5432",
    }
    assert libpq.parse_conninfo(libpq.make_conninfo(params)) == params


def test_rows_and_types_match_psycopgs(
    light: libpq.Connection, heavy: psycopg.Connection[Any]
) -> None:
    ours = light.execute(TYPES_SQL).fetchall()
    theirs = heavy.execute(TYPES_SQL).fetchall()
    assert len(ours) == len(theirs) == 1
    assert ours == theirs
    assert [type(v) for v in ours[0]] == [type(v) for v in theirs[0]]
    assert ours[0][11] == ["a", "b c", "d,e", 'f"g', "h\\i", "", "NULL", None]
    assert isinstance(ours[0][16], datetime) and ours[0][16].utcoffset() is not None
    # What psycopg refuses or turns into other types is left as text: the catalog
    # readers read neither.
    assert light.execute("SELECT 'infinity'::timestamptz, 12.5::numeric").fetchone() == (
        "infinity",
        "12.5",
    )


@pytest.mark.parametrize(
    ("query", "params"),
    [
        ("SELECT %s::text, %s::int8, %s::bool, %s::text", ["it's", 2**40, True, None]),
        ("SELECT %(a)s::text || %(b)s::text, %(a)s::text, 7 %% 3", {"a": 'q"\\', "b": "z"}),
        (
            "SELECT x FROM unnest(%(names)s::text[]) AS x WHERE x <> ALL(%(gone)s::text[])",
            {"names": ["a b", 'c"d', "e\\f", "g,h", "", "{i}", "NULL"], "gone": ["g,h"]},
        ),
        ("SELECT cardinality(%s::text[]), %s::name = ANY(%s)", [[], "pg_class", ["pg_class"]]),
        ("SELECT %s::text[]", [["x", None]]),
    ],
)
def test_parameters_reach_the_server_as_psycopg_sends_them(
    light: libpq.Connection, heavy: psycopg.Connection[Any], query: str, params: Any
) -> None:
    assert light.execute(query, params).fetchall() == heavy.execute(query, params).fetchall()


def test_a_server_error_has_psycopgs_text_and_its_sqlstate(
    light: libpq.Connection, heavy: psycopg.Connection[Any]
) -> None:
    for query in ("SELECT 1/0", "SELECT * FROM no_such_table", "SELEKT"):
        with pytest.raises(psycopg.Error) as theirs:
            heavy.execute(query)
        with pytest.raises(libpq.Error) as ours:
            light.execute(query)
        assert str(ours.value) == str(theirs.value)
        assert ours.value.sqlstate == theirs.value.sqlstate and ours.value.sqlstate
    assert light.execute("SELECT 2").fetchone() == (2,)  # the session goes on


def test_several_statements_give_the_last_ones_rows_and_fetch_like_a_cursor(
    light: libpq.Connection,
) -> None:
    result = light.execute("SELECT 1; SELECT n FROM generate_series(1, 3) n")
    assert result.fetchone() == (1,)
    assert result.fetchall() == [(2,), (3,)]
    assert result.fetchone() is None
    assert light.execute("SET application_name TO 'x'").fetchall() == []


def test_notices_do_not_reach_stderr(light: libpq.Connection, capfd: Any) -> None:
    light.execute("DO $$ BEGIN RAISE NOTICE 'a notice for nobody'; END $$")
    assert "a notice for nobody" not in capfd.readouterr().err


def test_the_session_runs_without_the_roles_timeouts(pg_server: Server, empty_db: str) -> None:
    role = f"short_{empty_db}"
    pg_server.execute(empty_db, f"CREATE ROLE {role} LOGIN PASSWORD 'pw' IN ROLE pg_read_all_stats")
    pg_server.execute(empty_db, f"ALTER ROLE {role} SET statement_timeout = '20ms'")
    try:
        with ConnInfo.parse(url_as(pg_server, empty_db, role, "pw")).session() as db:
            assert db.execute("SELECT current_user, pg_sleep(0.1)").fetchone() == (role, "")
            assert db.execute("SHOW DateStyle").fetchone() == ("ISO, MDY",)
    finally:
        pg_server.execute(empty_db, f"DROP ROLE {role}")


def test_an_interrupted_query_is_cancelled_on_the_server(
    light: libpq.Connection, pg_server: Server, empty_db: str
) -> None:
    pid = light.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
    previous = signal.signal(signal.SIGALRM, _raise_interrupt)
    started = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(KeyboardInterrupt):
            light.execute("SELECT pg_sleep(60)")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - started < 5
    state = "active"
    for _ in range(50):
        rows = pg_server.execute(empty_db, f"SELECT state FROM pg_stat_activity WHERE pid = {pid}")
        state = rows[0][0] if rows else "gone"
        if state != "active":
            break
        time.sleep(0.1)
    assert state != "active", "pg_sleep still runs on the server"
    assert light.closed  # mid-result, of no further use: closed, not left busy


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("fault", ["wrong password", "no such database", "closed port"])
def test_a_failed_connection_reads_as_with_psycopg(
    pg_server: Server, empty_db: str, fault: str
) -> None:
    if fault == "wrong password":
        target = url_as(pg_server, empty_db, "postgres", "wrong-pw")
    elif fault == "no such database":
        target = pg_server.url(f"{empty_db}_missing")
    else:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]  # free once closed
        target = f"postgresql://u:p@127.0.0.1:{port}/d"
    conn = ConnInfo.parse(target)
    with pytest.raises(DatabaseError) as theirs:
        conn.connect()
    started = time.monotonic()
    with pytest.raises(DatabaseError) as ours:
        conn.session()
    assert time.monotonic() - started < 5
    assert str(ours.value) == str(theirs.value)
    assert str(ours.value).startswith("cannot connect to ") and "wrong-pw" not in str(ours.value)
    expected = {
        "wrong password": "check the user and the password in DATABASE_URL",
        "no such database": "check the database name in DATABASE_URL",
        "closed port": "check that the server is running and reachable from here",
    }
    assert str(ours.value).endswith(expected[fault])


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the handshake completes in the kernel; nobody ever answers
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(libpq.Error, match="connection timeout expired"):
            libpq.Connection(f"host=127.0.0.1 port={port} user=u dbname=d sslmode=disable", 1.0)
        assert 0.9 < time.monotonic() - started < 4


def test_a_connect_can_be_interrupted() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        timer = threading.Timer(0.3, signal.raise_signal, [signal.SIGINT])
        started = time.monotonic()
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                libpq.Connection(f"host=127.0.0.1 port={port} user=u dbname=d sslmode=disable", 30)
        finally:
            timer.cancel()
        assert time.monotonic() - started < 5


def test_a_closed_connection_refuses_queries(light: libpq.Connection) -> None:
    light.close()
    assert light.closed
    with pytest.raises(libpq.Error, match="closed"):
        light.execute("SELECT 1")
    light.close()  # twice is fine


def test_parse_array_reads_what_the_server_writes() -> None:
    assert libpq.parse_array("{}") == []
    assert libpq.parse_array('{a,"b c",NULL,"NULL","q\\"\\\\"}') == [
        "a",
        "b c",
        None,
        "NULL",
        'q"\\',
    ]
    assert libpq.parse_array("[0:1]={1,2}", int) == [1, 2]
    with pytest.raises(libpq.Error, match="multi-dimensional"):
        libpq.parse_array("{{1,2},{3,4}}")


def test_copy_is_refused_instead_of_looping(light: libpq.Connection) -> None:
    with pytest.raises(libpq.Error, match="COPY is not supported"):
        light.execute("COPY (SELECT 1) TO STDOUT")
    assert light.closed


def test_an_empty_query_has_no_rows(light: libpq.Connection) -> None:
    assert light.execute("").fetchall() == []
    assert light.execute("-- nothing").fetchall() == []


@pytest.mark.parametrize(
    ("query", "params", "message"),
    [
        ("SELECT %s, %s", [1], "more placeholders than parameters"),
        ("SELECT %s", [1, 2], "fewer placeholders than parameters"),
        ("SELECT %(a)s", [1], "needs a mapping"),
        ("SELECT %s", {"a": 1}, "needs a sequence"),
    ],
)
def test_placeholders_and_parameters_must_match(query: str, params: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        libpq.numbered(query, params)
