"""Presence merging rules (server/awareness.py), on encoded entries as clients send them."""

from __future__ import annotations

from palimpsest import protocol as P
from palimpsest.awareness import Awareness


def entries(*items: tuple[int, int, str]) -> bytes:
    return P.encode_awareness_entries(list(items))


def test_newer_clocks_win_and_a_connection_speaks_only_for_its_clients() -> None:
    a = Awareness()
    assert a.merge("c1", entries((7, 1, '{"n":"ada"}')), {"c1"}) is not None
    assert a.merge("c1", entries((7, 1, '{"n":"old"}')), {"c1"}) is None  # same clock
    assert a.merge("c2", entries((7, 5, '{"n":"eve"}')), {"c1", "c2"}) is None  # not c2's
    assert a.entries[7].state == '{"n":"ada"}'
    got = a.merge("c1", entries((7, 2, '{"n":"ada!"}')), {"c1"})
    assert got is not None and P.decode_awareness(got) == [(7, 2, '{"n":"ada!"}')]
    assert P.decode_awareness(a.payload()) == [(7, 2, '{"n":"ada!"}')]


def test_leaving_removes_and_a_stale_state_is_told_it_was_removed() -> None:
    a = Awareness()
    a.merge("c1", entries((7, 3, "{}"), (8, 1, "{}")), {"c1"})
    removed = a.drop("c1")
    assert removed is not None and P.decode_awareness(removed) == [(7, 4, "null"), (8, 2, "null")]
    assert a.drop("c1") is None and not a.entries
    told: list[bytes] = []
    assert a.merge("c3", entries((7, 3, "{}")), {"c3"}, tell=told.append) is None
    assert [P.decode(f) for f in told] == [P.AwarenessUpdate(entries((7, 4, "null")))]
    # the client bumps its clock past the removal: accepted
    assert a.merge("c3", entries((7, 5, "{}")), {"c3"}) is not None


def test_an_echo_changes_nothing_and_stale_clients_are_told_in_one_frame() -> None:
    a = Awareness()
    a.merge("c1", entries((7, 3, "{}")), {"c1"})
    a.merge("c2", entries((8, 1, "{}"), (9, 1, "{}")), {"c1", "c2"})
    assert not a.changes("c3", 7, 9, '{"x":1}')  # another connection's client
    assert not a.changes("c1", 7, 3, '{"x":1}') and not a.changes("c1", 7, 2, "{}")
    assert a.changes("c1", 7, 4, "{}") and a.changes("c1", 7, 3, "null")
    assert a.changes("c3", 10, 0, "{}")  # a new client
    a.drop("c2")  # 8 and 9 removed at clock 2
    assert not a.changes("c3", 8, 1, "{}") and not a.changes("c3", 9, 2, "null")
    assert a.changes("c3", 8, 3, "{}")
    told: list[bytes] = []
    echo = entries((7, 3, "{}"), (8, 1, "{}"), (9, 1, "{}"), (8, 1, "{}"))
    assert a.merge("c3", echo, {"c1", "c3"}, tell=told.append) is None
    assert [P.decode(f) for f in told] == [
        P.AwarenessUpdate(entries((8, 2, "null"), (9, 2, "null")))
    ]
