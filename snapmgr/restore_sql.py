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

from snapmgr.postgres import ROW_COUNTS_SQL

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
"""

# Other sessions whose role we may not signal are counted and left alone;
# lock_timeout then bounds how long they can hold the restore up.
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

# Everything a plain dump can create goes: every schema but the system ones
# (with all it holds), every extension but plpgsql, large objects, and the
# objects that live outside schemas (event triggers, publications, foreign
# servers and wrappers, user casts, languages, access methods). Then "public"
# is created again as it was (owner and grants; pg_dump leaves it out when it
# is the default), with its standard comment, which the dump only overrides
# when the snapshot's differed.
WIPE = """SET LOCAL lock_timeout = '{lock_timeout_ms}ms';
DO $snapmgr$
DECLARE
  item record;
  public_owner oid;
  public_acl aclitem[];
BEGIN
  SELECT nspowner, nspacl INTO public_owner, public_acl
    FROM pg_catalog.pg_namespace WHERE nspname = 'public';
  FOR item IN SELECT evtname FROM pg_catalog.pg_event_trigger LOOP
    EXECUTE pg_catalog.format('DROP EVENT TRIGGER IF EXISTS %I CASCADE', item.evtname);
  END LOOP;
  FOR item IN SELECT pubname FROM pg_catalog.pg_publication LOOP
    EXECUTE pg_catalog.format('DROP PUBLICATION IF EXISTS %I CASCADE', item.pubname);
  END LOOP;
  FOR item IN SELECT extname FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql' LOOP
    EXECUTE pg_catalog.format('DROP EXTENSION IF EXISTS %I CASCADE', item.extname);
  END LOOP;
  FOR item IN
    SELECT nspname FROM pg_catalog.pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema')
      AND nspname !~ '^pg_toast' AND nspname !~ '^pg_temp_'
  LOOP
    EXECUTE pg_catalog.format('DROP SCHEMA IF EXISTS %I CASCADE', item.nspname);
  END LOOP;
  FOR item IN SELECT srvname FROM pg_catalog.pg_foreign_server LOOP
    EXECUTE pg_catalog.format('DROP SERVER IF EXISTS %I CASCADE', item.srvname);
  END LOOP;
  FOR item IN SELECT fdwname FROM pg_catalog.pg_foreign_data_wrapper LOOP
    EXECUTE pg_catalog.format('DROP FOREIGN DATA WRAPPER IF EXISTS %I CASCADE', item.fdwname);
  END LOOP;
  FOR item IN
    SELECT pg_catalog.format_type(castsource, NULL) AS source,
           pg_catalog.format_type(casttarget, NULL) AS target
    FROM pg_catalog.pg_cast WHERE oid >= 16384
  LOOP
    EXECUTE pg_catalog.format('DROP CAST IF EXISTS (%s AS %s) CASCADE', item.source, item.target);
  END LOOP;
  FOR item IN
    SELECT lanname FROM pg_catalog.pg_language WHERE oid >= 16384 AND lanname <> 'plpgsql'
  LOOP
    EXECUTE pg_catalog.format('DROP LANGUAGE IF EXISTS %I CASCADE', item.lanname);
  END LOOP;
  FOR item IN SELECT amname FROM pg_catalog.pg_am WHERE oid >= 16384 LOOP
    EXECUTE pg_catalog.format('DROP ACCESS METHOD IF EXISTS %I CASCADE', item.amname);
  END LOOP;
  PERFORM pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata;
  IF public_owner IS NULL THEN
    SELECT oid INTO public_owner FROM pg_catalog.pg_roles
      WHERE rolname = {default_owner};
    public_acl := {default_acl};
  END IF;
  EXECUTE pg_catalog.format('CREATE SCHEMA public AUTHORIZATION %s', public_owner::regrole);
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
             FROM ({ROW_COUNTS_SQL}) AS t(name, rows)),
  'extension_tables', (SELECT pg_catalog.json_agg(n.nspname || '.' || c.relname)
                       FROM pg_catalog.pg_extension e
                       CROSS JOIN LATERAL pg_catalog.unnest(e.extconfig) AS cfg(oid)
                       JOIN pg_catalog.pg_class c ON c.oid = cfg.oid
                       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace))::text"""

ARM_AND_COMMIT = """UPDATE pg_temp.snapmgr_fence SET token = '{token}';
COMMIT;
"""


def wipe_sql(server_major: int, lock_timeout_s: float) -> str:
    """The wipe for a server of ``server_major``: "public" as that version creates it."""
    if server_major >= 15:
        default_owner, default_acl = "'pg_database_owner'", "'{=U/pg_database_owner}'"
    else:
        default_owner = "(SELECT rolname FROM pg_catalog.pg_roles WHERE oid = 10)"
        default_acl = "'{=UC/' || (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = 10) || '}'"
    return WIPE.format(
        lock_timeout_ms=max(1, round(lock_timeout_s * 1000)),
        default_owner=default_owner,
        default_acl=default_acl,
    )


def terminate_sql(server_major: int) -> str:
    """``pg_temp.snapmgr_terminate()``; on PostgreSQL 14+ it waits up to 5 s per session."""
    call = (
        "pg_terminate_backend(session.pid, 5000)"
        if server_major >= 14
        else "pg_terminate_backend(session.pid)"
    )
    return TERMINATE_FUNCTION.format(terminate_call=call)
