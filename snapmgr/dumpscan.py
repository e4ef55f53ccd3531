"""Read a plain-format pg_dump stream as it flows past, without buffering it.

The scanner learns three things at no extra query cost:

* the exact row count of every table, from its ``COPY ... FROM stdin;`` block
  (one line per row: COPY's text format escapes newlines inside values);
* whether the dump is complete: pg_dump ends with a
  ``-- PostgreSQL database dump complete`` comment, followed only by ``--``,
  blank lines and (since 15.14/17.6) ``\\unrestrict <key>``;
* for restore, where the large-object section is: pg_dump wraps it in its own
  ``BEGIN;``/``COMMIT;``, which would end snapmgr's outer transaction early,
  so ``rewrite=True`` drops exactly those two lines inside that section. A
  ``COMMIT;`` line inside a procedure body elsewhere is left alone.

COPY data is handled in whole chunks with ``bytes.find`` and a C-speed newline
count (:class:`RowCounter`), never split into lines; only the schema part,
which is small, is walked line by line. A row longer than a chunk is not
buffered: only its row count matters, so memory stays flat even for huge
``bytea`` values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from snapmgr.errors import DumpError
from snapmgr.fingerprint import Fingerprints, Hasher

TRAILER = b"-- PostgreSQL database dump complete"
# pg_dump 15 writes "-- Data for Name: BLOBS; Type: BLOBS; ...", pg_dump 17 names the
# batch by OIDs ("-- Data for Name: 16438..16500; Type: BLOBS; ..."). A user object's
# name cannot fake the suffix: its own "; Type: ...; Schema: ...; Owner: ..." follows it.
DATA_HEADER = b"-- Data for Name: "
BLOBS_SUFFIX = b"; Type: BLOBS; Schema: -; Owner: -"
SECTION_PREFIXES = (b"-- Name: ", DATA_HEADER, TRAILER)
COPY_TAIL = b" FROM stdin;"
DATA_SECTIONS = ("TABLE DATA", "SEQUENCE SET")
COPY_END = b"\\.\n"
END_LINE = b"\n" + COPY_END
BACKSLASH_PROBES = 8
#: Rows at least this long on average are counted with ``memchr`` (see :class:`RowCounter`).
WIDE_ROW = 64
#: Objects a restore leaves as the target has them when they belong to someone
#: else (a platform's event triggers, its publications and what they publish):
#: a non-superuser can create no event trigger, and may not change another
#: role's publication. Recorded apart from ``owners`` (see
#: :attr:`DumpScanner.global_objects`).
GLOBAL_TYPES = ("EVENT TRIGGER", "PUBLICATION")
MEMBER_TYPES = ("PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA")
# What ends an unquoted name in a statement: SQL punctuation and white space.
NAME_STOPS = frozenset(". (\"\n\t,;)'")


class Section(NamedTuple):
    """A dump section's header: ``-- Name: N; Type: T; Schema: S; Owner: O``."""

    name: str
    type: str
    schema: str
    owner: str

    @classmethod
    def parse(cls, line: bytes) -> Section | None:
        text = line.decode("utf-8", "replace")
        for prefix in ("-- Name: ", "-- Data for Name: "):
            if text.startswith(prefix):
                text = text[len(prefix) :]
                break
        else:
            return None
        rest, _, owner = text.rpartition("; Owner: ")
        rest, _, schema = rest.rpartition("; Schema: ")
        name, _, kind = rest.rpartition("; Type: ")
        return cls(name, kind, schema, owner.strip())

    def is_global_object(self) -> bool:
        """An event trigger or publication section, one of its comments or labels,
        or a publication member (see :data:`GLOBAL_TYPES`)."""
        if self.type in GLOBAL_TYPES or self.type in MEMBER_TYPES:
            return True
        return self.type in ("COMMENT", "SECURITY LABEL") and self.name.startswith(
            tuple(f"{kind} " for kind in GLOBAL_TYPES)
        )

    def owner_key(self) -> str:
        """What the owner owns here: ``schema S`` (the schema itself), ``in S``, or ``global``."""
        if self.type == "SCHEMA":
            return f"schema {self.name}"
        if self.name.startswith("SCHEMA ") and self.type in ("ACL", "COMMENT"):
            return f"schema {self.name[len('SCHEMA ') :]}"
        return "global" if self.schema == "-" else f"in {self.schema}"


#: Decides, during a restore, what becomes of one schema line: the bytes to
#: send instead (with their newline), or ``b""`` to leave the line out.
LineFilter = Callable[[bytes, "Section | None"], bytes]


#: What the scanner reads: a snapshot feeds it pooled ``bytearray`` buffers
#: (see :class:`snapmgr.pipeline.BufferPool`), a restore decompressed ``bytes``.
Chunk = bytes | bytearray


def parse_qualified_name(text: str) -> str | None:
    """``schema.table`` (unquoted) from the start of ``public."Odd ""x"" (a, b)``."""
    parts = split_qualified_name(text)
    return ".".join(parts) if parts is not None and len(parts) == 2 else None


def read_quoted(text: str, start: int) -> tuple[str, int] | None:
    """The double-quoted identifier that starts at ``text[start]`` (a doubled quote
    inside stands for one) and the index after its closing quote, or ``None`` if it
    is not closed."""
    name: list[str] = []
    j = start + 1
    while j < len(text):
        if text[j] == '"':
            if text.startswith('""', j):
                name.append('"')
                j += 2
                continue
            return "".join(name), j + 1
        name.append(text[j])
        j += 1
    return None


def split_qualified_name(text: str) -> list[str] | None:
    """The unquoted parts of the dotted name at the start of ``text``
    (``schema.seq.column`` too), or ``None`` if it does not start with one."""
    parts: list[str] = []
    i = 0
    while True:
        if text.startswith('"', i):
            quoted = read_quoted(text, i)
            if quoted is None:
                return None
            name, i = quoted
            parts.append(name)
        else:
            j = i
            while j < len(text) and text[j] not in NAME_STOPS:
                j += 1
            if j == i:
                return None
            parts.append(text[i:j])
            i = j
        if text.startswith(".", i):
            i += 1
            continue
        break
    return parts


def _find_copy_end(data: Chunk, pos: int) -> int:
    """Index of the ``\\.`` line after ``pos`` (not at ``pos`` itself), or -1.

    ``bytes.find`` of the 4-byte ``\\n\\\\.\\n`` runs at about 2 GB/s; ``memchr`` for a
    backslash is several times faster, and row data often has none (no NULLs,
    no escapes). So look for backslashes first, a few at a time, and fall back to
    the full search only when the data is full of them.
    """
    start = pos
    for _ in range(BACKSLASH_PROBES):
        hit = data.find(b"\\", start)
        if hit < 0:
            return -1
        if hit > pos and data[hit - 1] == 10 and data.startswith(COPY_END, hit):
            return hit
        start = hit + 1
    found = data.find(END_LINE, max(pos, start - 1))
    return found + 1 if found >= 0 else -1


class RowCounter:
    """Counts the newlines in a span of COPY data, the cheaper of two ways.

    ``bytes.count`` looks at every byte in a plain loop: about 1.3 GB/s here,
    the largest cost of a snapshot after compression. Deleting the newlines
    (``bytes.replace``) and comparing lengths finds them with ``memchr`` and
    copies what lies between: 2.5-3x faster on rows of ~280 bytes, but it pays
    per row, so below about 30 bytes a row it is the slower one (ten times on
    2-byte rows). The rows just counted choose the way for the next span:
    ``replace`` after rows of :data:`WIDE_ROW` bytes or more on average.

    ``replace`` works on a whole chunk, so it is used only when the span is most
    of its chunk; the newlines outside the span are counted plainly and taken
    off.
    """

    def __init__(self) -> None:
        self._wide = False

    def count(self, data: Chunk, start: int, end: int) -> int:
        span = end - start
        if self._wide and 2 * span > len(data):
            total = len(data) - len(data.replace(b"\n", b""))
            rows = total - data.count(b"\n", 0, start) - data.count(b"\n", end)
        else:
            rows = data.count(b"\n", start, end)
        if rows:
            self._wide = span >= WIDE_ROW * rows
        return rows


class DumpScanner:
    """Feed it the raw SQL in chunks; read ``tables`` and call ``finish()`` at the end."""

    def __init__(
        self,
        *,
        rewrite: bool = False,
        line_filter: LineFilter | None = None,
        fingerprint: bool = False,
    ) -> None:
        self.tables: dict[str, int] = {}
        self._rows = RowCounter()
        #: With ``fingerprint``: the running fingerprint of each table's COPY data and
        #: of each large object's bytes (see :mod:`snapmgr.fingerprint`).
        self.fingerprints = Fingerprints() if fingerprint else None
        self._hash: Hasher | None = None
        #: ``{role: {"schema S", "in S", "global"}}``: who owns what in the dump,
        #: :data:`GLOBAL_TYPES` and what belongs to them left out.
        self.owners: dict[str, set[str]] = {}
        #: ``[type, name, owner, statement]`` of each event trigger and publication
        #: section, their comments and security labels, and each publication member
        #: (``statement``: a member's ``ALTER PUBLICATION … ADD …;``, else "").
        self.global_objects: list[list[str]] = []
        self._want_statement = False
        self.section: Section | None = None
        self._filter = line_filter
        self.raw_size = 0
        self._rewrite = rewrite
        # A partial line waiting for the rest of its bytes: a schema line, or at
        # most ``\\.`` (a possible end-of-data marker) inside COPY data.
        self._carry: Chunk = b""
        # Inside COPY data, in the middle of a row whose start was already passed on.
        self._midline = False
        self._copy_table: str | None = None
        self._trailer_ok = False
        self._in_blobs = False
        # COPY is only believed as the first statement of a table-data section, so a
        # function body quoting "COPY x FROM stdin;" cannot start a phantom data block.
        self._copy_allowed = False
        self._copy_head: list[Chunk] = []
        # The line filter left out the COPY statement: leave out its data too.
        self._drop_copy = False

    @property
    def complete(self) -> bool:
        """True when the trailer has been seen and nothing but its tail followed it."""
        return self._trailer_ok and self._copy_table is None

    def feed(self, chunk: Chunk) -> bytes:
        """Scan ``chunk``; with ``rewrite`` return the bytes to pass on, else ``b""``.

        The chunk is never copied as a whole: a carried partial line is
        completed with the head of the chunk and scanned on its own first.
        """
        self.raw_size += len(chunk)
        out: list[Chunk] = []
        pos = 0
        if self._carry:
            nl = chunk.find(b"\n")
            if nl < 0:
                if self._copy_table is None or COPY_END.startswith(self._carry + chunk):
                    self._carry += chunk
                    return b""
                # Not the end marker after all, just a long row: pass it on.
                head, self._carry, self._midline = self._carry + chunk, b"", True
                if self._hash is not None:
                    self._hash.update(head)
                return bytes(head) if self._rewrite and not self._drop_copy else b""
            head, self._carry = self._carry + chunk[: nl + 1], b""
            self._scan(head, 0, out)
            pos = nl + 1
        self._scan(chunk, pos, out)
        return b"".join(out) if self._rewrite else b""

    def _scan(self, data: Chunk, pos: int, out: list[Chunk]) -> None:
        while pos < len(data):
            if self._copy_table is not None:
                pos = self._scan_copy(data, pos, out)
            else:
                pos = self._scan_sql(data, pos, out)

    def _scan_copy(self, data: Chunk, pos: int, out: list[Chunk]) -> int:
        """Count rows up to the ``\\.`` line; returns where the scan stopped."""
        assert self._copy_table is not None
        at_line_start = not self._midline
        self._midline = False
        at_end = at_line_start and data.startswith(COPY_END, pos)
        end = pos if at_end else _find_copy_end(data, pos)
        if end < 0:
            last_nl = data.rfind(b"\n", pos)
            rest = last_nl + 1 if last_nl >= 0 else pos
            if last_nl >= 0:
                self.tables[self._copy_table] += self._rows.count(data, pos, rest)
            at_line = at_line_start or last_nl >= 0
            if at_line and len(data) - rest < len(COPY_END) and COPY_END.startswith(data[rest:]):
                self._carry = data[rest:]  # "\\" or "\\.": maybe the end marker, wait and see
                self._hash_payload(data, pos, rest)
                if self._rewrite and not self._drop_copy:
                    out.append(data[pos:rest])
            else:
                self._midline = True  # a row longer than this chunk: pass it on, count it later
                self._hash_payload(data, pos, len(data))
                if self._rewrite and not self._drop_copy:
                    out.append(data[pos:])
            return len(data)
        self.tables[self._copy_table] += self._rows.count(data, pos, end)
        self._hash_payload(data, pos, end)
        if self._rewrite and not self._drop_copy:
            out.append(data[pos : end + len(COPY_END)])
        self._drop_copy = False
        self._copy_table = None
        self._hash = None
        return end + len(COPY_END)

    def _hash_payload(self, data: Chunk, start: int, end: int) -> None:
        if self._hash is not None and end > start:
            self._hash.update(memoryview(data)[start:end])

    def _scan_sql(self, data: Chunk, pos: int, out: list[Chunk]) -> int:
        """Handle one schema line; a partial line is kept for the next chunk."""
        nl = data.find(b"\n", pos)
        if nl < 0:
            self._carry = data[pos:]
            return len(data)
        line = bytes(data[pos:nl])  # schema lines are short; a snapshot reuses its buffers
        keep = self._see_line(line)
        if self._rewrite and keep:
            if self._filter is None:
                out.append(data[pos : nl + 1])
            else:
                sent = self._filter(line, self.section)
                out.append(sent)
                # A COPY statement the filter left out takes its data with it.
                self._drop_copy = self._copy_table is not None and not sent
        return nl + 1

    def _see_line(self, line: bytes) -> bool:
        """Update state for one schema line; False means drop it (rewrite only)."""
        if line.startswith(SECTION_PREFIXES):
            is_data = line.startswith(DATA_HEADER)
            self._in_blobs = is_data and line.endswith(BLOBS_SUFFIX)
            self._copy_allowed = is_data and not self._in_blobs
            self._copy_head = []
            if line == TRAILER:
                self.section = None
                self._trailer_ok = True
                return True
            self._see_section(line)
        if self._want_statement and line and not line.startswith(b"--"):
            self._want_statement = False
            self.global_objects[-1][3] = line.decode("utf-8", "replace")
        if self._trailer_ok and line not in (b"", b"--") and not line.startswith(b"\\unrestrict "):
            self._trailer_ok = False
        if self._copy_allowed and (self._copy_head or line.startswith(b"COPY ")):
            self._see_copy_line(line)
        elif self._in_blobs and self.fingerprints is not None:
            self.fingerprints.see_blob_line(line)
        return not (self._in_blobs and line in (b"BEGIN;", b"COMMIT;"))

    def _see_section(self, line: bytes) -> None:
        section = Section.parse(line)
        self.section = section
        self._want_statement = False
        if section is not None and section.is_global_object():
            self.global_objects.append([section.type, section.name, section.owner, ""])
            self._want_statement = section.type in MEMBER_TYPES
        # Data is loaded with privileges, not ownership: only definitions name owners.
        elif (
            section is not None
            and section.owner not in ("", "-")
            and section.type not in DATA_SECTIONS
        ):
            self.owners.setdefault(section.owner, set()).add(section.owner_key())

    def _see_copy_line(self, line: Chunk) -> None:
        """Collect a COPY statement (a quoted column name may hold a newline)."""
        self._copy_head.append(line)
        if not line.endswith(COPY_TAIL):
            return
        statement = b"\n".join(self._copy_head)
        self._copy_head = []
        self._copy_allowed = False
        name = parse_qualified_name(statement[5:].decode("utf-8", "replace"))
        if name is None:
            raise DumpError(f"cannot parse the table name in {statement[:200]!r}")
        self._copy_table = name
        self.tables.setdefault(name, 0)
        if self.fingerprints is not None:
            self._hash = self.fingerprints.table(name)

    def finish(self) -> bytes:
        """Process an unterminated last line; with ``rewrite`` return it to pass on."""
        tail, self._carry = bytes(self._carry), b""
        if tail and self._copy_table is None:
            self._see_line(tail)
            if self._rewrite and self._filter:
                return self._filter(tail, self.section).removesuffix(b"\n")
        return bytes(tail) if self._rewrite else b""

    def incomplete_reason(self) -> str | None:
        """Why the stream so far is not a complete dump, or ``None`` if it is."""
        if self._copy_table is not None:
            return f"it is truncated inside the data of table {self._copy_table}"
        if not self._trailer_ok:
            return "pg_dump's 'dump complete' trailer is missing (truncated or failed dump)"
        return None
