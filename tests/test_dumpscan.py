"""The streaming dump scanner: row counts, completeness, the large-object rewrite."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapmgr.dumpscan import WIDE_ROW, DumpScanner, RowCounter, parse_qualified_name

DUMP = b"""--
-- PostgreSQL database dump
--

\\restrict abc

SET statement_timeout = 0;
CREATE PROCEDURE public.p()
    LANGUAGE plpgsql
    AS $$
begin
COMMIT;
end$$;

--
-- Data for Name: W\xc3\xa9ird."name; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public."W\xc3\xa9ird.""name" (x) FROM stdin;
1
2
\\.


--
-- Data for Name: empty; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.empty (x) FROM stdin;
\\.


--
-- Data for Name: t; Type: TABLE DATA; Schema: s; Owner: -
--

COPY s.t FROM stdin;
a\\nb\tc
\\\\.
\\.


--
-- Data for Name: BLOBS; Type: BLOBS; Schema: -; Owner: -
--

BEGIN;

SELECT pg_catalog.lo_open('16390', 131072);
SELECT pg_catalog.lowrite(0, '\\x68656c6c6f');
SELECT pg_catalog.lo_close(0);

COMMIT;

--
-- PostgreSQL database dump complete
--

\\unrestrict abc

"""
EXPECTED = {'public.W\xe9ird."name': 2, "public.empty": 0, "s.t": 2}


def scan(data: bytes, cuts: list[int], rewrite: bool = False) -> tuple[DumpScanner, bytes]:
    scanner = DumpScanner(rewrite=rewrite)
    out = []
    last = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        out.append(scanner.feed(data[last:cut]))
        last = cut
    out.append(scanner.finish())
    return scanner, b"".join(out)


@settings(max_examples=300, derandomize=True)
@given(st.lists(st.integers(min_value=0, max_value=len(DUMP)), max_size=12))
def test_counts_are_independent_of_chunk_boundaries(cuts: list[int]) -> None:
    scanner, _ = scan(DUMP, cuts)
    assert scanner.tables == EXPECTED
    assert scanner.incomplete_reason() is None
    assert scanner.raw_size == len(DUMP)


@settings(max_examples=300, derandomize=True)
@given(st.lists(st.integers(min_value=0, max_value=len(DUMP)), max_size=12))
def test_counts_from_a_reused_buffer_equal_counts_from_bytes(cuts: list[int]) -> None:
    """A snapshot feeds pooled bytearrays that are overwritten once scanned: the
    scanner must keep copies of what it carries over, never views of the buffer."""
    scanner = DumpScanner()
    buffer = bytearray()
    last = 0
    for cut in [*sorted(set(cuts)), len(DUMP)]:
        buffer[:] = DUMP[last:cut]
        scanner.feed(buffer)
        buffer[:] = b"\\.\n" * len(buffer)  # garbage that would end any COPY block
        last = cut
    scanner.finish()
    assert scanner.tables == EXPECTED
    assert scanner.incomplete_reason() is None


@settings(max_examples=200, derandomize=True)
@given(st.lists(st.integers(min_value=0, max_value=len(DUMP)), max_size=12))
def test_rewrite_drops_only_the_blob_transaction(cuts: list[int]) -> None:
    _, out = scan(DUMP, cuts, rewrite=True)
    assert out == DUMP.replace(b"\nBEGIN;\n", b"\n").replace(
        b"lo_close(0);\n\nCOMMIT;\n", b"lo_close(0);\n\n"
    )
    assert b"begin\nCOMMIT;\nend$$" in out  # the procedure body is untouched


@pytest.mark.parametrize("cut", [len(DUMP) - 60, DUMP.index(b"2\n\\."), 40])
def test_truncated_dumps_are_incomplete(cut: int) -> None:
    scanner, _ = scan(DUMP[:cut], [])
    assert scanner.incomplete_reason() is not None


def test_statement_after_trailer_makes_it_incomplete() -> None:
    scanner, _ = scan(DUMP + b"DROP TABLE x;\n", [])
    assert scanner.incomplete_reason() is not None


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("public.actor (a, b) FROM stdin;", "public.actor"),
        ('"My Schema"."a.b""c" FROM stdin;', 'My Schema.a.b"c'),
        ("s.t FROM stdin;", "s.t"),
        ("nodot FROM stdin;", None),
        ('"unterminated.x', None),
    ],
)
def test_parse_qualified_name(text: str, name: str | None) -> None:
    assert parse_qualified_name(text) == name


def test_pg17_large_object_header_is_recognised() -> None:
    dump = DUMP.replace(b"Data for Name: BLOBS;", b"Data for Name: 16390..16391;")
    _, out = scan(dump, [], rewrite=True)
    assert b"\nBEGIN;\n" not in out and b"lo_close(0);\n\nCOMMIT;" not in out


def test_copy_quoted_inside_a_function_body_is_not_a_data_block() -> None:
    body = b"""--
-- Name: f(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.f() RETURNS text LANGUAGE sql AS $$ SELECT '
COPY public.zzz FROM stdin;
1
\\.
'::text $$;

"""
    dump = DUMP.replace(b"SET statement_timeout = 0;\n", b"SET statement_timeout = 0;\n" + body)
    scanner, _ = scan(dump, [])
    assert scanner.tables == EXPECTED
    assert scanner.incomplete_reason() is None


def test_copy_statement_spanning_lines_for_a_column_name_with_a_newline() -> None:
    section = b"""--
-- Data for Name: nl; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.nl ("multi
line", b) FROM stdin;
1\tx
2\ty
\\.


"""
    dump = DUMP.replace(b"--\n-- Data for Name: BLOBS", section + b"--\n-- Data for Name: BLOBS")
    for cuts in ([], [dump.index(b"line")], list(range(0, len(dump), 5))):
        scanner, _ = scan(dump, cuts)
        assert scanner.tables == {**EXPECTED, "public.nl": 2}


class ReplaceProbe(bytes):
    """Chunk bytes that note whether the row counter deleted newlines in them."""

    replaced = 0

    def replace(self, old: bytes, new: bytes, count: int = -1, /) -> bytes:  # type: ignore[override]
        ReplaceProbe.replaced += 1
        return super().replace(old, new, count)


@settings(max_examples=300, derandomize=True)
@given(
    st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=60),
    st.lists(st.tuples(st.integers(0, 30_000), st.integers(0, 30_000)), min_size=1, max_size=8),
)
def test_row_counter_counts_every_newline_in_the_span(
    widths: list[int], spans: list[tuple[int, int]]
) -> None:
    """Rows of any width, in any order, spans anywhere in the chunk: whichever way
    the counter picks, it counts what ``bytes.count`` counts."""
    data = b"".join(b"x" * width + b"\n" for width in widths)
    counter = RowCounter()
    for a, b in spans:
        start, end = sorted((min(a, len(data)), min(b, len(data))))
        for chunk in (data, bytearray(data)):
            assert counter.count(chunk, start, end) == data.count(b"\n", start, end)


def test_row_counter_deletes_newlines_only_after_wide_rows() -> None:
    wide = ReplaceProbe(b"w" * (4 * WIDE_ROW) + b"\n") * 500
    narrow = ReplaceProbe(b"n\n" * 50_000)
    counter = RowCounter()
    ReplaceProbe.replaced = 0
    assert counter.count(narrow, 0, len(narrow)) == 50_000
    assert counter.count(narrow, 0, len(narrow)) == 50_000
    assert ReplaceProbe.replaced == 0
    assert counter.count(ReplaceProbe(wide), 0, len(wide)) == 500  # learns the width
    assert ReplaceProbe.replaced == 0
    assert counter.count(ReplaceProbe(wide), 1, len(wide) - 1) == 499
    assert ReplaceProbe.replaced == 1
    # Narrow rows after wide ones: one span the wide way, then back to plain counting.
    assert counter.count(narrow, 0, len(narrow)) == 50_000
    assert counter.count(narrow, 2, len(narrow)) == 49_999
    assert ReplaceProbe.replaced == 2


def wide_then_narrow_dump(wide_rows: int, narrow_rows: int) -> bytes:
    row = b"\t".join([b"1", b"a" * 150, b"\\N", b"b" * 100]) + b"\n"
    return (
        b"--\n-- Data for Name: wide; Type: TABLE DATA; Schema: public; Owner: -\n--\n\n"
        b"COPY public.wide (a, b, c, d) FROM stdin;\n"
        + row
        * wide_rows
        + b"\\.\n\n\n--\n-- Data for Name: narrow; Type: TABLE DATA; Schema: public; Owner: -\n"
        b"--\n\nCOPY public.narrow (x) FROM stdin;\n"
        + b"7\n" * narrow_rows
        + b"\\.\n\n\n-- PostgreSQL database dump complete\n\n"
    )


WIDE_DUMP = wide_then_narrow_dump(3_000, 20_000)


@settings(max_examples=200, derandomize=True)
@given(st.lists(st.integers(min_value=0, max_value=len(WIDE_DUMP)), max_size=20))
def test_wide_and_narrow_tables_are_counted_exactly(cuts: list[int]) -> None:
    """Chunks cut anywhere: the wide table's rows are counted the wide way, the
    narrow table's plainly, and every row of both is counted once."""
    ReplaceProbe.replaced = 0
    scanner = DumpScanner()
    last = 0
    for cut in [*sorted(set(cuts)), len(WIDE_DUMP)]:
        scanner.feed(ReplaceProbe(WIDE_DUMP[last:cut]))
        last = cut
    scanner.finish()
    assert scanner.tables == {"public.wide": 3_000, "public.narrow": 20_000}
    assert scanner.incomplete_reason() is None


def test_a_wide_table_in_many_chunks_is_counted_the_wide_way() -> None:
    ReplaceProbe.replaced = 0
    scanner = DumpScanner()
    for start in range(0, len(WIDE_DUMP), 64 << 10):
        scanner.feed(ReplaceProbe(WIDE_DUMP[start : start + (64 << 10)]))
    scanner.finish()
    assert scanner.tables == {"public.wide": 3_000, "public.narrow": 20_000}
    assert ReplaceProbe.replaced >= 10
