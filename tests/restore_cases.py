"""SQL for the restore tests: a database full of hard cases, and what happens after a snapshot.

``HARD_CASES`` holds what plain dumps make tricky: large objects (pg_dump
wraps them in its own BEGIN;/COMMIT;), quoted and non-ASCII names,
extensions, partitions, generated and identity columns, row-level security,
sequences at odd values, views, a materialized view, an enum, a domain, a
custom cast and a procedure whose body has a ``COMMIT;`` line of its own.

``HARD_MUTATIONS`` and ``PAGILA_MUTATIONS`` are what a bad migration might do
afterwards: create tables, schemas, functions, types, extensions, large
objects, event triggers, publications, foreign servers and tables, languages,
access methods, collations; drop a table and a schema; change data; advance
sequences. ``SLOW_CASE`` makes a restore
take seconds in the middle of its data (each row of ``b_slow`` sleeps in a
generated column), so it can be killed there on purpose.
"""

from __future__ import annotations

HARD_CASES = r'''
CREATE EXTENSION citext;
CREATE EXTENSION hstore;
CREATE SCHEMA "Sché ""ma""";
CREATE TABLE "Sché ""ma"""."Wéird ""name""" (
    id int PRIMARY KEY, "naïve col" citext, tags hstore, note text);
INSERT INTO "Sché ""ma"""."Wéird ""name""" VALUES
    (1, 'Ünïcode ✓', 'a=>1, b=>2', E'multi\nline'),
    (2, 'x|y', NULL, E'tab\there and a backslash \\.'),
    (3, '日本語', '"k e y"=>"v"', NULL);
CREATE TABLE measurements (id bigserial, at date NOT NULL, v numeric,
    PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE measurements_2024 PARTITION OF measurements
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE measurements_2025 PARTITION OF measurements
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO measurements (at, v) SELECT date '2024-06-01' + i, i / 7.0
    FROM generate_series(1, 400) i;
CREATE TABLE people (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, first text, last text,
    full_name text GENERATED ALWAYS AS (first || ' ' || last) STORED,
    owner name DEFAULT current_user);
INSERT INTO people (first, last) VALUES ('Ada', 'Lovelace'), ('Alan', 'Turing');
ALTER TABLE people ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON people USING (owner = current_user);
CREATE SEQUENCE counter START 100 INCREMENT 7;
SELECT setval('counter', 4242, true);
CREATE SEQUENCE untouched_seq;
CREATE VIEW people_v AS SELECT id, full_name FROM people;
CREATE MATERIALIZED VIEW m_totals AS SELECT at, sum(v) AS total FROM measurements GROUP BY at;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE TABLE docs (id positive PRIMARY KEY, body oid, m mood);
INSERT INTO docs VALUES
    (1, lo_from_bytea(0, 'hello large object'), 'ok'),
    (2, lo_from_bytea(0, decode(repeat('00ff', 20000), 'hex')), 'happy');
SELECT lo_from_bytea(424242, 'a large object with a fixed OID and a comment');
COMMENT ON LARGE OBJECT 424242 IS 'fixed';
CREATE PROCEDURE do_commit() LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO docs VALUES (99, NULL, 'sad');
COMMIT;
END $$;
CREATE FUNCTION add1(i int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT i + 1 $$;
CREATE CAST (mood AS text) WITH INOUT AS IMPLICIT;
COMMENT ON TABLE docs IS 'documents with large objects';
'''

HARD_MUTATIONS = r'''
CREATE SCHEMA after_snapshot;
CREATE TABLE after_snapshot.t (a int);
CREATE TABLE public.new_table (a int);
CREATE FUNCTION public.new_fn() RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE TYPE public.new_type AS (a int, b text);
CREATE EXTENSION pgcrypto;
SELECT lo_from_bytea(0, 'a large object created after the snapshot');
SELECT lo_unlink(body) FROM docs WHERE id = 1;
DROP TABLE "Sché ""ma"""."Wéird ""name""";
DROP SCHEMA "Sché ""ma""";
DROP MATERIALIZED VIEW m_totals;
UPDATE people SET first = 'Grace' WHERE id = 1;
DELETE FROM measurements WHERE v > 20;
SELECT nextval('counter'), nextval('counter'), nextval('untouched_seq');
INSERT INTO people (first, last) VALUES ('Edsger', 'Dijkstra');
ALTER TYPE mood ADD VALUE 'angry';
CREATE FUNCTION public.et_fn() RETURNS event_trigger LANGUAGE plpgsql AS
    $$ BEGIN RAISE NOTICE 'ddl'; END $$;
CREATE EVENT TRIGGER after_snapshot_et ON ddl_command_end EXECUTE FUNCTION public.et_fn();
CREATE PUBLICATION after_snapshot_pub FOR ALL TABLES;
CREATE FOREIGN DATA WRAPPER after_snapshot_fdw;
CREATE SERVER after_snapshot_srv FOREIGN DATA WRAPPER after_snapshot_fdw;
CREATE CAST (int4 AS mood) WITH INOUT;
CREATE CAST (money AS int8) WITHOUT FUNCTION;
ALTER TABLE people DISABLE ROW LEVEL SECURITY;
CREATE LANGUAGE after_snapshot_lang HANDLER plpgsql_call_handler;
CREATE ACCESS METHOD after_snapshot_am TYPE TABLE HANDLER heap_tableam_handler;
CREATE TABLE public.in_new_am (a int) USING after_snapshot_am;
CREATE TEXT SEARCH CONFIGURATION public.after_snapshot_ts (COPY = pg_catalog.english);
CREATE COLLATION public.after_snapshot_coll (locale = 'C');
CREATE STATISTICS public.after_snapshot_stats ON first, last FROM people;
CREATE USER MAPPING FOR CURRENT_USER SERVER after_snapshot_srv;
CREATE FOREIGN TABLE public.after_snapshot_ft (a int) SERVER after_snapshot_srv;
CREATE EXTENSION postgres_fdw;
CREATE SERVER after_snapshot_pg FOREIGN DATA WRAPPER postgres_fdw;
COMMENT ON SCHEMA public IS 'changed after the snapshot';
'''

PAGILA_MUTATIONS = r"""
CREATE SCHEMA billing;
CREATE TABLE billing.invoice (id serial PRIMARY KEY, amount numeric);
INSERT INTO billing.invoice (amount) SELECT g FROM generate_series(1, 50) g;
ALTER TABLE public.customer ADD COLUMN loyalty_points int DEFAULT 0;
CREATE FUNCTION public.loyalty(c int) RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE TYPE public.tier AS ENUM ('bronze', 'silver');
CREATE EXTENSION hstore;
SELECT lo_from_bytea(0, 'stray large object');
DROP TABLE public.payment_p2007_07_max;
UPDATE public.film SET title = upper(title) WHERE film_id < 100;
DELETE FROM public.film_actor WHERE actor_id > 150;
SELECT nextval('public.actor_actor_id_seq') FROM generate_series(1, 5);
"""

SLOW_ROWS = 1500
SLOW_CASE = f"""
CREATE FUNCTION public.slow_double(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  PERFORM pg_catalog.pg_sleep(0.001);
  RETURN i * 2;
END $$;
CREATE TABLE public.a_first (id int PRIMARY KEY, note text);
INSERT INTO public.a_first SELECT g, md5(g::text) FROM generate_series(1, 5000) g;
CREATE TABLE public.b_slow (
    id int PRIMARY KEY, pad text,
    doubled int GENERATED ALWAYS AS (public.slow_double(id)) STORED);
INSERT INTO public.b_slow (id, pad) SELECT g, repeat(md5(g::text), 4)
    FROM generate_series(1, {SLOW_ROWS}) g;
CREATE TABLE public.z_filler AS
    SELECT g AS id, md5(g::text) || md5((g + 1)::text) AS pad
    FROM generate_series(1, 300000) g;
"""
