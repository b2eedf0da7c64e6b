"""A page of the document list, as every store answers it (``EventStore.doc_page``):
which names (a union of name ranges), in which order, after which row, how many.

The work is the store's, in SQL: the names a token grants become ranges of the
``docs`` table's name index, so a listing reads the rows it returns (plus those a glob
narrows away), not every document. Names compare by code point, the same in every
store: SQLite's default BINARY collation, ``COLLATE "C"`` on PostgreSQL (its
``docs_name_c`` index), Python's ``str`` order. Document names are ASCII
(server.names), so that is also their byte order.

``sort="updated"`` orders by the row's updated time, newest first, then by name. No
index holds that column: every append updates it, and an index on it would cost every
append (on PostgreSQL it stops the HOT update of the docs row, ~7% of serial appends/s).
The store sorts the rows of the page's name ranges instead: a top-N sort over the
documents the token grants.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: a DocInfo's columns of the docs table, in its order
DOC_COLUMNS = "name, head, updated_ts, events_bytes, base_seq, created_ts, id"
#: the orders a page can be in
SORTS = ("name", "updated")
#: the most rows of one page (also the default)
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class NameRange:
    """The names equal to `prefix` (`exact`), or that start with it (every name, for
    ""), and that match `glob` when there is one: a case-sensitive pattern of literal
    characters, ``*`` and ``?`` (fnmatch's meaning). `approximate`: the range holds
    more than what it stands for (a token pattern with a ``[...]`` set, which not every
    store can match), and whoever made it checks each name the store returns."""

    prefix: str
    exact: bool = False
    glob: str | None = None
    approximate: bool = False

    def holds(self, name: str) -> bool:
        if self.exact:
            return name == self.prefix
        return name.startswith(self.prefix) and (
            self.glob is None or fnmatch.fnmatchcase(name, self.glob)
        )


@dataclass(frozen=True, slots=True)
class DocPage:
    """What a page lists: documents whose name is in one of `ranges` (none: no
    document), in `sort` order, after the row the cursor names, at most `limit`.

    The cursor: sort="name", `after_name` alone (names after it); sort="updated",
    `after_updated` and `after_name` together (the last row of the previous page; a
    name alone is no position in that order: the store ignores it)."""

    ranges: tuple[NameRange, ...]
    sort: str = "name"
    after_name: str | None = None
    after_updated: int | None = None
    limit: int = MAX_LIMIT

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise ValueError(f"sort must be one of {SORTS}, not {self.sort!r}")
        if self.limit < 1:
            raise ValueError(f"limit must be at least 1, not {self.limit}")

    def holds(self, name: str, updated: int) -> bool:
        """Whether a document is on this page or a later one (the memory store's filter)."""
        if not any(r.holds(name) for r in self.ranges):
            return False
        if self.after_name is None or (self.sort != "name" and self.after_updated is None):
            return True
        if self.sort == "name":
            return name > self.after_name
        assert self.after_updated is not None
        return (-updated, name) > (-self.after_updated, self.after_name)

    def sort_key(self, name: str, updated: int) -> tuple[Any, ...]:
        return (name,) if self.sort == "name" else (-updated, name)


def _next_string(prefix: str) -> str:
    """The least string above every string that starts with `prefix` (not empty)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def page_sql(
    page: DocPage, columns: str, *, name: str, glob: Callable[[str], tuple[str, str]]
) -> tuple[str, list[Any]]:
    """The statement of a page, with ``?`` placeholders, and its arguments.

    `name`: how to compare the name column by code point (``name`` in SQLite,
    ``name COLLATE "C"`` on PostgreSQL); `glob`: a glob's condition and its argument."""
    args: list[Any] = []
    ors: list[str] = []
    exact = [r.prefix for r in page.ranges if r.exact]
    if exact:
        ors.append(f"name IN ({', '.join('?' * len(exact))})")
        args += exact
    for r in page.ranges:
        if r.exact:
            continue
        conds = []
        if r.prefix:
            conds.append(f"{name} >= ? AND {name} < ?")
            args += [r.prefix, _next_string(r.prefix)]
        if r.glob is not None:
            cond, arg = glob(r.glob)
            conds.append(cond)
            args.append(arg)
        ors.append(f"({' AND '.join(conds)})" if conds else "TRUE")
    where = f"({' OR '.join(ors)})" if ors else "FALSE"
    if page.after_name is not None and (page.sort == "name" or page.after_updated is not None):
        if page.sort == "name":
            where += f" AND {name} > ?"
            args.append(page.after_name)
        else:
            where += f" AND (updated_ts < ? OR (updated_ts = ? AND {name} > ?))"
            args += [page.after_updated, page.after_updated, page.after_name]
    order = name if page.sort == "name" else f"updated_ts DESC, {name}"
    args.append(page.limit)
    return f"SELECT {columns} FROM docs WHERE {where} ORDER BY {order} LIMIT ?", args


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2…`` (page_sql puts no ``?`` elsewhere)."""
    parts = sql.split("?")
    return "".join(p + (f"${i + 1}" if i < len(parts) - 1 else "") for i, p in enumerate(parts))


def like_of(glob: str) -> str:
    """A glob of literal characters, ``*`` and ``?`` as a LIKE pattern (escape ``\\``)."""
    out = []
    for c in glob:
        if c == "*":
            out.append("%")
        elif c == "?":
            out.append("_")
        elif c in "%_\\":
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)
