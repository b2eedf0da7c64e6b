"""Property-based tests of per-user undo/redo: random interleavings of edits, undos and
redos by three users on one document, through the real room pipeline and a real SQLite
log, with in-process peers that apply whatever the server broadcasts.

Invariants: every peer converges with the server; n undos then n redos give back the
same document; undoing all of a user's changes on text nobody else touched leaves
exactly the others' text; the stacks rebuilt from the log (another backend loading the
same file) equal the live ones.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, Text

from palimpsest import protocol as P
from palimpsest import undo
from palimpsest.backend import Backend
from palimpsest.room import Room
from palimpsest.settings import Settings

USERS = ("u0", "u1", "u2")
ALPHABETS = {"u0": "abcde", "u1": "ABCDE", "u2": "01234"}
DOC = "prop"


@dataclass
class Peer:
    """A connection of the room's, in process: applies every broadcast to its own doc."""

    id: str
    actor: str
    doc: Doc[Any] = field(default_factory=Doc)
    closed: tuple[int, str] | None = None

    def send(self, frame: bytes) -> None:
        msg = P.decode(frame)
        if isinstance(msg, P.SyncUpdate | P.SyncStep2):
            self.doc.apply_update(msg.update)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    @property
    def text(self) -> Text:
        return self.doc.get("content", type=Text)

    @property
    def map(self) -> Map[Any]:
        return self.doc.get("m", type=Map)


def content(doc: Doc[Any]) -> tuple[str, dict[str, Any]]:
    return str(doc.get("content", type=Text)), doc.get("m", type=Map).to_py()


class World:
    def __init__(self, backend: Backend, room: Room) -> None:
        self.backend = backend
        self.room = room
        self.peers = {u: Peer(f"p-{u}", u) for u in USERS}
        for p in self.peers.values():
            room.join(p)

    async def local(self, user: str, fn: Any) -> None:
        peer = self.peers[user]
        sv = peer.doc.get_state()
        fn(peer)
        update = peer.doc.get_update(sv)
        if self.room.receive_update(peer, update):
            await self.room.flush()

    async def op(self, user: str, kind: str) -> bool:
        ev = await undo.perform(self.room, user, kind)
        return ev is not None

    def check_converged(self) -> None:
        server = content(self.room.doc)
        for p in self.peers.values():
            assert p.closed is None, p.closed
            assert content(p.doc) == server, (p.actor, content(p.doc), server)


def own_runs(text: str, alphabet: str) -> list[tuple[int, int]]:
    """Maximal runs of characters from alphabet: (start, length)."""
    runs: list[tuple[int, int]] = []
    i = 0
    while i < len(text):
        if text[i] in alphabet:
            j = i
            while j < len(text) and text[j] in alphabet:
                j += 1
            runs.append((i, j - i))
            i = j
        else:
            i += 1
    return runs


ops = st.lists(
    st.tuples(
        st.sampled_from(USERS),
        st.sampled_from(["insert", "insert", "delete_own", "map", "undo", "undo", "redo"]),
        st.integers(0, 1000),
        st.integers(1, 4),
    ),
    min_size=10,
    max_size=40,
)


async def apply_ops(world: World, program: list[tuple[str, str, int, int]]) -> None:
    for user, kind, r, n in program:
        if kind == "insert":
            alphabet = ALPHABETS[user]

            def ins(p: Peer, r: int = r, n: int = n, alphabet: str = alphabet) -> None:
                pos = r % (len(p.text) + 1)
                p.text.insert(pos, "".join(alphabet[(r + i) % 5] for i in range(n)))

            await world.local(user, ins)
        elif kind == "delete_own":
            runs = own_runs(str(world.peers[user].text), ALPHABETS[user])
            if runs:
                start, length = runs[r % len(runs)]
                cut = min(n, length)

                def dele(p: Peer, start: int = start, cut: int = cut) -> None:
                    del p.text[start : start + cut]

                await world.local(user, dele)
        elif kind == "map":

            def put(p: Peer, r: int = r, user: str = user) -> None:
                p.map[f"k{r % 3}"] = f"{user}:{r}"

            await world.local(user, put)
        else:
            await world.op(user, kind)
        world.check_converged()


async def with_world(tmp: Path, body: Any) -> None:
    s = Settings(db=str(tmp / "p.db"), undo_capture_ms=0, snapshot_every=10_000,
                 snapshot_quiet_seconds=0, unload_after_seconds=60)  # fmt: skip
    async with Backend(s) as backend:
        room = await backend.rooms.get(DOC)
        world = World(backend, room)
        try:
            await body(world)
        finally:
            for p in world.peers.values():
                room.leave(p)


def run(body: Any) -> None:
    with tempfile.TemporaryDirectory() as d:
        asyncio.run(with_world(Path(d), body))


PROPS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(program=ops, who=st.sampled_from(USERS), n=st.integers(1, 6))
def test_undo_redo_neutral_and_convergent(
    program: list[tuple[str, str, int, int]], who: str, n: int
) -> None:
    async def body(world: World) -> None:
        await apply_ops(world, program)
        # a last edit of who's own, so that there is always something to undo: without
        # it, a program where every undo answers "nothing to undo" passes unchecked
        pre = content(world.room.doc)
        mark = ALPHABETS[who][0] * 2

        def last(p: Peer) -> None:
            p.text.insert(0, mark)

        await world.local(who, last)
        before = content(world.room.doc)
        assert before[0] == mark + pre[0]
        done = 0
        for _ in range(n):
            if not await world.op(who, "undo"):
                break
            done += 1
            world.check_converged()
            if done == 1:
                assert content(world.room.doc) == pre, "the first undo reverts the last edit"
        assert done >= 1
        for _ in range(done):
            assert await world.op(who, "redo")
            world.check_converged()
        assert content(world.room.doc) == before

    run(body)


@PROPS
@given(program=ops, who=st.sampled_from(USERS))
def test_undo_all_leaves_exactly_the_others_text(
    program: list[tuple[str, str, int, int]], who: str
) -> None:
    async def body(world: World) -> None:
        await apply_ops(world, program)

        def last(p: Peer) -> None:  # who always has something of its own to take back
            p.text.insert(len(p.text) // 2, ALPHABETS[who][:2])

        await world.local(who, last)
        text_before = str(world.room.doc.get("content", type=Text))
        undone = 0
        for _ in range(200):
            if not await world.op(who, "undo"):
                break
            undone += 1
        assert undone >= 1
        world.check_converged()
        mine = ALPHABETS[who]
        assert str(world.room.doc.get("content", type=Text)) == "".join(
            ch for ch in text_before if ch not in mine
        )

    run(body)


@PROPS
@given(program=ops)
def test_stacks_rebuilt_from_the_log_equal_the_live_ones(
    program: list[tuple[str, str, int, int]],
) -> None:
    async def body(world: World) -> None:
        await apply_ops(world, program)
        live = undo.state_of(world.room).to_meta()
        # another backend on the same file loads the document from the log alone
        s2 = Settings(db=world.backend.settings.db, undo_capture_ms=0)
        async with Backend(s2) as other:
            room2 = await other.rooms.get(DOC)
            assert content(room2.doc) == content(world.room.doc)
            assert undo.state_of(room2).to_meta() == live
            # and undoes the same way: the inverse of the same step
            for user in USERS:
                st1 = undo.state_of(world.room).stacks(user)
                st2 = undo.state_of(room2).stacks(user)
                assert [s.seqs for s in st1.undo] == [s.seqs for s in st2.undo]
            await other.rooms.unload(room2)

    run(body)
