"""An undo event that reverts part of a step: on several processes, a user's edits logged
on another process after an undo read the log, and before it was logged, join the step
it reverts. Replaying such an event (a load, another process) takes that part off the
step and keeps the rest and every other step; it used to empty the user's stacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

from palimpsest.ranges import to_b64
from palimpsest.settings import Settings
from palimpsest.store.base import NewEvent
from palimpsest.store.sqlite import SQLiteStore
from palimpsest.undo import MARK, META_KEY, Stacks, fold

EMPTY = b"\x00\x00"


class Typist:
    """ann's keystrokes, each one update, logged with the time given."""

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc(client_id=4242)
        self.text = self.doc.get("content", type=Text)

    def type(self, s: str, ts: int) -> NewEvent:
        sv = self.doc.get_state()
        self.text += s
        return NewEvent("ann", "edit", self.doc.get_update(sv), {}, ts)


def undo(reverts: list[int], ts: int, **meta: Any) -> NewEvent:
    return NewEvent("ann", "undo", EMPTY, {"reverts": reverts, **meta}, ts)


async def stacks_after(tmp_path: Path, events: list[NewEvent]) -> Stacks:
    async with SQLiteStore(str(tmp_path / "log.db")) as store:
        await store.append([("d", events)])
        _, meta = await fold(store, "d", len(events), Settings(undo_capture_ms=500))
    return Stacks.from_json(meta[META_KEY]["actors"]["ann"])


def seqs(steps: list[Any]) -> list[list[int]]:
    return [s.seqs for s in steps]


async def test_an_undo_of_part_of_the_top_step_keeps_the_rest_and_the_steps_below(
    tmp_path: Path,
) -> None:
    ann = Typist()
    part = {4242: [(3, 5)]}  # what seqs 3 and 4 inserted ("tw")
    st = await stacks_after(
        tmp_path,
        [
            ann.type("one", 1000),  # 1
            NewEvent("ann", MARK, EMPTY, {}, 1001),  # 2
            ann.type("t", 2000),  # 3: the undo, on another process, read the log here
            ann.type("w", 2010),  # 4
            ann.type("o", 2020),  # 5: logged there before the undo, joined the step
            undo([3, 4], 2030, at=4, ins=to_b64(part), dels=to_b64({})),  # 6
            undo([5], 2040, completes=6),  # 7: the rest of the step
        ],
    )
    assert seqs(st.undo) == [[1]]
    assert seqs(st.redo) == [[6, 7]], "one redo brings the whole step back"


async def test_an_undo_of_part_of_a_step_keeps_the_rest_for_a_later_undo(tmp_path: Path) -> None:
    ann = Typist()
    st = await stacks_after(
        tmp_path,
        [
            ann.type("one", 1000),  # 1
            NewEvent("ann", MARK, EMPTY, {}, 1001),  # 2
            ann.type("t", 2000),  # 3
            ann.type("w", 2010),  # 4
            undo([3], 2030, at=3, ins=to_b64({4242: [(3, 4)]}), dels=to_b64({})),  # 5
        ],
    )
    assert seqs(st.undo) == [[1], [4]]
    assert st.undo[1].ins == {4242: [(4, 5)]}
    assert seqs(st.redo) == [[5]]


async def test_a_step_logged_after_the_undo_read_the_log_stays(tmp_path: Path) -> None:
    ann = Typist()
    st = await stacks_after(
        tmp_path,
        [
            ann.type("one", 1000),  # 1
            NewEvent("ann", MARK, EMPTY, {}, 1001),  # 2
            ann.type("two", 2000),  # 3: the undo read the log here
            NewEvent("ann", MARK, EMPTY, {}, 2001),  # 4: ann, on another process
            ann.type("three", 2002),  # 5
            undo([3], 2030, at=3),  # 6
        ],
    )
    assert seqs(st.undo) == [[1], [5]]


async def test_an_undo_of_seqs_on_no_step_keeps_the_stack(tmp_path: Path) -> None:
    ann = Typist()
    st = await stacks_after(
        tmp_path,
        [
            ann.type("one", 1000),  # 1
            NewEvent("ann", MARK, EMPTY, {}, 1001),  # 2
            ann.type("two", 2000),  # 3
            undo([7, 8], 2030),  # 4
        ],
    )
    assert seqs(st.undo) == [[1], [3]]
