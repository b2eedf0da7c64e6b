"""Deleting a document with two `palimpsest serve` processes on PostgreSQL and Redis: every
process closes its connections with 4404 and drops its room, over fan-out or, when no
message comes, from the store; no stale copy brings the deleted content back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from conftest import REDIS_URL, eventually
from pycrdt import Doc, Text
from scaleout import Cluster, cluster, fanout_url, fresh_schema, open_store
from stallproxy import StallingProxy
from yclient import YClient, connect

from palimpsest import protocol as P

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

REPO = Path(__file__).resolve().parent.parent


async def closed_4404(*clients: YClient) -> None:
    await eventually(
        lambda: all(c.close_code == 4404 for c in clients),
        timeout=15,
        what=f"closed with 4404: {[(c.close_code, c.close_reason) for c in clients]}",
    )


async def typed(c: YClient, text: str, *others: YClient) -> None:
    c.insert(len(c.content), text)
    await eventually(
        lambda: all(text in o.content for o in (c, *others)), what=f"everyone has {text!r}"
    )


async def test_delete_travels_to_the_other_process_and_no_copy_comes_back(
    tmp_path: Path,
) -> None:
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 2, store_url=store_url, fanout=fanout_url()) as c,
        httpx.AsyncClient() as http,
    ):
        async with (
            connect(c.ws(0), "gone", user="ann") as a,
            connect(c.ws(1), "gone", user="bob") as b,
        ):
            await typed(a, "secret", b)
            await typed(b, " plans", a)
            r = await http.delete(f"{c.procs[0].http_url}/api/docs/gone", params={"user": "root"})
            assert r.status_code == 200, r.text
            assert r.json() == {"doc": "gone", "deleted": True, "closed": 1}
            await closed_4404(a, b)  # bob is on the other process
            stale = b.doc
        async with open_store(store_url) as store:
            assert await store.head("gone") == 0
            assert await store.tombstone("gone")

        # bob's local copy, on either process: refused at its step 2, nothing logged
        for i in (1, 0):
            copy: Doc = Doc()
            copy.apply_update(stale.get_update())
            async with connect(c.ws(i), "gone", user="bob", ydoc=copy, wait_sync=False) as s:
                await closed_4404(s)
                assert "deleted" in (s.close_reason or "")
        async with open_store(store_url) as store:
            assert await store.head("gone") == 0

        # the name is used again: a new, empty document, on both processes
        async with (
            connect(c.ws(1), "gone", user="cy") as n1,
            connect(c.ws(0), "gone", user="dee") as n0,
        ):
            assert n1.content == "" and n0.content == ""
            await typed(n1, "fresh", n0)
            await typed(n0, "!", n1)
            assert n0.content == n1.content == "fresh!"
            # a stale copy is still refused while the new document is open
            copy = Doc()
            copy.apply_update(stale.get_update())
            async with connect(c.ws(0), "gone", user="bob", ydoc=copy, wait_sync=False) as s:
                await closed_4404(s)
            assert n0.close_code is None and n1.close_code is None
            await typed(n0, "?", n1)
            assert n0.content == n1.content == "fresh!?"
        async with open_store(store_url) as store:
            events = await store.read("gone")
            assert [e.actor for e in events] == ["cy", "dee", "dee"]


async def test_a_delete_that_fan_out_never_carries_is_noticed_from_the_store(
    tmp_path: Path,
) -> None:
    """`palimpsest delete` run with the store alone (no --fanout): nobody publishes, and
    both processes notice from the store's head at their gap check."""
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 2, store_url=store_url, fanout=fanout_url(check=0.3)) as c,
    ):
        async with (
            connect(c.ws(0), "quiet", user="ann") as a,
            connect(c.ws(1), "quiet", user="bob") as b,
        ):
            await typed(a, "hello", b)
            r = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "palimpsest", "delete", "quiet", "--yes", "--store",
                 store_url],
                cwd=REPO, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
            await closed_4404(a, b)
        async with open_store(store_url) as store:
            assert await store.tombstone("quiet")
            async with connect(c.ws(1), "quiet", user="cy") as n:
                assert n.content == ""
                n.text.insert(0, "new")

                async def logged() -> bool:
                    return await store.head("quiet") == 1

                await eventually(logged, what="the new document's first edit is logged")
            assert [e.actor for e in await store.read("quiet")] == ["cy"]


async def test_palimpsest_delete_with_fanout_tells_the_servers_at_once(tmp_path: Path) -> None:
    """The gap check is an hour away here: only the command's message explains the 4404."""
    bus = fanout_url(check=3600)
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 2, store_url=store_url, fanout=bus) as c,
    ):
        async with (
            connect(c.ws(0), "told", user="ann") as a,
            connect(c.ws(1), "told", user="bob") as b,
        ):
            await typed(a, "hello", b)
            r = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "palimpsest", "delete", "told", "--yes", "--store",
                 store_url, "--fanout", bus],
                cwd=REPO, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
            await closed_4404(a, b)
            assert b.close_reason == "the document was deleted ('told')", b.close_reason


async def test_deleting_a_name_with_nothing_written_answers_alike_on_every_process(
    tmp_path: Path,
) -> None:
    """A name open on one process with no edit logged is no document, on whichever process
    the DELETE lands: 404 from both, no tombstone, and the connection stays open (the
    process holding the room answered 200 and closed it, the other 404 and closed it
    over fan-out)."""
    async with (
        fresh_schema() as store_url,
        cluster(tmp_path, 2, store_url=store_url, fanout=fanout_url()) as c,
        httpx.AsyncClient() as http,
    ):
        async with connect(c.ws(1), "blank", user="bob") as b:
            for i in (0, 1):
                r = await http.delete(f"{c.procs[i].http_url}/api/docs/blank",
                                      params={"user": "root"})  # fmt: skip
                assert r.status_code == 404 and r.json()["error"] == "NotFound", (i, r.text)
            async with connect(c.ws(0), "blank", user="ann") as a:
                await typed(b, "still here", a)
            assert b.close_code is None
        async with open_store(store_url) as store:
            assert await store.tombstone("blank") is None
            assert [e.actor for e in await store.read("blank")] == ["bob"]


@asynccontextmanager
async def second_behind_a_proxy(
    tmp_path: Path, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[Cluster, StallingProxy, str, httpx.AsyncClient]]:
    """Two processes on a fresh schema and one bus with no gap check (only the messages
    at play), process 1 reaching Redis through a StallingProxy; an HTTP client. `env`:
    the processes' own (settings)."""
    bus = fanout_url(check=3600)
    redis_port = int(REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    with StallingProxy(redis_port) as proxy:
        async with fresh_schema() as store_url, httpx.AsyncClient() as http:
            c = Cluster(store_url, bus, tmp_path, env=env or {})
            c.add()
            c.fanout_url = bus.replace(f":{redis_port}/", f":{proxy.port}/")
            c.add()  # process 1 reaches Redis through the proxy
            try:
                await asyncio.gather(*(p.astart() for p in c.procs))
                yield c, proxy, store_url, http
            finally:
                await asyncio.to_thread(c.stop_all)


@pytest.mark.parametrize("written_again", [True, False])
async def test_a_late_message_of_the_deleted_document_is_not_taken_by_the_new_one(
    tmp_path: Path, written_again: bool
) -> None:
    """Process 1's link to Redis stalls while its client types: its messages (seq H+1)
    are held on the way. The document is deleted on process 0 and its name written
    again up to the same seq H; then the link resumes. A fan-out message was taken by
    its seq alone: the new document's room on process 0 applied the deleted one's
    event H+1 and sent it to its clients (whose copies then held the deleted content,
    every reconnect refused), and its own next commit was refused as if deleted. Now a
    message names the document's generation and a room drops one of another.
    Not written again, the room of the empty name (no generation to compare: it reads
    the store's) read the seqs before H+1 from the store, found none, and failed
    (every client closed with 1013)."""
    # no gap check: only the messages are at play
    async with second_behind_a_proxy(tmp_path) as (c, proxy, store_url, http):
        async with (
            connect(c.ws(1), "again", user="ann") as a,
            connect(c.ws(0), "again", user="bob") as b,
        ):
            await typed(a, "ab", b)
            await typed(b, "cd", a)
            async with open_store(store_url) as store:
                old_head = await store.head("again")
                proxy.stall()
                # an item that needs no other: it applies in any document
                a.doc.get("notes", type=Text).insert(0, "stale")

                async def logged() -> bool:
                    return await store.head("again") == old_head + 1

                await eventually(logged, what="ann's stale edit logged")
            r = await http.delete(f"{c.procs[0].http_url}/api/docs/again", params={"user": "root"})
            assert r.status_code == 200, r.text
            await closed_4404(b)
        # the name written again on process 0, to the deleted document's seq
        written = old_head if written_again else 0
        for i in range(written):
            r = await http.put(
                f"{c.procs[0].http_url}/api/docs/again/text",
                json={"text": "new " * (i + 1)}, params={"user": "w"},
            )  # fmt: skip
            assert r.status_code == 200, r.text
        async with open_store(store_url) as store:
            assert await store.head("again") == written
        async with connect(c.ws(0), "again", user="x0") as x0:
            notes = x0.doc.get("notes", type=Text)
            proxy.resume()
            dropped = "of another document of the name"
            await eventually(
                lambda: (
                    str(notes) != ""
                    or x0.close_code is not None
                    or dropped in c.procs[0].log_text()
                ),
                timeout=20,
                what="process 1's late message at process 0",
            )
            assert str(notes) == "", "the deleted document's edit reached a client"
            assert x0.close_code is None, (x0.close_code, x0.close_reason)
            await typed(x0, "fresh", x0)
            async with open_store(store_url) as store:

                async def fresh_logged() -> bool:
                    return await store.head("again") == written + 1

                await eventually(fresh_logged, what="the new document's edit logged")
                actors = {e.actor for e in await store.read("again")}
            assert actors == ({"w", "x0"} if written_again else {"x0"}), actors
            assert x0.close_code is None, (x0.close_code, x0.close_reason)
            assert str(notes) == ""


async def test_a_late_deletion_message_leaves_the_new_document_of_the_name_open(
    tmp_path: Path,
) -> None:
    """Process 1 deletes the document while its link to Redis stalls: its message is held
    on the way. The name is written again on process 0, and a client opens it; then the
    link resumes. The message dropped whatever room of the name was loaded: the new
    document's, its clients closed with 4404 "deleted" (y-websocket 3.1 stops
    reconnecting on it). Now a room whose document is still the name's stays."""
    async with second_behind_a_proxy(tmp_path) as (c, proxy, store_url, http):
        async with connect(c.ws(1), "late", user="ann") as a:
            await type_into_logged(a, "old", store_url, "late")
            proxy.stall()
            r = await http.delete(f"{c.procs[1].http_url}/api/docs/late", params={"user": "root"})
            assert r.status_code == 200, r.text
            await closed_4404(a)
        r = await http.put(
            f"{c.procs[0].http_url}/api/docs/late/text",
            json={"text": "new"}, params={"user": "w"},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        async with connect(c.ws(0), "late", user="x0") as x0:
            assert x0.content == "new"
            proxy.resume()
            stays = "the room stays"
            await eventually(
                lambda: x0.close_code is not None or stays in c.procs[0].log_text(),
                timeout=20,
                what="process 1's late deletion message at process 0",
            )
            assert x0.close_code is None, (x0.close_code, x0.close_reason)
            await typed(x0, "!", x0)
            async with open_store(store_url) as store:

                async def logged() -> bool:
                    return await store.head("late") == 2

                await eventually(logged, what="the new document's edit logged")
            assert x0.close_code is None, (x0.close_code, x0.close_reason)


async def type_into_logged(c: YClient, text: str, store_url: str, doc: str) -> None:
    c.insert(len(c.content), text)
    async with open_store(store_url) as store:

        async def logged() -> bool:
            return await store.head(doc) >= 1

        await eventually(logged, what=f"{text!r} logged")


def received(c: YClient) -> bytes:
    """Every update `c` was sent, back to back (what its Y.Doc took, or holds pending)."""
    return b"".join(f.update for f in c.frames if isinstance(f, P.SyncStep2 | P.SyncUpdate))


async def write_again(http: httpx.AsyncClient, url: str, doc: str, events: int) -> None:
    """The name written again (a new document) by `events` text PUTs, each adding NEW."""
    for i in range(events):
        r = await http.put(
            f"{url}/api/docs/{doc}/text", json={"text": "NEW" * (i + 1)}, params={"user": "w"}
        )
        assert r.status_code == 200, r.text


async def test_a_server_change_on_a_deleted_document_reads_nothing_of_the_new_one(
    tmp_path: Path,
) -> None:
    """Process 0 deletes the document and writes its name again past the seq of process
    1's room, whose link to Redis stalls (the deletion's message held). A server change
    on process 1 (PUT text) catches its room up from the store first: it read the new
    document's events, applied them to the deleted one's and sent them to its clients
    (then its append was refused, 410, and the room dropped). Now the read is checked
    against the room's generation: the room is dropped, its clients closed with 4404,
    nothing of the new document sent to them."""
    async with second_behind_a_proxy(tmp_path) as (c, proxy, store_url, http):
        async with connect(c.ws(1), "gen", user="ann") as a:
            await type_into_logged(a, "old", store_url, "gen")
            proxy.stall()
            r = await http.delete(f"{c.procs[0].http_url}/api/docs/gen", params={"user": "root"})
            assert r.status_code == 200, r.text
            await write_again(http, c.procs[0].http_url, "gen", 4)
            r = await http.put(
                f"{c.procs[1].http_url}/api/docs/gen/text",
                json={"text": "mine"}, params={"user": "v"},
            )  # fmt: skip
            assert r.status_code == 410, r.text
            await closed_4404(a)
            assert b"NEW" not in received(a), "the new document's edits reached ann"
            assert a.content == "old"
        async with open_store(store_url) as store:
            assert [e.actor for e in await store.read("gen")] == ["w"] * 4


async def store_only(*args: str) -> None:
    """A `palimpsest` command run on the store alone (no --fanout: no message)."""
    r = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "palimpsest", *args],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


async def test_a_gap_read_after_the_document_was_written_again_applies_none_of_it(
    tmp_path: Path,
) -> None:
    """Process 1's room is at seq H; H+1 is imported with the store alone (its message
    never comes), then process 1's link to Redis stalls while bob on process 0 writes
    H+2. The document is deleted and its name written again past H+1, with the store
    alone too (`palimpsest delete`, `import`: no message); then the link resumes. The
    message of H+2 names the room's generation, so the room read the gap (H+1) from the
    store: the new document's event, which it applied to the deleted one's and sent to
    ann. Now the read is checked against the room's generation: the room is dropped
    (4404), nothing of the new document applied or sent. (The check of the documents'
    generations every second, base_watch, would drop the room first here: it is off,
    to leave the room's own read at play, as when the resume comes within its second.)"""
    no_watch = {"PALIMPSEST_COMPACTION_CHECK_SECONDS": "0"}
    async with second_behind_a_proxy(tmp_path, no_watch) as (c, proxy, store_url, http):
        async with (
            connect(c.ws(1), "gap", user="ann") as a,
            connect(c.ws(0), "gap", user="bob") as b,
        ):
            await typed(a, "ab", b)
            side = Doc()
            side.get("side", type=Text).insert(0, "imported")
            (tmp_path / "side.bin").write_bytes(side.get_update())
            await store_only("import", "gap", str(tmp_path / "side.bin"), "--store", store_url)
            async with open_store(store_url) as store:
                gap = await store.head("gap")
                proxy.stall()
                b.insert(len(b.content), "cd")  # its room reads the gap first

                async def logged() -> bool:
                    return await store.head("gap") == gap + 1

                await eventually(logged, what="bob's edit logged")
            await store_only("delete", "gap", "--yes", "--store", store_url)
            new = Doc()
            text = new.get("content", type=Text)
            for i in range(gap):
                before = new.get_state()
                text.insert(len(text), f"NEW{i}")
                (tmp_path / f"new{i}.bin").write_bytes(new.get_update(before))
                await store_only("import", "gap", str(tmp_path / f"new{i}.bin"), "--store",
                                 store_url)  # fmt: skip
            async with open_store(store_url) as store:
                assert await store.head("gap") == gap
            assert a.close_code is None
            proxy.resume()
            await closed_4404(a)
            assert b"NEW" not in received(a), "the new document's edits reached ann"
            assert a.content == "ab", a.content  # (the gap came first: H+2 never applied)


def presence_of(c: YClient, client: int) -> list[str]:
    """The states `c` was sent for Yjs client `client`, in order."""
    return [
        state
        for f in c.frames
        if isinstance(f, P.AwarenessUpdate)
        for cid, _clock, state in P.decode_awareness(f.payload)
        if cid == client
    ]


@pytest.mark.parametrize("written_again", [True, False])
async def test_presence_of_the_deleted_document_never_shows_in_the_new_one(
    tmp_path: Path, written_again: bool
) -> None:
    """Ann, on process 1, moves her cursor while its link to Redis stalls: her presence
    is held on the way. The document is deleted on process 0 and its name opened again
    there (written again, or not); then the link resumes. A presence message named no
    document: process 0's room of the new document relayed ann's cursor to x0, a
    reader of another document than hers. Now it names the generation of its room's
    document, and a room of another drops it."""
    ann = '{"user":{"name":"ann"}}'
    async with second_behind_a_proxy(tmp_path) as (c, proxy, store_url, http):
        r = await http.put(
            f"{c.procs[0].http_url}/api/docs/seen/text", json={"text": "old"},
            params={"user": "w"},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        async with connect(c.ws(1), "seen", user="ann") as a:  # (a room of generation 1)
            assert a.content == "old"
            proxy.stall()
            await a.send_raw(P.encode_awareness(P.encode_awareness_entries([(4242, 1, ann)])))
            await eventually(lambda: presence_of(a, 4242) == [ann], what="ann's own echo")
            r = await http.delete(f"{c.procs[0].http_url}/api/docs/seen", params={"user": "root"})
            assert r.status_code == 200, r.text
            if written_again:
                r = await http.put(
                    f"{c.procs[0].http_url}/api/docs/seen/text", json={"text": "new"},
                    params={"user": "w"},
                )  # fmt: skip
                assert r.status_code == 200, r.text
            async with connect(c.ws(0), "seen", user="x0") as x0:
                assert x0.content == ("new" if written_again else "")
                proxy.resume()
                dropped = "presence of another document of the name"
                await eventually(
                    lambda: presence_of(x0, 4242) != [] or dropped in c.procs[0].log_text(),
                    timeout=20,
                    what="ann's late presence at process 0",
                )
                await closed_4404(a)
                assert ann not in presence_of(x0, 4242), "ann's cursor shown in the new document"
                # and the new document's own presence still crosses to process 1
                async with connect(c.ws(1), "seen", user="y1") as y1:
                    y = '{"user":{"name":"y1"}}'
                    await y1.send_raw(P.encode_awareness(P.encode_awareness_entries([(77, 1, y)])))
                    await eventually(lambda: presence_of(x0, 77) == [y], what="y1's cursor at x0")
                assert ann not in presence_of(x0, 4242)
