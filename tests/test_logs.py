"""The log's own rules: asyncpg's pool, retrying while PostgreSQL is down, says so in one
line at most once a minute instead of a 30-line traceback at every retry."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from pathlib import Path

import pytest
from conftest import PG_PORT, eventually
from scaleout import fresh_schema
from serverproc import ServerProcess
from stallproxy import StallingProxy

from palimpsest import client, logs
from palimpsest.repeat_logs import RepeatLines


def test_asyncpg_pool_retries_are_one_line_once_a_minute() -> None:
    out = io.StringIO()
    pool = logging.getLogger("test-logs.asyncpg.pool")
    pool.addHandler(logging.StreamHandler(out))
    pool.propagate = False
    pool.addFilter(logs.OncePerMinute())
    for _ in range(5):
        try:
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
        except OSError:
            pool.warning("Failed to restore the pool connection floor; retrying", exc_info=True)
    pool.warning("something else %s", "entirely")
    assert out.getvalue().splitlines() == [
        "Failed to restore the pool connection floor; retrying: [Errno 111] Connect call "
        "failed ('127.0.0.1', 5432) (said once a minute)",
        "something else entirely",
    ]


def test_a_repeated_refusal_is_said_once_an_interval_with_its_count() -> None:
    """server.repeat_logs: the first refusal of (document, address, user, code, reason)
    is said, its repeats in the minute are counted, the count said when the minute ends;
    a quiet minute forgets it; another reason, address or document is said apart."""
    out = io.StringIO()
    log = logging.getLogger("test-logs.repeats")
    log.addHandler(logging.StreamHandler(out))
    log.propagate, log.level = False, logging.INFO
    now = [100.0]
    lines = RepeatLines(log, every=60.0, most=3, clock=lambda: now[0])
    tab = ("doc", "10.0.0.1", "ann")
    assert lines.refused(tab, 4400, "splits") is True
    assert [lines.refused(tab, 4400, "splits") for _ in range(19)] == [False] * 19
    assert lines.connecting(tab)  # its next connect line at DEBUG
    assert lines.refused(tab, 4413, "too large") is True  # another reason
    assert lines.refused(("doc", "10.0.0.2", "ann"), 4400, "splits") is True
    assert out.getvalue().count("\n") == 0  # (said by the caller: the first ones)
    now[0] += 60.0
    assert not lines.connecting(("other", "10.0.0.1", "ann"))
    said = out.getvalue().splitlines()
    assert len(said) == 1, said
    assert said[0].startswith("19 more connections of ann from 10.0.0.1 on doc refused with "
                              "4400 in the last 60 s"), said  # fmt: skip
    assert said[0].endswith(": splits"), said
    assert lines.refused(tab, 4400, "splits") is False  # still repeating: held back again
    now[0] += 60.0
    lines.connecting(tab)
    assert out.getvalue().splitlines()[1].startswith("1 more connections of ann")
    now[0] += 60.0  # a minute without one: forgotten, the next is said again
    assert not lines.connecting(tab)
    assert len(lines) == 0
    assert lines.refused(tab, 4400, "splits") is True
    for n in range(5):  # at most `most` remembered: the oldest forgotten, its count said
        lines.refused(tab, 4400, "splits")
        lines.refused((f"d{n}", "10.0.0.1", "ann"), 4400, "splits")
    assert len(lines) == 3
    assert "3 more connections of ann from 10.0.0.1 on doc" in out.getvalue()


def test_configure_puts_the_filter_on_asyncpgs_pool_once() -> None:
    ours = logging.getLogger("palimpsest")
    saved = (list(ours.handlers), ours.level, ours.propagate)
    try:
        logs.configure("info")
        logs.configure("info")  # (configured twice: tests, an app embedding it)
    finally:
        ours.handlers[:] = saved[0]
        ours.setLevel(saved[1])
        ours.propagate = saved[2]
    pool = logging.getLogger("asyncpg.pool")
    assert len([f for f in pool.filters if isinstance(f, logs.OncePerMinute)]) == 1


@pytest.mark.postgres
async def test_with_log_json_asyncpgs_pool_lines_are_json_too(tmp_path: Path) -> None:
    """asyncpg's pool logs through its own logger, which propagated to Python's root
    logger; that had no handler, so the line went out through logging.lastResort as bare
    text ("Failed to restore the pool connection floor") between JSON lines. The
    libraries' loggers go through the server's handler now. A real server on PostgreSQL
    through a proxy that cuts every connection, then lets them through again."""
    with StallingProxy(PG_PORT) as proxy:
        async with fresh_schema() as url:
            via = url.replace(f":{PG_PORT}/", f":{proxy.port}/", 1)
            async with ServerProcess(
                tmp_path, extra_args=["--store", via, "--log-json"]
            ) as srv:  # fmt: skip
                async with client.connect(srv.ws_url, "doc", user="ann") as c:
                    c.text().insert(0, "hello")
                    await c.flush()
                await asyncio.to_thread(proxy.cut)
                await eventually(
                    lambda: "Failed to restore the pool connection floor" in srv.log_text(),
                    timeout=30, what="asyncpg's pool says it could not reconnect",
                )  # fmt: skip
                await asyncio.to_thread(proxy.resume)
    lines = [x for x in srv.log_text().splitlines() if x and not x.startswith("=====")]
    ours = [x for x in lines if not x.startswith("palimpsest: ")]  # serve's own print()s
    bare = [x for x in ours if not x.startswith("{")]
    assert bare == [], "\n".join(lines)
    pool = [json.loads(x) for x in ours if "Failed to restore the pool" in x]
    assert pool and pool[0]["logger"] == "asyncpg.pool", pool


async def test_with_log_json_the_start_up_lines_are_json_too(tmp_path: Path) -> None:
    """`--log-json` promises one JSON object per line, but `serve` printed its start-up
    lines as text (`palimpsest: store: ...`, the auth mode, `palimpsest: listening on
    ...`). They are log records now, still printed whatever the log level."""
    secret = "log-json-test-secret-of-at-least-32-bytes"
    args = ["--log-json", "--log-level", "error", "--jwt-secret", secret]
    srv = await ServerProcess(tmp_path, extra_args=args).astart()
    try:
        await eventually(lambda: "listening on" in srv.log_text(), what="the listening line")
    finally:
        await srv.astop()
    lines = [ln for ln in srv.log_text().splitlines() if ln and not ln.startswith("=====")]
    records = [json.loads(ln) for ln in lines]  # every line: not one of plain text
    said = {r["msg"].split(":")[0].split(" on ")[0]: r for r in records}
    assert {"store", "auth", "listening"} <= set(said), lines
    assert said["store"]["msg"].startswith("store: SQLite database "), lines
    assert said["listening"] == {**said["listening"], "level": "info", "logger": "palimpsest.serve"}


def test_a_plain_text_line_says_its_utc_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain-text line's time is local: without its offset it read as another instant
    in another zone (and twice in the hour a DST change repeats)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        line = logs.TextFormatter().format(
            logging.makeLogRecord(
                {
                    "name": "palimpsest.t",
                    "levelname": "INFO",
                    "msg": "hi",
                    "created": 1_793_512_830.25,
                    "msecs": 250.0,
                }
            )  # fmt: skip
        )
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    # 2026-11-01 06:00:30Z: 01:00:30 for the second time that night (EST, not EDT)
    assert line == "2026-11-01 01:00:30,250 -0500 INFO    palimpsest.t: hi"
