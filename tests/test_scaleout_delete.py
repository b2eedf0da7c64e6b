"""Deleting a document with two `palimpsest serve` processes on PostgreSQL and Redis: every
process closes its connections with 4404 and drops its room, over fan-out or, when no
message comes, from the store; no stale copy brings the deleted content back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import eventually
from pycrdt import Doc
from scaleout import cluster, fanout_url, fresh_schema, open_store
from yclient import YClient, connect

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
