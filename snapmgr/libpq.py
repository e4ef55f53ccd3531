"""libpq through ctypes: a snapshot's few catalog queries without importing psycopg.

Why: importing psycopg costs about 0.3 s of CPU (its pq wrapper, a hundred
error classes, asyncio, a scan of the installed packages' metadata), which is
a third of a small database's whole snapshot. A snapshot parses the URL, holds
an advisory lock and reads a few dozen catalog rows; libpq itself does that in
milliseconds. This module binds the few libpq functions it needs with ctypes
(standard library) and loads the libpq psycopg uses (the copy bundled with
psycopg-binary, else the system's), so URL parsing, service files, passfiles,
SSL and the server's error texts are libpq's own, exactly as with psycopg.

:class:`Connection` offers the part of psycopg's API the snapshot path uses:
``execute(query, params)`` with psycopg's ``%s``/``%(name)s`` placeholders,
``fetchone()``/``fetchall()``, ``info.server_version``, ``close()`` and
``with``, returning the same Python types for what those queries read
(bool, integers, text, one-dimensional arrays, timestamps), so the catalog
readers (:mod:`snapmgr.inventory`, :mod:`snapmgr.database_props`) work on
either. Restores and drills, which need transactions and COPY, use psycopg.

Parameters travel apart from the query text (``PQsendQueryParams``), never
quoted into it. Every wait (connecting, a query, a lock) polls the socket in
short slices, so Ctrl-C and SIGTERM interrupt it as they interrupt psycopg,
and an interrupted query is cancelled on the server.
"""

from __future__ import annotations

import ctypes
import functools
import re
import select
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from glob import glob
from pathlib import Path
from typing import Any

POLL_S = 0.1  # how long one wait on the socket lasts before signals are looked at

# libpq's enums (libpq-fe.h), stable since PostgreSQL 7.4.
CONNECTION_BAD = 1
POLLING_FAILED, POLLING_READING, POLLING_WRITING, POLLING_OK = 0, 1, 2, 3
PGRES_EMPTY_QUERY, PGRES_COMMAND_OK, PGRES_TUPLES_OK = 0, 1, 2
PGRES_COPY_OUT, PGRES_COPY_IN, PGRES_COPY_BOTH = 3, 4, 8
DIAG_SQLSTATE = ord("C")


class Error(Exception):
    """A libpq or server error: the message as psycopg words it (severity left
    out, DETAIL and HINT lines kept) and the SQLSTATE when the server sent one."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class _Option(ctypes.Structure):
    """``PQconninfoOption``."""

    _fields_ = [
        ("keyword", ctypes.c_char_p),
        ("envvar", ctypes.c_char_p),
        ("compiled", ctypes.c_char_p),
        ("val", ctypes.c_char_p),
        ("label", ctypes.c_char_p),
        ("dispchar", ctypes.c_char_p),
        ("dispsize", ctypes.c_int),
    ]


_NOTICE_PROCESSOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p)
_ignore_notice = _NOTICE_PROCESSOR(lambda _arg, _message: None)  # kept alive: module-level

_P = ctypes.c_void_p
_S = ctypes.c_char_p
_I = ctypes.c_int
#: name: (result type, argument types)
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "PQlibVersion": (_I, []),
    "PQconninfoParse": (ctypes.POINTER(_Option), [_S, ctypes.POINTER(_P)]),
    "PQconninfoFree": (None, [ctypes.POINTER(_Option)]),
    "PQfreemem": (None, [_P]),
    "PQconnectStart": (_P, [_S]),
    "PQconnectPoll": (_I, [_P]),
    "PQstatus": (_I, [_P]),
    "PQsocket": (_I, [_P]),
    "PQerrorMessage": (_S, [_P]),
    "PQfinish": (None, [_P]),
    "PQserverVersion": (_I, [_P]),
    "PQsetNoticeProcessor": (_P, [_P, _NOTICE_PROCESSOR, _P]),
    "PQsendQuery": (_I, [_P, _S]),
    "PQsendQueryParams": (_I, [_P, _S, _I, _P, ctypes.POINTER(_S), _P, _P, _I]),
    "PQflush": (_I, [_P]),
    "PQconsumeInput": (_I, [_P]),
    "PQisBusy": (_I, [_P]),
    "PQgetResult": (_P, [_P]),
    "PQresultStatus": (_I, [_P]),
    "PQresultErrorMessage": (_S, [_P]),
    "PQresultErrorField": (_S, [_P, _I]),
    "PQntuples": (_I, [_P]),
    "PQnfields": (_I, [_P]),
    "PQftype": (ctypes.c_uint, [_P, _I]),
    "PQgetisnull": (_I, [_P, _I, _I]),
    "PQgetvalue": (_S, [_P, _I, _I]),
    "PQclear": (None, [_P]),
    "PQgetCancel": (_P, [_P]),
    "PQcancel": (_I, [_P, _S, _I]),
    "PQfreeCancel": (None, [_P]),
}


@functools.cache
def library() -> ctypes.CDLL:
    """libpq, loaded and bound on first use."""
    lib = _load()
    for name, (restype, argtypes) in _SIGNATURES.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    return lib


def _candidates() -> Iterator[str]:
    """Where libpq may be: psycopg-binary's own copy first (what psycopg runs on),
    then the system's; ``find_library`` (which runs ldconfig) last."""
    for entry in sys.path:
        base = Path(entry or ".")
        yield from sorted(glob(str(base / "psycopg_binary.libs" / "libpq-*.so*")))
        yield from sorted(glob(str(base / "psycopg_binary" / ".dylibs" / "libpq*.dylib")))
    yield from ("libpq.so.5", "libpq.5.dylib")
    import ctypes.util  # runs ldconfig or a compiler: only when all else failed

    found = ctypes.util.find_library("pq") or ctypes.util.find_library("libpq")
    if found:
        yield found


def _load() -> ctypes.CDLL:
    tried = []
    for candidate in _candidates():
        try:
            return ctypes.CDLL(candidate)
        except OSError as exc:
            tried.append(str(exc))
    raise Error(
        "cannot load libpq (install psycopg[binary], or the system's libpq5): "
        + ("; ".join(tried[-2:]) or "not found")
    )


def _text(raw: bytes | None) -> str:
    return (raw or b"").decode("utf-8", "replace")


# ---------------------------------------------------------------------- conninfo


def parse_conninfo(conninfo: str) -> dict[str, str]:
    """A URL or ``key=value`` string as libpq reads it: ``{keyword: value}`` of the
    parameters it sets (``psycopg.conninfo.conninfo_to_dict``); ``Error`` if invalid."""
    lib = library()
    errmsg = _P()
    options = lib.PQconninfoParse(conninfo.encode(), ctypes.byref(errmsg))
    if not options:
        message = ""
        if errmsg.value is not None:
            message = ctypes.string_at(errmsg.value).decode("utf-8", "replace")
            lib.PQfreemem(errmsg)
        raise Error(message.strip() or "out of memory")
    try:
        params: dict[str, str] = {}
        index = 0
        while options[index].keyword is not None:
            option = options[index]
            if option.val is not None:
                params[_text(option.keyword)] = _text(option.val)
            index += 1
        return params
    finally:
        lib.PQconninfoFree(options)


_ESCAPE = re.compile(r"([\\'])")
_SPACE = re.compile(r"\s")


def make_conninfo(params: Mapping[str, str]) -> str:
    """``key=value`` pairs as libpq reads them (psycopg's ``make_conninfo`` rules)."""

    def escape(value: str) -> str:
        if not value:
            return "''"
        value = _ESCAPE.sub(r"\\\1", value)
        return f"'{value}'" if _SPACE.search(value) else value

    return " ".join(f"{key}={escape(str(value))}" for key, value in params.items())


# ---------------------------------------------------------------------- values


def parse_array(text: str, convert: Any = str) -> list[Any]:
    """A one-dimensional array's text form (``{a,"b c",NULL}``) as a list."""
    if text.startswith("["):  # explicit bounds: "[0:1]={a,b}"
        text = text[text.index("=") + 1 :]
    if text == "{}":
        return []
    items: list[Any] = []
    i = 1
    while True:
        if text[i] == "{":
            raise Error("a multi-dimensional array is not supported here")
        if text[i] == '"':
            i += 1
            chars = []
            while text[i] != '"':
                if text[i] == "\\":
                    i += 1
                chars.append(text[i])
                i += 1
            i += 1
            items.append(convert("".join(chars)))
        else:
            end = i
            while text[end] not in ",}":
                end += 1
            word = text[i:end]
            items.append(None if word == "NULL" else convert(word))
            i = end
        if text[i] == "}":
            return items
        i += 1


def _bool(text: str) -> bool:
    return text == "t"


_INT_TYPES = (20, 21, 23, 26, 28)  # int8, int2, int4, oid, xid
_ELEMENT = {1000: _bool, 1005: int, 1007: int, 1016: int, 1028: int}
_TEXT_ARRAYS = (1003, 1009, 1014, 1015)  # name[], text[], bpchar[], varchar[]


def convert(type_oid: int, text: str) -> Any:
    """A text-format value as psycopg returns it, for the types snapmgr reads."""
    if type_oid == 16:
        return text == "t"
    if type_oid in _INT_TYPES:
        return int(text)
    if type_oid in (1114, 1184):  # timestamp, timestamptz (DateStyle ISO)
        try:
            return datetime.fromisoformat(text)
        except ValueError:  # infinity, BC dates
            return text
    if type_oid in _ELEMENT:
        return parse_array(text, _ELEMENT[type_oid])
    if type_oid in _TEXT_ARRAYS:
        return parse_array(text)
    return text


def _param(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, list | tuple):
        return "{" + ",".join(_element(item) for item in value) + "}"
    raise TypeError(f"cannot pass a {type(value).__name__} as a query parameter")


def _element(value: object) -> str:
    text = _param(value)
    if text is None:
        return "NULL"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_PLACEHOLDER = re.compile(r"%(?:\((\w+)\))?([s%])")
_NONE = object()


def numbered(
    query: str, params: Sequence[object] | Mapping[str, object]
) -> tuple[str, list[str | None]]:
    """psycopg's ``%s`` / ``%(name)s`` placeholders as ``$1``…, with the values in order."""
    values: list[str | None] = []
    names: dict[str, int] = {}
    positional = iter(params) if not isinstance(params, Mapping) else None

    def number(match: re.Match[str]) -> str:
        name, kind = match.groups()
        if kind == "%":
            return "%"
        if name is None:
            if positional is None:
                raise TypeError("a %s placeholder needs a sequence of parameters")
            value = next(positional, _NONE)
            if value is _NONE:
                raise TypeError("the query has more placeholders than parameters")
            values.append(_param(value))
            return f"${len(values)}"
        if not isinstance(params, Mapping):
            raise TypeError(f"a %({name})s placeholder needs a mapping of parameters")
        if name not in names:
            values.append(_param(params[name]))
            names[name] = len(values)
        return f"${names[name]}"

    text = _PLACEHOLDER.sub(number, query)
    if positional is not None and next(positional, _NONE) is not _NONE:
        raise TypeError("the query has fewer placeholders than parameters")
    return text, values


# ---------------------------------------------------------------------- connection


class Result:
    """The rows of one statement, read like a psycopg cursor."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows
        self._next = 0

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._next = self._rows[self._next :], len(self._rows)
        return rows


class Info:
    """``connection.info``, as far as snapmgr reads it."""

    def __init__(self, server_version: int) -> None:
        self.server_version = server_version


class Connection:
    """One libpq session in autocommit mode (see the module doc)."""

    def __init__(self, conninfo: str, timeout_s: float) -> None:
        self._lib = library()
        self._conn: int | None = self._lib.PQconnectStart(conninfo.encode())
        if not self._conn:
            raise Error("connection failed: out of memory")
        try:
            self._connect(timeout_s)
        except BaseException:
            self.close()
            raise
        self._lib.PQsetNoticeProcessor(self._conn, _ignore_notice, None)
        self.info = Info(self._lib.PQserverVersion(self._conn))

    def _connect(self, timeout_s: float) -> None:
        """Drive ``PQconnectPoll`` (libpq's ``connect_timeout`` only bounds its blocking
        connect, so the deadline is kept here, as psycopg keeps it)."""
        if self._lib.PQstatus(self._conn) == CONNECTION_BAD:  # e.g. a bad option
            raise Error(f"connection failed: {self._message()}")
        deadline = time.monotonic() + timeout_s
        state = POLLING_WRITING
        while True:
            if state == POLLING_OK:
                return
            if state == POLLING_FAILED:
                raise Error(f"connection failed: {self._message()}")
            # PQconnectPoll only when the socket is ready, as libpq requires: called
            # early it takes a TCP connect still in progress for done and then
            # blocks in C, deaf to the deadline and to signals.
            while not self._wait(reading=state == POLLING_READING):
                if time.monotonic() >= deadline:
                    raise Error("connection timeout expired")
            state = self._lib.PQconnectPoll(self._conn)

    def _wait(self, *, reading: bool) -> bool:
        """Wait at most :data:`POLL_S` for the socket; True when it is ready."""
        sock = self._lib.PQsocket(self._conn)
        if sock < 0:
            raise Error(f"connection failed: {self._message() or 'no socket'}")
        poller = select.poll()  # not select(): any descriptor number
        poller.register(sock, select.POLLIN if reading else select.POLLOUT)
        return bool(poller.poll(POLL_S * 1000))

    def _message(self) -> str:
        return _text(self._lib.PQerrorMessage(self._conn)).strip()

    @property
    def closed(self) -> bool:
        return self._conn is None

    def execute(
        self, query: str, params: Sequence[object] | Mapping[str, object] | None = None
    ) -> Result:
        """Run one statement (several without ``params``); the last one's rows."""
        if self._conn is None:
            raise Error("the connection is closed")
        if params is None:
            sent = self._lib.PQsendQuery(self._conn, query.encode())
        else:
            text, values = numbered(query, params)
            array = (_S * len(values))(*(v.encode() if v is not None else None for v in values))
            sent = self._lib.PQsendQueryParams(
                self._conn, text.encode(), len(values), None, array, None, None, 0
            )
        if not sent:
            raise Error(self._message() or "cannot send the query")
        try:
            return self._results()
        except BaseException as exc:
            if not isinstance(exc, Error):
                # Interrupted: stop the statement on the server too; the session is
                # mid-result and of no further use.
                self._cancel()
                self.close()
            raise

    def _results(self) -> Result:
        while (flushed := self._lib.PQflush(self._conn)) != 0:
            if flushed < 0:
                raise Error(self._message())
            self._wait(reading=False)
        rows: list[tuple[Any, ...]] = []
        error: Error | None = None
        while True:
            while self._lib.PQisBusy(self._conn):
                self._wait(reading=True)
                if not self._lib.PQconsumeInput(self._conn):
                    raise Error(self._message())
            result = self._lib.PQgetResult(self._conn)
            if not result:
                break
            try:
                status = self._lib.PQresultStatus(result)
                if status in (PGRES_COPY_OUT, PGRES_COPY_IN, PGRES_COPY_BOTH):
                    self.close()  # libpq would hand out this COPY result forever
                    raise Error("COPY is not supported on this session")
                if status not in (PGRES_EMPTY_QUERY, PGRES_COMMAND_OK, PGRES_TUPLES_OK):
                    error = error or self._result_error(result)
                elif error is None:
                    rows = self._rows(result) if status == PGRES_TUPLES_OK else []
            finally:
                self._lib.PQclear(result)
        if error is not None:
            raise error
        return Result(rows)

    def _rows(self, result: int) -> list[tuple[Any, ...]]:
        lib = self._lib
        types = [lib.PQftype(result, col) for col in range(lib.PQnfields(result))]
        return [
            tuple(
                None
                if lib.PQgetisnull(result, row, col)
                else convert(type_oid, _text(lib.PQgetvalue(result, row, col)))
                for col, type_oid in enumerate(types)
            )
            for row in range(lib.PQntuples(result))
        ]

    def _result_error(self, result: int) -> Error:
        message = _text(self._lib.PQresultErrorMessage(result)).strip()
        # "ERROR:  text": the severity goes, as psycopg drops it.
        severity, colon, rest = message.partition(":")
        if colon and severity.isupper():
            message = rest.strip()
        sqlstate = self._lib.PQresultErrorField(result, DIAG_SQLSTATE)
        return Error(message or self._message(), _text(sqlstate) if sqlstate else None)

    def _cancel(self) -> None:
        cancel = self._lib.PQgetCancel(self._conn)
        if cancel:
            buffer = ctypes.create_string_buffer(256)
            self._lib.PQcancel(cancel, buffer, len(buffer))
            self._lib.PQfreeCancel(cancel)

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._lib.PQfinish(conn)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_conn", None) is not None:
            self.close()
