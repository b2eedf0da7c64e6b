"""A SQLite connection for a test's own look or change at a database file: ``with
sqlite_conn(path) as conn:`` commits (or rolls back on an error) *and* closes it.
``with sqlite3.connect(path) as conn:`` only ends the transaction and leaves the
connection open, which Python 3.13 reports as ``ResourceWarning: unclosed database``
(an error under the suite's filterwarnings)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def sqlite_conn(path: Any, **kwargs: Any) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, **kwargs)
    try:
        with conn:  # commit, or roll back on an error
            yield conn
    finally:
        conn.close()
