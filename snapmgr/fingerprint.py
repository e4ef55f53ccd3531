"""Content fingerprints: what a table's data and a large object's bytes hash to.

sha256 proves that the stored bytes are the bytes written; a fingerprint
proves that the *data* is the data dumped. Each table's fingerprint is the
xxh3-128 of its COPY payload exactly as pg_dump wrote it (the rows between
``COPY … FROM stdin;`` and ``\\.``), computed while the dump streams past at
several GB/s (no second pass, not sha256 on the hot path). Each large
object's is the xxh3-128 of its bytes.

A drill reads the same data back from a restored server, with the session
settings pg_dump uses for its output (``DateStyle``, ``IntervalStyle``,
``extra_float_digits``, the snapshot's time zone), so that equal data gives
equal bytes: ``COPY table (columns) TO STDOUT`` over the columns pg_dump
copies (not generated, not dropped), in the order a fresh restore stores
them.
"""

from __future__ import annotations

from typing import Any, Protocol

import xxhash

ALGORITHM = "xxh3_128"
LO_OPEN = b"SELECT pg_catalog.lo_open('"
LO_WRITE = b"SELECT pg_catalog.lowrite(0, "
LO_CLOSE = b"SELECT pg_catalog.lo_close(0);"

#: What pg_dump sets on its connection that shapes COPY's text output.
DUMP_SESSION = (
    "SET DateStyle = ISO",
    "SET IntervalStyle = postgres",
    "SET extra_float_digits = 3",
    "SET bytea_output = hex",
    "SET row_security = off",
)

COLUMNS_SQL = """
SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
  AND a.attgenerated = ''"""


class Hasher(Protocol):
    def update(self, data: bytes | bytearray | memoryview) -> None: ...

    def hexdigest(self) -> str: ...


class Fingerprints:
    """The running fingerprints of one dump stream."""

    def __init__(self) -> None:
        self._tables: dict[str, Hasher] = {}
        self._objects: dict[str, Hasher] = {}
        self._object: Hasher | None = None

    def table(self, name: str) -> Hasher:
        return self._tables.setdefault(name, xxhash.xxh3_128())

    def see_blob_line(self, line: bytes) -> None:
        """Follow pg_dump's large-object statements: open, write hex chunks, close."""
        if line.startswith(LO_OPEN):
            oid = line[len(LO_OPEN) :].split(b"'", 1)[0].decode()
            self._object = self._objects.setdefault(oid, xxhash.xxh3_128())
        elif line.startswith(LO_WRITE) and self._object is not None:
            literal = line[len(LO_WRITE) :].rstrip(b");")
            hex_start = literal.find(b"\\x") + 2
            self._object.update(bytes.fromhex(literal[hex_start:].rstrip(b"'").decode()))
        elif line == LO_CLOSE:
            self._object = None

    def result(self) -> dict[str, Any]:
        return {
            "algorithm": ALGORITHM,
            "tables": {name: h.hexdigest() for name, h in sorted(self._tables.items())},
            "large_objects": {
                oid: h.hexdigest() for oid, h in sorted(self._objects.items(), key=_oid_order)
            },
        }


def _oid_order(item: tuple[str, Hasher]) -> int:
    return int(item[0])


def prepare_session(db: Any, timezone: str | None) -> None:
    """Make ``db``'s COPY output byte-equal to what pg_dump wrote."""
    for statement in DUMP_SESSION:
        db.execute(statement)
    if timezone:
        db.execute("SELECT pg_catalog.set_config('TimeZone', %s, false)", (timezone,))


def table_fingerprint(db: Any, name: str) -> str:
    """The fingerprint of table ``schema.table`` as stored in ``db`` now."""
    from psycopg import sql

    schema, _, table = name.partition(".")
    ident = sql.Identifier(schema, table)
    row = db.execute(COLUMNS_SQL, (ident.as_string(db),)).fetchone()
    columns = row[0] if row else None
    digest = xxhash.xxh3_128()
    query = (
        sql.SQL("COPY {} ({}) TO STDOUT").format(ident, sql.SQL(columns))
        if columns
        else sql.SQL("COPY {} TO STDOUT").format(ident)
    )
    with db.cursor().copy(query) as copy:
        for block in copy:
            digest.update(block)
    return str(digest.hexdigest())


def large_object_fingerprint(db: Any, oid: str) -> str:
    row = db.execute("SELECT pg_catalog.lo_get(%s::oid)", (oid,)).fetchone()
    return str(xxhash.xxh3_128(bytes(row[0]) if row and row[0] is not None else b"").hexdigest())
