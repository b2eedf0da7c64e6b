"""A document's deletion on the changefeed, against a real `palimpsest serve` (SQLite):
the global SSE stream, a webhook and the Python client's follower get a record of kind
``deleted`` at its own position, in order between the events around it; a follower
resuming after it does not get it again; one who may not read the document does not
get it at all."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from conftest import eventually
from feedhelp import RawStream
from serverproc import ServerProcess
from webhook_receiver import Receiver

from palimpsest import client
from palimpsest.auth.tokens import mint
from palimpsest.client import History
from palimpsest.client.stream import StreamEvent

SECRET = "s" * 32
FAST = {"PALIMPSEST_CHANGEFEED_HEARTBEAT": "0.3", "PALIMPSEST_WEBHOOK_RETRY_FIRST": "0.05"}


async def write(srv: ServerProcess, token: str, doc: str, texts: list[str]) -> None:
    async with client.connect(srv.ws_url, doc, token=token) as s:
        for t in texts:
            text = s.text()
            text.insert(len(text), t)
            await s.flush()


async def delete(srv: ServerProcess, token: str, doc: str) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.delete(
            f"{srv.http_url}/api/docs/{doc}", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code < 300, r.text


def brief(events: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [(e["doc"], e["kind"], e["seq"]) for e in events]


async def test_a_deletion_is_on_the_global_feed_in_order_for_those_who_may_read_it(
    tmp_path: Any,
) -> None:
    admin = mint(SECRET, "root", "admin", ["*"])
    team = mint(SECRET, "tess", "read", ["team-b"])  # may not read team-a
    with Receiver() as rx:
        args = ["--jwt-secret", SECRET, "--webhook", rx.url]
        async with ServerProcess(tmp_path, extra_args=args, env=FAST) as srv:
            bearer = {"Authorization": f"Bearer {admin}"}
            url = f"{srv.http_url}/api/events/stream"
            async with (
                RawStream(url, bearer) as s,
                RawStream(url, {"Authorization": f"Bearer {team}"}) as t,
                History(srv.http_url, token=admin) as h,
            ):
                got: list[StreamEvent] = []

                async def follow() -> None:
                    async for ev in h.stream_all(after=0, updates=False):
                        got.append(ev)

                following = asyncio.create_task(follow())
                await write(srv, admin, "team-a", ["a1", "a2"])
                await write(srv, admin, "team-b", ["b1"])
                before = await s.events(3)
                # (the client's follower too has A's events before A is deleted)
                await eventually(lambda: len(got) == 3, timeout=10, what="3 on the client")
                assert brief(before) == [("team-a", "edit", 1), ("team-a", "edit", 2),
                                         ("team-b", "edit", 1)]  # fmt: skip
                await delete(srv, admin, "team-a")
                await write(srv, admin, "team-b", ["b2"])
                after = await s.events(2)
                gone, b2 = after
                assert (gone["doc"], gone["kind"], gone["seq"], gone["actor"]) == (
                    "team-a", "deleted", 2, "root",
                )  # fmt: skip
                # its own position, between B's events, and the SSE id is that position
                assert before[-1]["pos"] < gone["pos"] < b2["pos"]
                assert gone["_id"] == gone["pos"]
                assert (b2["doc"], b2["kind"]) == ("team-b", "edit")
                assert set(gone) == {"_id", "doc", "pos", "seq", "ts", "actor", "kind"}
                assert gone["ts"].endswith("Z")
                # the Python client's follower: the same record
                await eventually(lambda: len(got) == 5, timeout=10, what="5 on the client")
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)
                assert [(e.doc, e.kind, e.seq, e.pos) for e in got] == [
                    (e["doc"], e["kind"], e["seq"], e["pos"]) for e in before + after
                ]
                assert got[3].update is None and got[3].actor == "root"
                # who may not read team-a sees neither its events nor its deletion: only
                # B's events, and the cursor moved past the rest
                seen: list[dict[str, Any]] = []
                last_id = 0
                while len(seen) < 2 or last_id < b2["pos"]:
                    msg = await t.next()
                    last_id = int(msg.id) if msg.id else last_id
                    if msg.data:
                        seen.append(json.loads(msg.data))
                assert [(e["doc"], e["seq"]) for e in seen] == [("team-b", 1), ("team-b", 2)]
            # resumed from before the deletion: the deletion, then B's event
            async with RawStream(url, {**bearer, "Last-Event-ID": str(before[-1]["pos"])}) as r:
                assert brief(await r.events(2)) == [("team-a", "deleted", 2),
                                                    ("team-b", "edit", 2)]  # fmt: skip
            # resumed from the deletion's id: not again; what comes next is B's event
            async with RawStream(url, {**bearer, "Last-Event-ID": str(gone["pos"])}) as r:
                assert brief(await r.events(1)) == [("team-b", "edit", 2)]
                await write(srv, admin, "team-b", ["b3"])
                assert brief(await r.events(1)) == [("team-b", "edit", 3)]
            # the webhook: the same record, in position order with the events
            await eventually(
                lambda: any(e["kind"] == "deleted" for e in rx.accepted_events()),
                timeout=20, what="the deletion delivered",
            )  # fmt: skip
            await eventually(
                lambda: b2["pos"] in {e["pos"] for e in rx.accepted_events()},
                timeout=20, what="B's event after it delivered",
            )  # fmt: skip
            delivered = {e["pos"]: e for e in rx.accepted_events()}
            assert delivered[gone["pos"]] == {k: v for k, v in gone.items() if k != "_id"}
            positions = [e["pos"] for e in rx.accepted_events()]
            assert positions == sorted(positions)
