"""Undo of a Y.Map key that two users set concurrently (docs/undo.md, "A map key two
users set at once").

A whiteboard's drag (both users set a shape's ``x`` many times at once) and a
spreadsheet's cell (both type into A1 a few times at once): the undo of the user whose
value shows used to take the step's deletions from the server's transaction, which
holds the other user's concurrent value the server had when the update came (Yjs
deletes the loser of a concurrent set as it integrates the winner): the key came back
as a stale value the other user had moved past, or was left missing. The key now holds
the latest value anyone else set (the value from before the step when nobody else
touched it), and a value its writer undid does not come back.

Deterministic: each user works on a local document (fixed Yjs client ids, so that the
order of concurrent sets is fixed), both set from the same state, then their updates
reach the server over real websockets in a fixed order, and each pulls the other's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, eventually, free_port, run_server
from pycrdt import Doc, Map
from yclient import YClient, connect

from palimpsest import protocol as P
from palimpsest.ranges import size
from palimpsest.settings import Settings
from palimpsest.undo import state_of
from palimpsest.undo.mapkeys import chains_held

DOC = "board"


@dataclass
class User:
    """One user's app: its own document, and a connection the test pushes it through."""

    name: str
    local: Doc
    wire: YClient
    srv: RunningServer

    def room_doc(self) -> Doc:
        room = self.srv.backend.rooms.get_loaded(DOC)
        assert room is not None
        return room.doc

    async def push(self, step2: bool = False) -> None:
        """Send what the local document has that the connection has not: one event
        (`step2`: as a sync step 2, as a client coming back online sends it)."""
        room = self.srv.backend.rooms.get_loaded(DOC)
        assert room is not None
        before = room.seq
        # as the user's own document encodes it: its values live (the connection's
        # document, holding the other's winning value already, has the loser's deleted)
        update = self.local.get_update(self.wire.doc.get_state())
        encode = P.encode_sync_step2 if step2 else P.encode_sync_update
        await self.wire.send_raw(encode(update))
        self.wire._applying = True  # (not sent again)
        try:
            self.wire.doc.apply_update(update)
        finally:
            self.wire._applying = False
        await eventually(lambda: room.seq > before, what=f"{self.name}'s update logged")

    async def pull(self) -> None:
        """Take in everything the server has (the others' updates, undos)."""
        want = P.decode_state_vector(self.room_doc().get_state())
        await eventually(
            lambda: P.decode_state_vector(self.wire.doc.get_state()) == want,
            what=f"{self.name}'s connection has the server's state",
        )
        self.local.apply_update(self.wire.doc.get_update(self.local.get_state()))

    async def request(self, kind: str) -> dict[str, Any]:
        return await self.wire.request({"type": kind})


@asynccontextmanager
async def two_users(
    tmp_path: Path, alice_id: int, bob_id: int, docs: tuple[Doc, Doc] | None = None, **kw: Any
) -> AsyncIterator[list[User]]:
    """alice and bob on a server (their documents `docs`, when they had them already)."""
    settings = Settings(
        db=str(tmp_path / "db"), port=free_port(), unload_after_seconds=60, undo_capture_ms=60_000
    )
    for k, v in kw.items():
        setattr(settings, k, v)
    da, db = docs or (Doc(client_id=alice_id), Doc(client_id=bob_id))
    async with (
        run_server(settings) as srv,
        connect(srv.ws_url, DOC, "alice") as wa,
        connect(srv.ws_url, DOC, "bob") as wb,
    ):
        yield [User("alice", da, wa, srv), User("bob", db, wb, srv)]


async def concurrently(
    first: User, second: User, set_first: Callable[[], None], set_second: Callable[[], None]
) -> None:
    """Both set from the same state; `first`'s update reaches the server first."""
    set_first()
    set_second()
    await first.push()
    await second.push()
    await first.pull()
    await second.pull()


async def close_steps(*users: User) -> None:
    for u in users:
        assert (await u.request("close_group"))["ok"] is True


def values(users: list[User], get: Callable[[Doc], Any]) -> list[Any]:
    """The value on every client and on the server."""
    return [get(u.local) for u in users] + [get(users[0].room_doc())]


async def undo_and_pull(users: list[User], who: User, kind: str = "undo") -> dict[str, Any]:
    answer = await who.request(kind)
    for u in users:
        await u.pull()
    return answer


MISSING = "<missing>"


def cell(doc: Doc) -> Any:
    return doc.get("cells", type=Map).get("A1", MISSING)


def shape(doc: Doc) -> dict[str, Any]:
    got: dict[str, Any] = doc.get("shapes", type=Map)["s1"].to_py()
    return got


# alice's client id higher: her concurrent sets win; lower: bob's win
ORDERS = [pytest.param(200, 100, id="alice-wins"), pytest.param(100, 200, id="bob-wins")]


@pytest.mark.parametrize(("alice_id", "bob_id"), ORDERS)
async def test_sheet_cell_winner_undoes_then_the_other(
    tmp_path: Path, alice_id: int, bob_id: int
) -> None:
    async with two_users(tmp_path, alice_id, bob_id) as users:
        a, b = users
        a.local.get("cells", type=Map)["A1"] = "orig"
        await a.push()
        await a.pull()
        await b.pull()
        await close_steps(a)
        for i in (1, 2, 3):
            await concurrently(
                a,
                b,
                lambda i=i: a.local.get("cells", type=Map).__setitem__("A1", f"alice {i}"),
                lambda i=i: b.local.get("cells", type=Map).__setitem__("A1", f"bob {i}"),
            )
        await close_steps(a, b)
        winner, loser = (a, b) if alice_id > bob_id else (b, a)
        assert values(users, cell) == [f"{winner.name} 3"] * 3

        answer = await undo_and_pull(users, winner)
        assert answer["ok"] is True, answer
        # the latest value anyone else set: not the key gone, not a stale one
        assert values(users, cell) == [f"{loser.name} 3"] * 3

        answer = await undo_and_pull(users, loser)
        assert answer["ok"] is True, answer
        # both undid theirs: the value from before both; the winner's undone value
        # does not come back
        assert values(users, cell) == ["orig"] * 3

        answer = await undo_and_pull(users, loser, "redo")
        assert answer["ok"] is True, answer
        assert values(users, cell) == [f"{loser.name} 3"] * 3


@pytest.mark.parametrize(("alice_id", "bob_id"), ORDERS)
async def test_sheet_cell_the_other_undoes_first(
    tmp_path: Path, alice_id: int, bob_id: int
) -> None:
    async with two_users(tmp_path, alice_id, bob_id) as users:
        a, b = users
        a.local.get("cells", type=Map)["A1"] = "orig"
        await a.push()
        await a.pull()
        await b.pull()
        await close_steps(a)
        for i in (1, 2, 3):
            await concurrently(
                b,
                a,
                lambda i=i: b.local.get("cells", type=Map).__setitem__("A1", f"bob {i}"),
                lambda i=i: a.local.get("cells", type=Map).__setitem__("A1", f"alice {i}"),
            )
        await close_steps(a, b)
        winner, loser = (a, b) if alice_id > bob_id else (b, a)
        # the loser's values show nowhere: its undo has nothing to take back
        answer = await undo_and_pull(users, loser)
        assert answer["ok"] is False, answer
        assert values(users, cell) == [f"{winner.name} 3"] * 3
        answer = await undo_and_pull(users, winner)
        assert answer["ok"] is True, answer
        assert values(users, cell) == [f"{loser.name} 3"] * 3
        answer = await undo_and_pull(users, loser)
        assert answer["ok"] is True, answer
        assert values(users, cell) == ["orig"] * 3


@pytest.mark.parametrize(("alice_id", "bob_id"), ORDERS)
async def test_drag_same_shape_both_undo(tmp_path: Path, alice_id: int, bob_id: int) -> None:
    """60 sets of ``x`` each, in 20 concurrent rounds of 3 (whose arrival order
    alternates), then the winner's undo and the other's."""
    async with two_users(tmp_path, alice_id, bob_id) as users:
        a, b = users
        with a.local.transaction():
            s1 = Map({"x": 0, "y": 0})
            a.local.get("shapes", type=Map)["s1"] = s1
        await a.push()
        await a.pull()
        await b.pull()
        await close_steps(a)

        def drag(u: User, sign: int, r: int) -> Callable[[], None]:
            def go() -> None:
                m = u.local.get("shapes", type=Map)["s1"]
                for j in range(1, 4):
                    m["x"] = sign * (3 * r + j)

            return go

        for r in range(20):
            first, second = (a, b) if r % 2 == 0 else (b, a)
            await concurrently(
                first,
                second,
                drag(first, -1 if first is a else 1, r),
                drag(second, -1 if second is a else 1, r),
            )
        await close_steps(a, b)
        winner, loser = (a, b) if alice_id > bob_id else (b, a)
        last = {"alice": -60, "bob": 60}
        assert values(users, shape) == [{"x": last[winner.name], "y": 0}] * 3

        answer = await undo_and_pull(users, winner)
        assert answer["ok"] is True, answer
        assert values(users, shape) == [{"x": last[loser.name], "y": 0}] * 3

        answer = await undo_and_pull(users, loser)
        assert answer["ok"] is True, answer
        assert values(users, shape) == [{"x": 0, "y": 0}] * 3

        answer = await undo_and_pull(users, winner, "redo")
        assert answer["ok"] is False, answer  # the other's undo came after: it stays
        assert values(users, shape) == [{"x": 0, "y": 0}] * 3


async def test_nobody_else_touched_the_key(tmp_path: Path) -> None:
    """Bob sets another key of the same map at the same time: alice's undo brings her
    key's value from before her step back, and leaves bob's key alone."""
    async with two_users(tmp_path, 100, 200) as users:
        a, b = users
        a.local.get("cells", type=Map)["A1"] = "orig"
        await a.push()
        await a.pull()
        await b.pull()
        await close_steps(a)
        for i in (1, 2, 3):
            await concurrently(
                a,
                b,
                lambda i=i: a.local.get("cells", type=Map).__setitem__("A1", f"alice {i}"),
                lambda i=i: b.local.get("cells", type=Map).__setitem__("B1", f"bob {i}"),
            )
        await close_steps(a, b)

        def both(doc: Doc) -> Any:
            return doc.get("cells", type=Map).to_py()

        assert values(users, both) == [{"A1": "alice 3", "B1": "bob 3"}] * 3
        answer = await undo_and_pull(users, a)
        assert answer["ok"] is True, answer
        assert values(users, both) == [{"A1": "orig", "B1": "bob 3"}] * 3
        answer = await undo_and_pull(users, a, "redo")
        assert answer["ok"] is True, answer
        assert values(users, both) == [{"A1": "alice 3", "B1": "bob 3"}] * 3
        # sequential, not concurrent: bob's set after alice's, his undo gives hers back
        b.local.get("cells", type=Map)["A1"] = "bob later"
        await b.push()
        await a.pull()
        answer = await undo_and_pull(users, b)
        assert answer["ok"] is True, answer
        assert values(users, both) == [{"A1": "alice 3", "B1": "bob 3"}] * 3


async def test_both_undo_across_a_restart(tmp_path: Path) -> None:
    """What bob undid stays passed over after a restart (``undone`` in the snapshot's
    meta, or rebuilt from the log after it)."""
    async with two_users(tmp_path, 100, 200, snapshot_every=3) as users:
        a, b = users
        a.local.get("cells", type=Map)["A1"] = "orig"
        await a.push()
        await a.pull()
        await b.pull()
        await close_steps(a)
        for i in (1, 2, 3):
            await concurrently(
                b,
                a,
                lambda i=i: b.local.get("cells", type=Map).__setitem__("A1", f"bob {i}"),
                lambda i=i: a.local.get("cells", type=Map).__setitem__("A1", f"alice {i}"),
            )
        await close_steps(a, b)
        assert (await undo_and_pull(users, b))["ok"] is True
        assert values(users, cell) == ["alice 3"] * 3
        docs = (a.local, b.local)
        snaps = await a.srv.backend.store.snapshots(DOC)
    assert snaps and max(s.seq for s in snaps) > 3  # after the restart: from a snapshot
    async with two_users(tmp_path, 100, 200, docs, snapshot_every=3) as users:
        a, b = users
        for u in users:
            await u.pull()
        assert (await undo_and_pull(users, a))["ok"] is True
        assert values(users, cell) == ["orig"] * 3


async def test_a_key_deleted_before_the_step_stays_deleted(tmp_path: Path) -> None:
    """Alice deletes the key; bob then sets it, and undoes: the key is gone again (the
    value alice deleted does not come back)."""
    async with two_users(tmp_path, 100, 200) as users:
        a, b = users
        a.local.get("cells", type=Map)["A1"] = "orig"
        await a.push()
        await close_steps(a)
        del a.local.get("cells", type=Map)["A1"]
        await a.push()
        await close_steps(a)
        await b.pull()
        b.local.get("cells", type=Map)["A1"] = "bob"
        await b.push()
        await a.pull()
        assert values(users, cell) == ["bob"] * 3
        assert (await undo_and_pull(users, b))["ok"] is True
        assert values(users, cell) == [MISSING] * 3
        assert (await undo_and_pull(users, b, "redo"))["ok"] is True
        assert values(users, cell) == ["bob"] * 3


async def test_a_value_its_writer_undid_does_not_come_back(tmp_path: Path) -> None:
    """Not concurrent: alice sets A1 and B1, bob then sets A1 over hers; alice's undo
    takes B1 out (her A1 does not show: it stays bob's); bob's undo then gives A1 the
    value from before both, not alice's undone one (what Yjs's UndoManager would
    restore: the value his set replaced)."""
    async with two_users(tmp_path, 100, 200) as users:
        a, b = users
        a.local.get("cells", type=Map)["A1"] = "orig"
        await a.push()
        await close_steps(a)
        with a.local.transaction():
            a.local.get("cells", type=Map)["A1"] = "alice"
            a.local.get("cells", type=Map)["B1"] = "x"
        await a.push()
        await close_steps(a)
        await b.pull()
        b.local.get("cells", type=Map)["A1"] = "bob"
        await b.push()
        await a.pull()

        def both(doc: Doc) -> Any:
            return doc.get("cells", type=Map).to_py()

        assert (await undo_and_pull(users, a))["ok"] is True
        assert values(users, both) == [{"A1": "bob"}] * 3
        assert (await undo_and_pull(users, b))["ok"] is True
        assert values(users, both) == [{"A1": "orig"}] * 3


@pytest.mark.parametrize(("alice_id", "bob_id"), ORDERS)
async def test_offline_drag_against_an_online_one(
    tmp_path: Path, alice_id: int, bob_id: int
) -> None:
    """Bob drags the shape offline (30 sets, one step: his sync step 2 when he comes
    back) while alice drags it online (30 events, logged before his); the winner's undo
    leaves the other's last x."""
    async with two_users(tmp_path, alice_id, bob_id) as users:
        a, b = users
        with a.local.transaction():
            a.local.get("shapes", type=Map)["s1"] = Map({"x": 0, "y": 0})
        await a.push()
        await a.pull()
        await b.pull()
        await close_steps(a)
        for i in range(1, 31):
            b.local.get("shapes", type=Map)["s1"]["x"] = i  # offline
        for i in range(1, 31):
            a.local.get("shapes", type=Map)["s1"]["x"] = -i
            await a.push()
        await close_steps(a)
        # bob's client comes back: its presence names its client id first, as
        # y-websocket's does, then its sync step 2 carries the offline drag
        presence = json.dumps({"user": {"name": "bob"}})
        await b.wire.send_raw(
            P.encode_awareness(P.encode_awareness_entries([(b.local.client_id, 1, presence)]))
        )
        await b.push(step2=True)
        await a.pull()
        await b.pull()
        await close_steps(b)
        winner, loser = (a, b) if alice_id > bob_id else (b, a)
        last = {"alice": -30, "bob": 30}
        assert values(users, shape) == [{"x": last[winner.name], "y": 0}] * 3
        answer = await undo_and_pull(users, winner)
        assert answer["ok"] is True, answer
        assert values(users, shape) == [{"x": last[loser.name], "y": 0}] * 3
        answer = await undo_and_pull(users, loser)
        assert answer["ok"] is True, answer
        assert values(users, shape) == [{"x": 0, "y": 0}] * 3


async def test_the_whole_read_made_before_the_undo_sees_what_came_since(
    tmp_path: Path,
) -> None:
    """The whole document is read for the keys before the undo's turn in the room
    (RoomUndo.read_keys), and in its turn only what was written since: a concurrent set
    of bob's that arrives between the two is in the key's chain, and alice's undo gives
    the key that value (his latest), not the one he had when the read was made."""
    async with two_users(tmp_path, 200, 100) as users:
        a, b = users
        a.local.get("cells", type=Map)["A1"] = "orig"
        await a.push()
        await a.pull()
        await b.pull()
        await close_steps(a)
        a.local.get("cells", type=Map)["A1"] = "alice 1"
        b.local.get("cells", type=Map)["A1"] = "bob 1"
        await a.push()
        await b.push()
        await a.pull()
        await close_steps(a, b)
        assert cell(a.room_doc()) == "alice 1"  # (the higher client id wins)

        room = a.srv.backend.rooms.get_loaded(DOC)
        assert room is not None
        state = state_of(room)
        step = state.stacks("alice").undo[-1]
        prepared = await state.read_keys(step)
        assert prepared is not None  # bob set the key too: the whole document is read
        # bob, still offline of alice's value, sets the key again: it loses to hers too
        b.local.get("cells", type=Map)["A1"] = "bob 2"
        await b.push()
        assert cell(a.room_doc()) == "alice 1"

        floor = state._keys_floor(step)
        caught_up = chains_held(room.doc, step.ins, step.dels, floor, prepared)
        whole = chains_held(room.doc, step.ins, step.dels, floor)
        assert caught_up is not None and whole is not None
        assert [(k.items, k.origins) for k in caught_up] == [(k.items, k.origins) for k in whole]
        # followed on once: a second use (a change run again) reads the whole document
        again = chains_held(room.doc, step.ins, step.dels, floor, prepared)
        assert again is not None
        assert [(k.items, k.origins) for k in again] == [(k.items, k.origins) for k in whole]
        assert len(caught_up) == 1 and len(caught_up[0].items) == 4  # orig, bob 1 and 2, alice 1

        answer = await undo_and_pull(users, a)
        assert answer["ok"] is True, answer
        assert values(users, cell) == ["bob 2"] * 3


def forget_answers(users: list[User]) -> None:
    """Drop the answers already taken: a request's id may be an earlier one's
    (YClient.request), whose answer it would take."""
    for u in users:
        u.wire.ext.clear()


async def _cycles(tmp_path: Path, trim_at: int, n: int) -> tuple[int, list[Any]]:
    """alice sets A1, undoes and redoes it, then bob sets it over hers, `n` times (each
    user's stack 2 deep); then bob, alice, alice and bob undo in turn. How many items
    the room's ``undone`` holds after the cycles, and the value after each undo."""
    async with two_users(tmp_path, 200, 100, undo_max_depth=2) as users:
        a, b = users
        a.local.get("cells", type=Map)["A1"] = "orig"
        await a.push()
        await a.pull()
        await b.pull()
        await close_steps(a)
        room = a.srv.backend.rooms.get_loaded(DOC)
        assert room is not None
        state = state_of(room)
        state.undone_trim_at = trim_at
        for i in range(n):
            a.local.get("cells", type=Map)["A1"] = f"alice {i}"
            await a.push()
            await b.pull()
            await close_steps(a)
            forget_answers(users)
            assert (await undo_and_pull(users, a))["ok"] is True
            assert values(users, cell) == ["orig" if i == 0 else f"bob {i - 1}"] * 3
            forget_answers(users)
            assert (await undo_and_pull(users, a, "redo"))["ok"] is True
            assert values(users, cell) == [f"alice {i}"] * 3
            b.local.get("cells", type=Map)["A1"] = f"bob {i}"
            await b.push()
            await a.pull()
            forget_answers(users)
            await close_steps(b)
        held = size(state.undone)
        after: list[Any] = []
        for who in (b, a, a, b):
            forget_answers(users)
            answer = await undo_and_pull(users, who)
            after.append((who.name, answer["ok"], values(users, cell)))
        return held, after


async def test_undone_values_stay_bounded_and_undo_after_trimming_is_the_same(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """``undone`` (the values undone, in the snapshot's meta) is trimmed of what no undo
    can look at any more: over 40 undo-redo cycles of a key that another user then sets
    over, it stays a few items (each cycle adds two: the value undone, and the copy
    the redo takes back), while a server that never trims holds all 80; and the undos
    after it give the same values on both."""
    n = 40
    trimmed, after = await _cycles(tmp_path_factory.mktemp("trimmed"), 4, n)
    kept, reference = await _cycles(tmp_path_factory.mktemp("kept"), 10**9, n)
    assert kept >= 2 * n
    assert trimmed <= 8, trimmed
    assert after == reference
    assert after[0] == ("bob", True, [f"alice {n - 1}"] * 3)  # bob's undo: her latest
