"""A process cut off from PostgreSQL while the others reach it (server/cutoff.py): its
clients are closed with 1013 and move to a process that can commit, their unacknowledged
edits with them; a store stalled for every process closes nobody (the hold of an
outage)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from conftest import PG_PORT, eventually
from pycrdt import Text
from scaleout import cluster, fanout_url, fresh_schema, open_store
from stallproxy import StallingProxy
from yclient import YClient, connect

from palimpsest.cutoff import CLOSE_REASON
from palimpsest.snapshots import load
from palimpsest.updates import decode_update_meta

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

#: a short cut-off for the tests (the default is 10 s)
ENV = {"PALIMPSEST_STORE_CUTOFF_SECONDS": "1"}


async def type_into(c: YClient, text: str, pause: float = 0.0) -> None:
    for ch in text:
        c.insert(len(c.content), ch)
        await asyncio.sleep(pause)


async def keep_typing(c: YClient, stop: asyncio.Event) -> None:
    """One keystroke every 0.1 s until `stop`: another process committing."""
    while not stop.is_set():
        c.insert(len(c.content), ".")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("how", ["stall", "cut"])
async def test_a_process_cut_off_from_the_store_sends_its_clients_elsewhere(
    tmp_path: Path, how: str
) -> None:
    """p1 reaches PostgreSQL through a proxy that stalls; p0 directly, and keeps
    committing. p1's client is closed with 1013 and the cut-off's reason, p1 refuses a
    new websocket at the handshake, and the client, reconnecting to p0 with its
    document, brings the text p1 never acknowledged.

    What p1 holds of it when its store answers again was logged by p0 meanwhile, and
    is not logged again: neither its held commit, tried again (`how` "cut": p1's
    connections to PostgreSQL are closed, and new ones refused), nor the edits queued
    behind it. But for a statement that was on its way when the store stalled (`how`
    "stall"): held up in the network, it commits when it arrives, as it was sent."""
    fan = fanout_url()
    with StallingProxy(PG_PORT) as proxy:
        async with fresh_schema() as store_url:
            async with cluster(tmp_path, 1, store_url=store_url, fanout=fan, env=ENV) as c:
                c.store_url = store_url.replace(f":{PG_PORT}/", f":{proxy.port}/", 1)
                await c.start(1)  # p1, through the proxy
                stop = asyncio.Event()
                async with (
                    connect(c.ws(0), "cut", user="bob") as bob,
                    connect(c.ws(1), "cut", user="ann") as ann,
                ):
                    await type_into(ann, "ann: ")
                    await eventually(lambda: "ann: " in bob.content, what="p1 commits")
                    await asyncio.to_thread(proxy.stall if how == "stall" else proxy.cut)
                    typing = asyncio.create_task(keep_typing(bob, stop))
                    try:
                        # (one keystroke at a time: the first commits, or is held, alone;
                        # the others queue behind it)
                        await type_into(ann, "[held]", pause=0.05)
                        await eventually(
                            lambda: ann.close_code is not None, timeout=60,
                            what="ann's connection closed",
                        )  # fmt: skip
                        assert ann.close_code == 1013, (ann.close_code, ann.close_reason)
                        assert ann.close_reason == CLOSE_REASON
                        assert "[held]" not in bob.content  # never acknowledged by p1
                        assert "cut off from it" in c.procs[1].log_text()
                        async with httpx.AsyncClient() as http:
                            r = await http.get(c.procs[1].http_url + "/readyz", timeout=30)
                            m = await http.get(c.procs[1].http_url + "/metrics", timeout=30)
                        assert r.status_code == 503
                        assert "palimpsest_store_cut_off 1.0" in m.text
                        assert "palimpsest_store_cutoff_closes_total 1.0" in m.text
                        # a new websocket to p1 is refused at the handshake
                        with pytest.raises(Exception, match="503"):
                            async with connect(c.ws(1), "cut", user="cy"):
                                pass
                        async with connect(c.ws(0), "cut", user="ann", ydoc=ann.doc) as again:
                            # (not "ann: [held]": a dot of bob's may have reached ann
                            # through p1 before its room waited on the store)
                            await eventually(
                                lambda: "[held]" in bob.content,
                                what="ann's held text at p0",
                            )
                            stop.set()
                            await typing
                            # p1's store answers: what it held is not logged there
                            # again, p0 logged it all meanwhile (but for a statement on
                            # its way: see below)
                            await asyncio.to_thread(proxy.resume)
                            await eventually(
                                lambda: "takes commits again" in c.procs[1].log_text(),
                                timeout=90, what="p1 commits what it held",
                            )  # fmt: skip
                            await type_into(again, "!")
                            await eventually(
                                lambda: again.content == bob.content
                                and again.content.endswith("!"),
                                what="they agree",
                            )  # fmt: skip
                            assert again.content.count("[held]") == 1
                        async with open_store(store_url) as store:
                            loaded = await load(store, "cut")
                            events = await store.read("cut")
                        assert str(loaded.doc.get("content", type=Text)) == bob.content
                        # ann's "[held]" (clocks 5..10 of her client id, after "ann: ")
                        # is in the log once: p0's event of her re-sent edits, not p1's
                        # held ones again, which would add nothing (a statement that
                        # was on its way when the store stalled: once more, at most)
                        clocks = range(5, 5 + len("[held]"))
                        carrying = {
                            clock: [
                                e.seq
                                for e in events
                                if any(
                                    s <= clock < t
                                    for s, t in decode_update_meta(e.update).structs.get(
                                        ann.doc.client_id, []
                                    )
                                )
                            ]
                            for clock in clocks
                        }
                        most = 2 if how == "stall" else 1
                        assert all(1 <= len(s) <= most for s in carrying.values()), carrying
                    finally:
                        stop.set()
                        await typing
                        await asyncio.to_thread(proxy.resume)


async def test_a_store_stalled_for_every_process_closes_nobody(tmp_path: Path) -> None:
    """Both processes reach PostgreSQL through one stalled proxy: no commit anywhere, no
    other process's events arrive, and both clients keep their connections while their
    edits are held; they commit when it answers again. (Not asserted after the stall:
    with a cut-off of 1 s, a process whose first commit after it comes more than a
    second after the other's may be judged cut off, which the default 10 s rules out.)"""
    fan = fanout_url()
    with StallingProxy(PG_PORT) as proxy:
        async with fresh_schema() as store_url:
            via = store_url.replace(f":{PG_PORT}/", f":{proxy.port}/", 1)
            async with cluster(tmp_path, 2, store_url=via, fanout=fan, env=ENV) as c:
                async with (
                    connect(c.ws(0), "all", user="bob") as bob,
                    connect(c.ws(1), "all", user="ann") as ann,
                ):
                    await type_into(ann, "ann ")
                    await eventually(lambda: "ann " in bob.content, what="p1 commits")
                    await asyncio.to_thread(proxy.stall)
                    await type_into(ann, "[a]")
                    await type_into(bob, "[b]")
                    # past the cut-off's wait, many times over: both say they wait (5 s)
                    await eventually(
                        lambda: all(
                            "has not answered a commit" in p.log_text() for p in c.procs
                        ),
                        timeout=30, what="both processes wait on the store",
                    )  # fmt: skip
                    await asyncio.sleep(2)  # (two more checks of the cut-off's)
                    assert ann.close_code is None and bob.close_code is None
                    assert not any("cut off from it" in p.log_text() for p in c.procs)
                    await asyncio.to_thread(proxy.resume)
                    await eventually(
                        lambda: all(t in x.content for t in ("[a]", "[b]") for x in (ann, bob)),
                        timeout=60, what="the held edits committed",
                    )  # fmt: skip
