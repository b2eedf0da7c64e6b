"""An undo's pycrdt UndoManager is let go of on the live document's thread, with no
transaction open, whatever keeps the frames of the undo (server/undo/recorder.py).

yrs's UndoManager::drop takes a transaction on its document to unsubscribe from it and
panics when it cannot. A field test's server died of it: the stall watch had sampled the
event loop's stack during an undo, kept the frames, and freed them (the manager in a
local of one) in its own thread while the loop held a transaction on that document."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: a live room's undo of one step, its frames taken during the undo (as a sampler's
#: sys._current_frames(), a traceback or a reference cycle keep them), then let go of
#: while this thread holds a transaction on the document: in another thread (argv[2]
#: "thread"), or in this one (the collector freeing a cycle, when an allocation inside
#: the transaction triggers it)
SCRIPT = """
import sys, threading
from pycrdt import Doc, Text
from palimpsest.commit import Committer
from palimpsest.room import Room
from palimpsest.store.sqlite import SQLiteStore
from palimpsest.undo.recorder import RoomUndo
from palimpsest.undo.stacks import Step
from palimpsest import protocol as P
from palimpsest.ranges import decode_ranges

store = SQLiteStore(sys.argv[1])
doc = Doc()
text = doc.get("content", type=Text)
room = Room("d", doc, 0, committer=Committer(store), reader=store)
state = RoomUndo(room, 500, 100)
did = []

def on_transaction(e):
    b, a = P.decode_state_vector(e.before_state), P.decode_state_vector(e.after_state)
    did.append(({c: [(b.get(c, 0), k)] for c, k in a.items()}, decode_ranges(e.delete_set)))

sub = doc.observe(on_transaction)
text.insert(0, "hello world")
doc.unobserve(sub)
kept = []
room.doc_observers.add(lambda e: kept.append(sys._getframe()))
assert state.revert(doc, Step([1], *did[0]))
assert str(text) == "" and kept
go, done = threading.Event(), threading.Event()

def let_go():
    go.wait()
    kept.clear()
    done.set()

t = threading.Thread(target=let_go)
t.start()
with doc.transaction():
    text.insert(0, "typed meanwhile")
    if sys.argv[2] == "thread":
        go.set()
        done.wait()
    else:
        kept.clear()
go.set()
t.join()
text.insert(0, "and after: ")
print(str(text))
"""


@pytest.mark.parametrize("where", ["thread", "same thread"])
def test_the_frames_of_an_undo_freed_in_a_transaction_hold_no_undo_manager(
    tmp_path: Path, where: str
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "d.db"), where],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "panicked" not in out.stderr and "PanicException" not in out.stderr, out.stderr
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "and after: typed meanwhile"
