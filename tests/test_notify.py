"""Unit tests: notify_on rules, masking of notification and ping URLs, lock flags."""

from __future__ import annotations

import logging
import sys

import pytest

from snapmgr.deploylock import Reuse, lock_key, reuse_window, wait_seconds
from snapmgr.durations import Duration
from snapmgr.errors import UsageError
from snapmgr.notify import Event, parse_rules, send, wanted
from snapmgr.redact import mask_service_url, scrub, service_url_secrets


def event(command: str, ok: bool) -> Event:
    return Event(command=command, ok=ok, summary="s", exit_code=0 if ok else 4)


@pytest.mark.parametrize(
    ("rules", "sent"),
    [
        ("failure", {("guard", False), ("snapshot", False), ("check", False)}),
        ("success", {("guard", True), ("snapshot", True), ("check", True)}),
        ("always", {(c, o) for c in ("guard", "snapshot", "check") for o in (True, False)}),
        ("guard", {("guard", True), ("guard", False)}),
        ("failure, snapshot:success", {("guard", False), ("snapshot", False),
                                       ("check", False), ("snapshot", True)}),
        ("GUARD:Always check:failure", {("guard", True), ("guard", False), ("check", False)}),
        ("", set()),
    ],
)  # fmt: skip
def test_rules_choose_the_events(rules: str, sent: set[tuple[str, bool]]) -> None:
    parsed = parse_rules(rules)
    assert parse_rules(list(parsed)) == parsed  # the TOML list form reads the same
    every = {(c, o) for c in ("guard", "snapshot", "check") for o in (True, False)}
    assert {(c, o) for c, o in every if wanted(event(c, o), parsed)} == sent


@pytest.mark.parametrize("bad", ["sometimes", "deploy:success", "guard:maybe", "a:b:c"])
def test_bad_rules_are_named(bad: str) -> None:
    with pytest.raises(ValueError, match=f"unknown rule {bad!r}"):
        parse_rules(f"failure,{bad}")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("slack://T0AAAAAAA/B0BBBBBBB/abcdefghijklmnop/#deploys", "slack://***"),
        ("https://hooks.slack.com/services/T000/B000/XXXXXXXX", "https://hooks.slack.com/***"),
        ("https://hc-ping.com/0f1e2d3c-aaaa-bbbb-cccc-1234567890ab", "https://hc-ping.com/***"),
        ("jsons://user:pa55word@hooks.example.com:8443/x?token=abc", "jsons://***@hooks.example.com:8443/***"),
        ("tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/987654", "tgram://***"),
        ("mailtos://me:app-password@gmail.com", "mailtos://***@gmail.com"),
        ("ntfy://ntfy.sh", "ntfy://ntfy.sh"),
        ("not a url", "***"),
    ],
)  # fmt: skip
def test_service_urls_show_only_scheme_and_host(url: str, shown: str) -> None:
    assert mask_service_url(url) == shown


def test_service_url_secrets_scrub_tokens_but_not_hosts() -> None:
    url = "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/987654?user=x&pw=sEcr3tpw"
    text = f"failed: {url} (AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw rejected) sEcr3tpw hooks.example.com"
    scrubbed = scrub(text, service_url_secrets(url))
    assert "AAHdq" not in scrubbed and "sEcr3tpw" not in scrubbed and "123456789:" not in scrubbed
    assert "hooks.example.com" in scrubbed
    assert "pa55" not in scrub("x pa55 y", service_url_secrets("jsons://u:pa55@h.example.com/"))


def test_event_body_lists_known_facts() -> None:
    full = Event("snapshot", False, "snapshot failed", 4, "nightly_20250101_000000",
                 "app@db:5432/app", 1536, 2.04, "pg_dump failed", "web-1")  # fmt: skip
    assert full.title() == "snapmgr snapshot FAILED (exit 4) on web-1"
    assert full.body().splitlines() == [
        "snapshot failed", "snapshot: nightly_20250101_000000", "database: app@db:5432/app",
        "size: 1.5 KiB", "duration: 2.0s", "error: pg_dump failed", "host: web-1",
    ]  # fmt: skip
    assert Event("prune", True, "kept 3").body() == "kept 3"


def test_send_without_apprise_warns_and_returns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "apprise", None)  # what an absent package looks like
    with caplog.at_level(logging.WARNING, logger="snapmgr"):
        assert send(event("guard", False), ["json://127.0.0.1:9/x"]) == 0
    assert "pip install 'snapmgr[notify]'" in caplog.text


def test_wait_and_reuse_flags() -> None:
    assert wait_seconds("0") == 0
    assert wait_seconds("30min") == 1800
    assert wait_seconds("1h30min") == 5400
    assert reuse_window("10min") == Reuse(Duration(minutes=10))
    assert reuse_window("waited") == Reuse(None)
    assert reuse_window("0") is None and reuse_window("off") is None
    with pytest.raises(UsageError, match="--wait: invalid duration 'soon'"):
        wait_seconds("soon")
    with pytest.raises(UsageError, match="--reuse-within: invalid duration '-1'"):
        reuse_window("-1")


def test_lock_keys_are_per_label_and_fit_a_bigint() -> None:
    keys = {lock_key(label) for label in ("pre_migration", "nightly", "deploy_42")}
    assert len(keys) == 3
    assert all(-(2**63) <= key < 2**63 for key in keys)
    assert lock_key("pre_migration") == lock_key("pre_migration")
