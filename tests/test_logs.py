"""The log's own rules: asyncpg's pool, retrying while PostgreSQL is down, says so in one
line at most once a minute instead of a 30-line traceback at every retry."""

from __future__ import annotations

import io
import logging

from palimpsest import logs


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
