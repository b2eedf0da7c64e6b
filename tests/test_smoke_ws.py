from __future__ import annotations

from conftest import RunningServer, eventually
from yclient import connect


async def test_two_clients_converge_and_events_are_logged(server: RunningServer) -> None:
    async with (
        connect(server.ws_url, "doc1", "alice") as a,
        connect(server.ws_url, "doc1", "bob") as b,
    ):
        a.insert(0, "hello")
        await eventually(lambda: b.content == "hello", what="bob sees alice's text")
        b.insert(5, " world")
        await eventually(lambda: a.content == "hello world")
    events = await server.backend.store.read("doc1")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert {e.actor for e in events} == {"alice", "bob"}
    assert all(e.kind == "edit" for e in events)
