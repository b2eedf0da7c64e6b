"""An undo of a deletion of many ranges (a restore that took out half a book) among many
other steps: the deletion is split among the steps that inserted some of it in work that
grows with what those steps hold, not with every range of the deletion once per step.

On a 1.26 M-character book, the undo of a restore to its middle split the restore's
16,000 deleted ranges by each of the 600 steps on the stacks in one piece on the event
loop: 2-3.5 s during which no room was served (docs/history.md). The check counts the
lines run in the range arithmetic (``palimpsest.ranges``) during the undo, never time."""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

from pycrdt import Doc, Text

from palimpsest import ranges
from palimpsest.backend import Backend
from palimpsest.settings import Settings
from palimpsest.store.base import NewEvent
from palimpsest.undo.actions import Outcome, perform, state_of

WORDS = 3000
DEPTH = 30


def _events() -> tuple[list[NewEvent], str]:
    """bob types WORDS words, an undo step each (10 s apart); ann then deletes every
    word's letters, keeping the spaces, in one event: WORDS ranges of bob's items, the
    last DEPTH of them each inserted by a step still on bob's stack."""
    bob: Doc[Any] = Doc(client_id=2)
    text = bob.get("content", type=Text)
    events: list[NewEvent] = []
    sub = bob.observe(lambda e: events.append(NewEvent("bob", "edit", e.update, {}, 0)))
    for i in range(WORDS):
        text += f"w{i} "
    bob.unobserve(sub)
    typed = str(text)
    ann: Doc[Any] = Doc(client_id=1)
    ann.apply_update(bob.get_update())
    atext = ann.get("content", type=Text)
    sub = ann.observe(lambda e: events.append(NewEvent("ann", "edit", e.update, {}, 0)))
    with ann.transaction():
        at = len(typed)
        for word in reversed(typed.split(" ")[:-1]):
            at -= len(word) + 1
            del atext[at : at + len(word)]
    ann.unobserve(sub)
    assert str(atext) == " " * WORDS
    t0 = 1_700_000_000_000
    return [
        NewEvent(e.actor, e.kind, e.update, e.meta, t0 + 10_000 * i) for i, e in enumerate(events)
    ], typed


async def test_an_undo_of_a_long_deletion_splits_it_by_the_steps_that_hold_it() -> None:
    events, typed = _events()
    settings = Settings(store="memory://", undo_max_depth=DEPTH)
    async with Backend(settings) as backend:
        await backend.store.append([("book", events)])
        room = await backend.rooms.get("book")  # the stacks, from the log
        try:
            state = state_of(room)
            assert len(state.stacks("bob").undo) == DEPTH
            dels = state.stacks("ann").undo[-1].dels
            assert sum(len(r) for r in dels.values()) == WORDS

            lines = 0
            where = ranges.__file__

            def trace(frame: FrameType, event: str, arg: object) -> Any:
                nonlocal lines
                if frame.f_code.co_filename != where:
                    return None
                if event == "line":
                    lines += 1
                return trace

            outcome = Outcome()
            sys.settrace(trace)
            try:
                ev = await perform(room, "ann", "undo", backend, outcome)
            finally:
                sys.settrace(None)
            assert ev is not None
            assert str(room.doc.get("content", type=Text)) == typed
            assert outcome.added == (len(typed) - WORDS, 0)
            # each of the DEPTH steps split the whole deletion (1.4 million lines run);
            # now each piece of the undo walks it once (190,000 lines: 63 a range)
            assert lines < 100 * WORDS, lines
        finally:
            backend.rooms.release(room)
