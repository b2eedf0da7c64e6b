"""Waves of connections leave nothing of theirs behind (docs/operations.md, "RSS that
climbs under churn").

A field tester saw a server's idle RSS rise with each wave of y-websocket clients
connecting and closing. Measured, the rise was the allocators' high-water mark, not
objects kept; this holds the second part: after waves of real websocket clients, each
with its own user, presence and documents, connecting, typing and closing, once every
room has unloaded the server's own objects and the containers they hold (a dict keyed
by connection, peer, address, user or document) are no bigger than after the first
wave, beyond one entry per document of a wave (the bounded per-document caches: the
documents known to history, each creator's hour of `MAX_NEW_DOCS_PER_HOUR`).

What it found: every connection closed cleanly was kept, with its socket, scope, guard
and presence, for CLOSE_GRACE (2 s) after its close by the timer that aborts a socket
whose close frame cannot go out; the timer is now cancelled once the close is sent.
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
from collections import Counter, deque
from typing import Any

from conftest import RunningServer, eventually
from yclient import YClient, connect

from palimpsest import protocol as P
from palimpsest.room import Room

CONNECTIONS = 24
DOCS = 6
WAVES = 4

_CONTAINERS = (dict, set, frozenset, list, deque)
#: module-level containers bounded by count whatever the traffic
_BOUNDED = {"palimpsest.protocol._LONG_VALUES"}  # client ids decoded: cleared at 4,096


def _sizes() -> Counter[str]:
    """The server's own objects by type, and the total length of the containers each
    type's instances (and each of its modules) hold, by attribute."""
    gc.collect()
    out: Counter[str] = Counter()
    for o in gc.get_objects():
        t = type(o)
        module = t.__dict__.get("__module__")
        if not isinstance(module, str) or not module.startswith("palimpsest"):
            continue
        out[f"{t.__qualname__} (objects)"] += 1
        attrs: dict[str, Any] = dict(getattr(o, "__dict__", {}) or {})
        for cls in t.__mro__:
            for name in getattr(cls, "__slots__", ()):
                if hasattr(o, name):
                    attrs[name] = getattr(o, name)
        for name, value in attrs.items():
            if isinstance(value, _CONTAINERS):
                out[f"{t.__qualname__}.{name}"] += len(value)
    for mod_name, mod in list(sys.modules.items()):
        if not mod_name.startswith("palimpsest") or mod is None:
            continue
        for name, value in list(vars(mod).items()):
            if isinstance(value, _CONTAINERS) and f"{mod_name}.{name}" not in _BOUNDED:
                out[f"{mod_name}.{name}"] += len(value)
    return out


async def _wave(server: RunningServer, n: int) -> None:
    """CONNECTIONS clients of their own users over DOCS new documents: each sends its
    presence, the first of each document types, then all close; back once every room
    has unloaded."""
    clients: list[YClient] = []
    async with contextlib.AsyncExitStack() as stack:
        for i in range(CONNECTIONS):
            doc, user = f"churn{n}-{i % DOCS}", f"w{n}u{i}"
            c = await stack.enter_async_context(connect(server.ws_url, doc, user))
            state = json.dumps({"user": {"name": user}})
            await c.send_raw(
                P.encode_awareness(P.encode_awareness_entries([(c.doc.client_id, 1, state)]))
            )
            if i < DOCS:  # the first client of each document writes into it
                c.insert(0, "x")
            clients.append(c)
        rooms = server.backend.rooms
        await eventually(
            lambda: all(
                (r := rooms.get_loaded(f"churn{n}-{d}")) is not None and r.seq >= 1
                for d in range(DOCS)
            ),
            what="every document's edits committed",
        )
    for c in clients:  # (a YClient outlives its socket: its document's observer holds it)
        c.frames.clear()
    await eventually(lambda: not server.backend.rooms.loaded, timeout=20, what="rooms unloaded")
    # (an unload's task lets go of its room just after the room leaves `loaded`)
    await eventually(lambda: _churn_rooms() == 0, interval=0.1, what="no Room of ours left")


def _churn_rooms() -> int:
    """Room objects of this test's documents alive in the process (in the whole suite,
    other tests' servers ran in it too, and what they left is not this test's)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is Room and o.name.startswith("churn"))


async def test_waves_of_connections_leave_no_structure_growing(server: RunningServer) -> None:
    await _wave(server, 0)
    first = _sizes()
    for n in range(1, WAVES):
        await _wave(server, n)
    last = _sizes()
    grown = {k: (first[k], v) for k, v in last.items() if v - first[k] > WAVES * DOCS}
    assert not grown, f"grown with the waves (after the first, after the last): {grown}"
