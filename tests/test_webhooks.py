"""Webhooks against a real loopback HTTP receiver and a real `palimpsest serve`: the
receiver fails, then is down, then recovers, and still gets every event, in order,
signed; the cursor survives a restart; a hook that keeps failing is marked failing
(in /metrics and `palimpsest webhooks`) and resumes from its cursor when enabled."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from conftest import eventually
from feedhelp import type_into
from serverproc import REPO_ROOT, ServerProcess
from webhook_receiver import Receiver

from palimpsest.changefeed import Webhook, verify
from palimpsest.store.sqlite import SQLiteStore

SECRET = "webhook-secret-for-tests"
FAST = {
    "PALIMPSEST_WEBHOOK_RETRY_FIRST": "0.05",
    "PALIMPSEST_WEBHOOK_RETRY_MAX": "0.3",
    "PALIMPSEST_WEBHOOK_BATCH": "7",
    "PALIMPSEST_CHANGEFEED_POLL": "0.3",
    "PALIMPSEST_WEBHOOK_LEASE_SECONDS": "2",
}


async def log_of(db: Path) -> list[tuple[str, int, int]]:
    store = SQLiteStore(db)
    async with store:
        return [(e.doc, e.seq, e.pos) for e in await store.read_all(limit=1_000_000)]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palimpsest", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def hooks(db: Path) -> list[dict[str, Any]]:
    r = cli("webhooks", "--db", str(db), "--json")
    assert r.returncode == 0, r.stderr
    out: list[dict[str, Any]] = json.loads(r.stdout)["webhooks"]
    return out


def keys(events: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    return [(e["doc"], e["seq"], e["pos"]) for e in events]


async def test_every_event_arrives_in_order_through_failure_outage_and_restart(
    tmp_path: Path,
) -> None:
    rx = Receiver()
    rx.fail_next = 3
    rx.up()
    srv = ServerProcess(
        tmp_path,
        extra_args=["--webhook", rx.url, "--webhook-secret", SECRET,
                    "--webhook-max-failures", "1000"],
        env=FAST,
    )  # fmt: skip
    await srv.astart()
    try:
        await asyncio.gather(
            type_into(srv.ws_url, "alpha", [f"a{i} " for i in range(12)]),
            type_into(srv.ws_url, "beta", [f"b{i} " for i in range(12)]),
        )
        await eventually(lambda: len(rx.deliveries) >= 4, what="the receiver failed 3 times")
        rx.down()
        await type_into(srv.ws_url, "alpha", [f"down{i} " for i in range(5)])
        await asyncio.sleep(1.0)  # deliveries fail against a closed port meanwhile
        rx.up()
        log = await log_of(srv.db_path)
        await eventually(lambda: len(rx.accepted_events()) >= len(log), timeout=20,
                         what="everything delivered")  # fmt: skip
        # a restart resumes from the stored cursor: neither skips nor floods
        await srv.arestart()
        before = len(rx.accepted())
        await type_into(srv.ws_url, "beta", [f"after{i} " for i in range(4)])
        log = await log_of(srv.db_path)
        await eventually(lambda: len(rx.accepted_events()) >= len(log), timeout=20,
                         what="everything delivered after the restart")  # fmt: skip
        assert rx.accepted()[before].json["first"] > rx.accepted()[before - 1].json["last"]
        state = hooks(srv.db_path)
    finally:
        await srv.astop()
        rx.down()
    hook = Webhook(rx.url)
    # exactly the log, once, in order (batches in position order, none lost, none twice)
    assert keys(rx.accepted_events()) == log
    assert [d.status for d in rx.deliveries[:3]] == [500, 500, 500]
    for d in rx.deliveries:
        assert verify(SECRET, d.body, d.headers["x-palimpsest-signature"])
        assert d.headers["x-palimpsest-webhook"] == hook.id
        body = d.json
        assert d.headers["x-palimpsest-delivery"] == f"{hook.id}:{body['first']}-{body['last']}"
        assert len(body["events"]) <= 7
    assert not verify("another secret", rx.deliveries[0].body,
                      rx.deliveries[0].headers["x-palimpsest-signature"])  # fmt: skip
    (row,) = state
    assert row["id"] == hook.id and row["cursor"] == log[-1][2] and row["state"] == "active"
    assert row["delivered"] == len(log)


async def test_a_retry_sends_the_same_batch_under_the_same_delivery_id(tmp_path: Path) -> None:
    """A retry re-read the page after the cursor, so the batch grew with what came
    meanwhile: one event came under several delivery ids, and a receiver that deduped
    by X-Palimpsest-Delivery (as the docs said) applied it twice."""
    rx = Receiver()
    rx.fail_next = 3
    rx.up()
    env = {**FAST, "PALIMPSEST_WEBHOOK_RETRY_FIRST": "0.3", "PALIMPSEST_WEBHOOK_RETRY_MAX": "0.6"}
    srv = ServerProcess(tmp_path, extra_args=["--webhook", rx.url], env=env)
    await srv.astart()
    try:
        await type_into(srv.ws_url, "alpha", ["a0 ", "a1 "])
        await eventually(lambda: len(rx.deliveries) >= 1, what="the first try failed")
        await type_into(srv.ws_url, "alpha", [f"more{i} " for i in range(4)])  # meanwhile
        log = await log_of(srv.db_path)
        await eventually(lambda: len(rx.accepted_events()) >= len(log), timeout=20,
                         what="everything delivered")  # fmt: skip
    finally:
        await srv.astop()
        rx.down()
    tries = rx.deliveries[:4]
    assert [d.status for d in tries] == [500, 500, 500, 204]
    assert len({d.headers["x-palimpsest-delivery"] for d in tries}) == 1
    assert len({d.body for d in tries}) == 1 and len(tries[0].json["events"]) < len(log)
    # what came meanwhile follows in the next batch, and nothing arrives twice
    assert keys(rx.accepted_events()) == log


async def test_failing_hook_is_reported_and_resumes_from_its_cursor_when_enabled(
    tmp_path: Path,
) -> None:
    rx = Receiver()  # down: nothing listens on its port
    srv = ServerProcess(
        tmp_path,
        extra_args=["--webhook", rx.url, "--webhook-secret", SECRET,
                    "--webhook-max-failures", "3"],
        env=FAST,
    )  # fmt: skip
    await srv.astart()
    try:
        await type_into(srv.ws_url, "gamma", [f"g{i} " for i in range(5)])

        def failing_metric() -> bool:
            text = httpx.get(f"{srv.http_url}/metrics", timeout=5).text
            return f'palimpsest_webhook_failing{{webhook="{Webhook(rx.url).id}"}} 1.0' in text

        await eventually(failing_metric, timeout=20, what="failing in /metrics")
        (row,) = hooks(srv.db_path)
        assert row["state"] == "failing" and row["failures"] == 3 and row["cursor"] == 0
        assert "ConnectError" in row["last_error"]
        listing = cli("webhooks", "--db", str(srv.db_path))
        assert "failing" in listing.stdout and rx.url in listing.stdout
        # the receiver comes back, but a failing hook waits for the operator
        rx.up()
        await type_into(srv.ws_url, "gamma", ["more"])
        await asyncio.sleep(1.5)
        assert rx.deliveries == []
        hook_id = Webhook(rx.url).id
        async with httpx.AsyncClient(base_url=srv.http_url, timeout=5) as http:
            listed = (await http.get("/api/webhooks")).json()
            assert [h["state"] for h in listed["webhooks"]] == ["failing"]
            assert listed["webhooks"][0]["behind"] == listed["position"] > 0
            r = await http.post(f"/api/webhooks/{hook_id}/disable")
            assert r.status_code == 200 and r.json()["state"] == "disabled"
            assert (await http.post(f"/api/webhooks/{hook_id}/explode")).status_code == 404
            assert (await http.post("/api/webhooks/wh-nope/enable")).status_code == 404
        await asyncio.sleep(1.0)
        assert rx.deliveries == []
        r = cli("webhooks", "enable", rx.url, "--db", str(srv.db_path))
        assert r.returncode == 0 and "active" in r.stdout, r.stderr
        log = await log_of(srv.db_path)
        await eventually(lambda: len(rx.accepted_events()) >= len(log), timeout=20,
                         what="delivery resumed from the cursor")  # fmt: skip
        assert keys(rx.accepted_events()) == log
        await eventually(lambda: not failing_metric(), what="no longer failing in /metrics")
        r = cli("webhooks", "enable", "wh-000000000000", "--db", str(srv.db_path))
        assert r.returncode == 1 and "no webhook" in r.stderr
    finally:
        await srv.astop()
        rx.down()


async def test_a_redirect_is_a_failure_that_says_where_to(tmp_path: Path) -> None:
    """A receiver answering 307 is not followed (the hook's URL is what to fix): the hook's
    last error said only "HTTP 307: ", not where it was sent."""
    with Receiver() as rx:
        rx.redirect_to = "https://elsewhere.example/hook"
        srv = ServerProcess(
            tmp_path, extra_args=["--webhook", rx.url, "--webhook-max-failures", "2"], env=FAST
        )
        await srv.astart()
        try:
            await type_into(srv.ws_url, "delta", ["d"])
            await eventually(lambda: hooks(srv.db_path)[0]["state"] == "failing", timeout=20,
                             what="failing")  # fmt: skip
            (row,) = hooks(srv.db_path)
            assert row["last_error"] == (
                "HTTP 307 to https://elsewhere.example/hook: not followed"
            ), row
            assert rx.deliveries and rx.accepted() == []
        finally:
            await srv.astop()


async def test_kill_9_may_repeat_a_batch_but_never_skips_or_reorders(tmp_path: Path) -> None:
    with Receiver() as rx:
        srv = ServerProcess(tmp_path, extra_args=["--webhook", rx.url], env=FAST)
        await srv.astart()
        try:
            for round_ in range(3):
                writing = asyncio.create_task(
                    type_into(srv.ws_url, f"doc{round_ % 2}", [f"{round_}.{i} " for i in range(20)])
                )
                await asyncio.sleep(0.2)
                await srv.akill9()  # mid-stream: deliveries and typing both cut off
                writing.cancel()
                await asyncio.gather(writing, return_exceptions=True)
                await srv.astart()
            await type_into(srv.ws_url, "doc0", ["last"])
            log = await log_of(srv.db_path)
            positions = {p for _, _, p in log}
            await eventually(
                lambda: positions <= {e["pos"] for e in rx.accepted_events()},
                timeout=30, what="everything delivered",
            )  # fmt: skip
        finally:
            await srv.astop()
    seen: list[tuple[str, int, int]] = []
    for key in keys(rx.accepted_events()):
        if key not in seen:
            seen.append(key)
    assert seen == log  # first arrivals: the log, in order; repeats are whole batches
    for d in rx.accepted():
        body = d.json
        assert [e["pos"] for e in body["events"]] == sorted(e["pos"] for e in body["events"])


def test_verify_answers_false_for_a_header_that_is_not_ascii() -> None:
    """A forged header with a non-ASCII character made verify raise TypeError (from
    hmac.compare_digest on str) instead of answering False: a receiver that followed
    docs/changefeed.md answered 500."""
    body = b'{"webhook":"wh-1","first":1,"last":1,"events":[]}'
    good = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert verify(SECRET, body, good)
    for forged in ("sha256=\xe9", good[:-1] + "\xe9", "sha256=\u202e00", "\ud800"):
        assert verify(SECRET, body, forged) is False, forged


async def test_credentials_in_a_webhook_url_are_masked_in_the_log_and_listings(
    tmp_path: Path,
) -> None:
    """The URL's password and query values were logged (`webhook wh-... ->
    http://hookuser:hookpass@...?apikey=...`) and served by GET /api/webhooks as they were
    configured. They are still what the deliveries use. So was a secret in the path, where
    Slack's and Discord's hooks keep it (`/services/T0/B0/SECRET`)."""
    with Receiver() as rx:
        rx.redirect_to = "https://someone:theirpass@elsewhere.example/x?key=REDIRSECRET"
        url = (
            f"http://hookuser:hookpass@127.0.0.1:{rx.port}/services/T0/PATHSECRET"
            "?apikey=TOPSECRET&v=1#FRAGSECRET"
        )
        shown = f"http://hookuser:***@127.0.0.1:{rx.port}/services/***?apikey=***&v=***#***"
        srv = ServerProcess(
            tmp_path, extra_args=["--webhook", url, "--webhook-max-failures", "2"], env=FAST
        )
        await srv.astart()
        try:
            await type_into(srv.ws_url, "creds", ["c"])
            await eventually(lambda: hooks(srv.db_path)[0]["state"] == "failing", timeout=20,
                             what="failing")  # fmt: skip
            (row,) = hooks(srv.db_path)
            async with httpx.AsyncClient(base_url=srv.http_url, timeout=5) as http:
                (listed,) = (await http.get("/api/webhooks")).json()["webhooks"]
            listing = cli("webhooks", "--db", str(srv.db_path)).stdout
            await eventually(lambda: "is failing" in srv.log_text(), what="the failing line")
            # (the harness's own header lines give the command line)
            log = "\n".join(x for x in srv.log_text().splitlines() if not x.startswith("====="))
        finally:
            await srv.astop()
    assert row["url"] == listed["url"] == shown, (row, listed)
    assert row["last_error"] == (
        "HTTP 307 to https://someone:***@elsewhere.example/x?key=***: not followed"
    ), row
    assert shown in log and shown in listing, (log, listing)
    for text in (log, listing, json.dumps(listed), json.dumps(row)):
        for secret in ("hookpass", "TOPSECRET", "PATHSECRET", "theirpass", "REDIRSECRET",
                       "FRAGSECRET"):  # fmt: skip
            assert secret not in text, (secret, text)
    # the deliveries went to the URL as configured, its credentials with them
    basic = "Basic " + base64.b64encode(b"hookuser:hookpass").decode()
    assert rx.deliveries and rx.deliveries[0].headers["authorization"] == basic
    assert rx.deliveries[0].path == "/services/T0/PATHSECRET?apikey=TOPSECRET&v=1"


SECRETS = ("hookpass", "TOPSECRET", "PATHSECRET", "FRAGSECRET")


async def test_a_webhook_url_refused_or_not_found_is_shown_without_its_credentials(
    tmp_path: Path,
) -> None:
    """A URL refused as a webhook (not http:// or https://) was quoted whole in the
    error, password, path and query included: `palimpsest serve` printed it, and so did
    `palimpsest webhooks enable URL` for a hook the store does not know. Now masked as
    the listings mask it, or not shown when it cannot be read as a URL."""
    bad = [
        "ftp://hookuser:hookpass@127.0.0.1/services/T0/PATHSECRET?token=TOPSECRET#FRAGSECRET",
        "hookuser:hookpass@127.0.0.1/hook?token=TOPSECRET",  # no scheme
        " https://hookuser:hookpass@127.0.0.1/hook?token=TOPSECRET",
    ]
    for url in bad:
        said = str(_refusal(url))
        assert "http:// or https://" in said
        assert not any(s in said for s in SECRETS), said
    assert "'ftp://hookuser:***@127.0.0.1/services/***?token=***#***'" in str(_refusal(bad[0]))
    r = cli("serve", "--db", str(tmp_path / "serve.db"), "--port", "0", "--webhook", bad[0])
    assert r.returncode != 0 and "http:// or https://" in r.stderr, r
    assert not any(s in r.stdout + r.stderr for s in SECRETS), r

    db = tmp_path / "hooks.db"
    async with SQLiteStore(db):
        pass
    for ref in (bad[0].replace("ftp", "https"), bad[1]):
        r = cli("webhooks", "--db", str(db), "enable", ref)
        assert r.returncode == 1 and "no webhook" in r.stderr, r
        assert not any(s in r.stdout + r.stderr for s in SECRETS), r
    r = cli("webhooks", "--db", str(db), "enable", "wh-0123456789ab")
    assert "no webhook 'wh-0123456789ab' in this store" in r.stderr, r


def _refusal(url: str) -> ValueError:
    try:
        Webhook(url)
    except ValueError as e:
        return e
    raise AssertionError(f"{url!r} taken")
