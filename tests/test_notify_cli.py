"""End-to-end: notifications through Apprise and healthcheck pings, received on loopback.

Every event goes through the real Apprise ``json://`` (and ``jsons://``)
plugin to a real HTTP receiver; pings go to the same kind of receiver. A
receiver that is down must change nothing but a warning on stderr.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.pgutil import Server
from tests.receiver import Receiver, Request, dead_url

SCHEMA = """
CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO accounts (name) SELECT 'user ' || g FROM generate_series(1, 300) g;
"""
BAD_MIGRATION = (
    'psql -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" -c "CREATE TABLE invoices (id int)" '
    "&& exit 4"
)
TOKEN = "s3cr3tW3bh00kT0ken"  # a secret inside a notification URL


@pytest.fixture
def app_db(pg_server: Server, empty_db: str) -> str:
    pg_server.psql_file(empty_db, SCHEMA)
    return empty_db


@pytest.fixture
def receiver() -> Receiver:
    with Receiver() as server:
        yield server  # type: ignore[misc]


def notify_env(url: str, db_url: str, notify_on: str = "always", **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": db_url, "SNAPMGR_NOTIFY_URLS": url,
            "SNAPMGR_NOTIFY_ON": notify_on, **extra}  # fmt: skip


def hook(receiver: Receiver, path: str = "/hook") -> str:
    return f"json://{receiver.hostport}{path}"


def payload(request: Request) -> dict[str, object]:
    data = request.json()
    assert request.method == "POST" and request.headers["Content-Type"] == "application/json"
    assert data["version"] == "1.0"
    return data  # type: ignore[no-any-return]


def facts(message: str) -> dict[str, str]:
    """The ``key: value`` lines under a notification's summary line."""
    lines = message.splitlines()[1:]
    return dict(line.split(": ", 1) for line in lines)


def test_a_failed_nightly_snapshot_reaches_the_webhook_and_the_fail_ping(
    cli: Cli, pg_server: Server, app_db: str, receiver: Receiver
) -> None:
    url = pg_server.url(app_db).replace(":snapmgr-demo-pw@", ":Wr0ngPass@")
    env = notify_env(hook(receiver), url, "failure",
                     SNAPMGR_HEALTHCHECK_URL=f"{receiver.url}/ping/abc-uuid")  # fmt: skip

    result = cli("snapshot", "--label", "nightly", env=env)

    assert result.returncode == 3, result.stderr
    assert result.stdout == ""
    requests = receiver.wait_for(3)
    pings = [r for r in requests if r.path.startswith("/ping")]
    assert [r.path for r in pings] == ["/ping/abc-uuid/start", "/ping/abc-uuid/fail"]
    error_line = result.stderr.strip().splitlines()[-1].removeprefix("snapmgr: error: ")
    assert pings[1].body.decode() == error_line
    (note,) = [payload(r) for r in requests if r.path == "/hook"]
    assert note["type"] == "failure"
    assert note["title"] == f"snapmgr snapshot FAILED (exit 3) on {socket.gethostname()}"
    lines = facts(str(note["message"]))
    assert lines["error"] == error_line and "password authentication failed" in error_line
    assert lines["database"] == f"postgres@{url.split('@')[1]}"
    assert float(lines["duration"].rstrip("s")) >= 0
    assert "Wr0ngPass" not in json.dumps(note) and "Wr0ngPass" not in result.stderr


def test_success_is_sent_only_when_notify_on_asks(
    cli: Cli, pg_server: Server, app_db: str, receiver: Receiver
) -> None:
    url = pg_server.url(app_db)
    quiet = cli("snapshot", env=notify_env(hook(receiver), url, "failure"))
    assert quiet.returncode == 0, quiet.stderr
    loud = cli("snapshot", "--no-lock", env=notify_env(hook(receiver), url, "snapshot:success"))
    assert loud.returncode == 0, loud.stderr

    (request,) = receiver.wait_for(1)
    note = payload(request)
    snapshot_id = loud.stdout.strip()
    manifest = json.loads(cli.ok("show", snapshot_id, "--json").stdout)
    assert note["type"] == "success"
    assert note["title"] == f"snapmgr snapshot ok on {socket.gethostname()}"
    summary, *_ = str(note["message"]).splitlines()
    assert summary.startswith(f"snapshot {snapshot_id} committed (")
    lines = facts(str(note["message"]))
    assert lines["snapshot"] == snapshot_id
    assert lines["size"].endswith(("KiB", "MiB", " B"))
    assert lines["database"] == f"postgres@127.0.0.1:{manifest['database']['port']}/{app_db}"
    assert "error" not in lines


def test_every_command_sends_its_event(
    cli: Cli, pg_server: Server, app_db: str, receiver: Receiver
) -> None:
    url = pg_server.url(app_db)
    env = notify_env(hook(receiver), url)
    first = cli.ok("snapshot", env=env).stdout.strip()
    cli.ok("restore", first, "--yes", env=env)
    cli.ok("guard", "--reuse-within", "0", "--", "true", env=env)
    cli.ok("prune", "--keep-last", "1", env=env)
    cli.ok("prune", "--keep-last", "1", "--dry-run", env=env)  # a dry run is not an event
    unhealthy = cli("check", "--max-age", "1h", "--min-count", "5", env=env)
    assert unhealthy.returncode == 1

    notes = [payload(r) for r in receiver.wait_for(5)]
    titles = [str(n["title"]).split(" on ")[0] for n in notes]
    assert titles == [
        "snapmgr snapshot ok", "snapmgr restore ok", "snapmgr guard ok", "snapmgr prune ok",
        "snapmgr check FAILED (exit 1)",
    ]  # fmt: skip
    _, restore, guard, prune, check = (str(n["message"]) for n in notes)
    assert facts(restore)["snapshot"] == first
    assert restore.startswith(f"restored {first} into ") and "counts match" in restore
    assert facts(restore)["database"].endswith(f"/{app_db}")
    guarded = facts(guard)["snapshot"]
    assert guard.startswith(f"command succeeded; snapshot {guarded} covers it")
    assert prune.startswith("kept 1, removed 1 snapshot(s)")
    assert check.startswith("unhealthy: ") and "--min-count 5" in facts(check)["error"]
    assert facts(check)["snapshot"] == guarded


def test_migration_failed_and_restored_is_one_guard_notification(
    cli: Cli, pg_server: Server, app_db: str, receiver: Receiver
) -> None:
    env = notify_env(hook(receiver), pg_server.url(app_db), "failure")
    result = cli("guard", "--restore-on-failure", "--json", "--", "sh", "-c", BAD_MIGRATION,
                 env=env)  # fmt: skip
    assert result.returncode == 4, result.stderr
    snapshot_id = json.loads(result.stdout)["snapshot"]

    (request,) = receiver.wait_for(1)
    note = payload(request)
    assert note["type"] == "failure"
    assert str(note["title"]).startswith("snapmgr guard FAILED (exit 4)")
    lines = facts(str(note["message"]))
    assert lines["snapshot"] == snapshot_id
    assert lines["error"].startswith(f"command failed (exit 4); restored {snapshot_id} into ")
    assert "counts match" in lines["error"]


def test_jsons_reaches_an_https_receiver(
    cli: Cli, pg_server: Server, app_db: str, tmp_path: Path
) -> None:
    with Receiver(tls_dir=tmp_path) as receiver:
        env = notify_env(f"jsons://{receiver.hostport}/secure", pg_server.url(app_db),
                         REQUESTS_CA_BUNDLE=str(tmp_path / "cert.pem"))  # trust only this one
        result = cli("check", "--max-age", "1h", env=env)
        (request,) = receiver.wait_for(1)
    assert result.returncode == 1 and result.stdout.startswith("unhealthy: no committed snapshot")
    assert "not sent" not in result.stderr
    assert request.path == "/secure"
    message = str(payload(request)["message"])
    assert message.splitlines()[0] == result.stdout.strip()


def test_dead_receivers_change_nothing_but_a_warning(
    cli: Cli, pg_server: Server, app_db: str
) -> None:
    url = pg_server.url(app_db)
    dead_hook = dead_url("json", f"/hook/{TOKEN}")
    dead_ping = dead_url("http", f"/ping/{TOKEN}")
    env = notify_env(dead_hook, url, SNAPMGR_HEALTHCHECK_URL=dead_ping)

    ok = cli("snapshot", "--json", "-v", env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["id"]  # stdout is still exactly the JSON document
    assert "notification 1 (json://127.0.0.1:" in ok.stderr and "/***) not sent" in ok.stderr
    assert "healthcheck ping (start) to http://127.0.0.1:" in ok.stderr
    assert "healthcheck ping (success)" in ok.stderr
    assert "result is unaffected" in ok.stderr

    failed = cli("restore", "no_such_snapshot_20250101_000000", "--yes", env=env)
    assert failed.returncode == 7
    assert failed.stdout == ""
    assert "not sent" in failed.stderr
    for result in (ok, failed):
        assert TOKEN not in result.stderr + result.stdout


def test_urls_are_secrets_in_config_and_logs(
    cli: Cli, pg_server: Server, app_db: str, receiver: Receiver
) -> None:
    secret_hook = f"json://user:{TOKEN}@{receiver.hostport}/hook/{TOKEN}"
    env = notify_env(f"{secret_hook}, nosuchservice://{TOKEN}/B0000000", pg_server.url(app_db),
                     SNAPMGR_HEALTHCHECK_URL=f"{receiver.url}/ping/{TOKEN}")  # fmt: skip

    shown = json.loads(cli.ok("config", "--json", env=env).stdout)
    assert shown["notify_urls"]["value"] == [f"json://***@{receiver.hostport}/***", "nosuchservice://***"]
    assert shown["healthcheck_url"]["value"] == f"{receiver.url}/***"
    human = cli.ok("config", env=env).stdout
    verbose = cli("snapshot", "-vv", env=env)
    assert verbose.returncode == 0, verbose.stderr
    assert "notification 2 (nosuchservice://***) not sent" in verbose.stderr
    for text in (json.dumps(shown), human, verbose.stderr, verbose.stdout):
        assert TOKEN not in text
    # The webhook itself got the notification (user and password as HTTP basic auth).
    assert [r.path for r in receiver.wait_for(3)] == [
        f"/ping/{TOKEN}/start", f"/hook/{TOKEN}", f"/ping/{TOKEN}",
    ]  # fmt: skip


def test_without_apprise_a_warning_names_the_extra(
    cli: Cli, pg_server: Server, app_db: str, receiver: Receiver, tmp_path: Path
) -> None:
    shadow = tmp_path / "no_apprise" / "apprise"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'apprise'\")\n")
    path = os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")])
    env = notify_env(hook(receiver), pg_server.url(app_db), PYTHONPATH=path)

    result = cli("snapshot", "--json", env=env)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["reused"] is False
    assert "Apprise is not installed; run: pip install 'snapmgr[notify]'" in result.stderr
    assert receiver.requests == []


def test_bad_notify_settings_exit_2_naming_the_key(
    cli: Cli, pg_server: Server, app_db: str
) -> None:
    url = pg_server.url(app_db)
    cases = [
        ({"SNAPMGR_NOTIFY_ON": "failure,sometimes"}, "notify_on"),
        ({"SNAPMGR_NOTIFY_ON": "deploy:success"}, "notify_on"),
        ({"SNAPMGR_NOTIFY_URLS": f"hooks.example.com/{TOKEN}"}, "notify_urls"),
        ({"SNAPMGR_HEALTHCHECK_URL": f"ftp://hc.example.com/{TOKEN}"}, "healthcheck_url"),
    ]
    for extra, key in cases:
        result = cli("snapshot", env={"DATABASE_URL": url, **extra})
        assert result.returncode == 2, result.stderr
        assert key in result.stderr and TOKEN not in result.stderr
    assert not cli.store.exists()


def test_pings_for_prune_but_not_for_dry_runs_or_guard(
    cli: Cli, pg_server: Server, app_db: str, receiver: Receiver
) -> None:
    env = {"DATABASE_URL": pg_server.url(app_db),
           "SNAPMGR_HEALTHCHECK_URL": f"{receiver.url}/ping/prune-check"}  # fmt: skip
    cli.ok("guard", "--", "true", env=env)
    cli.ok("prune", "--keep-last", "1", "--dry-run", env=env)
    assert receiver.requests == []
    cli.ok("prune", "--keep-last", "1", env=env)
    refused = cli("prune", env=env)  # an empty policy: exit 9
    assert refused.returncode == 9

    pings = receiver.wait_for(4)
    assert [(r.path, r.method) for r in pings] == [
        ("/ping/prune-check/start", "POST"), ("/ping/prune-check", "POST"),
        ("/ping/prune-check/start", "POST"), ("/ping/prune-check/fail", "POST"),
    ]  # fmt: skip
    assert pings[1].body.startswith(b"kept 1, removed 0 snapshot(s)")
    assert b"retention policy is empty" in pings[3].body
    assert pings[0].headers["User-Agent"].startswith("snapmgr/")


def test_a_ping_url_with_a_query_keeps_it_last(receiver: Receiver) -> None:
    from snapmgr.healthping import ping

    assert ping(f"{receiver.url}/ping/abc/?rid=1", "start", "begin")
    assert ping(f"{receiver.url}/ping/abc?rid=1", "fail", "boom")
    assert [(r.path, r.body) for r in receiver.wait_for(2)] == [
        ("/ping/abc/start?rid=1", b"begin"), ("/ping/abc/fail?rid=1", b"boom"),
    ]  # fmt: skip

