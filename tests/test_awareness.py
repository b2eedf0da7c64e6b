"""Presence merging rules (server/awareness.py), on encoded entries as clients send them;
and presence expiring when it is not renewed, over real sockets."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import eventually, run_server
from yclient import YClient, connect

from palimpsest import protocol as P
from palimpsest.awareness import Awareness
from palimpsest.settings import Settings


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
    """A connection's clients are removed at the clocks they hold, as y-protocols'
    removeAwarenessStates removes a remote client (receivers drop a null at the clock
    they hold): the client's next change, one clock on, is new to everyone."""
    a = Awareness()
    a.merge("c1", entries((7, 3, "{}"), (8, 1, "{}")), {"c1"})
    removed = a.drop("c1")
    assert removed is not None and P.decode_awareness(removed) == [(7, 3, "null"), (8, 1, "null")]
    assert a.drop("c1") is None and not a.entries
    told: list[bytes] = []
    assert a.merge("c3", entries((7, 3, "{}")), {"c3"}, tell=told.append) is None
    assert [P.decode(f) for f in told] == [P.AwarenessUpdate(entries((7, 3, "null")))]
    # the client bumps its clock past the removal (y-protocols does when told): accepted
    assert a.merge("c3", entries((7, 4, "{}")), {"c3"}) is not None


def test_an_echo_changes_nothing_and_stale_clients_are_told_in_one_frame() -> None:
    a = Awareness()
    a.merge("c1", entries((7, 3, "{}")), {"c1"})
    a.merge("c2", entries((8, 1, "{}"), (9, 1, "{}")), {"c1", "c2"})
    assert not a.changes("c3", 7, 9, '{"x":1}')  # another connection's client
    assert not a.changes("c1", 7, 3, '{"x":1}') and not a.changes("c1", 7, 2, "{}")
    assert a.changes("c1", 7, 4, "{}") and a.changes("c1", 7, 3, "null")
    assert a.changes("c3", 10, 1, "{}")  # a new client
    assert not a.changes("c3", 10, 0, "{}")  # (at clock 0: y-protocols drops it)
    a.drop("c2")  # 8 and 9 removed at clock 1
    assert not a.changes("c3", 8, 1, "{}") and not a.changes("c3", 9, 1, "null")
    assert a.changes("c3", 8, 2, "{}")
    told: list[bytes] = []
    echo = entries((7, 3, "{}"), (8, 1, "{}"), (9, 1, "{}"), (8, 1, "{}"))
    assert a.merge("c3", echo, {"c1", "c3"}, tell=told.append) is None
    assert [P.decode(f) for f in told] == [
        P.AwarenessUpdate(entries((8, 1, "null"), (9, 1, "null")))
    ]


def test_a_state_not_renewed_expires_at_its_clock_and_a_renewal_brings_it_back() -> None:
    a = Awareness()
    a.merge("c1", entries((7, 3, '{"n":"ada"}')), {"c1"})
    a.merge("c2", entries((8, 1, '{"n":"bob"}')), {"c1", "c2"})
    a.merge("c1", entries((7, 4, '{"n":"ada"}')), {"c1", "c2"})  # 7 renewed, after 8
    assert list(a.entries) == [8, 7] and a.oldest() == a.entries[8].renewed
    assert a.expire(a.entries[8].renewed) == []  # renewed at that time: not before it
    expired = a.expire(a.entries[7].renewed)
    assert [(c, e.clock) for c, e in expired] == [(8, 1)] and list(a.entries) == [7]
    expired = a.expire(time.monotonic() + 1)
    assert [(c, e.clock) for c, e in expired] == [(7, 4)]
    assert not a.entries and a.oldest() is None
    # removed at the clock it had (as y-protocols does): an echo of the state at that
    # clock is told it was removed, the client's renewal at a higher clock comes back
    told: list[bytes] = []
    assert a.merge("c2", entries((7, 4, '{"n":"ada"}')), {"c1", "c2"}, tell=told.append) is None
    assert [P.decode(f) for f in told] == [P.AwarenessUpdate(entries((7, 4, "null")))]
    got = a.merge("c1", entries((7, 5, '{"n":"ada"}')), {"c1", "c2"})
    assert got is not None and P.decode_awareness(got) == [(7, 5, '{"n":"ada"}')]


def states(c: YClient) -> dict[int, list[tuple[int, str]]]:
    """Every presence entry a client received, by Yjs client id, in order."""
    seen: dict[int, list[tuple[int, str]]] = {}
    for f in c.frames:
        if isinstance(f, P.AwarenessUpdate):
            for client, clock, state in P.decode_awareness(f.payload):
                seen.setdefault(client, []).append((clock, state))
    return seen


async def test_a_silent_presence_expires_for_everyone_and_comes_back_renewed(
    tmp_path: Path,
) -> None:
    """A connection that announced its presence once and then stays connected and silent
    (a frozen tab whose socket still answers pings) loses it after the timeout: everyone
    is sent its removal, at its clock, as y-websocket's server does, and a newcomer is
    not given it. Its next renewal, at a higher clock, brings it back for everyone."""
    settings = Settings(db=str(tmp_path / "p.db"), awareness_timeout_seconds=0.5)
    ann = '{"user":{"name":"ann"}}'
    async with (
        run_server(settings) as srv,
        connect(srv.ws_url, "aw", user="ann") as silent,
        connect(srv.ws_url, "aw", user="bob") as bob,
    ):
        await silent.send_raw(P.encode_awareness(entries((4242, 1, ann))))
        await eventually(lambda: states(bob).get(4242) == [(1, ann)], what="ann's state")
        removed = [(1, ann), (1, "null")]
        await eventually(lambda: states(bob).get(4242) == removed, what="ann's state removed")
        assert states(silent).get(4242) == removed  # (the sender is told too)
        assert srv.backend.rooms.loaded["aw"].awareness == {}
        async with connect(srv.ws_url, "aw", user="cy") as cy:
            # (the server sends the known presence before its sync step 2)
            assert 4242 not in states(cy)
            await silent.send_raw(P.encode_awareness(entries((4242, 2, ann))))
            await eventually(lambda: states(cy).get(4242) == [(2, ann)], what="back for cy")
            await eventually(lambda: states(bob).get(4242) == [*removed, (2, ann)], what="bob")


async def test_an_expired_state_no_longer_counts_against_its_connection(tmp_path: Path) -> None:
    """A connection holds presence for a bounded number of Yjs client ids; the ids whose
    states expired are no longer its own (a provider whose document was recreated
    announces a new client id)."""
    settings = Settings(
        db=str(tmp_path / "p.db"),
        awareness_timeout_seconds=0.5,
        max_awareness_clients_per_connection=1,
    )
    async with (
        run_server(settings) as srv,
        connect(srv.ws_url, "aw", user="ann") as ann,
        connect(srv.ws_url, "aw", user="bob") as bob,
    ):
        await ann.send_raw(P.encode_awareness(entries((1, 1, "{}"))))
        await eventually(lambda: states(bob).get(1) == [(1, "{}"), (1, "null")], what="expired")
        await ann.send_raw(P.encode_awareness(entries((2, 1, "{}"))))
        await eventually(lambda: states(bob).get(2) == [(1, "{}")], what="the new one relayed")
        assert ann.close_code is None


async def test_a_client_that_left_and_came_back_is_relayed_at_its_next_clock(
    tmp_path: Path,
) -> None:
    """As y-websocket's server: a client at clock 3 whose connection ends is removed at
    clock 3; back on a new connection, its re-sent clock 3 is dropped (everyone holds
    that removal), and its next change, at clock 4, is relayed to everyone."""
    settings = Settings(db=str(tmp_path / "p.db"))
    a1, a2 = '{"u":"A"}', '{"u":"A","x":1}'
    async with run_server(settings) as srv, connect(srv.ws_url, "back", user="bob") as bob:
        async with connect(srv.ws_url, "back", user="ann") as ann:
            await ann.send_raw(P.encode_awareness(entries((9101, 3, a1))))
            await eventually(lambda: states(bob).get(9101) == [(3, a1)], what="A at 3")
        await eventually(lambda: states(bob).get(9101) == [(3, a1), (3, "null")], what="removed")
        async with connect(srv.ws_url, "back", user="ann") as ann:
            await ann.send_raw(P.encode_awareness(entries((9101, 3, a1))))
            await ann.send_raw(P.encode_awareness(entries((9101, 4, a2))))
            want = [(3, a1), (3, "null"), (4, a2)]
            await eventually(lambda: states(bob).get(9101) == want, what="A at 4 relayed")
            await eventually(lambda: (4, a2) in states(ann).get(9101, []), what="echoed to A")
