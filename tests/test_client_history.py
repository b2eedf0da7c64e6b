"""The client's HTTP history methods against the real server (the HTTP API contract)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import RunningServer
from pycrdt import Doc, Text

from palimpsest import client
from palimpsest.client import Removed


async def three_versions(server: RunningServer, doc: str) -> None:
    """seq 1 by ada, 2 by bob, 3 by ada."""
    async with client.connect(server.ws_url, doc, user="ada") as a:
        a.text().insert(0, "one ")
        await a.flush()
        async with client.connect(server.ws_url, doc, user="bob") as b:
            b.text().append("two ")
            await b.flush()
        await a.wait_for(lambda: a.text() == "one two ")
        a.text().append("three")
        await a.flush()


async def test_docs_list(server: RunningServer) -> None:
    await three_versions(server, "listed")
    async with client.History(server.ws_url, user="ada") as h:  # a ws:// URL works too
        docs = {d.doc: d for d in await h.docs()}
    assert docs["listed"].head == 3 and docs["listed"].size > 0


async def test_events_versions_blame_diff(server: RunningServer) -> None:
    await three_versions(server, "hist")
    async with client.History(server.url, user="ada") as h:
        page = await h.events("hist")
        assert [(e.seq, e.actor, e.kind) for e in page.events] == [
            (1, "ada", "edit"), (2, "bob", "edit"), (3, "ada", "edit"),
        ]  # fmt: skip
        assert all(e.size > 0 and e.ts for e in page.events)
        first = await h.events("hist", limit=2)
        assert [e.seq for e in first.events] == [1, 2] and first.next_after == 2
        assert [e.seq async for e in h.iter_events("hist", page_size=1)] == [1, 2, 3]
        assert [e.seq for e in (await h.events("hist", actor="bob")).events] == [2]

        assert (await h.version("hist", 2)).text == "one two "
        assert (await h.version("hist")).text == "one two three"
        now = datetime.now(UTC)
        assert (await h.version("hist", at=now)).text == "one two three"

        update = await h.version_update("hist", 1)
        ydoc: Doc[Any] = Doc()
        ydoc.apply_update(update)
        assert str(ydoc.get("content", type=Text)) == "one "

        runs = await h.blame("hist")
        assert "".join(r.text for r in runs) == "one two three"
        assert {r.actor for r in runs if "two" in r.text} == {"bob"}

        diff = await h.diff("hist", 1, 3)
        assert diff["from"] == 1 and diff["to"] == 3
        assert [(o["op"], o["text"], o["actor"], o["seq"])
                for o in diff["roots"]["content"]["ops"]] == [
            ("equal", "one ", None, None), ("insert", "two ", "bob", 2),
            ("insert", "three", "ada", 3),
        ]  # fmt: skip

        with pytest.raises(client.NotFound):
            await h.version("hist", 99)
        with pytest.raises(client.NotFound):
            await h.version("hist", tag="no-such-tag")


async def test_restore_tags_undo_over_http(server: RunningServer) -> None:
    await three_versions(server, "rest")
    async with client.History(server.url, user="carol") as h:
        tags = await h.tag("rest", "first", 1)
        assert any(t.get("name") == "first" for t in tags)
        assert any(t.get("name") == "first" for t in await h.tags("rest"))
        assert (await h.version("rest", tag="first")).text == "one "
        # a name in use moves only when the caller lets it
        with pytest.raises(client.Refused, match="already names version #1") as refused:
            await h.tag("rest", "first", 2, move=False)
        assert refused.value.code == 409
        assert [(t["name"], t["seq"]) for t in await h.tags("rest")] == [("first", 1)]
        assert [t["seq"] for t in await h.tag("rest", "first", 1, move=False)] == [1]
        restored = await h.restore("rest", 1)
        assert (restored.seq, restored.restores) == (4, 1)
        # (it took out "two " by bob and "three" by ada, and says so)
        assert restored.removed_others == (Removed("ada", 5, 0), Removed("bob", 4, 0))
        assert (await h.version("rest")).text == "one "
        undone = await h.undo("rest")  # carol's restore is undoable like any edit
        assert undone.ok and undone.seq == 5
        assert (await h.version("rest")).text == "one two three"
        nothing = await h.undo("rest")
        assert not nothing and "nothing to undo" in (nothing.reason or "")
    async with client.connect(server.ws_url, "rest", user="dan") as d:
        assert d.text() == "one two three"


async def test_a_version_is_named_by_tag_in_seqs_place(server: RunningServer) -> None:
    # as restore(doc, "v1") takes it; it was int("v1"): a bare ValueError
    await three_versions(server, "tagged")
    async with client.History(server.url, user="ada") as h:
        await h.tag("tagged", "v1", seq=2)
        by_tag = await h.version("tagged", "v1")
        assert by_tag == await h.version("tagged", tag="v1") == await h.version("tagged", 2)
        assert by_tag.text == "one two "
        assert await h.version_update("tagged", "v1") == await h.version_update("tagged", 2)
        with pytest.raises(client.NotFound):
            await h.version("tagged", "no-such-tag")
        with pytest.raises(ValueError, match="one of"):
            await h.version("tagged", "v1", tag="v1")


async def test_a_stream_of_a_document_not_written_yet_waits_for_its_first_event(
    server: RunningServer,
) -> None:
    # docs/changefeed.md: no 404 (where /events has one): the stream is open and empty
    # until the document is written, so a follower may start first
    async with client.History(server.url, user="ada") as h:
        with pytest.raises(client.NotFound):
            await h.events("later")
        events = h.stream("later", updates=False).__aiter__()
        first = asyncio.ensure_future(anext(events))
        async with client.connect(server.ws_url, "later", user="bob") as b:
            b.text().insert(0, "now")
            await b.flush()
        ev = await asyncio.wait_for(first, 20)
        assert (ev.doc, ev.seq, ev.actor, ev.kind) == ("later", 1, "bob", "edit")
        await events.aclose()  # type: ignore[attr-defined]


async def test_leaving_a_stream_with_break_ends_it_cleanly(server: RunningServer) -> None:
    """The docs' pattern, `break` out of `async for ev in h.stream(...)` inside `async
    with History`, printed "aclose(): asynchronous generator is already running" when
    the program ended (the loop closed the nested iterators all at once). History now
    ends its streams, inner iterators first, when its block is left. In a process of its
    own: the message came at the loop's shutdown."""
    import subprocess
    import sys

    await three_versions(server, "brk")
    script = (
        "import asyncio\n"
        "from palimpsest import client\n"
        "async def main():\n"
        f"    async with client.History({server.url!r}, user='x') as h:\n"
        "        async for ev in h.stream('brk', after=0):\n"
        "            print('first', ev.seq)\n"
        "            break\n"
        "asyncio.run(main())\n"
    )
    run = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0 and run.stdout == "first 1\n", run
    assert run.stderr == "", run.stderr


async def test_a_stream_read_in_another_task_ends_when_its_history_closes(
    server: RunningServer,
) -> None:
    """A task still inside `async for ev in h.stream(...)` when the History block is
    left: its loop ends (it raised httpx's "Cannot send a request, as the client has
    been closed" when the stream next reconnected)."""
    await three_versions(server, "inside")
    seen: list[int] = []

    async def reader(h: client.History) -> str:
        async for ev in h.stream("inside", after=0, updates=False):
            seen.append(ev.seq)
        return "ended"

    async with client.History(server.url, user="x") as h:
        task = asyncio.create_task(reader(h))
        await asyncio.sleep(0.5)
        assert seen == [1, 2, 3]
    assert await asyncio.wait_for(task, 10) == "ended"


async def test_give_up_ends_a_stream_a_server_accepts_and_never_answers() -> None:
    """docs/changefeed.md: give_up raises ServerGone after so long unreachable. A
    server that accepts the connection and hangs (a stopped process, a stuck proxy) held
    each attempt for idle_timeout, and give_up was looked at only between attempts: with
    the default idle_timeout, two minutes. Here idle_timeout is an hour, so only give_up
    can end either stream."""
    held: list[asyncio.StreamWriter] = []

    async def hang(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    hole = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = hole.sockets[0].getsockname()[1]
    try:
        async with client.History(f"http://127.0.0.1:{port}", user="bot") as h:
            for follower in (
                h.stream("notes", idle_timeout=3600, give_up=1),
                h.stream_all(idle_timeout=3600, give_up=1),
            ):
                with pytest.raises(client.ServerGone, match="unreachable: no answer within 1 s"):
                    await asyncio.wait_for(anext(follower.__aiter__()), 60)
                assert follower.connects == 0
        assert held
    finally:
        for writer in held:
            writer.close()
        hole.close()


@pytest.fixture(params=["America/New_York", "Asia/Kolkata"])
def local_zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This process's local time zone for the test (TZ, then tzset), put back after."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    try:
        yield request.param
    finally:
        monkeypatch.undo()
        time.tzset()


async def test_a_naive_time_a_dst_change_skips_or_repeats_is_refused(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In Europe/Paris, 2026-03-29T02:30 is no local time (the clocks went from 02:00 to
    03:00) and 2026-10-25T02:30 is two (that half hour came twice): a naive time or
    datetime there was sent shifted by an hour, or as one of the two, with no word. It
    is refused before anything is sent (BadTime, a ValueError too), saying to add an
    offset; an aware one is sent as it is."""
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        await three_versions(server, "dst")
        async with client.History(server.url, user="ada") as h:
            for at in ("2026-03-29T02:30", datetime(2026, 3, 29, 2, 30)):
                with pytest.raises(client.ClientError, match="is no time here") as e:
                    await h.version("dst", at=at)
                assert isinstance(e.value, ValueError)
                assert "add an offset" in str(e.value) and "+01:00" in str(e.value)
            for at in ("2026-10-25T02:30", datetime(2026, 10, 25, 2, 30)):
                with pytest.raises(client.ClientError, match="is twice here") as e:
                    await h.version("dst", at=at)
                assert "+02:00" in str(e.value) and "+01:00" in str(e.value)
            with pytest.raises(client.ClientError, match="add an offset"):
                await h.events("dst", since="2026-10-25T02:30")
            # an offset given: sent as it is (2030: the head)
            version = await h.version("dst", at="2030-10-25T02:30+01:00")
            assert version.seq == 3
    finally:
        monkeypatch.undo()
        time.tzset()


async def test_a_naive_time_is_the_machines_local_time(
    server: RunningServer, local_zone: str
) -> None:
    """`version(at=datetime.now())`-style naive datetimes were sent without an offset,
    which the server reads as UTC: in New York the version before the first event (whose
    roots, none, made `roots['content']` a KeyError), in Kolkata silently the head. A
    naive datetime or time string is the machine's local time, sent with its offset;
    an aware one (or a string with an offset) is sent as it is."""
    await three_versions(server, "zoned")
    events = await server.backend.store.read("zoned")
    ts = {e.seq: e.ts for e in events}
    assert ts[1] < ts[2] < ts[3], ts
    async with client.History(server.url, user="ada") as h:
        for seq in (1, 2):
            naive = datetime.fromtimestamp(ts[seq] / 1000)  # local wall time, as now() gives
            assert naive.tzinfo is None
            # the instant the test expects: the naive time in the local zone
            assert round(naive.astimezone().timestamp() * 1000) == ts[seq]
            assert (await h.version("zoned", at=naive)).seq == seq, (local_zone, naive)
            assert (await h.version("zoned", at=naive.isoformat())).seq == seq
            written = naive.isoformat(sep=" ", timespec="milliseconds")
            assert (await h.version("zoned", at=written)).seq == seq
            update = await h.version_update("zoned", at=naive)
            assert update == await h.version_update("zoned", seq)
            # aware: as it is, whatever the local zone
            aware = datetime.fromtimestamp(ts[seq] / 1000, UTC)
            assert (await h.version("zoned", at=aware)).seq == seq
            assert (await h.version("zoned", at=aware.isoformat())).seq == seq
        first, third = (datetime.fromtimestamp(ts[s] / 1000) for s in (1, 3))
        page = await h.events("zoned", since=first, until=third)
        assert [e.seq for e in page.events] == [1, 2, 3]
        page = await h.events("zoned", since=first.isoformat(), until=first.isoformat())
        assert [e.seq for e in page.events] == [1]


async def test_a_version_before_the_first_event_has_no_roots_and_an_empty_text(
    server: RunningServer,
) -> None:
    """`version(at=...)` before the first event answers seq 0, no ts and no roots: the
    document before it was written. `roots["content"]` is a KeyError there (as the
    field tester's script found); `.text` and `root_text()` are "", as for a document
    whose text is empty."""
    await three_versions(server, "young")
    (first, *_) = await server.backend.store.read("young")
    before = datetime.fromtimestamp((first.ts - 1) / 1000)  # naive: local
    async with client.History(server.url, user="ada") as h:
        v = await h.version("young", at=before)
        assert (v.seq, v.ts, v.roots) == (0, None, {})
        assert v.text == "" and v.root_text("content") == "" and v.root_text("other") == ""
        assert (await h.version("young", 0)) == v


async def test_diff_blame_and_text_by_name_a_version_by_tag(server: RunningServer) -> None:
    """What the typing of diff(), blame(), text_by() now says (int | str): a tag in a
    seq's place reads the same version as its seq."""
    await three_versions(server, "tagged-reads")
    async with client.History(server.url, user="ada") as h:
        await h.tag("tagged-reads", "v1", seq=1)
        await h.tag("tagged-reads", "v2", seq=2)
        assert await h.diff("tagged-reads", "v1", "v2") == await h.diff("tagged-reads", 1, 2)
        assert await h.blame("tagged-reads", seq="v2") == await h.blame("tagged-reads", seq=2)
        by_tag = await h.text_by("tagged-reads", "ada", seq="v2")
        assert by_tag == await h.text_by("tagged-reads", "ada", seq=2) != ""
