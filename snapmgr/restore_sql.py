"""The SQL a restore sends around the dump, inside its one transaction.

In order: ``begin`` (transaction, timeouts, the restore lock, the commit
fence), optionally ``terminate``, ``wipe`` (so the result is exact), then the
dump itself, then ``counts`` and, only once everything is verified,
``commit``.

The commit fence is what makes "verified before commit" independent of the
dump's content: a deferred constraint trigger on a temporary table refuses
to let the transaction commit unless the fence holds a random token that
only snapmgr knows and only sends after verification. So a ``COMMIT`` that
slips through in the stream (pg_dump's own large-object ``COMMIT;`` behind a
damaged section header, say) fails instead of committing half a restore;
psql stops on that error and the server rolls back. psql runs with
``AUTOCOMMIT off``, so after a stray ``ROLLBACK`` nothing runs outside a
transaction either, and the final ``UPDATE`` of the fence fails because the
temporary table went with the rolled-back transaction.
"""

from __future__ import annotations

from snapmgr.postgres import ROW_COUNTS_EXCLUDING_SQL

#: pg_try_advisory_xact_lock key: "snapmgr" in ASCII. Advisory locks are per
#: database, so this serialises restores into one database only.
RESTORE_LOCK_KEY = 0x736E61706D6772
#: How long the wipe waits for other sessions' locks (``--lock-timeout``). It lives
#: here, not in restore.py, so the CLI can show it without importing psycopg.
DEFAULT_LOCK_TIMEOUT_S = 30.0
LOCK_WAIT_TRIES = 50  # x 0.1 s: lets an attempt that is still rolling back finish

# A role's statement, idle or (PostgreSQL 17) transaction timeouts must not cut
# a long restore short; the last one is only set where it exists.
BEGIN = """BEGIN;
SET LOCAL statement_timeout = 0;
SET LOCAL idle_in_transaction_session_timeout = 0;
SET LOCAL client_min_messages = warning;
SELECT pg_catalog.set_config(name, '0', true) FROM pg_catalog.pg_settings
  WHERE name = 'transaction_timeout';
"""

LOCK = f"""DO $snapmgr$
BEGIN
  FOR attempt IN 1..{LOCK_WAIT_TRIES} LOOP
    IF pg_catalog.pg_try_advisory_xact_lock({RESTORE_LOCK_KEY}) THEN
      RETURN;
    END IF;
    PERFORM pg_catalog.pg_sleep(0.1);
  END LOOP;
  RAISE EXCEPTION 'another snapmgr restore into database % is running; wait for it to finish',
    pg_catalog.quote_ident(pg_catalog.current_database());
END
$snapmgr$;
"""

FENCE = """CREATE TEMPORARY TABLE snapmgr_fence (token text) ON COMMIT DROP;
CREATE FUNCTION pg_temp.snapmgr_fence_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $snapmgr$
BEGIN
  IF (SELECT token FROM pg_temp.snapmgr_fence) IS DISTINCT FROM '{token}' THEN
    RAISE EXCEPTION 'snapmgr: a COMMIT arrived before the restore was verified; rolled back';
  END IF;
  RETURN NULL;
END
$snapmgr$;
CREATE CONSTRAINT TRIGGER snapmgr_fence AFTER INSERT ON pg_temp.snapmgr_fence
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pg_temp.snapmgr_fence_check();
INSERT INTO pg_temp.snapmgr_fence VALUES (NULL);
CREATE TEMPORARY TABLE snapmgr_grants (schema_name text, grantee text) ON COMMIT DROP;
"""

# Other sessions whose role we may not signal are counted and left alone;
# lock_timeout then bounds how long they can hold the restore up. So are the
# deploy-lock sessions of guard runs (snapmgr.deploylock): they hold no table
# lock, and ending them would let a waiting instance migrate mid-restore.
TERMINATE_FUNCTION = """CREATE FUNCTION pg_temp.snapmgr_terminate() RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog AS $snapmgr$
DECLARE
  session record;
  ended int := 0;
  refused int := 0;
BEGIN
  FOR session IN
    SELECT pid FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND backend_type = 'client backend'
      AND application_name NOT LIKE 'snapmgr deploy lock%'
  LOOP
    BEGIN
      IF {terminate_call} THEN
        ended := ended + 1;
      END IF;
    EXCEPTION WHEN insufficient_privilege THEN
      refused := refused + 1;
    END;
  END LOOP;
  RETURN ended || ' ' || refused;
END
$snapmgr$;
"""

# Everything a plain dump can create goes, as far as the restoring role may
# remove it: every schema but the system ones (with all it holds), every
# extension but plpgsql, large objects, and the objects that live outside
# schemas (event triggers, publications, foreign servers and wrappers, user
# casts, languages, access methods). What the role may not drop (owned by a
# role it cannot act for: a platform's extension or schema) stays, and so do
# excluded schemas and tables: a schema that holds any of those is emptied
# object by object (pg_temp.snapmgr_empty_schema) instead of dropped. Then
# "public" is created again if it went: with the default owner and grants
# when the snapshot carries its own privileges (the dump re-applies them),
# else as it was; with its standard comment, which the dump only overrides
# when the snapshot's differed.
EMPTY_SCHEMA = """CREATE FUNCTION pg_temp.snapmgr_empty_schema(nsp text, excluded text[])
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog AS $snapmgr$
DECLARE
  item record;
  ns oid := (SELECT oid FROM pg_namespace WHERE nspname = nsp);
BEGIN
  FOR item IN
    SELECT c.oid, c.relname, CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
      WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'c' THEN 'TYPE'
      ELSE 'TABLE' END AS kind
    FROM pg_class c
    WHERE c.relnamespace = ns AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
      AND NOT c.relispartition AND pg_has_role(c.relowner, 'USAGE')
      AND NOT (nsp || '.' || c.relname) = ANY(excluded)
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                        AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))
  LOOP
    IF EXISTS (SELECT 1 FROM pg_class WHERE oid = item.oid) THEN
      EXECUTE format('DROP %s %I.%I CASCADE', item.kind, nsp, item.relname);
    END IF;
  END LOOP;
  FOR item IN
    SELECT p.oid FROM pg_proc p WHERE p.pronamespace = ns AND pg_has_role(p.proowner, 'USAGE')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                        AND d.objid = p.oid AND d.deptype = 'e')
  LOOP
    IF EXISTS (SELECT 1 FROM pg_proc WHERE oid = item.oid) THEN
      EXECUTE format('DROP ROUTINE %s CASCADE', item.oid::regprocedure);
    END IF;
  END LOOP;
  FOR item IN
    SELECT t.oid FROM pg_type t WHERE t.typnamespace = ns AND t.typtype IN ('b', 'd', 'e', 'r')
      AND t.typrelid = 0 AND pg_has_role(t.typowner, 'USAGE')
      AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid)
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                        AND d.objid = t.oid AND d.deptype IN ('e', 'i'))
  LOOP
    IF EXISTS (SELECT 1 FROM pg_type WHERE oid = item.oid) THEN
      EXECUTE format('DROP TYPE %s CASCADE', item.oid::regtype);
    END IF;
  END LOOP;
  FOR item IN
    SELECT o.oid FROM pg_operator o WHERE o.oprnamespace = ns AND pg_has_role(o.oprowner, 'USAGE')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_operator'::regclass
                        AND d.objid = o.oid AND d.deptype = 'e')
  LOOP
    IF EXISTS (SELECT 1 FROM pg_operator WHERE oid = item.oid) THEN
      EXECUTE format('DROP OPERATOR %s CASCADE', item.oid::regoperator);
    END IF;
  END LOOP;
  FOR item IN
    SELECT f.opfname AS name, a.amname FROM pg_opfamily f JOIN pg_am a ON a.oid = f.opfmethod
    WHERE f.opfnamespace = ns AND pg_has_role(f.opfowner, 'USAGE')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_opfamily'::regclass
                        AND d.objid = f.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('DROP OPERATOR FAMILY IF EXISTS %I.%I USING %I CASCADE',
                   nsp, item.name, item.amname);
  END LOOP;
  FOR item IN
    SELECT 'COLLATION' AS kind, collname AS name, oid, 'pg_collation'::regclass AS cat
      FROM pg_collation WHERE collnamespace = ns AND pg_has_role(collowner, 'USAGE')
    UNION ALL SELECT 'CONVERSION', conname, oid, 'pg_conversion'::regclass
      FROM pg_conversion WHERE connamespace = ns AND pg_has_role(conowner, 'USAGE')
    UNION ALL SELECT 'TEXT SEARCH CONFIGURATION', cfgname, oid, 'pg_ts_config'::regclass
      FROM pg_ts_config WHERE cfgnamespace = ns AND pg_has_role(cfgowner, 'USAGE')
    UNION ALL SELECT 'TEXT SEARCH DICTIONARY', dictname, oid, 'pg_ts_dict'::regclass
      FROM pg_ts_dict WHERE dictnamespace = ns AND pg_has_role(dictowner, 'USAGE')
    UNION ALL SELECT 'STATISTICS', stxname, oid, 'pg_statistic_ext'::regclass
      FROM pg_statistic_ext WHERE stxnamespace = ns AND pg_has_role(stxowner, 'USAGE')
  LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = item.cat
                     AND d.objid = item.oid AND d.deptype = 'e') THEN
      EXECUTE format('DROP %s IF EXISTS %I.%I CASCADE', item.kind, nsp, item.name);
    END IF;
  END LOOP;
END
$snapmgr$;
"""

WIPE = """SET LOCAL lock_timeout = '{lock_timeout_ms}ms';
DO $snapmgr$
DECLARE
  item record;
  public_owner oid;
  public_acl aclitem[];
  kept_extensions text[] := {kept_extensions};
  kept_event_triggers text[] := {kept_event_triggers};
  kept_publications text[] := {kept_publications};
  kept_schemas text[] := {kept_schemas};
  excluded_schemas text[] := {excluded_schemas};
  excluded_tables text[] := {excluded_tables};
  superuser boolean := pg_catalog.current_setting('is_superuser') = 'on';
BEGIN
  SELECT nspowner, nspacl INTO public_owner, public_acl
    FROM pg_catalog.pg_namespace WHERE nspname = 'public';
  FOR item IN SELECT evtname FROM pg_catalog.pg_event_trigger
              WHERE pg_catalog.pg_has_role(evtowner, 'USAGE')
                AND NOT evtname = ANY(kept_event_triggers) LOOP
    EXECUTE pg_catalog.format('DROP EVENT TRIGGER IF EXISTS %I CASCADE', item.evtname);
  END LOOP;
  FOR item IN SELECT pubname FROM pg_catalog.pg_publication
              WHERE pg_catalog.pg_has_role(pubowner, 'USAGE')
                AND NOT pubname = ANY(kept_publications) LOOP
    EXECUTE pg_catalog.format('DROP PUBLICATION IF EXISTS %I CASCADE', item.pubname);
  END LOOP;
  FOR item IN SELECT extname FROM pg_catalog.pg_extension
              WHERE extname <> 'plpgsql' AND NOT extname = ANY(kept_extensions) LOOP
    EXECUTE pg_catalog.format('DROP EXTENSION IF EXISTS %I CASCADE', item.extname);
  END LOOP;
  -- A kept extension's configuration tables get the snapshot's user rows back.
  FOR item IN
    SELECT cfg.oid::pg_catalog.regclass AS tbl, e.extcondition[cfg.n] AS cond
    FROM pg_catalog.pg_extension e
    CROSS JOIN LATERAL pg_catalog.unnest(e.extconfig) WITH ORDINALITY AS cfg(oid, n)
    JOIN pg_catalog.pg_class c ON c.oid = cfg.oid AND c.relkind = 'r'
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE e.extname = ANY(kept_extensions) AND NOT n.nspname = ANY(excluded_schemas)
      AND pg_catalog.has_table_privilege(cfg.oid, 'DELETE')
  LOOP
    EXECUTE pg_catalog.format('DELETE FROM %s %s', item.tbl, COALESCE(item.cond, ''));
  END LOOP;
  FOR item IN
    SELECT n.nspname,
           n.nspname = ANY(kept_schemas)
           OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                      JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
                      JOIN pg_catalog.pg_class c ON c.oid = d.objid
                      WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                        AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                        AND d.deptype = 'e' AND c.relnamespace = n.oid)
           OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                      JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
                      JOIN pg_catalog.pg_proc p ON p.oid = d.objid
                      WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                        AND d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                        AND d.deptype = 'e' AND p.pronamespace = n.oid)
           OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                      JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
                      JOIN pg_catalog.pg_type t ON t.oid = d.objid
                      WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                        AND d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
                        AND d.deptype = 'e' AND t.typnamespace = n.oid)
           OR EXISTS (SELECT 1 FROM pg_catalog.unnest(excluded_tables) AS x(name)
                      WHERE pg_catalog.starts_with(x.name, n.nspname || '.'))
           OR NOT pg_catalog.pg_has_role(n.nspowner, 'USAGE') AS piecemeal
    FROM pg_catalog.pg_namespace n
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp_'
      AND NOT n.nspname = ANY(excluded_schemas)
  LOOP
    IF item.piecemeal THEN
      PERFORM pg_temp.snapmgr_empty_schema(item.nspname, excluded_tables);
    ELSE
      EXECUTE pg_catalog.format('DROP SCHEMA IF EXISTS %I CASCADE', item.nspname);
    END IF;
  END LOOP;
  FOR item IN SELECT srvname FROM pg_catalog.pg_foreign_server
              WHERE pg_catalog.pg_has_role(srvowner, 'USAGE') LOOP
    EXECUTE pg_catalog.format('DROP SERVER IF EXISTS %I CASCADE', item.srvname);
  END LOOP;
  FOR item IN SELECT fdwname FROM pg_catalog.pg_foreign_data_wrapper
              WHERE pg_catalog.pg_has_role(fdwowner, 'USAGE') LOOP
    EXECUTE pg_catalog.format('DROP FOREIGN DATA WRAPPER IF EXISTS %I CASCADE', item.fdwname);
  END LOOP;
  FOR item IN
    SELECT pg_catalog.format_type(c.castsource, NULL) AS source,
           pg_catalog.format_type(c.casttarget, NULL) AS target
    FROM pg_catalog.pg_cast c
    JOIN pg_catalog.pg_type s ON s.oid = c.castsource
    JOIN pg_catalog.pg_type t ON t.oid = c.casttarget
    WHERE c.oid >= 16384
      AND (pg_catalog.pg_has_role(s.typowner, 'USAGE')
           OR pg_catalog.pg_has_role(t.typowner, 'USAGE'))
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                      WHERE d.classid = 'pg_catalog.pg_cast'::pg_catalog.regclass
                        AND d.objid = c.oid AND d.deptype = 'e')
  LOOP
    EXECUTE pg_catalog.format('DROP CAST IF EXISTS (%s AS %s) CASCADE', item.source, item.target);
  END LOOP;
  FOR item IN
    SELECT lanname FROM pg_catalog.pg_language
    WHERE oid >= 16384 AND lanname <> 'plpgsql' AND pg_catalog.pg_has_role(lanowner, 'USAGE')
  LOOP
    EXECUTE pg_catalog.format('DROP LANGUAGE IF EXISTS %I CASCADE', item.lanname);
  END LOOP;
  FOR item IN SELECT amname FROM pg_catalog.pg_am WHERE oid >= 16384 AND superuser LOOP
    EXECUTE pg_catalog.format('DROP ACCESS METHOD IF EXISTS %I CASCADE', item.amname);
  END LOOP;
  PERFORM pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata
    WHERE pg_catalog.pg_has_role(lomowner, 'USAGE');
  IF {reset_public} OR public_owner IS NULL THEN
    SELECT oid INTO public_owner FROM pg_catalog.pg_roles
      WHERE rolname = {default_owner};
    public_acl := {default_acl};
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'public') THEN
    EXECUTE pg_catalog.format('CREATE SCHEMA public AUTHORIZATION %s', public_owner::regrole);
  ELSIF {reset_public} AND pg_catalog.pg_has_role(
      (SELECT nspowner FROM pg_catalog.pg_namespace WHERE nspname = 'public'), 'USAGE') THEN
    FOR item IN
      SELECT DISTINCT a.grantee FROM pg_catalog.pg_namespace n,
        LATERAL pg_catalog.aclexplode(n.nspacl) a
      WHERE n.nspname = 'public' AND a.grantee <> n.nspowner
    LOOP
      EXECUTE pg_catalog.format('REVOKE ALL ON SCHEMA public FROM %s',
        CASE WHEN item.grantee = 0 THEN 'PUBLIC' ELSE item.grantee::regrole::text END);
    END LOOP;
    EXECUTE pg_catalog.format('ALTER SCHEMA public OWNER TO %s', public_owner::regrole);
  ELSE
    RETURN;
  END IF;
  FOR item IN
    SELECT privilege_type, grantee, is_grantable
    FROM pg_catalog.aclexplode(public_acl) WHERE grantee <> public_owner
  LOOP
    EXECUTE pg_catalog.format(
      'GRANT %s ON SCHEMA public TO %s%s', item.privilege_type,
      CASE WHEN item.grantee = 0 THEN 'PUBLIC' ELSE item.grantee::regrole::text END,
      CASE WHEN item.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
  END LOOP;
  COMMENT ON SCHEMA public IS 'standard public schema';
END
$snapmgr$;
"""

#: One line of JSON: exact row counts of the restored tables, and the
#: extensions' configuration tables (their dumped rows are only the user's,
#: so they are left out of the comparison).
COUNTS_SETUP = "SET LOCAL row_security = off;\n"
COUNTS_JSON = f"""SELECT pg_catalog.json_build_object(
  'counts', (SELECT pg_catalog.json_object_agg(t.name, t.rows)
             FROM ({ROW_COUNTS_EXCLUDING_SQL}) AS t(name, rows)),
  'extension_tables', (SELECT pg_catalog.json_agg(n.nspname || '.' || c.relname)
                       FROM pg_catalog.pg_extension e
                       CROSS JOIN LATERAL pg_catalog.unnest(e.extconfig) AS cfg(oid)
                       JOIN pg_catalog.pg_class c ON c.oid = cfg.oid
                       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace))::text"""


def counts_json(excluded_schemas: tuple[str, ...], excluded_tables: tuple[str, ...]) -> str:
    """The counts question, without the tables a snapshot left out (they may be unreadable)."""
    return COUNTS_JSON.replace("{excluded}", text_array(excluded_schemas)).replace(
        "{excluded_tables}", text_array(excluded_tables)
    )


ARM_AND_COMMIT = """UPDATE pg_temp.snapmgr_fence SET token = '{token}';
COMMIT;
"""


def wipe_sql(
    server_major: int,
    lock_timeout_s: float,
    *,
    kept_extensions: tuple[str, ...] = (),
    kept_event_triggers: tuple[str, ...] = (),
    kept_publications: tuple[str, ...] = (),
    kept_schemas: tuple[str, ...] = (),
    excluded_schemas: tuple[str, ...] = (),
    excluded_tables: tuple[str, ...] = (),
    reset_public: bool = False,
) -> str:
    """The wipe for a server of ``server_major``: "public" as that version creates it."""
    if server_major >= 15:
        default_owner, default_acl = "'pg_database_owner'", "'{=U/pg_database_owner}'"
    else:
        default_owner = "(SELECT rolname FROM pg_catalog.pg_roles WHERE oid = 10)"
        default_acl = "'{=UC/' || (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = 10) || '}'"
    return EMPTY_SCHEMA + WIPE.format(
        lock_timeout_ms=max(1, round(lock_timeout_s * 1000)),
        default_owner=default_owner,
        default_acl=default_acl,
        kept_extensions=text_array(kept_extensions),
        kept_event_triggers=text_array(kept_event_triggers),
        kept_publications=text_array(kept_publications),
        kept_schemas=text_array(kept_schemas),
        excluded_schemas=text_array(excluded_schemas),
        excluded_tables=text_array(excluded_tables),
        reset_public="true" if reset_public else "false",
    )


def text_array(items: tuple[str, ...]) -> str:
    """A SQL ``text[]`` literal expression for ``items``."""
    quoted = ", ".join("'" + item.replace("'", "''") + "'" for item in items)
    return f"ARRAY[{quoted}]::text[]"


def terminate_sql(server_major: int) -> str:
    """``pg_temp.snapmgr_terminate()``; on PostgreSQL 14+ it waits up to 5 s per session."""
    call = (
        "pg_terminate_backend(session.pid, 5000)"
        if server_major >= 14
        else "pg_terminate_backend(session.pid)"
    )
    return TERMINATE_FUNCTION.format(terminate_call=call)
